"""A labeled upload end to end, in-process (the app on real SQLite and PostgreSQL, the chunk
task on the stub scorer): the summary's evaluation checked against scikit-learn on the
downloaded results, and the rows for human review in CSV, JSON Lines and Label Studio's
task import format."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn import metrics
from typer.testing import CliRunner

from api.main import create_app
from reviewscore.client import Client
from reviewscore.core.settings import get_settings
from reviewscore.shell import cli
from reviewscore.shell.cli import print_job
from tests import factories as f
from tests.conftest import sample_reviews
from tests.inprocess import work_off
from worker import tasks

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
def api(sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in-process (as tests/test_routes.py's), in chunks of 50 rows: a few hundred
    rows are a few chunks, several of them per upload all the same."""
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "50")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def no_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """No job here has a result_url: the finished job's delivery message is not sent (there
    is no Redis in this layer, and Celery would retry reaching it for seconds)."""
    monkeypatch.setattr(tasks, "enqueue_delivery", lambda _job_id: None)


def labeled_csv(n: int) -> tuple[str, dict[str, int | None]]:
    """IMDB rows (id, rating, label, text) with a few labels blanked or garbled."""
    rows = sample_reviews(n, seed=19)
    truth: dict[str, int | None] = {}
    for i, row in enumerate(rows):
        if i % 50 == 0:
            row["label"] = ""
        elif i % 50 == 1:
            row["label"] = "unsure"
        truth[row["id"]] = int(row["label"]) if row["label"] in ("0", "1") else None
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "rating", "label", "text"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue(), truth


def test_a_labeled_upload_is_evaluated_as_scikit_learn_computes_it(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
) -> None:
    body, truth = labeled_csv(300)
    response = api.post(
        "/v1/jobs",
        params={"keep_texts": "true"},
        files={"file": ("imdb.csv", body.encode(), "text/csv")},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["label_column"] == "label"
    work_off(sent)
    done = api.get(f"/v1/jobs/{job['id']}").json()
    evaluation = done["summary"]["evaluation"]

    results = list(csv.DictReader(io.StringIO(api.get(done["results_url"]).text)))
    labeled = [r for r in results if truth[r["id"]] is not None]
    y = np.array([truth[r["id"]] for r in labeled])
    p = np.array([float(r["p_positive"]) for r in labeled])
    predicted = np.array([r["label"] == "positive" for r in labeled], dtype=int)
    assert evaluation["rows"] == len(labeled) == 288
    assert evaluation["left_out"] == {"no_label": 6, "unreadable_label": 6}
    expected = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "precision": metrics.precision_score(y, predicted),
        "recall": metrics.recall_score(y, predicted),
        "f1": metrics.f1_score(y, predicted),
        "roc_auc": metrics.roc_auc_score(y, p),
    }
    for name, value in expected.items():
        figure = evaluation[name]
        assert figure["value"] == pytest.approx(value), name
        assert figure["low"] <= figure["value"] <= figure["high"], name
    tn, fp, fn, tp = metrics.confusion_matrix(y, predicted).ravel()
    assert evaluation["confusion"] == {
        "true_positive": tp,
        "false_positive": fp,
        "true_negative": tn,
        "false_negative": fn,
    }
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).sum() / len(y)
        for b in range(10)
        if (bins == b).any()
    )
    assert evaluation["ece"]["value"] == pytest.approx(ece)
    assert [b["count"] for b in evaluation["calibration"]] == np.bincount(
        bins, minlength=10
    ).tolist()
    words = {row["id"]: len(row["text"].split()) for row in csv.DictReader(io.StringIO(body))}
    short = np.array([words[r["id"]] < 100 for r in labeled])
    assert evaluation["by_length"][0]["count"] == int(short.sum())
    assert evaluation["by_length"][0]["accuracy"]["value"] == pytest.approx(
        metrics.accuracy_score(y[short], predicted[short])
    )
    # The same figures from /summary (one computation, however it is asked for).
    assert api.get(f"/v1/jobs/{job['id']}/summary").json()["evaluation"] == evaluation

    review = f"/v1/jobs/{job['id']}/review"
    uncertain = list(csv.DictReader(io.StringIO(api.get(review, params={"n": 20}).text)))
    margins = sorted(abs(float(r["p_positive"]) - 0.5) for r in results if r["p_positive"])
    assert [abs(float(r["p_positive"]) - 0.5) for r in uncertain] == pytest.approx(margins[:20])
    texts = {row["id"]: row["text"] for row in csv.DictReader(io.StringIO(body))}
    assert all(r["text"] == texts[r["id"]] for r in uncertain)

    lines = api.get(review, params={"order": "disagree", "format": "jsonl", "n": 500}).text
    disagree = [json.loads(line) for line in lines.split("\n") if line]
    assert len(disagree) == fp + fn
    assert all(r["predicted"] != r["label"] for r in disagree)
    assert all(r["label"] == ("positive" if truth[r["id"]] else "negative") for r in disagree)
    confidence = [round(abs(r["p_positive"] - 0.5), 6) for r in disagree]
    assert confidence == sorted(confidence, reverse=True)

    tasks = api.get(review, params={"order": "disagree", "format": "labelstudio", "n": 5}).json()
    assert len(tasks) == 5
    for task, row in zip(tasks, disagree, strict=False):
        assert_label_studio_task(task)
        assert task["data"]["text"] == texts[row["id"]] and task["data"]["id"] == row["id"]
        (prediction,) = task["predictions"]
        assert prediction["score"] == pytest.approx(max(row["p_positive"], 1 - row["p_positive"]))
        assert prediction["result"][0]["value"]["choices"] == [row["predicted"].capitalize()]


