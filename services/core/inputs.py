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
    if "\x00" in str(path):
        raise InputError("input path must not contain NUL bytes")
    if ".." in path.parts:
        raise InputError("input path must not contain '..'")
    if not path.is_absolute():
        raise InputError("input path must be absolute")
    try:
        # Symlinks are followed: a link inside a root that points outside is outside.
        real = path.resolve(strict=False)
        real_roots = [Path(root).resolve(strict=False) for root in roots]
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable component
        raise InputError(f"input path {str(path)!r} cannot be resolved: {exc}") from None
    for root in real_roots:
        if real == root or root in real.parents:
            return real
    raise InputError(f"input {str(path)!r} is outside the allowed input roots")


_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a translation mechanism
    (mapped, NAT64, 6to4, Teredo): ``::ffff:127.0.0.1`` is loopback."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    return None


def is_forbidden_address(address: str) -> bool:
    """True for anything but a public unicast address: private, loopback, link-local,
    carrier-grade NAT, multicast, reserved, unspecified, cloud metadata endpoints,
    and IPv6 forms that translate to one of those."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and is_forbidden_address(str(embedded)):
            return True
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.compressed in _METADATA_ADDRESSES
        or ip in ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, used by some clouds
    )


def resolve_host(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    except (UnicodeError, ValueError) as exc:  # an invalid international name, a NUL byte
        raise InputError(f"invalid host {host!r}: {exc}") from None
    return sorted({info[4][0] for info in infos})


def check_http_url(uri: str, *, allow_private: bool) -> list[str]:
    """Validate an http(s) URL; returns the addresses it may be fetched from."""
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https"):
        raise InputError(f"unsupported URL scheme {parts.scheme!r}; use http:// or https://")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise InputError(f"invalid URL: {exc}") from None
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


def validate_input(uri: str, *, roots: list[Path], allow_private: bool, must_exist: bool = True,
                   tenant: str = "default") -> str:
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
    if scheme == "s3":
        check_s3_uri(uri, tenant, must_exist=must_exist)
        return uri
    raise InputError(f"unsupported input scheme {scheme!r}; use file:// under an allowed root, http://, https:// "
                     "or s3:// in an allowed bucket")


def check_s3_uri(uri: str, tenant: str, *, must_exist: bool) -> None:
    """An allowed bucket (per tenant), and the object present when a HEAD can tell:
    a server that cannot be reached now leaves that to the worker (which fails the
    job ``invalid_media`` if the object is missing then)."""
    from renderfarm.core.storage import StorageError, StorageRefError, check_s3_input

    try:
        check_s3_input(uri, tenant, must_exist=must_exist)
    except StorageRefError as exc:
        raise InputError(str(exc)) from None
    except StorageError as exc:
        if exc.reason != "unavailable":
            raise InputError(str(exc)) from None
