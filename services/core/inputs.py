"""Input references: which URIs a job may read, checked before anything is enqueued.

``file://`` (or a bare absolute path) must resolve — symlinks followed — under one
of the allowed roots. ``http(s)://`` must not point at a private, loopback,
link-local or metadata address unless the operator allowed that by setting.
The API checks at submit time; the worker checks again right before reading,
because a symlink or DNS answer can change in between.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

# Cloud metadata endpoints that are not covered by the private/link-local ranges.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class InputError(ValueError):
    """The input reference is not allowed or not usable (HTTP 422 at submit)."""


def input_scheme(uri: str) -> str:
    if uri.startswith("/"):
        return "file"
    return urlsplit(uri).scheme.lower()


def file_path(uri: str) -> Path:
    if uri.startswith("/"):
        return Path(uri)
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise InputError("file:// inputs must be local (file:///path)")
    return Path(unquote(parts.path))


def confine_path(path: Path, roots: list[Path]) -> Path:
    """The real path of ``path`` if it lies under one of ``roots``; InputError otherwise."""
    if ".." in path.parts:
        raise InputError("input path must not contain '..'")
    if not path.is_absolute():
        raise InputError("input path must be absolute")
    real = path.resolve(strict=False)
    for root in roots:
        if real == root or root in real.parents:
            return real
    raise InputError(f"input {str(path)!r} is outside the allowed input roots")


def is_forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or str(ip) in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
        or ip in ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, used by some clouds
    )


def resolve_host(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    return sorted({info[4][0] for info in infos})


def check_http_url(uri: str, *, allow_private: bool) -> list[str]:
    """Validate an http(s) URL; returns the addresses it may be fetched from."""
    parts = urlsplit(uri)
    if not parts.hostname:
        raise InputError("URL has no host")
    if parts.username or parts.password:
        raise InputError("URLs with credentials are not accepted")
    host = parts.hostname.lower().rstrip(".")
    if host in _METADATA_HOSTS:
        raise InputError(f"host {host!r} is not allowed")
    addresses = resolve_host(host)
    if not allow_private:
        bad = [a for a in addresses if is_forbidden_address(a)]
        if bad:
            raise InputError(f"host {host!r} resolves to a private or reserved address ({bad[0]}); refused")
    return addresses


def validate_input(uri: str, *, roots: list[Path], allow_private: bool, must_exist: bool = True) -> str:
    """Check an input reference at submit time. Returns it unchanged, or raises InputError."""
    scheme = input_scheme(uri)
    if scheme == "file":
        real = confine_path(file_path(uri), roots)
        if must_exist and not real.is_file():
            raise InputError(f"input file {str(file_path(uri))!r} does not exist")
        return uri
    if scheme in ("http", "https"):
        check_http_url(uri, allow_private=allow_private)
        return uri
    raise InputError(f"unsupported input scheme {scheme!r}; use file:// under an allowed root, http:// or https://")
