"""Training a model from a user's labels: the requests that cannot be trained from get a clear
error (in-process, the app on real SQLite and PostgreSQL, the chunk task on the stub scorer),
and one run end to end on the real service: a few hundred labeled IMDB rows trained on by a
worker, the model published under its name (not the default), then named by a job and by
POST /v1/score, its report comparing it with the default on the held-out rows."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.auth import current_key_id
from api.main import create_app
from api.routes import training as training_route
from reviewscore.core import keys
from reviewscore.core.db import session_scope
from reviewscore.core.model_registry import LocalModel, make_default, publish
from reviewscore.core.settings import get_settings
from reviewscore.shell import cli
from tests import factories as f
from tests.conftest import IMDB_SLICE_ROWS, RunningStack, sample_reviews, write_csv
from tests.inprocess import work_off
from worker import tasks


@lru_cache(maxsize=1)
def imdb_sample() -> list[dict[str, str]]:
    """Labeled IMDB rows for the in-process tests, read once (reading the file takes a second)."""
    return sample_reviews(600, seed=3)


def labeled_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "label", "text"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


# --- bad input, in-process ----------------------------------------------------------------------


@pytest.fixture
def api(
    database: str,
    stub_model: f.StubScorer,
    sent: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "50")
    monkeypatch.setattr(tasks, "enqueue_delivery", lambda _job_id: None)
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def upload(
    api: TestClient,
    rows: list[dict[str, str]],
    sent: list[tuple[str, int]],
    *,
    keep_texts: bool = True,
    score: bool = True,
) -> str:
    params = {"id_column": "id", "label_column": "label", "keep_texts": str(keep_texts).lower()}
    response = api.post(
        "/v1/jobs", params=params, files={"file": ("labeled.csv", labeled_csv(rows), "text/csv")}
    )
    assert response.status_code == 202, response.text
    if score:
        work_off(sent)
        assert api.get(f"/v1/jobs/{response.json()['id']}").json()["finished"]
    return str(response.json()["id"])


def refused(api: TestClient, job_ids: list[str], **body: object) -> tuple[int, str]:
    response = api.post("/v1/models/train", json={"job_ids": job_ids, **body})
    return response.status_code, str(response.json()["detail"])


def test_too_few_labeled_rows_are_refused(
    api: TestClient,
    sent: list[tuple[str, int]],
) -> None:
    job_id = upload(api, imdb_sample()[:40], sent)
    status, detail = refused(api, [job_id])
    assert status == 422
    assert detail.startswith("40 labeled rows in job(s)") and "at least 100" in detail


def test_labels_of_one_class_only_are_refused(
    api: TestClient,
    sent: list[tuple[str, int]],
) -> None:
    positives = [r for r in imdb_sample() if r["label"] == "1"][:120]
    job_id = upload(api, positives, sent)
    status, detail = refused(api, [job_id])
    assert status == 422
    assert "120 positive and 0 negative" in detail and "of each class" in detail


def test_a_job_still_running_is_refused(
    api: TestClient,
    sent: list[tuple[str, int]],
) -> None:
    job_id = upload(api, imdb_sample()[:120], sent, score=False)
    status, detail = refused(api, [job_id])
    assert (status, detail) == (
        409,
        f"job {job_id} is still queued: train from it once it has finished",
    )


def test_a_job_without_its_texts_is_refused_with_what_to_do(
    api: TestClient,
    sent: list[tuple[str, int]],
) -> None:
    job_id = upload(api, imdb_sample()[:120], sent, keep_texts=False)
    status, detail = refused(api, [job_id])
    assert status == 422
    assert "without keep_texts=true" in detail and "send the file again" in detail


def test_another_keys_job_is_not_found_and_shipped_names_are_not_taken(
    api: TestClient,
    sent: list[tuple[str, int]],
) -> None:
    with session_scope() as session:
        mine, _ = keys.create_key(session, "mine")
        theirs, _ = keys.create_key(session, "theirs")
        mine_id, theirs_id = mine.id, theirs.id
    api.app.dependency_overrides[current_key_id] = lambda: theirs_id  # type: ignore[attr-defined]
    job_id = upload(api, imdb_sample()[:120], sent)
    api.app.dependency_overrides[current_key_id] = lambda: mine_id  # type: ignore[attr-defined]
    assert refused(api, [job_id]) == (404, f"no job with id {job_id!r}")
    api.app.dependency_overrides[current_key_id] = lambda: theirs_id  # type: ignore[attr-defined]
    # The stub is the published default (a model not trained from labels): its name is not free.
    status, detail = refused(api, [job_id], name="stub")
    assert status == 422 and "give the new model a name of its own" in detail
    status, detail = refused(api, [job_id], name="Bad Name!")
    assert (status, detail[:22]) == (422, "model name 'Bad Name!'"), detail
    api.app.dependency_overrides.clear()  # type: ignore[attr-defined]


def test_a_run_is_queued_for_a_worker_and_only_its_key_sees_it(
    api: TestClient,
    sent: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queued: list[str] = []
    monkeypatch.setattr(training_route, "enqueue_training", queued.append)
    with session_scope() as session:
        mine, _ = keys.create_key(session, "mine")
        theirs, _ = keys.create_key(session, "theirs")
        mine_id, theirs_id = mine.id, theirs.id
    api.app.dependency_overrides[current_key_id] = lambda: mine_id  # type: ignore[attr-defined]
    job_id = upload(api, imdb_sample()[:120], sent)
    response = api.post("/v1/models/train", json={"job_ids": [job_id]})
    assert response.status_code == 202, response.text
    run = response.json()
    assert queued == [run["id"]]
    assert run["model_name"] == f"labels-{run['id'][:8]}"
    assert (run["status"], run["finished"], run["progress"], run["job_ids"]) == (
        "queued",
        False,
        0.0,
        [job_id],
    )
    assert api.get(f"/v1/models/train/{run['id']}").json() == run
    api.app.dependency_overrides[current_key_id] = lambda: theirs_id  # type: ignore[attr-defined]
    answer = api.get(f"/v1/models/train/{run['id']}")
    assert (answer.status_code, answer.json()["detail"]) == (
        404,
        f"training run {run['id']!r} not found",
    )
    api.app.dependency_overrides.clear()  # type: ignore[attr-defined]


def test_a_model_made_default_stays_default_and_its_name_needs_make_default(
    api: TestClient,
    sent: list[tuple[str, int]],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"stands in for a trained model")
    meta = {"name": "mine", "architecture": "nbsvm", "test_accuracy": None, "trained_from": {}}
    with session_scope() as session:
        info, _ = publish(session, LocalModel(folder, meta, folder / "model.keras"))
    defaults = {m["name"]: m["default"] for m in api.get("/v1/models").json()["models"]}
    assert defaults == {"stub": True, "mine": False}  # published, without replacing the default
    with session_scope() as session:
        make_default(session, "mine", info.version)
    defaults = {m["name"]: m["default"] for m in api.get("/v1/models").json()["models"]}
    assert defaults == {"stub": False, "mine": True}
    job_id = upload(api, imdb_sample()[:120], sent)
    status, detail = refused(api, [job_id], name="mine")
    assert status == 422 and "is the default model: pass make_default" in detail


# --- end to end on the service ------------------------------------------------------------------


@pytest.mark.parametrize("service", ["postgres"], indirect=True)
def test_a_model_trained_from_a_labeled_job_is_published_and_used_by_name(
    service: RunningStack, tmp_path: Path
) -> None:
    client = service.client
    default_before = next(m for m in client.models()["models"] if m["default"])
    labeled = write_csv(
        tmp_path / "labeled.csv", sample_reviews(300, seed=19), ["id", "label", "text"]
    )
    job = client.submit(labeled, id_column="id", label_column="label", keep_texts=True)
    assert service.wait_job(job["id"])["status"] == "succeeded"

    # As docs/how-to/train.md shows it: the CLI starts the run, follows it and prints the report.
    ran = CliRunner().invoke(
        cli.app,
        ["train", "--from-job", job["id"][:8], "--name", "my-reviews", "--url", service.url],
    )
    assert ran.exit_code == 0, ran.output
    run_id = re.search(r"training run ([0-9a-f]{32}): model my-reviews", ran.output)
    assert run_id, ran.output
    run = client.training_run(run_id.group(1))
    assert (run["status"], run["finished"], run["progress"], run["stage"]) == (
        "succeeded",
        True,
        1.0,
        "done",
    )
    assert f"published {run['model_version']}; the default is unchanged" in ran.output
    assert "my-reviews (new)" in ran.output and f"{default_before['name']} (default)" in ran.output

    # Published under its name, the default unchanged.
    models = {m["name"]: m for m in client.models()["models"]}
    assert models["my-reviews"]["version"] == run["model_version"]
    assert not models["my-reviews"]["default"]
    assert models[default_before["name"]]["default"]

    # The report: both models on the same held-out rows (a stratified fifth of the 300).
    report = run["report"]
    held = report["held_out"]
    assert held["rows"] == 60 and held["positive"] + held["negative"] == 60
    assert report["trained_on"]["user_rows"] == 240
    assert report["model"]["version"] == run["model_version"]
    assert report["default_model"]["version"] == default_before["version"]
    for side in ("model", "default_model"):
        accuracy = report[side]["accuracy"]
        assert accuracy["interval"] == "wilson"
        assert 0.0 <= accuracy["low"] <= accuracy["value"] <= accuracy["high"] <= 1.0
    difference = report["difference"]
    assert difference["value"] == pytest.approx(
        report["model"]["accuracy"]["value"] - report["default_model"]["accuracy"]["value"]
    )

    # A new job naming it is scored by it, and so is POST /v1/score.
    fresh = write_csv(tmp_path / "fresh.csv", sample_reviews(20, seed=23), ["id", "text"])
    scored = client.submit(fresh, id_column="id", model="my-reviews")
    finished = service.wait_job(scored["id"])
    assert (finished["status"], finished["model_version"]) == ("succeeded", run["model_version"])
    results = client.results(scored["id"])
    assert len(results) == 20 and all(r["model_version"] == run["model_version"] for r in results)
    answer = client.score(["A wonderful, moving film."], model="my-reviews")
    assert (answer["model"], answer["model_version"]) == ("my-reviews", run["model_version"])

    # With IMDB's train split too (here the worker's REVIEWSCORE_IMDB_DIR holds a slice of it):
    # the same held-out rows, more to train on.
    with_imdb = client.wait_training(
        client.train([job["id"]], name="my-reviews-imdb", with_imdb=True)["id"], timeout=300
    )
    assert with_imdb["status"] == "succeeded", with_imdb
    trained_on = with_imdb["report"]["trained_on"]
    assert (trained_on["user_rows"], trained_on["imdb_rows"]) == (240, IMDB_SLICE_ROWS)
    assert trained_on["fit"] + trained_on["validation"] == 240 + IMDB_SLICE_ROWS
    assert with_imdb["report"]["held_out"]["rows"] == 60
    models = {m["name"]: m for m in client.models()["models"]}
    assert models["my-reviews-imdb"]["version"] == with_imdb["model_version"]
