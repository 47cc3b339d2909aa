"""Singles on the stack users start beside the benchmark's own (issue 20, defect 10): `POST
/v1/score`, one real review per request, driven by wrk at 1, 4 and 64 connections, on

- `reviewscore run` (what `make run` starts: API, one worker node, beat, Flower, embedded Redis,
  every setting at its default), started as a user starts it, on a var folder of its own;
- the benchmark's stack (bench/service.py: the same processes without Flower, singles timeout
  120 s), as `make bench`'s singles row measures it.

Each stack is measured in turns (`--rounds`, alone on the machine, 20 s after it was ready, as
the issue's report measured it), the median of the rounds is printed side by side, and the
figures are written to bench/results/<date>-<host>-stacks.json. `python -m bench.stacks`."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.config import Config
from bench.data import load_reviews
from bench.load import load_generator
from bench.results import LoadRun
from bench.service import free_port, log, running_service
from reviewscore.core.settings import REPO_ROOT, Settings

RESULTS_DIR = REPO_ROOT / "bench" / "results"
CONNECTIONS = (1, 4, 64)
SETTLE_S = 20.0


@dataclass
class RunStack:
    """`reviewscore run` as a user starts it: the figures the load meter needs (its URL and its
    processes by kind), found from the var folder it was given."""

    var_dir: Path
    url: str
    process: subprocess.Popen[bytes]

    def processes(self, kind: str) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                if proc.info["environ"] is None:
                    continue
                if proc.info["environ"].get("REVIEWSCORE_VAR_DIR") != str(self.var_dir):
                    continue
                line = " ".join(proc.info["cmdline"] or [])
            except psutil.Error:
                continue
            if (
                (kind == "api" and "uvicorn" in line)
                or (kind == "worker" and " worker " in f"{line} " and "celery" in line)
                or (kind == "redis" and "redis-server" in line)
            ):
                found.append(proc)
        return found


@contextmanager
def reviewscore_run(models_dir: Path, *args: str) -> Iterator[RunStack]:
    var_dir = Path(tempfile.mkdtemp(prefix="reviewscore-bench-run-"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REVIEWSCORE_")},
        "REVIEWSCORE_VAR_DIR": str(var_dir),
        "REVIEWSCORE_MODELS_DIR": str(models_dir),
        "REVIEWSCORE_API_PORT": str(port),
        "REVIEWSCORE_FLOWER_PORT": str(free_port()),
    }
    command = str(Path(sys.executable).parent / "reviewscore")  # the installed command
    with (var_dir.parent / f"{var_dir.name}-output.txt").open("ab") as out:
        process = subprocess.Popen(
            [command, "run", *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"reviewscore run did not get ready (exit {process.poll()})")
            time.sleep(0.25)
        logs = var_dir / "logs"
        processes = Settings().worker_processes
        while (
            sum(
                p.read_text(errors="replace").count("loaded model")
                for p in logs.glob("worker*.log")
            )
            < processes
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker's pool processes did not load their model")
            time.sleep(0.25)
        yield RunStack(var_dir, url, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(var_dir, ignore_errors=True)


def _ready(url: str) -> bool:
    try:
        return bool(httpx.get(url + "/readyz", timeout=5).json()["ready"])
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@dataclass
class StackRuns:
    stack: str
    rounds: list[list[LoadRun]] = dataclasses.field(default_factory=list)

    def median(self, connections: int, figure: str) -> float:
        values = [
            getattr(run, figure) for runs in self.rounds for run in runs
            if run.connections == connections
        ]  # fmt: skip
        return float(statistics.median(values))


def measure(cfg: Config, model: str, rounds: int, seconds: float) -> list[StackRuns]:
    texts = load_reviews()[:2000]
    run_stack = StackRuns("reviewscore run (make run: with Flower, defaults)")
    bench_stack = StackRuns("the benchmark's stack (bench/service.py: no Flower)")
    with load_generator(texts) as load:

        def drive(service: Any) -> list[LoadRun]:
            time.sleep(SETTLE_S)  # as the report measured: 20 s after the stack was ready
            runs = [load(service, c, seconds) for c in CONNECTIONS]
            for r in runs:
                log(f"  {r.connections:>2} connections: {r.reviews_per_s:,.0f}/s, "
                    f"p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, {r.errors} errors")  # fmt: skip
            return runs

        for i in range(rounds):
            log(f"stacks: round {i + 1}: reviewscore run")
            with reviewscore_run(cfg.models_dir) as stack:
                run_stack.rounds.append(drive(stack))
            log(f"stacks: round {i + 1}: the benchmark's stack")
            with running_service(cfg, model, "stacks") as service:
                bench_stack.rounds.append(drive(service))
    return [run_stack, bench_stack]


def report(measured: list[StackRuns]) -> str:
    lines = ["singles, POST /v1/score, one real review per request (medians of the rounds):"]
    for s in measured:
        cells = [
            f"{c} conn {s.median(c, 'reviews_per_s'):,.0f}/s p50 {s.median(c, 'p50_ms'):.1f} ms "
            f"p99 {s.median(c, 'p99_ms'):.1f} ms"
            for c in CONNECTIONS
        ]
        lines.append(f"  {s.stack}: " + "; ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0, help="of wrk at each connection count")
    p.add_argument("--model", default=None, help="default: the default installed model")
    a = p.parse_args(argv)
    from reviewscore.core.model_registry import local_model

    cfg = Config.parse(["--models-dir", str(REPO_ROOT / "models")])
    model = local_model(cfg.models_dir, a.model).name
    measured = measure(cfg, model, a.rounds, a.seconds)
    text = report(measured)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{dt.date.today()}-{socket.gethostname() or 'host'}-stacks.json"
    figures = {
        "model": model,
        "load_average_at_end": os.getloadavg(),
        "stacks": [dataclasses.asdict(s) for s in measured],
        "table": text,
    }
    path.write_text(json.dumps(figures, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
