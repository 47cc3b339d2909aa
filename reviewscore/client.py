"""The Python client of the API (HTTP only: it imports no server code), used by the CLI, the tests
and the benchmark. The server says whether a job is finished; `wait()` asks it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx


class ApiError(Exception):
    """The API answered with an error; the message is its `detail`."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text or response.reason_phrase
    raise ApiError(response.status_code, detail if isinstance(detail, str) else str(detail))


class WaitTimeoutError(TimeoutError):
    """wait() gave up before the job finished; the job goes on."""


class Client:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()

    def score(self, reviews: list[str], model: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/v1/score", json={"reviews": reviews, "model": model})  # type: ignore[no-any-return]

    def upload(
        self,
        path: Path,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        model: str | None = None,
        progress: Any = None,
    ) -> dict[str, Any]:
        params = {
            k: v
            for k, v in {"text_column": text_column, "id_column": id_column, "model": model}.items()
            if v
        }
        ctype = "application/gzip" if path.suffix == ".gz" else "text/csv"

        def body(f: BinaryIO) -> Iterator[bytes]:
            while chunk := f.read(1024 * 1024):
                if progress is not None:
                    progress(len(chunk))
                yield chunk

        with path.open("rb") as f:
            response = self.http.post(
                "/v1/jobs",
                params=params,
                content=body(f),
                headers={"Content-Type": ctype, "Content-Length": str(path.stat().st_size)},
                timeout=httpx.Timeout(60.0, read=None),
            )
        _raise_for(response)
        return response.json()  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    def wait(
        self,
        job_id: str,
        *,
        poll: float = 0.5,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Polls the job until the server says it is `finished` and returns its last state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["finished"]:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(f"job {job_id} is still {job['status']} after {timeout}s")
            time.sleep(poll)

    def jobs(self, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        return self._json("GET", "/v1/jobs", params={"limit": limit, "offset": offset})  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def models(self) -> dict[str, Any]:
        return self._json("GET", "/v1/models")  # type: ignore[no-any-return]

    def download(self, job_id: str, dest: Path, fmt: str = "csv", partial: bool = False) -> int:
        params: dict[str, str] = {"format": fmt}
        if partial:
            params["partial"] = "true"
        tmp = dest.with_name(dest.name + ".part")
        with self.http.stream(
            "GET",
            f"/v1/jobs/{job_id}/results",
            params=params,
            timeout=httpx.Timeout(60.0, read=None),
        ) as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            written = 0
            with tmp.open("wb") as out:
                for chunk in response.iter_bytes():
                    written += out.write(chunk)
        os.replace(tmp, dest)
        return written