LABEL_CONFIG_CHOICES = {"Positive", "Negative"}


def assert_label_studio_task(task: dict) -> None:  # type: ignore[type-arg]
    """A task as Label Studio's import documentation gives it (guide "Import pre-annotated
    data": `data` holding the object tag's value, `predictions` with model_version, score and
    `result` items of from_name, to_name, type, value) for the labeling config
    <Text name="text" value="$text"/> + <Choices name="sentiment" toName="text">. The same
    tasks passed label-studio-sdk 2.1.2's LabelInterface.validate_prediction for that config
    (checked by hand: the SDK is too heavy a test dependency)."""
    assert set(task) == {"data", "predictions"}
    assert isinstance(task["data"]["text"], str) and task["data"]["text"]
    for prediction in task["predictions"]:
        assert set(prediction) == {"model_version", "score", "result"}
        assert isinstance(prediction["model_version"], str)
        assert 0.5 <= prediction["score"] <= 1
        for item in prediction["result"]:
            assert {"id", "from_name", "to_name", "type", "value"} == set(item)
            assert (item["from_name"], item["to_name"], item["type"]) == (
                "sentiment",
                "text",
                "choices",
            )
            assert set(item["value"]) == {"choices"}
            assert len(item["value"]["choices"]) == 1
            assert set(item["value"]["choices"]) <= LABEL_CONFIG_CHOICES


def test_ratings_read_with_positive_from_and_label_studio_needs_the_texts(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
) -> None:
    body = "id,text,stars\n" + "".join(f"r{i},review {'x' * i},{i % 5 + 1}\n" for i in range(20))
    response = api.post(
        "/v1/jobs",
        params={"label_column": "stars", "positive_from": "4"},
        content=body.encode(),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["label_column"], job["positive_from"]) == ("stars", 4.0)
    work_off(sent)
    evaluation = api.get(f"/v1/jobs/{job['id']}/summary").json()["evaluation"]
    confusion = evaluation["confusion"]
    assert confusion["true_positive"] + confusion["false_negative"] == 8  # stars 4 and 5
    assert evaluation["rows"] == 20
    refused = api.get(f"/v1/jobs/{job['id']}/review", params={"format": "labelstudio"})
    assert refused.status_code == 409
    assert "keep_texts=true" in refused.json()["detail"]
    rows = list(csv.DictReader(io.StringIO(api.get(f"/v1/jobs/{job['id']}/review").text)))
    assert len(rows) == 20 and all(r["text"] == "" for r in rows)


