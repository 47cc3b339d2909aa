"""Row 6, the big dump: a million-row CSV (texts repeating, so the dedup cache serves most),
with the API's and the workers' memory sampled all along; other checks can run while it is
being scored (the fairness row)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.config import Config
from bench.data import Texts, write_repeating_csv
from bench.results import BigRow, JobRun, RssSummary
from bench.service import Service, log


class RssSampler(threading.Thread):
    """Samples the summed RSS of process groups every `interval` seconds."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]], interval: float):
        super().__init__(daemon=True)
        self.groups = groups
        self.interval = interval
        self.samples: dict[str, list[int]] = {name: [] for name in groups}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for name, processes in self.groups.items():
                total = 0
                for p in processes():
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.samples[name].append(total)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def summary(self, name: str) -> RssSummary | None:
        mb = [s / 1024**2 for s in self.samples[name] if s]
        if not mb:
            return None
        return RssSummary(start_mb=mb[0], max_mb=max(mb), end_mb=mb[-1], samples=len(mb))


def find_new_job(service: Service, known: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in service.client.jobs(limit=10)["jobs"]:
            if job["id"] not in known:
                return str(job["id"])
        time.sleep(0.2)
    raise TimeoutError("the big dump's job never appeared")


def measure_big_dump(
    cfg: Config,
    service: Service,
    texts: Texts,
    tmp: Path,
    during: Callable[[str], None] | None = None,
) -> BigRow:
    path = write_repeating_csv(tmp / "big.csv", texts.dump, cfg.big_rows, "big")
    size_mb = path.stat().st_size / 1024**2
    log(f"big dump: {cfg.big_rows:,} rows, {size_mb:,.0f} MB")
    known = {j["id"] for j in service.client.jobs(limit=200)["jobs"]}
    cache_before = service.cache_size()
    sampler = RssSampler(
        {"api": lambda: service.processes("api"), "worker": lambda: service.processes("worker")},
        interval=0.2,
    )
    upload: dict[str, Any] = {}

    def do_upload() -> None:
        try:
            upload["job"] = service.client.upload(path)
        except Exception as exc:  # noqa: BLE001 - reported after the join
            upload["error"] = exc
        upload["seconds"] = time.perf_counter() - started

    sampler.start()
    started = time.perf_counter()
    uploader = threading.Thread(target=do_upload, daemon=True)
    uploader.start()
    try:
        job_id = find_new_job(service, known)
        if during is not None:
            during(job_id)
        uploader.join()
        if "error" in upload:
            raise upload["error"]
        final = service.client.wait(job_id, poll=0.5, timeout=6 * 3600)
    finally:
        sampler.stop()
    seconds = time.perf_counter() - started
    path.unlink()
    run = JobRun(
        job_id=job_id,
        rows=final["total"],
        seconds=seconds,
        upload_seconds=upload["seconds"],
        computed=service.cache_size() - cache_before,
    )
    return BigRow(
        run=run,
        csv_mb=size_mb,
        api_rss=sampler.summary("api"),
        worker_rss=sampler.summary("worker"),
    )
