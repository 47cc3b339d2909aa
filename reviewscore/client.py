"""The Python client of the API (HTTP only: it imports no server code), used by the CLI, the tests
and the benchmark. The server says whether a job is finished; `wait()` asks it.

    from reviewscore import Client
    client = Client("http://127.0.0.1:8000")
    job = client.wait(client.submit("reviews.csv")["id"])
    rows = client.results(job["id"])          # or results(..., as_dataframe=True)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx

from reviewscore import splitting

if TYPE_CHECKING:  # pandas is optional: imported only where a DataFrame is asked for
    import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"
# POST /v1/score takes this many reviews at most (the server's default limit); score() splits.
SCORE_BATCH = 256
UPLOAD_PIECE = 1024 * 1024
DATAFRAME_SLICE_ROWS = 20_000
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# Names a shell user can type for a separator ("\t" arrives as backslash-t from a shell).
DELIMITER_NAMES = {
    "comma": ",",
    "semicolon": ";",
    "tab": "\t",
    "\\t": "\t",
    "pipe": "|",
}
UPLOAD_TYPES = {
    ".gz": "application/gzip",
    ".parquet": "application/vnd.apache.parquet",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".tsv": "text/tab-separated-values",
}
RESULT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class ClientError(Exception):
    """Anything the client reports to its caller; the message is one sentence with a next step."""


class ApiError(ClientError):
    """The API answered with an error; `detail` is its message, `status_code` its HTTP status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class NotReviewscoreError(ClientError):
    """Something answered at the address, but not the reviewscore API (another web server)."""


class ServiceUnreachableError(ClientError, ConnectionError):
    """No answer from the address: not running, a wrong host or port, or the connection broke."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message)
        self.url = url


class WaitTimeoutError(ClientError, TimeoutError):
    """wait() gave up before the job finished; the job goes on."""


def result_format_for(path: Path | str) -> str:
    """The results format a file name asks for: .jsonl, .parquet, else CSV."""
    return RESULT_SUFFIXES.get(Path(path).suffix.lower(), "csv")


def normalise_url(url: str) -> str:
    """The API address as httpx needs it; one without a scheme is refused with the fix."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url, re.IGNORECASE):
        if "://" in url:
            raise ClientError(f"the API address {url!r} is not http:// or https://")
        raise ClientError(
            f"the API address {url!r} has no scheme: write http://{url} "
            "(in --url or REVIEWSCORE_API_URL)"
        )
    return url


def _unreachable(url: str, exc: httpx.TransportError) -> ServiceUnreachableError:
    text = str(exc) or exc.__class__.__name__
    where = f"the reviewscore API at {url}"
    if isinstance(exc, httpx.TimeoutException):
        message = f"{where} did not answer in time ({text}): is it overloaded or stuck?"
    elif isinstance(exc, httpx.ConnectError) and re.search(
        r"Name or service not known|nodename nor servname|getaddrinfo|Temporary failure in name",
        text,
    ):
        message = (
            f"cannot find the host of {url}: check the address in --url or REVIEWSCORE_API_URL"
        )
    elif isinstance(exc, httpx.ConnectError):
        message = (
            f"cannot connect to {where} ({text}): start it with `reviewscore run` "
            "(or `make run`), or point --url / REVIEWSCORE_API_URL at it"
        )
    else:
        message = f"the connection to {where} broke ({text}): is it still running?"
    return ServiceUnreachableError(message, url)


def _json_body(response: httpx.Response) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _not_reviewscore(response: httpx.Response, base: str) -> NotReviewscoreError:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return NotReviewscoreError(
        f"{base} is not a reviewscore API ({response.request.method} {response.url.path} "
        f"answered {response.status_code} with {kind}): check --url or REVIEWSCORE_API_URL"
    )


def _check(response: httpx.Response, base: str) -> None:
    """Raises ApiError with the API's `detail`, or NotReviewscoreError when the answer does not
    come from this API (every error it sends is JSON with a `detail`)."""
    if response.is_success:
        return
    body = _json_body(response)
    if not isinstance(body, dict) or "detail" not in body:
        raise _not_reviewscore(response, base)
    detail = body["detail"]
    if not isinstance(detail, str):  # an older server's validation list
        detail = "; ".join(
            str(item.get("msg", item)) if isinstance(item, dict) else str(item)
            for item in (detail if isinstance(detail, list) else [detail])
        )
    raise ApiError(response.status_code, detail)


