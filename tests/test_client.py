"""The Python client (`from reviewscore import Client`) against the real stack, as a user
calls it: scoring, files and DataFrames in, rows and DataFrames out, and every failure as a
typed error whose message says what to do next."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from reviewscore import ApiError, Client
from reviewscore.client import (
    ClientError,
    NotReviewscoreError,
    ServiceUnreachableError,
    _dataframe_parquet,
)
from tests.conftest import RunningStack, free_port, sample_reviews, write_csv
from tests.slow_upload import held_upload, other_web_server

SQLITE = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
TIME_FIELDS = ("created_at", "updated_at", "upload_finished_at", "started_at", "finished_at")
# Ids a spreadsheet or a careless reader would change: they must come back exactly.
TRICKY_IDS = ["-1", "+44", "007", "@moviefan", "=1+1", "1e3", " padded "]


@SQLITE
def test_score_splits_long_lists_and_keeps_their_order(service: RunningStack) -> None:
    texts = [r["text"] for r in sample_reviews(300, seed=11)]
    client = Client(service.url)
    answer = client.score(texts)
    assert len(answer["results"]) == 300  # two requests: the server takes 256 at most
    singles = [client.score([texts[i]])["results"][0] for i in (0, 255, 256, 299)]
    for i, single in zip((0, 255, 256, 299), singles, strict=True):
        assert answer["results"][i]["p_positive"] == pytest.approx(single["p_positive"], abs=1e-6)


@SQLITE
def test_submit_a_file_wait_and_read_rows_and_a_dataframe(
    service: RunningStack, tmp_path: Path
) -> None:
    reviews = sample_reviews(len(TRICKY_IDS) + 40, seed=12)
    rows = [
        {"id": (TRICKY_IDS + [f"r{i}" for i in range(40)])[i], "text": r["text"]}
        for i, r in enumerate(reviews)
    ]
    path = write_csv(tmp_path / "tricky ids.csv", rows)
    client = Client(service.url)
    job = client.submit(path, id_column="id")
    assert job["filename"] == "tricky ids.csv"  # the multipart part carries the file's name
    done = client.wait(job["id"], poll=0.2, timeout=300)
    assert done["finished"] and done["status"] == "succeeded"
    assert done["scored"] == len(rows)
    for field in TIME_FIELDS:
        assert done[field].endswith("Z"), (field, done[field])

    results = client.results(job["id"])
    assert isinstance(results, list)
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert all(0.0 <= r["p_positive"] <= 1.0 and r["error"] is None for r in results)

    frame = client.results(job["id"], as_dataframe=True)
    assert list(frame["id"]) == [r["id"] for r in rows]  # text, never parsed as numbers
    assert list(frame["p_positive"]) == [r["p_positive"] for r in results]


@SQLITE
def test_submit_a_dataframe_streams_it_as_csv(service: RunningStack) -> None:
    pd = pytest.importorskip("pandas")
    reviews = sample_reviews(120, seed=13)
    frame = pd.DataFrame(
        {"id": [f"d{i}" for i in range(len(reviews))], "text": [r["text"] for r in reviews]}
    )
    client = Client(service.url)
    job = client.submit(frame, id_column="id")
    assert job["filename"] == "dataframe.csv"
    client.wait(job["id"], poll=0.2, timeout=300)
    results = client.results(job["id"], as_dataframe=True)
    assert list(results["id"]) == list(frame["id"])
    assert results["error"].isna().all()


def test_a_dataframe_becomes_parquet_row_group_by_row_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr("reviewscore.client.DATAFRAME_SLICE_ROWS", 1000)
    frame = pd.DataFrame({"id": [f"-{i}" for i in range(2500)], "text": ["fine"] * 2500})
    pieces = list(_dataframe_parquet(frame))
    assert len([p for p in pieces if p]) >= 3  # sent as it is written, not all at the end
    table = pq.read_table(io.BytesIO(b"".join(pieces)))
    assert table.num_rows == 2500
    assert pq.ParquetFile(io.BytesIO(b"".join(pieces))).num_row_groups == 3
    assert table.column("id").to_pylist() == list(frame["id"])


def test_results_as_a_dataframe_without_pandas_names_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ClientError, match="pip install pandas"):
        Client("http://127.0.0.1:9").results("0" * 32, as_dataframe=True)


@SQLITE
def test_api_errors_carry_the_status_and_a_one_sentence_detail(service: RunningStack) -> None:
    client = Client(service.url)
    with pytest.raises(ApiError) as missing:
        client.job("f" * 32)
    assert missing.value.status_code == 404
    assert "no job with id" in missing.value.detail

    with pytest.raises(ApiError) as invalid:
        client.jobs(limit=500)
    assert invalid.value.status_code == 422
    assert isinstance(invalid.value.detail, str)
    assert "'limit'" in invalid.value.detail and "200" in invalid.value.detail

    with pytest.raises(ApiError) as too_many:
        client._json("POST", "/v1/score", json={"reviews": [1, "fine"]})
    assert "'reviews[0]'" in too_many.value.detail


@SQLITE
def test_results_of_an_unfinished_job_are_refused_then_cancel_and_delete(
    service: RunningStack,
) -> None:
    client = Client(service.url)
    with held_upload(service) as job:
        assert not client.job(job["id"])["finished"]
        with pytest.raises(ApiError) as early:
            client.results(job["id"])
        assert early.value.status_code == 409
        cancelled = client.cancel(job["id"])
        assert cancelled["status"] == "cancelled" and cancelled["finished"]
    client.delete(job["id"])
    with pytest.raises(ApiError) as gone:
        client.job(job["id"])
    assert gone.value.status_code == 404


@SQLITE
def test_short_id_prefixes_resolve_or_say_why_not(service: RunningStack, tmp_path: Path) -> None:
    client = Client(service.url)
    path = write_csv(tmp_path / "p.csv", [{"text": "Fine."}])
    ids = [j["id"] for j in client.jobs(limit=200)["jobs"]]
    # Jobs until two share a first hex digit (at most 17 by pigeonhole).
    while len({i[0] for i in ids}) == len(ids):
        ids.append(client.submit(path)["id"])
    one = ids[-1]
    assert client.resolve(one[:8]) == one
    assert client.resolve(one.upper()) == one
    shared = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) > 1)
    with pytest.raises(ClientError, match="several job ids"):
        client.resolve(shared)
    unused = next(c for c in "0123456789abcdef" * 3 if not any(i.startswith(c * 3) for i in ids))
    with pytest.raises(ClientError, match="no job id starts with"):
        client.resolve(unused * 3)
    with pytest.raises(ClientError, match="not a job id"):
        client.resolve("not-hex")


def test_no_service_at_the_address_is_a_connection_error_with_the_next_step() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnreachableError) as refused:
        Client(url).jobs()
    assert isinstance(refused.value, ConnectionError)
    assert url in str(refused.value) and "reviewscore run" in str(refused.value)


def test_an_address_without_a_scheme_is_refused_with_the_fix() -> None:
    with pytest.raises(ClientError, match=r"write http://127\.0\.0\.1:8000"):
        Client("127.0.0.1:8000")


def test_another_web_server_is_not_taken_for_the_api() -> None:
    with other_web_server() as url:
        with pytest.raises(NotReviewscoreError) as wrong:
            Client(url).job("a" * 32)
        with pytest.raises(NotReviewscoreError):
            Client(url).resolve("abc")
    message = str(wrong.value)
    assert f"{url} is not a reviewscore API" in message
    assert "<html" not in message and "nginx" not in message
