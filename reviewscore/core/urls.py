"""The one check every URL the service is given passes (sources to fetch, result PUT targets,
webhooks): the operator's allow-list REVIEWSCORE_URL_ALLOW, file:// dirs, and no private hosts."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from reviewscore.core.errors import URLRefusedError
from reviewscore.core.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed the checks, with the addresses its host resolved to (connect to one
    of these, not to a fresh lookup, so a DNS answer cannot change between check and use)."""

    url: str
    addresses: tuple[str, ...]
    file_path: Path | None = None


def shown(url: str) -> str:
    """The URL as messages and job views show it: without its query string, where a presigned
    URL carries its signature, and cut to 200 characters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0][:200]
    hidden = "?..." if parts.query else ""
    # Credentials (refused anyway) are left out as the signature is.
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:200] + hidden


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def _path_under(path: str, prefix: str) -> bool:
    if not prefix or prefix == "/":
        return True
    if path == prefix:
        return True
    return path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _is_literal_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unsafe(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


def _resolve(host: str, port: int | None) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise URLRefusedError(f"the host {host!r} cannot be resolved: {exc}") from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def _check_file(url: str, parts: SplitResult, settings: Settings) -> CheckedURL:
    # resolve() follows symlinks and removes "..", so the test below sees the real location.
    folders = _split(settings.url_file_dirs)
    if not folders:
        raise URLRefusedError(
            "file:// URLs are refused: the operator has not listed any folder in "
            "REVIEWSCORE_URL_FILE_DIRS"
        )
    path = Path(unquote(parts.path)).resolve()
    for folder in folders:
        if path.is_relative_to(Path(folder).resolve()):
            return CheckedURL(url=url, addresses=(), file_path=path)
    raise URLRefusedError(
        f"the file URL {shown(url)!r} is not under a folder listed in REVIEWSCORE_URL_FILE_DIRS"
    )


def check_url(url: str, settings: Settings) -> CheckedURL:
    """The URL, checked against the allow-list; raises URLRefusedError naming the problem."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise URLRefusedError(f"{shown(url)!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    # file:// URLs have their own list (folders), so an operator who lists only a dump folder
    # needs no network prefix.
    if scheme == "file":
        return _check_file(url, parts, settings)
    prefixes = _split(settings.url_allow)
    if not prefixes:
        raise URLRefusedError(
            "URLs are refused: the operator has not listed any in REVIEWSCORE_URL_ALLOW"
        )
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise URLRefusedError(f"{shown(url)!r}: only http and https URLs are accepted")
    if parts.username or parts.password:
        raise URLRefusedError(f"{shown(url)!r}: credentials in the URL are not accepted")
    origin = (scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme])
    matched = None
    for prefix in prefixes:
        allowed = urlsplit(prefix)
        if _origin(allowed) == origin and _path_under(parts.path or "/", allowed.path):
            matched = allowed
            break
    if matched is None:
        raise URLRefusedError(
            f"{shown(url)!r} does not start with any prefix in REVIEWSCORE_URL_ALLOW"
        )
    addresses = _resolve(origin[1], origin[2])
    # A prefix naming the host by literal IP is the operator's explicit consent to reach that
    # address, loopback or private included (the tests list http://127.0.0.1:PORT/). A host
    # name is checked after lookup: a public-looking name must not lead inside the network.
    if not _is_literal_ip(matched.hostname or ""):
        bad = [a for a in addresses if _unsafe(a)]
        if bad:
            raise URLRefusedError(
                f"{shown(url)!r}: its host resolves to {bad[0]}, a private, loopback, "
                "link-local, multicast or reserved address"
            )
    return CheckedURL(url=url, addresses=addresses)
