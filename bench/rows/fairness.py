"""Row 8, fairness: a small job alone, then the same-sized job and the singles load while the
big dump is being scored: neither may wait for the whole dump."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from bench.config import Config
from bench.data import Texts, write_csv
from bench.load import load_generator
from bench.results import FairnessRow, JobRun, SinglesNodeRow
from bench.rows.big import measure_big_dump
from bench.rows.singles import Load
from bench.service import Service, log, running_service


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


def measure_with_singles_node(cfg: Config, model: str, texts: Texts, tmp: Path) -> SinglesNodeRow:
    """The singles load of row 8 on a stack started with a singles-only worker node, idle and
    during a dump of a quarter of row 6's size (the same texts, so the same mix of cached and
    scored rows)."""
    row = SinglesNodeRow(dump_rows=max(cfg.big_rows // 4, 2 * cfg.chunk_size))
    connections, seconds = cfg.busy_singles_connections, cfg.busy_singles_seconds
    with (
        running_service(cfg, model, "singles-node", singles_worker=True) as service,
        load_generator(texts.any[:2000]) as load,
    ):
        row.idle = load(service, connections, seconds)

        def under_dump(dump_id: str) -> None:
            wait_scoring_started(service, dump_id, 2 * cfg.chunk_size, timeout=600)
            row.under_dump = load(service, connections, seconds)

        measure_big_dump(dataclasses.replace(cfg, big_rows=row.dump_rows), service, texts, tmp,
                         under_dump)  # fmt: skip
    assert row.idle is not None and row.under_dump is not None
    log(
        f"singles node: p99 {row.idle.p99_ms:.0f} ms idle, {row.under_dump.p99_ms:.0f} ms "
        f"during a {row.dump_rows:,}-row dump"
    )
    return row
