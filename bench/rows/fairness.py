"""Row 8, fairness: a small job alone, then the same-sized job and the singles load while the
big dump is being scored: neither may wait for the whole dump."""

from __future__ import annotations

import time
from pathlib import Path

from bench.config import Config
from bench.data import Texts, write_csv
from bench.results import FairnessRow, JobRun
from bench.rows.singles import Load
from bench.service import Service


def measure_alone(service: Service, texts: Texts, tmp: Path) -> JobRun:
    return service.timed_job(write_csv(tmp / "fair-alone.csv", texts.fairness_alone, "alone"))


def wait_scoring_started(service: Service, job_id: str, rows: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.client.job(job_id)["done"] < rows:
        time.sleep(0.2)


def measure_under_dump(
    cfg: Config,
    service: Service,
    texts: Texts,
    tmp: Path,
    dump_id: str,
    load: Load,
    row: FairnessRow,
) -> None:
    wait_scoring_started(service, dump_id, 2 * cfg.chunk_size, timeout=600)
    small = write_csv(tmp / "fair-busy.csv", texts.fairness_busy, "busy")
    row.under_dump = service.timed_job(small)
    row.singles_under_dump = load(service, cfg.busy_singles_connections, cfg.busy_singles_seconds)
    row.dump_still_running = not service.client.job(dump_id)["finished"]
