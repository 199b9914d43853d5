"""Bringing a job's input onto local disk, with the input rules checked again."""

from __future__ import annotations

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
from renderfarm.worker.errors import InvalidInput, InvalidMedia, TransientError


def local_input(uri: str, settings: Settings, work_dir: Path) -> Path:
    try:
        scheme = input_scheme(uri)
        if scheme == "file":
            path = confine_path(file_path(uri), settings.input_roots)
            if not path.is_file():
                raise InvalidMedia(f"input file {str(file_path(uri))!r} does not exist")
            return path
        if scheme in ("http", "https"):
            return _download(uri, settings, work_dir)
        raise InvalidInput(f"unsupported input scheme {scheme!r}")
    except InputError as exc:
        raise InvalidInput(str(exc)) from None


def _download(uri: str, settings: Settings, work_dir: Path) -> Path:
    addresses = check_http_url(uri, allow_private=settings.allow_private_fetch)
    name = Path(urlsplit(uri).path).name or "input"
    target = work_dir / f"input-{name}"[:200]
    limit = settings.http_max_download_bytes
    # Redirects are followed by hand so every hop is checked against the address rules.
    url = uri
    try:
        with httpx.Client(timeout=settings.http_timeout_s, follow_redirects=False, trust_env=False) as client:
            for _ in range(5):
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers["location"]))
                        check_http_url(url, allow_private=settings.allow_private_fetch)
                        continue
                    if response.status_code >= 500:
                        raise TransientError(f"input download failed: HTTP {response.status_code}")
                    if response.status_code != 200:
                        raise InvalidMedia(f"input download failed: HTTP {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > limit:
                        raise InvalidInput(f"input is {declared} bytes; the limit is {limit}")
                    written = 0
                    with open(target, "wb") as out:
                        for chunk in response.iter_bytes(1 << 20):
                            written += len(chunk)
                            if written > limit:
                                raise InvalidInput(f"input exceeds the download limit of {limit} bytes")
                            out.write(chunk)
                    return target
            raise InvalidInput("too many redirects")
    except httpx.TransportError as exc:
        raise TransientError(f"input download failed: {exc}") from None
    finally:
        del addresses