def test_the_client_returns_the_evaluation_and_status_prints_it(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client("http://testserver")
    client.http = api  # the in-process app answers the client's requests
    body = "id,text,sentiment\n" + "".join(
        f"r{i},{'word ' * (i * 20 + 1)},{'pos' if i % 2 else 'neg'}\n" for i in range(12)
    )
    path = Path(tempfile.mkdtemp()) / "labeled.csv"
    path.write_text(body)
    job = client.submit(path, parallel=0, keep_texts=True)
    work_off(sent)
    evaluation = client.evaluation(job["id"])
    assert evaluation is not None and evaluation["rows"] == 12
    assert [b["count"] for b in evaluation["by_length"]] == [5, 5, 2, 0]  # 1-99, 100-199, ...
    tasks = client.review(job["id"], n=3, format="labelstudio")
    assert len(tasks) == 3 and all(t["data"]["text"].startswith("word") for t in tasks)
    assert len(client.review(job["id"], order="disagree")) == sum(
        evaluation["confusion"][k] for k in ("false_positive", "false_negative")
    )
    print_job(client.job(job["id"]))
    shown = " ".join(capsys.readouterr().out.split())
    accuracy = evaluation["accuracy"]
    assert (
        f"evaluation accuracy {accuracy['value']:.3f} (95 % {accuracy['low']:.3f}-"
        f"{accuracy['high']:.3f})" in shown
    )
    assert "evaluation accuracy, 400+ words" in shown

    monkeypatch.setattr(cli, "_client", lambda _url, _key: client)
    out = path.parent / "review.json"
    ran = CliRunner().invoke(cli.app, ["review", job["id"][:8], "-o", str(out), "-n", "4"])
    assert ran.exit_code == 0, ran.output
    assert "4 rows (uncertain)" in ran.output
    assert json.loads(out.read_text()) == client.review(job["id"], n=4, format="labelstudio")


def test_disagree_needs_labels_and_bad_options_are_named(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
) -> None:
    response = api.post(
        "/v1/jobs", content=b"text\ngood\nbad\n", headers={"content-type": "text/csv"}
    )
    job = response.json()
    work_off(sent)
    assert api.get(f"/v1/jobs/{job['id']}/summary").json()["evaluation"] is None
    refused = api.get(f"/v1/jobs/{job['id']}/review", params={"order": "disagree"})
    assert refused.status_code == 409 and "no labels" in refused.json()["detail"]
    for params, words in [
        ({"positive_from": "7"}, "positive_from is given but the file has no label column"),
        ({"label_column": "truth"}, "label_column 'truth' is not in the file"),
    ]:
        bad = api.post(
            "/v1/jobs", params=params, content=b"text\ngood\n", headers={"content-type": "text/csv"}
        )
        assert bad.status_code == 422 and words in bad.json()["detail"], bad.text
    bad = api.post(
        "/v1/jobs",
        data={"positive_from": "seven"},
        files={"file": ("r.csv", b"text,stars\ngood,5\n", "text/csv")},
    )
    assert bad.status_code == 422 and "positive_from must be a number" in bad.json()["detail"]


def test_a_job_in_parts_reads_every_part_with_its_labels(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
) -> None:
    created = api.post("/v1/jobs", params={"parts": "true", "positive_from": "7"})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    pieces = [
        "id,rating,text\na,9,fine film\nb,2,dull\n",
        "id,rating,text\nc,7,good\nd,,no rating here\n",
    ]
    for number, piece in enumerate(pieces, start=1):
        stored = api.put(f"/v1/jobs/{job_id}/parts/{number}", content=piece.encode())
        assert stored.status_code in (200, 201), stored.text
    assert api.post(f"/v1/jobs/{job_id}/complete", json={"parts": 2}).status_code == 200
    work_off(sent)
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert (job["label_column"], job["positive_from"]) == ("rating", 7.0)
    evaluation = job["summary"]["evaluation"]
    assert (evaluation["rows"], evaluation["left_out"]) == (
        3,
        {"no_label": 1, "unreadable_label": 0},
    )
    confusion = evaluation["confusion"]
    assert confusion["true_positive"] + confusion["false_negative"] == 2  # a (9) and c (7)
