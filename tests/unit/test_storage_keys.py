"""Object names, s3:// references and the input allow-list (pure functions)."""

from __future__ import annotations

import pytest

from renderfarm.core.storage.config import StorageSettings
from renderfarm.core.storage.keys import (
    StorageRefError,
    check_input_ref,
    job_id_of,
    output_ref,
    parse_s3_uri,
    upload_ref,
)


def settings(**overrides) -> StorageSettings:
    base = {"storage_backend": "s3", "s3_bucket": "media", "s3_prefix": "/farm/",
            "s3_allowed_input_buckets": "raw,archive", "s3_tenant_input_buckets": '{"alice": ["alice-raw"]}'}
    return StorageSettings(**(base | overrides))


def test_settings_parse_lists_from_the_environment_and_strip_the_prefix():
    s = settings()
    assert s.s3_prefix == "farm"
    assert s.s3_allowed_input_buckets == ["raw", "archive"]
    assert s.input_buckets("alice") == {"media", "raw", "archive", "alice-raw"}
    assert s.input_buckets("bob") == {"media", "raw", "archive"}


def test_credentials_are_never_shown():
    s = settings(s3_access_key_id="AKIDEXAMPLE", s3_secret_access_key="super-secret")
    assert "super-secret" not in repr(s) and "super-secret" not in s.model_dump_json()


@pytest.mark.parametrize("uri", [
    "s3://Bad_Bucket/key", "s3://bucket", "s3://bucket/", "s3://bucket/dir/", "s3://bucket/a/../b",
    "s3://bucket/key?versionId=1", "http://bucket/key", "s3://bucket/a\x00b",
])
def test_malformed_references_are_refused(uri):
    with pytest.raises(StorageRefError):
        parse_s3_uri(uri)


def test_a_reference_keeps_its_key():
    ref = parse_s3_uri("s3://raw/clips/2026/a%20b.mp4")
    assert (ref.bucket, ref.key) == ("raw", "clips/2026/a b.mp4")


def test_outputs_live_under_prefix_tenant_and_job():
    ref = output_ref(settings(), "alice", "j1", "720p.mp4")
    assert ref.uri == "s3://media/farm/alice/j1/720p.mp4"
    assert job_id_of(settings(), "alice", ref.key) == "j1"
    with pytest.raises(StorageRefError):
        output_ref(settings(), "alice", "j1", "../x")


def test_uploads_get_fresh_safe_keys_in_the_tenants_prefix():
    first, second = (upload_ref(settings(), "alice", "../my clip;.mp4") for _ in range(2))
    assert first.key != second.key
    assert first.key.startswith("farm/alice/uploads/") and first.key.endswith("/my_clip_.mp4")
    assert job_id_of(settings(), "alice", first.key) is None


def test_allow_list_per_bucket_and_tenant():
    s = settings()
    assert check_input_ref(s, "bob", parse_s3_uri("s3://raw/x.mp4"))
    assert check_input_ref(s, "alice", parse_s3_uri("s3://alice-raw/x.mp4"))
    with pytest.raises(StorageRefError, match="not an allowed input bucket"):
        check_input_ref(s, "bob", parse_s3_uri("s3://alice-raw/x.mp4"))
    with pytest.raises(StorageRefError, match="not an allowed input bucket"):
        check_input_ref(s, "bob", parse_s3_uri("s3://elsewhere/x.mp4"))


def test_in_the_farms_bucket_a_tenant_reads_only_its_own_prefix():
    s = settings()
    assert check_input_ref(s, "alice", parse_s3_uri("s3://media/farm/alice/uploads/u/x.mp4"))
    for key in ("farm/bob/j1/out.mp4", "farm/alicex/j1/out.mp4", "other/alice/x.mp4"):
        with pytest.raises(StorageRefError, match="must lie under farm/alice/"):
            check_input_ref(s, "alice", parse_s3_uri(f"s3://media/{key}"))


def test_s3_errors_say_what_to_fix_without_secrets():
    from botocore.exceptions import ClientError, EndpointConnectionError

    from renderfarm.core.storage.keys import ObjectRef
    from renderfarm.core.storage.s3 import storage_error

    ref = ObjectRef("media", "farm/a/j/out.mp4")

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "PutObject")

    denied = storage_error(client_error("SignatureDoesNotMatch", 403), "output upload", ref)
    assert denied.reason == "denied" and "check the S3 credentials" in str(denied)
    assert storage_error(client_error("InvalidAccessKeyId", 403), "x", ref).reason == "denied"
    no_bucket = storage_error(client_error("NoSuchBucket", 404), "output upload", ref)
    assert no_bucket.reason == "no_bucket" and "'media' does not exist" in str(no_bucket)
    assert storage_error(client_error("NoSuchKey", 404), "x", ref).reason == "missing"
    assert storage_error(client_error("", 404), "HEAD", ref).reason == "missing"
    assert storage_error(client_error("SlowDown", 503), "x", ref).reason == "unavailable"
    assert storage_error(EndpointConnectionError(endpoint_url="http://s3"), "x", ref).reason == "unavailable"


def test_presigned_urls_are_signed_for_the_public_endpoint():
    from urllib.parse import urlsplit

    from renderfarm.core.storage.keys import ObjectRef
    from renderfarm.core.storage.s3 import S3Storage

    ref = ObjectRef("media", "farm/a/j/out.mp4")
    inside = S3Storage(settings(s3_endpoint="http://seaweedfs:8333", s3_access_key_id="k", s3_secret_access_key="s"))
    assert urlsplit(inside.presign_get(ref)[0]).netloc == "seaweedfs:8333"
    public = S3Storage(settings(s3_endpoint="http://seaweedfs:8333", s3_public_endpoint="https://media.example.com",
                                s3_access_key_id="k", s3_secret_access_key="s"))
    url, expires_at = public.presign_get(ref, ttl_s=600)
    parts = urlsplit(url)
    assert parts.netloc == "media.example.com" and parts.path == "/media/farm/a/j/out.mp4"
    assert "X-Amz-Expires=600" in parts.query and "X-Amz-Signature=" in parts.query
    put_url, _, headers = public.presign_put(ref, media_type="video/mp4")
    assert urlsplit(put_url).netloc == "media.example.com" and headers == {"Content-Type": "video/mp4"}
