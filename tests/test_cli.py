"""The CLI end to end: the README's walk-through on 2,000 real reviews, re-attaching by id, and
every failure (no API, a wrong address, another web server, HTTP and validation errors, Ctrl-C,
the service stopping mid-follow) as one line with the next step, never a traceback."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningStack, another_api, free_port, sample_reviews, wait_for, write_csv
from tests.slow_upload import held_upload, other_web_server


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


# ---------------------------------------------------------------- failures, one line each ----


def run_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REVIEWSCORE_API_URL=url)
    return subprocess.run(
        [sys.executable, "-m", "reviewscore.shell.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The failure as the user sees it: exit 1, a single line on stderr, no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_without_a_running_api_says_how_to_start_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(run_cli("status", "516b4c84", url=url))
    assert f"cannot connect to the reviewscore API at {url}" in line
    assert "reviewscore run" in line


def test_cli_url_without_scheme_or_with_an_unknown_host_names_the_fix() -> None:
    line = one_line_error(run_cli("jobs", url="127.0.0.1:8000"))
    assert "write http://127.0.0.1:8000" in line
    line = one_line_error(run_cli("jobs", url="http://no-such-host.invalid:8000"))
    assert "no-such-host.invalid" in line and "--url" in line


def test_cli_pointed_at_another_web_server_does_not_print_its_page() -> None:
    with other_web_server() as url:
        for args in (("status", "516b4c84"), ("jobs",), ("download", "a" * 32, "-o", "x.csv")):
            line = one_line_error(run_cli(*args, url=url))
            assert f"{url} is not a reviewscore API" in line
            assert "<" not in line and "nginx" not in line


def test_cli_debug_shows_the_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = run_cli("--debug", "status", "516b4c84", url=url)
    assert done.returncode == 1
    assert "ServiceUnreachableError" in done.stderr and "Traceback" in done.stderr


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_http_and_validation_errors_are_one_line(service: RunningStack) -> None:
    line = one_line_error(reviewscore(service, "jobs", "--limit", "500"))
    assert "'limit'" in line and "(HTTP 422)" in line
    line = one_line_error(reviewscore(service, "status", "f" * 32))
    assert "no job with id" in line and "(HTTP 404)" in line


# ---------------------------------------------------------------- job ids and commands ----


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_short_ids_jobs_status_wait_download_and_delete(
    service: RunningStack, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "named.csv", sample_reviews(30, seed=7), ["id", "text"])
    job = service.client.submit(source, id_column="id")
    listing = reviewscore(service, "jobs", "--limit", "200")
    assert listing.returncode == 0, listing.stderr
    assert job["id"] in listing.stdout  # the whole id, never cut
    assert "named.csv" in listing.stdout

    out = tmp_path / "waited.jsonl"
    waited = reviewscore(service, "wait", job["id"][:8], "-o", str(out))
    assert waited.returncode == 0, waited.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [
        r["id"] for r in csv.DictReader(source.open(encoding="utf-8"))
    ]

    status = reviewscore(service, "status", job["id"][:8])
    assert status.returncode == 0, status.stderr
    assert job["id"] in status.stdout and "named.csv" in status.stdout
    assert "30 of 30 done" in status.stdout
    assert "JobView(" not in status.stdout and "{'" not in status.stdout

    deleted = reviewscore(service, "delete", job["id"][:10])
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted job {job['id']}" in deleted.stderr
    line = one_line_error(reviewscore(service, "status", job["id"][:8]))
    assert "no job id starts with" in line or "several" in line


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_ambiguous_or_unknown_prefix_is_one_line(service: RunningStack, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", [{"text": "Fine."}])
    ids = [j["id"] for j in service.client.jobs(limit=200)["jobs"]]
    while len({i[0] for i in ids}) == len(ids):
        ids.append(service.client.submit(path)["id"])
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    assert "give more of the id" in one_line_error(reviewscore(service, "status", shared))
    assert "not a job id" in one_line_error(reviewscore(service, "status", "xyz"))


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_download_of_an_unfinished_job_points_at_partial(
    service: RunningStack, tmp_path: Path
) -> None:
    with held_upload(service) as job:
        line = one_line_error(
            reviewscore(service, "download", job["id"][:8], "-o", str(tmp_path / "r.csv"))
        )
        assert "--partial" in line and "partial=true" not in line
        assert f"reviewscore wait {job['id']}" in line
        partial = reviewscore(
            service, "download", job["id"], "-o", str(tmp_path / "r.csv"), "--partial"
        )
        assert partial.returncode == 0, partial.stderr


def requests_for(url: str, route: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = rf'^reviewscore_http_requests_total\{{method="GET",route="{re.escape(route)}",status="200"\}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_ctrl_c_in_wait_prints_how_to_reattach(service: RunningStack, tmp_path: Path) -> None:
    out = tmp_path / "later.csv"
    with held_upload(service) as job:
        polls = requests_for(service.url, "/v1/jobs/{job_id}")
        env = dict(os.environ, REVIEWSCORE_API_URL=service.url)
        process = subprocess.Popen(
            [sys.executable, "-m", "reviewscore.shell.cli", "wait", job["id"], "-o", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Interrupt once it is following the job (it has asked for it at least twice).
        wait_for(
            lambda: requests_for(service.url, "/v1/jobs/{job_id}") >= polls + 2,
            60,
            "the CLI to poll the job",
        )
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"reviewscore wait {job['id']} -o {out}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_says_how_to_reattach_when_the_service_stops_while_it_follows(
    service: RunningStack, tmp_path: Path
) -> None:
    with another_api(service) as (url, stack), held_upload(service) as job:
        env = dict(os.environ, REVIEWSCORE_API_URL=url)
        process = subprocess.Popen(
            [sys.executable, "-m", "reviewscore.shell.cli", "wait", job["id"], "-o", "x.csv"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        wait_for(lambda: requests_for(url, "/v1/jobs/{job_id}") >= 2, 60, "the CLI to poll the job")
        stack.stop()  # the API goes away while the CLI follows the job
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and url in last
    assert f"re-attach with: reviewscore wait {job['id']} -o x.csv" in last


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_score_sends_the_file_name_and_the_options(
    service: RunningStack, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "semi.csv", sample_reviews(20, seed=9), ["id", "text"])
    out = tmp_path / "semi.jsonl"
    done = reviewscore(
        service, "score", str(source), "-o", str(out), "--id-column", "id", "--encoding", "utf-8"
    )
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 20  # JSON Lines, from the suffix
    newest = service.client.jobs(limit=1)["jobs"][0]
    assert newest["filename"] == "semi.csv"


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_cli_scores_a_file_the_service_fetches_from_a_url(
    service: RunningStack, tmp_path: Path
) -> None:
    rows = sample_reviews(150, seed=33)
    # The stack lists var/sources in REVIEWSCORE_URL_FILE_DIRS, as an operator lists a folder.
    dump = write_csv(service.settings.var_dir / "sources" / "dump.csv", rows, ["id", "text"])
    out = tmp_path / "fetched.csv"
    done = reviewscore(service, "score", dump.as_uri(), "-o", str(out), "--id-column", "id")
    assert done.returncode == 0, done.stderr
    assert f"the service fetches {dump.as_uri()}" in done.stderr
    with out.open(newline="", encoding="utf-8") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [r["id"] for r in rows]
    assert service.client.jobs(limit=1)["jobs"][0]["filename"] == "dump.csv"

    outside = write_csv(tmp_path / "elsewhere.csv", rows[:5], ["id", "text"])
    refused = reviewscore(service, "score", outside.as_uri(), "-o", str(tmp_path / "x.csv"))
    assert refused.returncode == 1
    said = refused.stderr.strip().splitlines()
    assert len(said) == 2 and said[-1].startswith("error: ") and "Traceback" not in refused.stderr
    assert "is not under a folder listed in REVIEWSCORE_URL_FILE_DIRS (HTTP 422)" in said[-1]
    missing = reviewscore(service, "score", str(tmp_path / "nope.csv"), "-o", "x.csv")
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"error: {tmp_path / 'nope.csv'} does not exist (give a file, or an http(s):// or "
        "file:// URL)",
    )


def test_status_prints_a_summary_of_any_shape_as_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from reviewscore.shell.cli import print_job

    job = {
        "id": "516b4c84" + "0" * 24,
        "status": "succeeded",
        "finished": True,
        "filename": "reviews.csv",
        "total": 5,
        "done": 5,
        "scored": 4,
        "failed": 1,
        "created_at": "2026-11-26T18:32:39.296239Z",
        "summary": {
            "labels": {"positive": 3, "negative": 1},
            "share_positive": 0.75,
            "p_positive_histogram": [{"from": 0.0, "to": 0.5, "count": 1}, {"count": 3}],
            "failed_by_reason": {"empty text": 1},
        },
    }
    print_job(job)
    out = capsys.readouterr().out
    assert "summary labels" in out and "positive 3, negative 1" in out
    assert "summary share_positive" in out and "0.75" in out
    assert "summary p_positive_histogram" in out and "1 3" in out
    assert "empty text 1" in out
    assert "4 scored, 1 failed" in out
    print_job({**job, "summary": None})  # a server without summaries: no summary lines
    assert "summary" not in capsys.readouterr().out
