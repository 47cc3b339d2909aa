"""Row 5, singles: POST /v1/score with one review per request at several connection counts,
driven by wrk (bench/load.py), each run with every side's CPU share."""

from __future__ import annotations

from collections.abc import Callable

from bench.config import Config
from bench.results import LoadRun
from bench.service import Service, log

Load = Callable[[Service, int, float], LoadRun]


def measure_singles(cfg: Config, service: Service, load: Load) -> list[LoadRun]:
    runs = []
    for connections in cfg.singles_connections:
        run = load(service, connections, cfg.singles_seconds)
        log(
            f"singles {connections:>2} connections: {run.reviews_per_s:,.0f}/s, "
            f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, {run.errors} errors "
            f"({run.generator}, client CPU {run.cpu.client:.2f})"
        )
        runs.append(run)
    return runs
