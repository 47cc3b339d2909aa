"""Which process of `make run`'s stack costs singles (issue 20, defect 10): the benchmark's
stack without and with Flower, then `reviewscore run --no-flower` and `reviewscore run`, each
driven by wrk at 4 connections for 10 s, with the CPU of every process on the machine named by
what it runs. `python -m bench.stacks_attribution`; prints one line per stack."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.config import Config
from bench.data import load_reviews
from bench.load import load_generator
from bench.results import LoadRun
from bench.service import running_service
from bench.stacks import reviewscore_run
from reviewscore.core.settings import REPO_ROOT

KINDS = ("flower", "beat", "uvicorn", "celery", "redis-server", "reviewscore run")


def cpu_by_kind() -> dict[tuple[str, int], float]:
    """CPU seconds of every process whose command line names one of KINDS."""
    found: dict[tuple[str, int], float] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            kind = next((k for k in KINDS if k in line), None)
            if kind is not None:
                times = proc.cpu_times()
                found[(kind, proc.pid)] = times.user + times.system
        except psutil.Error:
            continue
    return found


def measure(name: str, service: Any, load: Callable[[Any, int, float], LoadRun]) -> str:
    time.sleep(15)  # as bench.stacks: the stack settled after it got ready
    load(service, 1, 3)
    before, started = cpu_by_kind(), time.perf_counter()
    run = load(service, 4, 10)
    wall, after = time.perf_counter() - started, cpu_by_kind()
    shares: dict[str, float] = {}
    for key, seconds in after.items():
        used = (seconds - before.get(key, seconds)) / wall
        shares[key[0]] = shares.get(key[0], 0.0) + used
    cells = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda x: -x[1]))
    return (
        f"{name}: 4 connections {run.reviews_per_s:,.0f}/s p50 {run.p50_ms:.1f} ms, machine "
        f"{run.cpu.machine:.2f} cores; by process: {cells}"
    )


def main() -> int:
    cfg = Config.parse(["--models-dir", str(REPO_ROOT / "models")])
    with load_generator(load_reviews()[:2000]) as load:
        with running_service(cfg, "nbsvm", "attr-a") as service:
            print(measure("the benchmark's stack", service, load), flush=True)
        with running_service(cfg, "nbsvm", "attr-b", flower=True) as service:
            print(measure("the benchmark's stack with Flower", service, load), flush=True)
        with reviewscore_run(cfg.models_dir, "--no-flower") as stack:
            print(measure("reviewscore run --no-flower", stack, load), flush=True)
        with reviewscore_run(cfg.models_dir) as stack:
            print(measure("reviewscore run", stack, load), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
