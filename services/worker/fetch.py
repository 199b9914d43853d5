"""Bringing a job's input onto local disk, with the input rules checked again."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from renderfarm.core.inputs import (
    InputError,
    check_http_url,
    confine_path,
    file_path,
    input_scheme,
)
from renderfarm.core.settings import Settings
from renderfarm.core.storage import StorageError, StorageRefError, Stopped, fetch_s3_input
from renderfarm.worker.errors import InvalidInput, InvalidMedia, JobCancelled, TransientError

MAX_REDIRECTS = 5

# Worth another attempt: the server is busy or failing, not the reference wrong.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


def readable_roots(settings: Settings) -> list[Path]:
    """Where a worker may read local media: the input roots, and the farm's own outputs
    folder, where an earlier step (a workflow's chunk, transcript, shots) published."""
    return [*settings.input_roots, settings.outputs_dir]


def local_input(uri: str, settings: Settings, work_dir: Path, *, tenant: str = "default",
                should_stop=lambda: False) -> Path:
    try:
        scheme = input_scheme(uri)
        if scheme == "file":
            # The farm's own outputs are inputs too (workflow steps read earlier steps'
            # outputs); the API refuses them in a client's request (input_roots only).
            path = confine_path(file_path(uri), readable_roots(settings))
            if not path.is_file():
                raise InvalidMedia(f"input file {str(file_path(uri))!r} does not exist")
            return path
        if scheme in ("http", "https"):
            return _download(uri, settings, work_dir)
        if scheme == "s3":
            return s3_input(uri, tenant, work_dir, should_stop)
        raise InvalidInput(f"unsupported input scheme {scheme!r}")
    except InputError as exc:
        raise InvalidInput(str(exc)) from None


def s3_input(uri: str, tenant: str, work_dir: Path, should_stop) -> Path:
    """An ``s3://`` input streamed into the work folder, storage errors as job errors."""
    try:
        return fetch_s3_input(uri, tenant, work_dir, should_stop=should_stop)
    except StorageRefError as exc:
        raise InvalidInput(str(exc)) from None
    except Stopped:
        raise JobCancelled(uri) from None
    except StorageError as exc:
        if exc.reason == "missing":
            raise InvalidMedia(str(exc)) from None
        if exc.reason == "unavailable":
            raise TransientError(str(exc)) from None
        raise InvalidInput(str(exc)) from None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def pinned_target(url: httpx.URL, address: str | None) -> tuple[httpx.URL, dict[str, str], dict]:
    """A request that connects to an address that was checked, not to whatever a
    second DNS lookup answers (DNS rebinding): the URL carries the address, the Host
    header and the TLS server name (certificate check included) carry the host name."""
    if address is None or _is_ip_literal(url.host):
        return url, {}, {}
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return url.copy_with(host=address), headers, extensions


def _send(client: httpx.Client, url: httpx.URL, addresses: list[str]) -> httpx.Response:
    """GET ``url`` from the first checked address that accepts a connection."""
    candidates: list[str | None] = list(addresses) or [None]
    for position, address in enumerate(candidates):
        request_url, headers, extensions = pinned_target(url, address)
        # Media is not worth compressing in transit; asking for identity keeps the
        # size limit about what the server sends as well as what lands on disk.
        headers["Accept-Encoding"] = "identity"
        request = client.build_request("GET", request_url, headers=headers, extensions=extensions)
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError:
            if position == len(candidates) - 1 or _is_ip_literal(url.host):
                raise
    raise AssertionError("unreachable")


def _download(uri: str, settings: Settings, work_dir: Path) -> Path:
    name = Path(urlsplit(uri).path).name or "input"
    target = work_dir / f"input-{name}"[:200]
    try:
        return _fetch_to(uri, target, settings)
    except BaseException:
        # Half a download is never left behind for anything to read.
        target.unlink(missing_ok=True)
        raise


def _fetch_to(uri: str, target: Path, settings: Settings) -> Path:
    limit = settings.http_max_download_bytes
    # Redirects are followed by hand so every hop is checked against the address rules.
    try:
        url = httpx.URL(uri)
        with httpx.Client(timeout=settings.http_timeout_s, follow_redirects=False, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                addresses = check_http_url(str(url), allow_private=settings.allow_private_fetch)
                response = _send(client, url, addresses)
                try:
                    if response.is_redirect:  # a 3xx with a Location header
                        url = url.join(response.headers["location"])
                        continue
                    _check_status(response.status_code)
                    _check_declared_size(response.headers.get("content-length"), limit)
                    written = 0
                    with open(target, "wb") as out:
                        for chunk in response.iter_bytes(1 << 20):
                            written += len(chunk)
                            if written > limit:
                                raise InvalidInput(f"input exceeds the download limit of {limit} bytes")
                            out.write(chunk)
                    return target
                finally:
                    response.close()
            raise InvalidInput(f"input download failed: more than {MAX_REDIRECTS} redirects")
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise InvalidInput(f"input URL is not usable: {exc}") from None
    except httpx.TransportError as exc:
        raise TransientError(f"input download failed: {exc}") from None


def _check_status(status: int) -> None:
    if status >= 500 or status in _TRANSIENT_STATUSES:
        raise TransientError(f"input download failed: HTTP {status}")
    if status != 200:
        raise InvalidMedia(f"input download failed: HTTP {status}")


def _check_declared_size(header: str | None, limit: int) -> None:
    if not header:
        return
    try:
        declared = int(header)
    except ValueError:
        raise InvalidInput(f"input download failed: invalid Content-Length {header!r}") from None
    if declared > limit:
        raise InvalidInput(f"input is {declared} bytes; the limit is {limit}")