def _labels(labels: dict[str, str] | None) -> list[str] | None:
    """A job's labels as the query's repeated label=key:value."""
    return [f"{k}:{v}" for k, v in labels.items()] if labels else None


def _poll_until_finished(
    fetch: Callable[[], dict[str, Any]],
    what: str,
    poll: float,
    timeout: float | None,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Polls `fetch` (a job, a training run) until the server says it is `finished`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = fetch()
        if on_progress is not None:
            on_progress(state)
        if state["finished"]:
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"{what} is still {state['status']} after {timeout}s; it goes on: wait again later"
            )
        time.sleep(poll)


def _options(**values: Any) -> dict[str, Any]:
    """Upload options as query parameters: unset ones left out, lists comma-joined (but the
    labels, one `label` parameter each)."""
    params: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or value == "" or value == []:
            continue
        if name == "label":
            params[name] = list(value)
            continue
        if name == "delimiter":
            value = DELIMITER_NAMES.get(str(value).lower(), value)
        elif isinstance(value, list | tuple):
            value = ",".join(str(v) for v in value)
        params[name] = str(value)
    return params


def _multipart(
    filename: str, content_type: str, pieces: Iterable[bytes]
) -> tuple[str, Iterator[bytes], int]:
    """A multipart/form-data body with one `file` part, streamed piece by piece (the server
    records the part's filename as the job's); returns its boundary, the body and the size of
    everything but the pieces."""
    boundary = uuid.uuid4().hex
    safe_name = filename.replace('"', "%22").replace("\r", " ").replace("\n", " ")
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        yield from pieces
        yield tail

    return boundary, body(), len(head) + len(tail)


