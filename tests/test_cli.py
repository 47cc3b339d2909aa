"""The README's CLI walk-through: score a CSV of 2,000 real reviews end to end, re-attach by id."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningStack, sample_reviews, write_csv


def reviewscore(service: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REVIEWSCORE_API_URL=service.url)
    return subprocess.run(
        [sys.executable, "-m", "reviewscore.shell.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_scores_2000_real_reviews_with_the_accuracy_training_reported(
    service: RunningStack, tmp_path: Path
) -> None:
    rows = sample_reviews(2000, seed=42)
    source = write_csv(tmp_path / "reviews.csv", rows, ["id", "text"])
    out = tmp_path / "scored.csv"
    done = reviewscore(service, "score", str(source), "-o", str(out), "--id-column", "id")
    assert done.returncode == 0, done.stderr
    with out.open(newline="", encoding="utf-8") as f:
        results = list(csv.DictReader(f))
    assert len(results) == 2000
    assert [r["id"] for r in results] == [r["id"] for r in rows]  # one result per row, in order
    truth = {r["id"]: int(r["label"]) for r in rows}
    correct = sum((float(r["p_positive"]) >= 0.5) == bool(truth[r["id"]]) for r in results)
    accuracy = correct / len(results)

    models = service.client.models()["models"]
    default = next(m for m in models if m["default"])
    if service.settings.models_dir.name != "models":
        pytest.skip(f"tiny test model in use (accuracy {accuracy:.3f}); shipped models missing")
    assert abs(accuracy - default["test_accuracy"]) <= 0.02, (accuracy, default)


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_reattaches_to_a_job_by_id(service: RunningStack, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "r.csv", sample_reviews(50, seed=5), ["text"])
    job = service.client.upload(source)
    waited = reviewscore(service, "wait", job["id"])
    assert waited.returncode == 0, waited.stderr
    assert "succeeded" in waited.stdout
    status = reviewscore(service, "status", job["id"])
    assert "succeeded" in status.stdout
    out = tmp_path / "again.jsonl"
    got = reviewscore(service, "download", job["id"], "-o", str(out), "--format", "jsonl")
    assert got.returncode == 0, got.stderr
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 50


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_explains_an_unknown_job(service: RunningStack) -> None:
    failed = reviewscore(service, "status", "f" * 32)
    assert failed.returncode == 1
    assert "no job with id" in failed.stderr
