"""The workload of a chaos run and its history.

Threads send what users send, each drawing its next action from its own seeded generator:
uploads as CSV and JSON Lines, uploads in parts (the Python client, `parallel=2`), `source_url`
jobs (file:// under the API host's allowed folder), `POST /v1/score`, status reads, exports in
every format, cancels and deletes. Every request is one line of the history (what was sent,
the answer's status, when, how long); an upload's line names the ids it sent (a prefix and a
count: ids are `<prefix>-1` .. `<prefix>-n`). Each thread sends with its own API key (several
keys, the service in production mode); now and then it asks about another key's job, which must
not be found. Two monitors add lines too: the first counts the database holds for each job once
it is final (the checker compares them with the end), and the
resident memory of every host's processes every few seconds."""

from __future__ import annotations

import csv
import io
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.multihost.conftest import Hosts

FINAL = ("succeeded", "failed", "cancelled", "expired")
ACTIONS = {
    "upload_csv": 3,
    "upload_jsonl": 2,
    "upload_parts": 1,
    "source_url": 1,
    "score": 5,
    "status": 2,
    "export": 2,
    "cancel": 1,
    "delete": 1,
}

UPLOADS = {"upload_csv", "upload_jsonl", "upload_parts", "source_url"}
# New jobs wait while this many of the workload's jobs are unfinished, so the backlog (and the
# time to drain it after the last fault) stays bounded however long the run is.
MAX_UNFINISHED = 6