def _file_pieces(f: BinaryIO, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    while piece := f.read(UPLOAD_PIECE):
        if progress is not None:
            progress(len(piece))
        yield piece


def _require_pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ClientError(
            "pandas is not installed: `pip install pandas` to use DataFrames "
            "(or call results() without as_dataframe=True for a list of dicts)"
        ) from exc
    return pandas


def _dataframe_csv(frame: pd.DataFrame) -> Iterator[bytes]:
    """The DataFrame as CSV, a slice at a time: memory stays bounded by one slice."""
    for start in range(0, max(len(frame), 1), DATAFRAME_SLICE_ROWS):
        piece = frame.iloc[start : start + DATAFRAME_SLICE_ROWS]
        yield piece.to_csv(index=False, header=start == 0, lineterminator="\r\n").encode()


class _Drain(io.RawIOBase):
    """A write-only file whose bytes are taken out after each row group (Parquet streaming)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += bytes(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _dataframe_parquet(frame: pd.DataFrame) -> Iterator[bytes]:
    """The DataFrame as Parquet, one row group per slice, each sent as soon as it is written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ClientError("pyarrow is not installed: `pip install pyarrow`, or send CSV") from exc
    sink = _Drain()
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(sink, schema) as writer:
        for start in range(0, len(frame), DATAFRAME_SLICE_ROWS):
            piece = frame.iloc[start : start + DATAFRAME_SLICE_ROWS]
            writer.write_table(pa.Table.from_pandas(piece, schema=schema, preserve_index=False))
            yield sink.take()
    yield sink.take()


class Client:
    """A reviewscore API at `url` (default REVIEWSCORE_API_URL, else http://127.0.0.1:8000).

    Errors: ApiError (the API refused: `status_code`, `detail`), ServiceUnreachableError (no
    answer; a ConnectionError), NotReviewscoreError (another server answered), WaitTimeoutError;
    all are ClientError, whose message says what to do next."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        given = url or os.environ.get("REVIEWSCORE_API_URL") or DEFAULT_URL
        # Several API hosts, comma-separated: a request whose connection fails is tried on the
        # next one, and the parts of an upload go to each in turn.
        self.urls = [normalise_url(u) for u in given.split(",") if u.strip()]
        self.url = self.urls[0]
        self._turn = itertools.count()
        self._sending: dict[str, threading.Thread] = {}
        self._send_errors: dict[str, BaseException] = {}
        api_key = api_key or os.environ.get("REVIEWSCORE_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        headers["Accept"] = "application/json"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing ----

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if len(self.urls) == 1:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise _unreachable(self.url, exc) from exc
            _check(response, self.url)
            return response
        first = next(self._turn)
        for k in range(len(self.urls)):
            base = self.urls[(first + k) % len(self.urls)]
            try:
                response = self.http.request(method, base + path, **kwargs)
            except httpx.TransportError as exc:
                if k == len(self.urls) - 1:
                    raise _unreachable(base, exc) from exc
                continue
            _check(response, base)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        body = _json_body(response)
        if body is None:
            raise _not_reviewscore(response, self.url)
        return body

    # ------------------------------------------------------------------ scoring ----

    def score(self, texts: list[str], model: str | None = None) -> dict[str, Any]:
        """Scores reviews right away: {"model", "model_version", "results": [{"p_positive",
        "label", "truncated"}, ...]} in the order given (sent in requests of 256)."""
        answer: dict[str, Any] = {}
        results: list[dict[str, Any]] = []
        for start in range(0, max(len(texts), 1), SCORE_BATCH):
            answer = self._json(
                "POST",
                "/v1/score",
                json={"reviews": texts[start : start + SCORE_BATCH], "model": model},
            )
            results.extend(answer["results"])
        return {**answer, "results": results}

    def submit(
        self,
        source: str | Path | pd.DataFrame,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        model: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        format: str | None = None,
        keep_columns: list[str] | str | None = None,
        label_column: str | None = None,
        positive_from: float | None = None,
        filename: str | None = None,
        send_as: str = "csv",
        progress: Callable[[int], None] | None = None,
        parallel: int = 4,
        wait: bool = True,
        part_bytes: int = splitting.PART_BYTES,
        keep_texts: bool = False,
        result_url: str | None = None,
        result_format: str | None = None,
        on_resume: Callable[[str], None] | None = None,
        labels: dict[str, str] | None = None,
        deadline: str | None = None,
        results_expire_after: str | None = None,
        max_failed_fraction: float | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """Uploads a file (CSV, TSV, JSON Lines, Parquet; gzip welcome) or a pandas DataFrame
        (streamed as CSV, or Parquet with send_as="parquet") and returns the job (202).
        Options left out are detected by the server; `delimiter` takes a character or one of
        comma, semicolon, tab, pipe; `keep_columns` input columns to return with the scores.
        `labels` (up to 16) come back as the job's `metadata`; `deadline` ("2h") ends the job
        `expired` with the rows done; `idempotency_key` makes the same submission, sent again
        within 24 h, answer the same job; `callback_url` gets a signed completion webhook once
        the job is finished (see deliveries()); `label_column` (found by name if left out) the
        rows' own labels, and `positive_from` the rating from which a label is positive: the
        finished job's summary then holds an evaluation (see evaluation())."""
        params = _options(
            text_column=text_column,
            id_column=id_column,
            model=model,
            encoding=encoding,
            delimiter=delimiter,
            format=format,
            keep_columns=keep_columns,
            label_column=label_column,
            positive_from=positive_from,
            keep_texts="true" if keep_texts else None,
            result_url=result_url,
            result_format=result_format,
            label=_labels(labels),
            deadline=deadline,
            results_expire_after=results_expire_after,
            max_failed_fraction=max_failed_fraction,
            callback_url=callback_url,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            if parallel >= 1 and _splittable(path, format):
                if filename or path.name:
                    params["filename"] = filename or path.name
                upload = PartsUpload(self, path, params, parallel, part_bytes, format, headers)
                return upload.run(wait=wait, progress=progress, on_resume=on_resume)
            return self._submit_file(path, params, filename, progress, headers)
        if send_as == "parquet":
            pieces, ctype = _dataframe_parquet(source), UPLOAD_TYPES[".parquet"]
            params.setdefault("format", "parquet")
        else:
            pieces, ctype = _dataframe_csv(source), "text/csv"
        name = filename or f"dataframe.{'parquet' if send_as == 'parquet' else 'csv'}"
        boundary, body, _ = _multipart(name, ctype, pieces)
        return self._post_upload(params, body, boundary, None, headers)

    def submit_url(
        self,
        source_url: str,
        *,
        labels: dict[str, str] | None = None,
        keep_texts: bool = False,
        idempotency_key: str | None = None,
        **options: str | float | list[str] | None,
    ) -> dict[str, Any]:
        """A job whose file the service fetches itself from `source_url` (http, https, or a
        file:// URL under the operator's folders; the operator must allow it). `options` are
        submit()'s upload options (text_column, id_column, model, deadline, result_url, ...).
        Answers once the file is fetched and stored (202)."""
        params = _options(
            source_url=source_url,
            keep_texts="true" if keep_texts else None,
            label=_labels(labels),
            **options,
        )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        # The answer comes once the service has fetched and stored the whole file.
        return self._json(  # type: ignore[no-any-return]
            "POST",
            "/v1/jobs",
            params=params,
            headers=headers,
            timeout=httpx.Timeout(60.0, read=None),
        )

    def upload_done(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """After submit(..., wait=False): waits until every part is sent and the upload is
        complete, raises what stopped it, and returns the job."""
        sender = self._sending.pop(job_id, None)
        if sender is not None:
            sender.join(timeout)
        error = self._send_errors.pop(job_id, None)
        if error is not None:
            raise error
        return self.job(job_id)

    def upload(self, path: Path, **options: Any) -> dict[str, Any]:
        """submit() for a file path (the older name)."""
        return self.submit(path, **options)

    def _submit_file(
        self,
        path: Path,
        params: dict[str, Any],
        filename: str | None,
        progress: Callable[[int], None] | None,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        ctype = UPLOAD_TYPES.get(path.suffix.lower(), "text/csv")
        with path.open("rb") as f:
            boundary, body, overhead = _multipart(
                filename or path.name, ctype, _file_pieces(f, progress)
            )
            return self._post_upload(
                params, body, boundary, overhead + path.stat().st_size, headers
            )

    def _post_upload(
        self,
        params: dict[str, Any],
        body: Iterator[bytes],
        boundary: str,
        length: int | None,
        extra_headers: dict[str, str],
    ) -> dict[str, Any]:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", **extra_headers}
        if length is not None:
            headers["Content-Length"] = str(length)
        # The answer comes once the whole file is stored: no read timeout.
        return self._json(  # type: ignore[no-any-return]
            "POST",
            "/v1/jobs",
            params=params,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(60.0, read=None),
        )

    # ------------------------------------------------------------------ jobs ----

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's state as the server reports it (`finished` says whether it is done)."""
        return self._json("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def deliveries(self, job_id: str) -> dict[str, Any]:
        """The job's completion webhook (`event`: its id, type, state) and each attempt to POST
        it to the callback_url (`attempts`: status code or error, time, duration)."""
        return self._json("GET", f"/v1/jobs/{job_id}/deliveries")  # type: ignore[no-any-return]

    def resolve(self, prefix: str) -> str:
        """The full id of the job whose id starts with `prefix` (as `jobs` lists them)."""
        wanted = prefix.strip().lower()
        if JOB_ID.match(wanted):
            return wanted
        if not wanted or not re.fullmatch(r"[0-9a-f]+", wanted):
            raise ClientError(f"{prefix!r} is not a job id (32 hex digits, or their start)")
        found: list[str] = []
        offset = 0
        while True:
            page = self.jobs(limit=200, offset=offset)
            found += [j["id"] for j in page["jobs"] if j["id"].startswith(wanted)]
            offset += len(page["jobs"])
            if not page["jobs"] or offset >= page["total"] or len(found) > 1:
                break
        if not found:
            raise ClientError(f"no job id starts with {prefix!r}: `reviewscore jobs` lists them")
        if len(found) > 1:
            raise ClientError(
                f"{prefix!r} is the start of several job ids ({found[0]}, {found[1]}, ...): "
                "give more of the id"
            )
        return found[0]

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Polls the job until the server says it is `finished` and returns its last state."""
        return _poll_until_finished(
            lambda: self.job(job_id), f"job {job_id}", poll, timeout, on_progress
        )

    def jobs(
        self, limit: int = 20, offset: int = 0, labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Recent jobs, newest first: {"jobs": [...], "total", "limit", "offset"}; with
        `labels`, only the jobs that have all of them."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if labels:
            params["label"] = _labels(labels)
        return self._json("GET", "/v1/jobs", params=params)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def delete(self, job_id: str) -> None:
        """Deletes a job with its rows and results."""
        self._send("DELETE", f"/v1/jobs/{job_id}")

    def summary(self, job_id: str) -> dict[str, Any]:
        """What a job's results add up to (for an unfinished job, the rows done so far)."""
        return self._json("GET", f"/v1/jobs/{job_id}/summary")  # type: ignore[no-any-return]

    def evaluation(self, job_id: str) -> dict[str, Any] | None:
        """A labeled job's evaluation against its rows' labels (accuracy, precision, recall,
        f1, roc_auc, ece: each {value, low, high}; confusion, calibration, by_length); None
        for a job without labels."""
        found: dict[str, Any] | None = self.summary(job_id).get("evaluation")
        return found

    def review(
        self, job_id: str, *, n: int = 200, order: str = "uncertain", format: str = "jsonl"
    ) -> Any:
        """The rows for human review: `order` uncertain (nearest 0.5) or disagree (model and
        label disagree, most confident first). format jsonl: a list of dicts; labelstudio: a
        list of Label Studio tasks (json.dump it for Label Studio's import); csv: the text."""
        params = {"n": str(n), "order": order, "format": format}
        response = self._send("GET", f"/v1/jobs/{job_id}/review", params=params)
        if format == "csv":
            return response.text
        if format == "labelstudio":
            return response.json()
        return [json.loads(line) for line in response.text.split("\n") if line.strip()]

    def usage(self) -> dict[str, Any]:
        """This key's use against its quotas: {"key_id", "queued_rows", "unfinished_jobs",
        "max_queued_rows", "max_unfinished_jobs", "weight"} (limits null with auth off). Past a
        quota an upload raises ApiError with status_code 429."""
        return self._json("GET", "/v1/usage")  # type: ignore[no-any-return]

    def models(self) -> dict[str, Any]:
        """Installed models: {"models": [{"name", "version", "default", "max_tokens", ...}]}."""
        return self._json("GET", "/v1/models")  # type: ignore[no-any-return]

    def train(
        self,
        job_ids: list[str],
        *,
        name: str | None = None,
        with_imdb: bool = False,
        make_default: bool = False,
        architecture: str = "nbsvm",
    ) -> dict[str, Any]:
        """Queues a training run on the labeled rows of finished jobs (sent with label_column
        and keep_texts=True); returns the run. `wait_training` follows it."""
        body = {
            "job_ids": job_ids,
            "name": name,
            "with_imdb": with_imdb,
            "make_default": make_default,
            "architecture": architecture,
        }
        return self._json("POST", "/v1/models/train", json=body)  # type: ignore[no-any-return]

    def training_run(self, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/models/train/{run_id}")  # type: ignore[no-any-return]

    def wait_training(
        self,
        run_id: str,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Polls the training run until the server says it is `finished`; returns it."""
        return _poll_until_finished(
            lambda: self.training_run(run_id), f"training run {run_id}", poll, timeout, on_progress
        )

    # ------------------------------------------------------------------ results ----

    @contextmanager
    def _export(self, job_id: str, params: dict[str, str]) -> Iterator[httpx.Response]:
        """The results export as a stream, once the API has accepted the request (a refusal is
        raised as this client's error). No read timeout: a big export may pause between rows."""
        with self.http.stream(
            "GET",
            f"/v1/jobs/{job_id}/results",
            params=params,
            timeout=httpx.Timeout(60.0, read=None),
        ) as response:
            if not response.is_success:
                response.read()
                _check(response, self.url)
            yield response

    def results(
        self, job_id: str, *, partial: bool = False, as_dataframe: bool = False
    ) -> list[dict[str, Any]] | pd.DataFrame:
        """A finished job's results in input order, ids exactly as sent: a list of dicts, or a
        pandas DataFrame (ids kept as text). Read from the JSON Lines export."""
        pandas = _require_pandas() if as_dataframe else None
        params = {"format": "jsonl", **({"partial": "true"} if partial else {})}
        rows: list[dict[str, Any]] = []
        try:
            with self._export(job_id, params) as response:
                for line in response.iter_lines():
                    if line.strip():
                        rows.append(json.loads(line))
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        except json.JSONDecodeError as exc:
            raise NotReviewscoreError(
                f"{self.url} sent results that are not JSON Lines: is it a reviewscore API?"
            ) from exc
        if pandas is None:
            return rows
        frame = pandas.DataFrame.from_records(rows)
        if "id" in frame:
            frame["id"] = frame["id"].astype("string")
        return frame

    def download(
        self, job_id: str, dest: Path | str, format: str = "csv", partial: bool = False
    ) -> int:
        """Writes a job's results to `dest` (csv, jsonl or parquet) and returns the bytes
        written; a half-written file never takes dest's name."""
        dest = Path(dest)
        params: dict[str, str] = {"format": format}
        if partial:
            params["partial"] = "true"
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self._export(job_id, params) as response:
                written = 0
                with tmp.open("wb") as out:
                    for piece in response.iter_bytes():
                        written += out.write(piece)
        except httpx.TransportError as exc:
            tmp.unlink(missing_ok=True)
            raise _unreachable(self.url, exc) from exc
        os.replace(tmp, dest)
        return written


# ------------------------------------------------------------------ uploads in parts ----

# A failed part is tried this many times, after 0.5, 1, 2 ... 10 s (about 85 s in all: past the
# 30 s after which the server gives a part whose API host went silent to another request).
PART_TRIES = 12


def _splittable(path: Path, format: str | None) -> bool:
    try:
        return splitting.can_split(path, format)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False  # the single upload names the problem


def state_dir() -> Path:
    """Where interrupted uploads are remembered, to be resumed by the same command."""
    given = os.environ.get("REVIEWSCORE_STATE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "reviewscore" / "uploads"


class PartsUpload:
    """One file sent in parts: the job created (or found again from an earlier, interrupted
    run of the same upload), the parts the server lacks sent `parallel` at once, each retried
    with backoff, then the upload completed. The state file (the job's id, under state_dir(),
    keyed by the server, the file's path, size and modification time, the options and the part
    size) is written as soon as the job exists and removed once the upload is complete."""

    def __init__(
        self,
        client: Client,
        path: Path,
        params: dict[str, Any],
        parallel: int,
        part_bytes: int,
        format: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.path = path.resolve()
        self.params = params
        # The Idempotency-Key, if any: sent with the request that creates the job.
        self.headers = headers or {}
        self.parallel = parallel
        self.part_bytes = part_bytes
        self.format = format
        stat = self.path.stat()
        key = json.dumps(
            [self.client.url, str(self.path), stat.st_size, stat.st_mtime_ns, params, part_bytes],
            sort_keys=True,
        )
        self.state_file = state_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def parts(self) -> Iterator[bytes]:
        return splitting.split(self.path, self.format, part_bytes=self.part_bytes)

    def run(
        self,
        *,
        wait: bool,
        progress: Callable[[int], None] | None,
        on_resume: Callable[[str], None] | None,
    ) -> dict[str, Any]:
        job, stored = self._job_to_resume()
        if job is not None and stored is None:
            return job  # its upload was completed by the earlier run
        if job is None:
            job = self.client._json(
                "POST", "/v1/jobs", params={**self.params, "parts": "true"}, headers=self.headers
            )
            self._save(job["id"])
            stored = {}
        elif on_resume is not None:
            total = sum(1 for _ in self.parts())
            have = len([n for n in stored or {} if n <= total])
            on_resume(f"resuming job {job['id']}: {have} of {total} parts already stored")
        job_id: str = job["id"]
        known: dict[int, str] = stored or {}
        if wait:
            return self._send_all(job_id, known, progress)

        def background() -> None:
            try:
                self._send_all(job_id, known, progress)
            except BaseException as exc:  # noqa: BLE001 - handed to upload_done()
                self.client._send_errors[job_id] = exc

        sender = threading.Thread(target=background, name=f"upload-{job_id}", daemon=True)
        self.client._sending[job_id] = sender
        sender.start()
        return job  # type: ignore[no-any-return]

    def _job_to_resume(self) -> tuple[dict[str, Any] | None, dict[int, str] | None]:
        """The earlier run's job and the sha256 of the parts it stored; (job, None) if its
        upload is complete; (None, None) if there is nothing to resume."""
        try:
            job_id = json.loads(self.state_file.read_text())["job_id"]
        except (OSError, ValueError, KeyError):
            return None, None
        try:
            job = self.client.job(job_id)
        except ApiError:
            job = None
        if job is None or job["status"] in ("cancelled", "failed", "expired"):
            self.state_file.unlink(missing_ok=True)
            return None, None
        if job.get("upload_finished_at"):
            self.state_file.unlink(missing_ok=True)
            return job, None
        listed = self.client._json("GET", f"/v1/jobs/{job_id}/parts")
        return job, {p["number"]: p["sha256"] for p in listed["parts"] if p["state"] == "stored"}

    def _save(self, job_id: str) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"job_id": job_id, "file": str(self.path)}))
        temporary.replace(self.state_file)  # atomic: a kill never leaves half a state file

    def _send_all(
        self, job_id: str, stored: dict[int, str], progress: Callable[[int], None] | None
    ) -> dict[str, Any]:
        count = 0
        pending: list[Future[None]] = []
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="part") as pool:
            for count, data in enumerate(self.parts(), start=1):
                digest = hashlib.sha256(data).hexdigest()
                if count in stored:
                    if stored[count] != digest:
                        raise ClientError(
                            f"part {count} of job {job_id} was stored with other bytes: the "
                            f"file changed since; remove {self.state_file} to start over"
                        )
                    if progress is not None:
                        progress(len(data))
                    continue
                # At most `parallel` parts in flight and one being made: bounded memory.
                while len([f for f in pending if not f.done()]) >= self.parallel:
                    next(f for f in pending if not f.done()).result()
                for f in [f for f in pending if f.done()]:
                    f.result()
                    pending.remove(f)
                pending.append(pool.submit(self._put, job_id, count, data, progress))
            for f in pending:
                f.result()
        if count == 0:
            raise ClientError(f"{self.path.name} holds no records to send")
        job = _retrying(
            lambda: self.client._json("POST", f"/v1/jobs/{job_id}/complete", json={"parts": count})
        )
        self.state_file.unlink(missing_ok=True)
        return job  # type: ignore[no-any-return]

    def _put(
        self, job_id: str, number: int, data: bytes, progress: Callable[[int], None] | None
    ) -> None:
        _retrying(
            lambda: self.client._send(
                "PUT",
                f"/v1/jobs/{job_id}/parts/{number}",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        )
        if progress is not None:
            progress(len(data))


def _retrying(call: Callable[[], Any]) -> Any:
    """`call`, tried again with backoff while it fails in a way worth retrying; each try may go
    to the next API URL (Client._send)."""
    delay = 0.5
    for attempt in range(1, PART_TRIES + 1):
        try:
            return call()
        except (ServiceUnreachableError, NotReviewscoreError, ApiError) as exc:
            if attempt == PART_TRIES or not _worth_retrying(exc):
                raise
        time.sleep(delay)
        delay = min(10.0, delay * 2)
    raise AssertionError("unreachable")  # pragma: no cover


def _worth_retrying(exc: ClientError) -> bool:
    """A cut connection, an overloaded or restarting server, a part another request of ours is
    still storing (the connection broke while the server kept reading): worth another try."""
    if isinstance(exc, ServiceUnreachableError | NotReviewscoreError):
        return True
    if isinstance(exc, ApiError):
        if exc.status_code in (408, 429) or exc.status_code >= 500:
            return True
        return exc.status_code == 409 and "being stored by another request" in exc.detail
    return False
