"""Input references: file:// confinement, address rules for http(s), schemes."""

from __future__ import annotations

import os

import pytest

from renderfarm.core.inputs import (
    InputError,
    check_http_url,
    confine_path,
    file_path,
    input_scheme,
    is_forbidden_address,
    validate_input,
)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "inputs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.mp4").write_bytes(b"secret")
    return root


def test_a_file_inside_a_root_is_accepted_as_its_real_path(root):
    assert confine_path(root / "sub" / "clip.mp4", [root]) == (root / "sub" / "clip.mp4").resolve()


def test_a_file_outside_every_root_is_refused(root):
    with pytest.raises(InputError, match="outside the allowed input roots"):
        confine_path(root.parent / "outside" / "secret.mp4", [root])


def test_dot_dot_is_refused_even_when_it_would_stay_inside(root):
    with pytest.raises(InputError, match=r"\.\."):
        confine_path(root / "sub" / ".." / "sub" / "clip.mp4", [root])


def test_percent_encoded_dot_dot_in_a_file_url_is_refused(root):
    uri = (root / "sub").as_uri() + "/%2E%2E/%2E%2E/outside/secret.mp4"
    with pytest.raises(InputError, match=r"\.\."):
        validate_input(uri, roots=[root], allow_private=False)


def test_a_symlink_inside_a_root_pointing_outside_is_refused(root):
    link = root / "sub" / "innocent.mp4"
    os.symlink(root.parent / "outside" / "secret.mp4", link)
    with pytest.raises(InputError, match="outside"):
        confine_path(link, [root])
    with pytest.raises(InputError, match="outside"):
        validate_input(link.as_uri(), roots=[root], allow_private=False)


def test_a_symlinked_directory_pointing_outside_is_refused(root):
    os.symlink(root.parent / "outside", root / "escape")
    with pytest.raises(InputError, match="outside"):
        confine_path(root / "escape" / "secret.mp4", [root])


def test_a_symlink_that_stays_inside_is_accepted(root):
    link = root / "alias.mp4"
    os.symlink(root / "sub" / "clip.mp4", link)
    assert confine_path(link, [root]) == (root / "sub" / "clip.mp4").resolve()


def test_a_root_given_through_a_symlink_still_confines(root, tmp_path):
    os.symlink(root, tmp_path / "root-link")
    assert confine_path(root / "sub" / "clip.mp4", [tmp_path / "root-link"]) == (root / "sub" / "clip.mp4").resolve()
    with pytest.raises(InputError):
        confine_path(tmp_path / "outside" / "secret.mp4", [tmp_path / "root-link"])


def test_a_sibling_folder_sharing_the_root_prefix_is_outside(root, tmp_path):
    sibling = tmp_path / "inputs-other"
    sibling.mkdir()
    (sibling / "a.mp4").write_bytes(b"x")
    with pytest.raises(InputError):
        confine_path(sibling / "a.mp4", [root])


def test_relative_and_nul_paths_are_refused(root):
    with pytest.raises(InputError, match="absolute"):
        confine_path(root.relative_to(root.anchor) / "sub" / "clip.mp4", [root])
    with pytest.raises(InputError, match="NUL"):
        validate_input(str(root / "sub" / "clip.mp4") + "\x00.txt", roots=[root], allow_private=False)


def test_file_urls_must_name_the_local_host(root):
    assert file_path("file://localhost/data/a.mp4").as_posix() == "/data/a.mp4"
    with pytest.raises(InputError, match="local"):
        file_path("file://fileserver/share/a.mp4")


def test_a_missing_file_inside_a_root_is_refused_at_submit(root):
    with pytest.raises(InputError, match="does not exist"):
        validate_input((root / "sub" / "nope.mp4").as_uri(), roots=[root], allow_private=False)
    assert validate_input(str(root / "sub" / "clip.mp4"), roots=[root], allow_private=False) == str(root / "sub" / "clip.mp4")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "169.254.1.1",
    "100.64.0.1", "100.100.100.200", "0.0.0.0", "224.0.0.1", "255.255.255.255",
    "::1", "::", "fd00::1", "fe80::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254",
    "64:ff9b::7f00:1", "2002:7f00:1::1", "2002:a00:1::1",
])
def test_private_loopback_link_local_and_metadata_addresses_are_forbidden(address):
    assert is_forbidden_address(address) is True


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert is_forbidden_address(address) is False


def test_loopback_urls_are_refused_unless_private_fetch_is_allowed():
    with pytest.raises(InputError, match="private or reserved"):
        check_http_url("http://127.0.0.1:8080/a.mp4", allow_private=False)
    with pytest.raises(InputError, match="private or reserved"):
        check_http_url("http://[::1]/a.mp4", allow_private=False)
    with pytest.raises(InputError, match="private or reserved"):
        check_http_url("http://localhost/a.mp4", allow_private=False)
    assert "127.0.0.1" in check_http_url("http://127.0.0.1:8080/a.mp4", allow_private=True)


def test_metadata_host_names_are_refused_even_when_private_fetch_is_allowed():
    with pytest.raises(InputError, match="not allowed"):
        check_http_url("http://metadata.google.internal/computeMetadata/v1/", allow_private=True)


def test_urls_with_credentials_or_bad_ports_are_refused():
    with pytest.raises(InputError, match="credentials"):
        check_http_url("http://user:pw@8.8.8.8/a.mp4", allow_private=False)
    with pytest.raises(InputError, match="invalid URL"):
        check_http_url("http://8.8.8.8:99999/a.mp4", allow_private=False)


@pytest.mark.parametrize("uri", ["ftp://8.8.8.8/a.mp4", "gopher://8.8.8.8/", "data:video/mp4;base64,AAAA", "a.mp4"])
def test_unsupported_schemes_are_refused(uri, tmp_path):
    with pytest.raises(InputError, match="unsupported input scheme"):
        validate_input(uri, roots=[tmp_path], allow_private=False)


def test_s3_inputs_need_an_allowed_bucket(tmp_path, monkeypatch):
    # Refused before any request: no bucket is allowed unless the settings name it.
    for name in ("RF_S3_BUCKET", "RF_S3_ALLOWED_INPUT_BUCKETS", "RF_S3_TENANT_INPUT_BUCKETS"):
        monkeypatch.delenv(name, raising=False)
    from renderfarm.core.storage.config import get_storage_settings

    get_storage_settings.cache_clear()
    with pytest.raises(InputError, match="not an allowed input bucket"):
        validate_input("s3://bucket/a.mp4", roots=[tmp_path], allow_private=False)
    get_storage_settings.cache_clear()


def test_check_http_url_refuses_a_non_http_scheme_on_its_own():
    # Redirect targets reach check_http_url directly, without validate_input's scheme check.
    with pytest.raises(InputError, match="unsupported URL scheme"):
        check_http_url("file:///etc/passwd", allow_private=True)


def test_scheme_detection():
    assert input_scheme("/data/a.mp4") == "file"
    assert input_scheme("FILE:///data/a.mp4") == "file"
    assert input_scheme("HTTPS://example.com/a.mp4") == "https"