class History:
    """JSON lines, appended by every thread (times in seconds from the workload's start)."""

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self.started = started
        self.lock = threading.Lock()
        self.file = path.open("a", encoding="utf-8")

    def now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_history(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Workload:
    def __init__(
        self,
        hosts: Hosts,
        history: History,
        seed: int,
        files: Path,
        singles_timeout_s: float,
        keys: list[str],
        threads: int = 4,
    ) -> None:
        self.hosts = hosts
        self.history = history
        self.seed = seed
        self.files = files
        self.singles_timeout_s = singles_timeout_s
        self.stop = threading.Event()
        self.jobs: list[str] = []
        self.owner: dict[str, int] = {}  # job -> the index of the key that made it
        self.keys = keys
        self.local = threading.local()  # .key: the index of this thread's key
        self.lock = threading.Lock()
        self.counter = 0
        self.final: set[str] = set()
        self.texts = [r["text"] for r in hosts.reviews.rows]
        self.threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)
        ]
        self.threads.append(threading.Thread(target=self._watch_final, daemon=True))
        self.threads.append(threading.Thread(target=self._watch_memory, daemon=True))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    # --- helpers ------------------------------------------------------------------------------
    def _rows(self, rng: random.Random, kind: str) -> tuple[str, list[dict[str, str]]]:
        with self.lock:
            self.counter += 1
            prefix = f"{kind}{self.seed}x{self.counter}"
        n = rng.randint(20, 450)
        start = rng.randrange(len(self.texts))
        rows = [
            {"id": f"{prefix}-{i + 1}", "text": self.texts[(start + i) % len(self.texts)]}
            for i in range(n)
        ]
        return prefix, rows

    def _request(
        self, op: str, method: str, path: str, timeout: float = 30.0, **kwargs: Any
    ) -> tuple[httpx.Response | None, dict[str, Any]]:
        entry: dict[str, Any] = {"op": op, "method": method, "path": path, "t0": self.history.now()}
        response = None
        entry["key"] = self.local.key
        headers = {"Authorization": f"Bearer {self.keys[self.local.key]}"}
        try:
            with httpx.Client(base_url=self.hosts.url, timeout=timeout, headers=headers) as http:
                response = http.request(method, path, **kwargs)
            entry["status"] = response.status_code
            if response.status_code >= 400:
                entry["detail"] = response.text[:300]
        except httpx.HTTPError as exc:
            entry["status"] = 0
            entry["detail"] = f"{type(exc).__name__}: {exc}"[:300]
        entry["t1"] = self.history.now()
        return response, entry

    def _known_job(self, rng: random.Random) -> str | None:
        """Mostly a job of this thread's key; sometimes another key's (which must answer 404)."""
        with self.lock:
            own = [j for j in self.jobs if self.owner[j] == self.local.key]
            if own and rng.random() < 0.85:
                return rng.choice(own)
            return rng.choice(self.jobs) if self.jobs else None

    def _about(self, entry: dict[str, Any], job_id: str) -> None:
        entry["job"] = job_id
        entry["owner"] = self.owner[job_id]

    def _unfinished(self) -> int:
        with self.lock:
            return sum(1 for job in self.jobs if job not in self.final)

    def _accepted(self, entry: dict[str, Any], job: dict[str, Any]) -> None:
        entry["job"] = job["id"]
        entry["key"] = self.local.key
        with self.lock:
            self.jobs.append(job["id"])
            self.owner[job["id"]] = self.local.key

    # --- the actions ----------------------------------------------------------------------------
    def _loop(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-workload-{index}")
        self.local.key = index % len(self.keys)
        names, weights = list(ACTIONS), list(ACTIONS.values())
        while not self.stop.is_set():
            action = rng.choices(names, weights)[0]
            if action in UPLOADS and self._unfinished() >= MAX_UNFINISHED:
                action = "score"  # as a user with a quota would: no new job for now
            began = self.history.now()
            try:
                entry = getattr(self, f"_{action}")(rng)
            except Exception as exc:  # noqa: BLE001 - the history holds it; the checker judges
                entry = {"op": action, "status": -1, "detail": repr(exc)[:300], "t0": began}
                entry["t1"] = self.history.now()
            if entry is not None:
                entry["thread"] = index
                self.history.record(entry)
            self.stop.wait(rng.uniform(0.1, 0.6))

    def _upload_csv(self, rng: random.Random) -> dict[str, Any]:
        prefix, rows = self._rows(rng, "c")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["id", "text"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        response, entry = self._request(
            "upload",
            "POST",
            "/v1/jobs",
            params={"id_column": "id"},
            content=out.getvalue().encode(),
            headers={"Content-Type": "text/csv"},
        )
        entry.update(format="csv", prefix=prefix, n=len(rows))
        if response is not None and response.status_code == 202:
            self._accepted(entry, response.json())
        return entry

    def _upload_jsonl(self, rng: random.Random) -> dict[str, Any]:
        prefix, rows = self._rows(rng, "j")
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        response, entry = self._request(
            "upload",
            "POST",
            "/v1/jobs",
            params={"id_column": "id", "filename": "reviews.jsonl"},
            content=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        entry.update(format="jsonl", prefix=prefix, n=len(rows))
        if response is not None and response.status_code == 202:
            self._accepted(entry, response.json())
        return entry

    def _write_csv(self, rows: list[dict[str, str]], name: str) -> Path:
        path = self.files / name
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "text"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return path

    def _upload_parts(self, rng: random.Random) -> dict[str, Any]:
        from reviewscore.client import Client, ClientError

        prefix, rows = self._rows(rng, "p")
        path = self._write_csv(rows, f"{prefix}.csv")
        entry: dict[str, Any] = {"op": "upload", "format": "parts", "prefix": prefix}
        entry.update(n=len(rows), t0=self.history.now(), statuses=[])

        def seen(response: httpx.Response) -> None:
            entry["statuses"].append(response.status_code)

        client = Client(self.hosts.url, api_key=self.keys[self.local.key], timeout=15)
        client.http.event_hooks["response"] = [seen]
        try:
            job = client.submit(path, id_column="id", parallel=2, part_bytes=16_000)
            entry["status"] = 202
            self._accepted(entry, job)
        except ClientError as exc:
            entry["status"] = getattr(exc, "status_code", 0) or 0
            entry["detail"] = str(exc)[:300]
        finally:
            client.close()
            path.unlink(missing_ok=True)
        entry["t1"] = self.history.now()
        return entry

    def _source_url(self, rng: random.Random) -> dict[str, Any]:
        prefix, rows = self._rows(rng, "u")
        path = self._write_csv(rows, f"{prefix}.csv")
        response, entry = self._request(
            "upload",
            "POST",
            "/v1/jobs",
            params={"id_column": "id", "source_url": path.as_uri()},
        )
        entry.update(format="source_url", prefix=prefix, n=len(rows))
        if response is not None and response.status_code == 202:
            self._accepted(entry, response.json())
        return entry

    def _score(self, rng: random.Random) -> dict[str, Any]:
        reviews = [rng.choice(self.texts)[:2000] for _ in range(rng.randint(1, 3))]
        response, entry = self._request(
            "score",
            "POST",
            "/v1/score",
            timeout=self.singles_timeout_s + 15,
            json={"reviews": reviews},
        )
        if response is not None and response.status_code == 200:
            entry["results"] = len(response.json()["results"])
        entry["sent"] = len(reviews)
        return entry

    def _status(self, rng: random.Random) -> dict[str, Any] | None:
        job_id = self._known_job(rng)
        if job_id is None:
            return None
        response, entry = self._request("status", "GET", f"/v1/jobs/{job_id}")
        self._about(entry, job_id)
        if response is not None and response.status_code == 200:
            view = response.json()
            entry.update(
                {k: view[k] for k in ("status", "finished", "scored", "failed", "received")}
            )
            entry["job_status"] = entry.pop("status")
            entry["status"] = 200
        return entry

    def _export(self, rng: random.Random) -> dict[str, Any] | None:
        job_id = self._known_job(rng)
        if job_id is None:
            return None
        fmt = rng.choice(["csv", "jsonl", "parquet"])
        response, entry = self._request(
            "export", "GET", f"/v1/jobs/{job_id}/results", params={"format": fmt}, timeout=60
        )
        self._about(entry, job_id)
        entry["format"] = fmt
        if response is not None and response.status_code == 200:
            entry["rows"] = _export_rows(response.content, fmt)
        return entry

    def _cancel(self, rng: random.Random) -> dict[str, Any] | None:
        job_id = self._known_job(rng)
        if job_id is None:
            return None
        _, entry = self._request("cancel", "POST", f"/v1/jobs/{job_id}/cancel")
        self._about(entry, job_id)
        return entry

    def _delete(self, rng: random.Random) -> dict[str, Any] | None:
        if rng.random() < 0.5:  # deletes are rarer than cancels: a job deleted is not checked
            return None
        job_id = self._known_job(rng)
        if job_id is None:
            return None
        response, entry = self._request("delete", "DELETE", f"/v1/jobs/{job_id}")
        self._about(entry, job_id)
        if response is not None and response.status_code == 204:
            with self.lock:
                if job_id in self.jobs:
                    self.jobs.remove(job_id)
        return entry

    # --- the monitors ---------------------------------------------------------------------------
    def _watch_final(self) -> None:
        """The database's counts of each job the first time it is seen final."""
        seen: set[str] = set()
        while not self.stop.wait(1.0):
            try:
                for job_id, status, scored, failed, results in self.hosts.sql(
                    "SELECT j.id, j.status, "
                    "(SELECT coalesce(sum(scored_rows), 0) FROM chunks c WHERE c.job_id = j.id), "
                    "(SELECT coalesce(sum(failed_rows), 0) FROM chunks c WHERE c.job_id = j.id), "
                    "(SELECT count(*) FROM results r WHERE r.job_id = j.id) "
                    "FROM jobs j WHERE j.status = ANY(:final) AND NOT (j.id = ANY(:seen))",
                    final=list(FINAL),
                    seen=list(seen),
                ):
                    seen.add(job_id)
                    with self.lock:
                        self.final.add(job_id)
                    self.history.record(
                        {
                            "op": "final_seen",
                            "t0": self.history.now(),
                            "job": job_id,
                            "job_status": str(status),
                            "scored": int(scored),
                            "failed": int(failed),
                            "results": int(results),
                        }
                    )
            except Exception:  # noqa: BLE001, S112 - PostgreSQL away: look again next second
                continue

    def _watch_memory(self) -> None:
        while not self.stop.wait(5.0):
            for name, host in self.hosts.cluster.hosts.items():
                try:
                    kb = sum(_rss_kb(pid) for pid in host.pids())
                except Exception:  # noqa: BLE001, S112 - a host being restarted
                    continue
                self.history.record({"op": "rss", "t0": self.history.now(), "host": name, "kb": kb})


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _export_rows(content: bytes, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_table(io.BytesIO(content)).num_rows)
    if fmt == "jsonl":
        return sum(1 for line in content.splitlines() if line.strip())
    return sum(1 for _ in csv.reader(io.StringIO(content.decode("utf-8")))) - 1
