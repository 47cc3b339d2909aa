"""Row 10, a resumed upload: `reviewscore score FILE -o OUT` on a 200,000-row CSV, SIGKILLed at
5 random moments of its upload and run again each time, as a user whose laptop keeps dropping
would. It must finish with every id exactly once, in input order, having sent < 1.5x the file's
bytes (counted by a proxy in front of the API). The same routine drives tests/test_resume.py."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.config import Config
from bench.data import Texts, write_repeating_csv
from bench.proxy import counting_proxy
from bench.results import ResumeRow
from bench.service import Service, log


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def score_command(source: Path, out: Path, port: int, *options: str) -> list[str]:
    """`reviewscore score SOURCE -o OUT --id-column id` against the API on 127.0.0.1:PORT."""
    cli = [sys.executable, "-m", "reviewscore.shell.cli", "score", str(source), "-o", str(out)]
    return [*cli, "--id-column", "id", *options, "--url", f"http://127.0.0.1:{port}"]


def kill_and_resume(
    command: list[str],
    env: dict[str, str],
    size: int,
    sent: list[int],
    kills: int,
    chance: random.Random,
    most_per_run: float = 0.3,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Runs `command` and SIGKILLs it `kills` times, each once it has sent a random share of
    the file (between 2 % and `most_per_run` of `size`, counted in `sent[0]` by the proxy; never
    before it began), then runs it to its end. Returns the last run and every run's stderr."""
    said: list[str] = []
    for _ in range(kills):
        start = sent[0]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        share = chance.uniform(0.02, most_per_run) * size
        _wait(
            lambda s=start, p=process, share=share: (  # type: ignore[misc]
                sent[0] - s > share or p.poll() is not None
            ),
            600,
            "the CLI to send part of the file",
        )
        process.send_signal(signal.SIGKILL)
        said.append(process.communicate(timeout=60)[1])
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    said.append(done.stderr)
    return done, said


def measure_resume(cfg: Config, service: Service, texts: Texts, tmp: Path) -> ResumeRow:
    rows = 20_000 if cfg.quick else 200_000
    kills = 5
    source = write_repeating_csv(tmp / "resume.csv", texts.any, rows, "resume")
    ids = [f"resume-{i}" for i in range(rows)]
    size = source.stat().st_size
    out = tmp / "resume-scored.csv"
    seed = int(os.environ.get("RESUME_SEED", random.randrange(1_000_000)))
    env = dict(os.environ, REVIEWSCORE_STATE_DIR=str(tmp / "resume-state"))
    log(f"resume: {rows:,} rows ({size / 1e6:,.0f} MB), {kills} SIGKILLs, seed {seed}")
    port = int(service.url.rsplit(":", 1)[1])
    started = time.perf_counter()
    with counting_proxy(port) as (proxy_port, sent):
        command = score_command(source, out, proxy_port, *(["--part-mb", "1"] if cfg.quick else []))
        done, said = kill_and_resume(
            command, env, size, sent, kills, random.Random(seed), most_per_run=0.15
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the last run failed: {done.stderr.strip()[-500:]}")
    resumed = [line for text in said for line in text.splitlines() if "resuming job" in line]
    with out.open(newline="", encoding="utf-8") as f:
        got = [r["id"] for r in csv.DictReader(f)]
    return ResumeRow(
        rows=rows,
        file_bytes=size,
        sent_bytes=sent[0],
        kills=kills,
        resumes=len(resumed),
        seconds=seconds,
        ids_once_in_order=got == ids,
        seed=seed,
        last_resume=resumed[-1] if resumed else "",
    )
