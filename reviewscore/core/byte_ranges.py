"""A file's bytes fetched over HTTP into a file on disk, piece by piece (never whole in memory):
byte ranges in parallel, each resumed from its next missing byte after a dropped connection."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from reviewscore.core.errors import SourceFetchError, UploadTooLargeError
from reviewscore.core.settings import Settings
from reviewscore.core.urls import CheckedURL
from reviewscore.core.urls import shown as shown_url

PIECE_BYTES = 256 * 1024
# The bytes as stored: a range of a gzip-encoded answer would be a range of other bytes.
IDENTITY = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class Target:
    """Where the requests for one checked URL go: to the address check_url resolved, never to a
    fresh DNS lookup, so a name cannot re-resolve to an inside address between check and use
    (DNS rebinding). Host and the TLS server name stay the URL's, so certificates are checked
    against the name. Only the first checked address is tried."""

    url: str
    shown: str
    headers: dict[str, str]
    extensions: dict[str, Any]

    @classmethod
    def of(cls, checked: CheckedURL) -> Target:
        parts = urlsplit(checked.url)
        host = parts.hostname or ""
        address = checked.addresses[0] if checked.addresses else host
        netloc = f"[{address}]" if ":" in address else address
        if parts.port is not None:
            netloc += f":{parts.port}"
        tls = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
        return cls(
            url=urlunsplit(parts._replace(netloc=netloc)),
            shown=shown_url(checked.url),
            headers={"Host": parts.netloc},
            extensions=tls,
        )

    def get(self, client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        request = client.build_request(
            "GET", self.url, headers=self.headers | IDENTITY | headers, extensions=self.extensions
        )
        return client.send(request, stream=True)


@dataclass(frozen=True)
class Span:
    start: int
    end: int | None  # the last byte, inclusive; None: to the end of the file


@dataclass
class Progress:
    """Shared by the threads of one fetch. `validator` is the first answer's strong ETag, else
    its Last-Modified: sent as If-Range, so a file replaced mid-fetch answers 200, never a
    range of the new file spliced into the old (a server that sends neither cannot be
    checked)."""

    validator: str | None
    limit: int
    on_progress: Callable[[int], None] | None = None
    # A source slower than this on average past `grace_s` is given up: the fetch holds an
    # upload's place, and a trickling server must not hold it for days.
    min_rate: int = 0
    grace_s: float = 30.0
    started: float = field(default_factory=time.monotonic)
    received: int = 0
    resumes: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.received += n
            total = self.received
        if self.on_progress is not None:
            self.on_progress(total)
        elapsed = time.monotonic() - self.started
        if elapsed > self.grace_s and total / elapsed < self.min_rate:
            raise SourceFetchError(
                f"it arrived at {total / elapsed:,.0f} bytes/s over {elapsed:.0f} s, under the "
                f"minimum of {self.min_rate:,} (REVIEWSCORE_UPLOAD_MIN_BYTES_PER_S)"
            )


def validator_of(response: httpx.Response) -> str | None:
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("last-modified")


class Retryable(Exception):
    """An answer worth asking again for (a 5xx, a 429, a body that ended early)."""


class Stopped(Exception):
    """Another range of the same fetch failed: this one stops too."""


def backoff_s(failures: int) -> float:
    return float(min(4.0, 0.2 * 2**failures))


def _check_answer(response: httpx.Response, span: Span, pos: int, progress: Progress) -> None:
    status = response.status_code
    if status >= 500 or status == 429:
        raise Retryable(f"answered {status}")
    if status not in (200, 206):
        raise SourceFetchError(f"answered {status} {response.reason_phrase}", 422)
    if progress.validator is not None and validator_of(response) != progress.validator:
        raise SourceFetchError(
            "the file changed during the fetch (its ETag or Last-Modified is not the first "
            "answer's): send the job again"
        )
    if status == 200 and (pos > 0 or span.end is not None):
        raise SourceFetchError(
            f"the server sent the whole file when asked for bytes from {pos:,}: it does not "
            "serve byte ranges to resume from (or the file changed); send the job again"
        )
    if status == 206:
        first = response.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
        if first != str(pos):
            raise SourceFetchError(f"asked for bytes from {pos:,}, the server sent {first!r}")


def _write(fd: int, piece: bytes, pos: int) -> None:
    view = memoryview(piece)
    while view:
        written = os.pwrite(fd, view, pos)
        view, pos = view[written:], pos + written


def fetch_span(
    client: httpx.Client,
    target: Target,
    fd: int,
    span: Span,
    progress: Progress,
    settings: Settings,
    first: httpx.Response | None = None,
) -> int:
    """Writes the span's bytes at their offsets in fd and returns the offset after the last.
    A dropped connection, a 5xx or a body cut short asks again from the next missing byte;
    `fetch_attempts` tries in a row that bring nothing end it. `first`: an answer already
    received for the span's start."""
    pos, failures, response = span.start, 0, first
    while True:
        if progress.stop.is_set():
            raise Stopped
        try:
            if response is None:
                ranged = {"Range": f"bytes={pos}-{'' if span.end is None else span.end}"}
                if progress.validator:
                    ranged["If-Range"] = progress.validator
                response = target.get(client, ranged)
            _check_answer(response, span, pos, progress)
            for piece in response.iter_raw(PIECE_BYTES):
                if progress.stop.is_set():
                    raise Stopped
                _write(fd, piece, pos)
                pos, failures = pos + len(piece), 0
                progress.add(len(piece))
                if pos > progress.limit:
                    raise UploadTooLargeError(
                        f"{target.shown} is over the limit of {progress.limit:,} bytes "
                        "(REVIEWSCORE_MAX_UPLOAD_BYTES)"
                    )
            if span.end is not None and pos <= span.end:
                raise Retryable(f"the answer ended at byte {pos:,}")
            return pos
        except (httpx.TransportError, Retryable) as exc:
            failures += 1
            what = str(exc) or type(exc).__name__
            if failures >= settings.fetch_attempts:
                raise SourceFetchError(
                    f"{target.shown}: {what} at byte {pos:,}, {failures} times in a row"
                ) from None
            with progress.lock:
                progress.resumes += 1
            time.sleep(backoff_s(failures))
        except SourceFetchError as exc:
            raise SourceFetchError(f"{target.shown}: {exc.message}", exc.status_code) from None
        finally:
            if response is not None:
                response.close()
                response = None


def fetch_ranges(
    client: httpx.Client, target: Target, fd: int, size: int, progress: Progress, settings: Settings
) -> int:
    """Fetches bytes 0..size-1 in ranges of `fetch_range_bytes`, `fetch_parallel` at once, into
    fd (already `size` long); the first failure stops the others. Returns how many ranges."""
    step = settings.fetch_range_bytes
    spans = [Span(start, min(start + step, size) - 1) for start in range(0, size, step)]
    with ThreadPoolExecutor(settings.fetch_parallel, thread_name_prefix="fetch-range") as pool:
        futures = [
            pool.submit(fetch_span, client, target, fd, span, progress, settings) for span in spans
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            progress.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed[0].exception()  # type: ignore[misc]
    return len(spans)
