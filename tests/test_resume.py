"""`reviewscore score FILE -o OUT` SIGKILLed at random moments of its upload and run again:
the same job is resumed (only the parts not stored are sent), and the results hold every id
exactly once, in input order. Bytes go through a counting TCP proxy, so what the CLI sent in
all its runs is measured against the file's size."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

from bench.proxy import counting_proxy
from bench.rows.resume import kill_and_resume, score_command
from tests.conftest import RunningStack, sample_reviews, write_csv

KILLS = 3


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_a_killed_cli_resumes_its_upload_and_every_id_comes_back_once_in_order(
    service: RunningStack, tmp_path: Path
) -> None:
    rows = sample_reviews(6000, seed=31)
    source = write_csv(tmp_path / "reviews.csv", rows, ["id", "text"])
    out = tmp_path / "scored.csv"
    size = source.stat().st_size
    env = dict(os.environ, REVIEWSCORE_STATE_DIR=str(tmp_path / "state"))
    seed = int(os.environ.get("RESUME_SEED", random.randrange(1_000_000)))
    print(f"resume test seed: {seed} (RESUME_SEED={seed} replays it)")
    chance = random.Random(seed)
    with counting_proxy(int(service.url.rsplit(":", 1)[1])) as (port, sent):
        command = score_command(source, out, port, "--part-mb", "0.25", "--parallel", "3")
        done, said = kill_and_resume(command, env, size, sent, KILLS, chance)
    assert done.returncode == 0, done.stderr
    resumed = [line for text in said for line in text.splitlines() if "resuming job" in line]
    assert resumed, said
    assert resumed[-1].endswith("parts already stored")
    with out.open(newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f)]
    assert ids == [r["id"] for r in rows], "every id once, in input order"
    print(
        f"sent {sent[0]:,} bytes for a {size:,}-byte file ({sent[0] / size:.2f}x) in {KILLS + 1} runs"
    )
    assert sent[0] < 1.5 * size + 64_000 * (KILLS + 1)
