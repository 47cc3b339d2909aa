"""Access and safety on a production stack: API keys gate /v1/*, jobs are private to their key,
exports cannot smuggle spreadsheet formulas, deleted jobs are gone."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from reviewscore import Client
from reviewscore.core.schema import Chunk, InputRow, Result
from reviewscore.core.settings import Settings
from tests.conftest import RunningStack


@pytest.fixture(scope="module")
def production(production_stack: RunningStack) -> RunningStack:
    return production_stack


def cli(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWSCORE_")}
    env["REVIEWSCORE_DATABASE_URL"] = stack.settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "reviewscore.shell.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def create_key(stack: RunningStack, name: str) -> str:
    done = cli(stack, "keys", "create", name)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("rs_")
    return key


def as_key(stack: RunningStack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.url, headers=headers, timeout=60)


def upload(http: httpx.Client, body: bytes, **params: str) -> dict[str, Any]:
    response = http.post("/v1/jobs", files={"file": ("r.csv", body, "text/csv")}, params=params)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_done(stack: RunningStack, http: httpx.Client, job_id: str) -> dict[str, Any]:
    """Waits with the same key as `http`, through the client's wait()."""
    key = http.headers.get("Authorization", "").removeprefix("Bearer ") or None
    return Client(stack.url, key).wait(job_id, poll=0.25, timeout=120)


@pytest.fixture(scope="module")
def key_a(production: RunningStack) -> str:
    return create_key(production, "team-a")


# --- keys ------------------------------------------------------------------------------------


def test_v1_needs_a_key(production: RunningStack) -> None:
    with as_key(production, None) as http:
        responses = [
            http.get("/v1/jobs"),
            http.get("/v1/jobs/" + "0" * 32),
            http.get("/v1/models"),
            http.post("/v1/score", json={"reviews": ["good"]}),
            http.post("/v1/jobs", files={"file": ("r.csv", b"text\nok\n", "text/csv")}),
        ]
    for response in responses:
        assert response.status_code == 401, response.request.url
        assert "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_made_up_key_is_refused(production: RunningStack) -> None:
    with as_key(production, "rs_not-a-real-key") as http:
        response = http.get("/v1/jobs")
    assert response.status_code == 401
    assert "unknown or revoked" in response.json()["detail"]


def test_health_docs_and_metrics_stay_open(production: RunningStack) -> None:
    with as_key(production, None) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        assert http.get("/docs").status_code == 200
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/metrics").status_code == 200


def test_a_key_from_the_cli_works(production: RunningStack, key_a: str) -> None:
    with as_key(production, key_a) as http:
        assert http.get("/v1/jobs").status_code == 200
        assert http.get("/v1/models").status_code == 200
        answer = http.post("/v1/score", json={"reviews": ["A fine film."]})
        assert answer.status_code == 200, answer.text
        job = upload(http, b"text\nGood.\nBad.\n")
        assert wait_done(production, http, job["id"])["scored"] == 2


def test_jobs_are_private_to_their_key(production: RunningStack, key_a: str) -> None:
    key_b = create_key(production, "team-b")
    with as_key(production, key_a) as a, as_key(production, key_b) as b:
        job = upload(a, b"text\nGood.\n")
        job_id = job["id"]
        for response in (
            b.get(f"/v1/jobs/{job_id}"),
            b.get(f"/v1/jobs/{job_id}/results", params={"partial": "true"}),
            b.post(f"/v1/jobs/{job_id}/cancel"),
            b.delete(f"/v1/jobs/{job_id}"),
        ):
            assert response.status_code == 404, response.text
        assert job_id not in {j["id"] for j in b.get("/v1/jobs").json()["jobs"]}
        assert job_id in {j["id"] for j in a.get("/v1/jobs").json()["jobs"]}
        assert a.get(f"/v1/jobs/{job_id}").status_code == 200


def test_a_revoked_key_is_refused(production: RunningStack) -> None:
    key = create_key(production, "short-lived")
    with as_key(production, key) as http:
        assert http.get("/v1/jobs").status_code == 200
        done = cli(production, "keys", "revoke", key[:10])
        assert done.returncode == 0, done.stderr
        response = http.get("/v1/jobs")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_revoking_an_unknown_key_fails(production: RunningStack) -> None:
    done = cli(production, "keys", "revoke", "rs_nothere")
    assert done.returncode != 0
    assert "no active key" in done.stderr


@pytest.mark.parametrize("password", ["reviewscore", "", "changeme", "admin"])
def test_production_flower_refuses_an_unsafe_password(password: str, tmp_path: Path) -> None:
    env = production_env(tmp_path)
    if password != "reviewscore":  # "reviewscore" is the built-in default: leave it unset
        env["REVIEWSCORE_FLOWER_PASSWORD"] = password
    done = subprocess.run(
        [sys.executable, "-m", "reviewscore.shell.flower", "-A", "x", "flower"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "reviewscore flower: REVIEWSCORE_FLOWER_PASSWORD must be set to a real secret when "
        "REVIEWSCORE_ENV=production (Flower shows every task's arguments: review texts)"
    ]


def test_production_api_and_worker_start_without_a_flower_password(tmp_path: Path) -> None:
    # Only Flower uses its password: the API and a worker host have no reason to ask for it.
    done = subprocess.run(
        [sys.executable, "-c", "import api.main, worker.tasks; print('imported')"],
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
    assert Settings(_env_file=None, env="production").unsafe_flower_password()  # type: ignore[call-arg]


def production_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIEWSCORE_")}
    env.update(
        REVIEWSCORE_ENV="production",
        REVIEWSCORE_VAR_DIR=str(var_dir),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    return env


# --- exports and deletion ---------------------------------------------------------------


FORMULAS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", '=HYPERLINK("http://evil")']


def test_csv_export_neutralises_formulas(production: RunningStack, key_a: str) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "text"])
    for i, value in enumerate(FORMULAS):
        writer.writerow([value, f"Review {i}."])
    writer.writerow(["plain-id", "Fine."])
    with as_key(production, key_a) as http:
        job = upload(http, out.getvalue().encode(), id_column="id")
        wait_done(production, http, job["id"])
        body = http.get(f"/v1/jobs/{job['id']}/results").text
        lines = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).text
    ids = [r["id"] for r in csv.DictReader(io.StringIO(body))]
    assert ids == ["'" + v for v in FORMULAS] + ["plain-id"]
    # JSON is data, not a spreadsheet: the ids come back exactly as sent.
    assert [json.loads(line)["id"] for line in lines.splitlines()] == FORMULAS + ["plain-id"]


def test_delete_removes_the_job_and_its_rows(production: RunningStack, key_a: str) -> None:
    with as_key(production, key_a) as http:
        job = upload(http, b"text\n" + b"Good stuff.\n" * 250)
        wait_done(production, http, job["id"])
        assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert http.get(f"/v1/jobs/{job['id']}/results").status_code == 404
        assert http.delete(f"/v1/jobs/{job['id']}").status_code == 404
    engine = production.engine()
    with engine.connect() as conn:
        for table in (InputRow, Result, Chunk):
            count = conn.execute(
                select(func.count()).select_from(table).where(table.job_id == job["id"])
            ).scalar_one()
            assert count == 0, table.__tablename__
    engine.dispose()
