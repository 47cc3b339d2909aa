"""The service end to end on real Redis, Celery workers and SQLite/PostgreSQL, as the README shows it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sqlalchemy import func, select

from reviewscore.core.celery_app import SCORE_CHUNK, make_celery
from reviewscore.core.schema import Result
from tests.conftest import RunningStack, sample_reviews, wait_for, write_csv

SEED_EXAMPLES = [
    "I love this movie! It is amazing.",
    "Bad movie.",
    "I don't know how I feel about this movie.",
]


def parse_results(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


def test_score_answers_in_request_order(service: RunningStack) -> None:
    answer = service.client.score(SEED_EXAMPLES)
    assert answer["model_version"]
    assert len(answer["results"]) == 3
    first, second, _ = answer["results"]
    assert first["label"] == "positive" and first["p_positive"] > 0.5
    assert second["label"] == "negative" and second["p_positive"] < 0.5


def test_score_rejects_too_many_reviews_with_a_clear_message(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post("/v1/score", json={"reviews": ["good"] * 300})
    assert response.status_code == 422
    assert "limit is 256" in response.json()["detail"]


def test_upload_scores_every_row_and_downloads_in_input_order(
    service: RunningStack, tmp_path: Path
) -> None:
    rows = sample_reviews(250, seed=7)
    rows[10]["text"] = "   "  # a blank text: a per-row error, the rest is scored
    path = write_csv(tmp_path / "reviews.csv", rows, ["id", "text"])
    job = service.client.upload(path, id_column="id")
    assert job["status"] in ("queued", "running", "succeeded")
    assert job["received"] == 250
    job = service.wait_job(job["id"])
    assert job["status"] == "succeeded"
    assert (job["scored"], job["failed"]) == (249, 1)
    with service.http() as http:
        body = http.get(f"/v1/jobs/{job['id']}/results").text
    results = parse_results(body)
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert list(results[0]) == ["id", "p_positive", "label", "model_version", "truncated", "error"]
    assert results[10]["error"] == "empty text" and results[10]["p_positive"] == ""
    scored = [r for r in results if not r["error"]]
    assert len(scored) == 249
    assert all(
        r["label"] == ("positive" if float(r["p_positive"]) >= 0.5 else "negative") for r in scored
    )
    assert {r["model_version"] for r in scored} == {job["model_version"]}


def test_results_as_jsonl(service: RunningStack, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", [{"review": t} for t in SEED_EXAMPLES])
    job = service.wait_job(service.client.upload(path)["id"])
    with service.http() as http:
        lines = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).text
    import json

    parsed = [json.loads(line) for line in lines.splitlines()]
    assert [p["id"] for p in parsed] == ["1", "2", "3"]
    assert parsed[0]["label"] == "positive"


def test_upload_without_text_column_lists_the_columns(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post(
            "/v1/jobs", files={"file": ("x.csv", b"title,body\na,b\n", "text/csv")}
        )
    assert response.status_code == 422
    assert "'title', 'body'" in response.json()["detail"]


def test_unknown_and_malformed_job_ids(service: RunningStack) -> None:
    with service.http() as http:
        assert http.get("/v1/jobs/" + "0" * 32).status_code == 404
        assert http.get("/v1/jobs/not-a-job").status_code == 422


def test_cancel_of_a_finished_job_is_a_conflict(service: RunningStack, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "r.csv", [{"text": "Great fun."}])
    job = service.wait_job(service.client.upload(path)["id"])
    with service.http() as http:
        response = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert "already succeeded" in response.json()["detail"]


def test_models_jobs_and_readiness(service: RunningStack) -> None:
    with service.http() as http:
        models = http.get("/v1/models").json()["models"]
        ready = http.get("/readyz").json()
        listing = http.get("/v1/jobs", params={"limit": 2}).json()
    assert sum(m["default"] for m in models) == 1
    assert ready["ready"] and ready["workers"]
    assert ready["devices"] and all(d.startswith(("CPU", "GPU")) for d in ready["devices"])
    assert listing["limit"] == 2 and len(listing["jobs"]) <= 2


def test_a_chunk_delivered_again_is_discarded_and_counted_once(
    service: RunningStack, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "r.csv", sample_reviews(120, seed=3), ["text"])
    job = service.wait_job(service.client.upload(path)["id"])
    # Deliver chunk 0 again, as Redis would after a lost ack: the worker must not write it.
    app = make_celery(service.settings)
    app.send_task(SCORE_CHUNK, args=[job["id"], 0], queue="bulk", priority=0)
    log = service.stack.children["worker"].log_path
    skipped = f'chunk_skipped {{"job": "{job["id"]}", "seq": 0}}'
    wait_for(lambda: skipped in log.read_text(errors="replace"), 60, "the redelivery skipped")
    with service.engine().connect() as conn:
        rows = conn.execute(
            select(func.count()).select_from(Result).where(Result.job_id == job["id"])
        ).scalar_one()
    again = service.client.job(job["id"])
    assert (again["scored"], again["failed"], rows) == (120, 0, 120)


def test_metrics_show_jobs_queues_and_models(service: RunningStack, tmp_path: Path) -> None:
    service.client.score(["A fine film."])
    service.wait_job(
        service.client.upload(write_csv(tmp_path / "m.csv", [{"text": "Dull."}]))["id"]
    )
    with service.http() as http:
        text = http.get("/metrics").text
    assert 'reviewscore_jobs{status="succeeded"}' in text
    assert 'reviewscore_queue_depth{queue="bulk"}' in text
    assert "reviewscore_model_info{" in text
    # The stack's worker pool processes that have their model loaded (those that scored).
    ready = float(text.split('reviewscore_worker_processes{state="ready"} ')[1].split()[0])
    assert 1 <= ready <= service.settings.worker_processes
    assert 'reviewscore_worker_processes{state="failed"} 0.0' in text
    assert "reviewscore_workers_degraded 0.0" in text
