"""A job's source_url fetched to a file: http(s) into the spool, in parallel byte ranges where
the server serves them; file:// read where it lies. Every URL, each redirect too, passes
check_url, and a redirect may not leave the origin of the URL given."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from reviewscore.core.byte_ranges import (
    Progress,
    Span,
    Target,
    backoff_s,
    fetch_ranges,
    fetch_span,
    validator_of,
)
from reviewscore.core.errors import SourceFetchError, UploadTooLargeError, URLRefusedError
from reviewscore.core.settings import Settings
from reviewscore.core.urls import DEFAULT_PORTS, CheckedURL, check_url
from reviewscore.core.urls import shown as shown_url

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    size: int
    filename: str | None  # the URL path's last segment
    content_type: str | None
    spooled: bool  # False: a file:// source, read in place and never deleted
    ranges: int  # byte ranges fetched in parallel; 0: one streamed answer, or a local file
    received: int  # bytes over the network, those fetched again after a drop included
    resumes: int  # requests sent again after a dropped connection or a 5xx


def _filename(url: str) -> str | None:
    return unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2]) or None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def _too_large(shown: str, size: int, settings: Settings) -> UploadTooLargeError:
    return UploadTooLargeError(
        f"{shown} is {size:,} bytes, over the limit of {settings.max_upload_bytes:,} "
        "(REVIEWSCORE_MAX_UPLOAD_BYTES)"
    )


def _local(checked: CheckedURL, settings: Settings) -> FetchedFile:
    path = checked.file_path
    assert path is not None
    if not path.is_file():
        raise SourceFetchError(f"{shown_url(checked.url)}: no such file", 422)
    size = path.stat().st_size
    if size > settings.max_upload_bytes:
        raise _too_large(shown_url(checked.url), size, settings)
    return FetchedFile(path, size, path.name, None, spooled=False, ranges=0, received=0, resumes=0)


def _ask_first(client: httpx.Client, target: Target, settings: Settings) -> httpx.Response:
    """The first answer, to a one-byte range: 206 says ranges work and gives the size."""
    for failures in range(1, settings.fetch_attempts + 1):
        try:
            response = target.get(client, {"Range": "bytes=0-0"})
        except httpx.TransportError as exc:
            what = str(exc) or type(exc).__name__
        else:
            if response.status_code < 500 and response.status_code != 429:
                return response
            what = f"answered {response.status_code}"
            response.close()
        if failures < settings.fetch_attempts:
            time.sleep(backoff_s(failures))
    raise SourceFetchError(f"{target.shown}: {what}, {settings.fetch_attempts} times in a row")


def _follow(client: httpx.Client, url: str, settings: Settings) -> tuple[Target, httpx.Response]:
    """Follows redirects by hand: each one checked, and only within the first URL's origin."""
    checked = check_url(url, settings)
    for _ in range(MAX_REDIRECTS + 1):
        target = Target.of(checked)
        response = _ask_first(client, target, settings)
        if not response.is_redirect:
            return target, response
        response.close()
        following = urljoin(checked.url, response.headers["location"])
        if _origin(following) != _origin(url):
            raise URLRefusedError(
                f"{target.shown} redirects to {shown_url(following)!r}, another origin "
                "(scheme, host and port) than the URL given: refused"
            )
        checked = check_url(following, settings)
    raise SourceFetchError(f"{shown_url(url)}: more than {MAX_REDIRECTS} redirects", 422)


def _size_of(response: httpx.Response) -> int | None:
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
    else:
        total = response.headers.get("content-length", "")
    return int(total) if total.isdigit() else None


def _fetch_http(
    client: httpx.Client,
    url: str,
    settings: Settings,
    path: Path,
    on_progress: Callable[[int], None] | None,
) -> FetchedFile:
    target, first = _follow(client, url, settings)
    progress = Progress(
        validator_of(first),
        settings.max_upload_bytes,
        on_progress,
        min_rate=settings.upload_min_bytes_per_s,
        grace_s=settings.upload_idle_timeout_s,
    )
    try:
        # A one-byte range of an empty file is not satisfiable: 416, "bytes */0".
        empty = first.status_code == 416 and first.headers.get("content-range") == "bytes */0"
        if first.status_code not in (200, 206) and not empty:
            raise SourceFetchError(
                f"{target.shown}: answered {first.status_code} {first.reason_phrase}", 422
            )
        size = 0 if empty else _size_of(first)
        if size is not None and size > settings.max_upload_bytes:
            raise _too_large(target.shown, size, settings)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            ranges = 0
            if empty:
                total = 0
            elif first.status_code == 206 and size is not None:
                first.close()
                # Reserved up front: a full disk fails now, not after most of the file came.
                if size:
                    os.posix_fallocate(fd, 0, size)
                ranges = fetch_ranges(client, target, fd, size, progress, settings)
                total = size
            else:
                total = fetch_span(client, target, fd, Span(0, None), progress, settings, first)
        finally:
            os.close(fd)
    finally:
        first.close()
    return FetchedFile(
        path,
        total,
        _filename(url),
        first.headers.get("content-type"),
        spooled=True,
        ranges=ranges,
        received=progress.received,
        resumes=progress.resumes,
    )


def fetch_to_file(
    url: str,
    settings: Settings,
    dest_dir: Path,
    on_progress: Callable[[int], None] | None = None,
) -> FetchedFile:
    """The URL's file: an http(s) one written to a new file in dest_dir (the caller deletes
    it: see `fetched`), a file:// one where it lies. `on_progress` gets the bytes received so
    far. Raises URLRefusedError, SourceFetchError or UploadTooLargeError, naming the URL
    without its query (a presigned URL's signature)."""
    checked = check_url(url, settings)
    if checked.file_path is not None:
        return _local(checked, settings)
    dest_dir.mkdir(parents=True, exist_ok=True)
    # The spool's "upload-" prefix: left-overs of a process that died mid-fetch are removed
    # with the Parquet spool's (reviewscore/core/ingest/parquet.py, after a day).
    path = dest_dir / f"upload-source-{uuid.uuid4().hex}"
    # trust_env off: a proxy from the environment would resolve the name itself, past the
    # address check_url approved.
    with httpx.Client(
        timeout=settings.fetch_timeout_s, follow_redirects=False, trust_env=False
    ) as client:
        try:
            return _fetch_http(client, url, settings, path, on_progress)
        except BaseException:
            path.unlink(missing_ok=True)
            raise


@contextmanager
def fetched(
    url: str, settings: Settings, on_progress: Callable[[int], None] | None = None
) -> Iterator[FetchedFile]:
    """fetch_to_file into the spool (var_dir/spool); the spooled file is deleted on exit."""
    found = fetch_to_file(url, settings, settings.var_dir / "spool", on_progress)
    try:
        yield found
    finally:
        if found.spooled:
            found.path.unlink(missing_ok=True)
