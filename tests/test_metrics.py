"""/metrics on the real stack: rows scored and failed are counters that a deleted job does not
lower and that every API process reports alike; HTTP requests are counted and timed by route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningStack, another_api, sample_reviews, write_csv

pytestmark = pytest.mark.parametrize("service", ["sqlite"], indirect=True)


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text page."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


def rows(text: str) -> tuple[float, float]:
    return (
        sample(text, "reviewscore_rows_total", outcome="scored"),
        sample(text, "reviewscore_rows_total", outcome="failed"),
    )


@pytest.fixture
def second_api(service: RunningStack, tmp_path: Path) -> Iterator[str]:
    """Another API process on the same database and Redis (a restart, or a second instance)."""
    with another_api(service) as (url, _):
        yield url


def test_row_counters_count_new_rows_and_never_fall_when_a_job_is_deleted(
    service: RunningStack, tmp_path: Path, second_api: str
) -> None:
    scored_before, failed_before = rows(scrape(service.url))
    texts = [{"text": r["text"]} for r in sample_reviews(60, seed=21)] + [{"text": "  "}] * 3
    job = service.client.submit(write_csv(tmp_path / "m.csv", texts))
    done = service.wait_job(job["id"])
    assert (done["scored"], done["failed"]) == (60, 3)  # blank texts fail, one row each

    scored, failed = rows(scrape(service.url))
    assert scored >= scored_before + 60 and failed >= failed_before + 3
    service.client.delete(job["id"])
    after_delete = rows(scrape(service.url))
    assert after_delete[0] >= scored and after_delete[1] >= failed
    # Another API process (or this one restarted) reads the same totals: nothing is per process.
    assert rows(scrape(second_api)) == after_delete

    # A job deleted before any scrape saw it still counts: the delete counts it first.
    quick = service.client.submit(write_csv(tmp_path / "q.csv", texts[:5]))
    service.wait_job(quick["id"])
    service.client.delete(quick["id"])
    assert rows(scrape(service.url))[0] >= after_delete[0] + 5


def test_http_requests_are_counted_and_timed_by_route_template(service: RunningStack) -> None:
    job_route = "/v1/jobs/{job_id}"
    before = scrape(service.url)
    count = lambda text: (  # noqa: E731
        sample(text, "reviewscore_http_requests_total", method="GET", route=job_route, status="404")
        if f'route="{job_route}",status="404"' in text
        else 0.0
    )
    with service.http() as http:
        for _ in range(3):
            assert http.get(f"/v1/jobs/{'e' * 32}").status_code == 404
        assert http.get("/no/such/page").status_code == 404
    after = scrape(service.url)
    assert count(after) == count(before) + 3
    labels = {"method": "GET", "route": job_route, "status": "404"}
    assert sample(after, "reviewscore_http_request_duration_seconds_count", **labels) >= 3
    inf = {"le": "+Inf", **labels}  # the client library writes `le` first
    assert sample(after, "reviewscore_http_request_duration_seconds_bucket", **inf) >= 3
    # Unknown paths share one label, so a scan cannot create a series per path.
    assert 'route="unmatched"' in after and "/no/such/page" not in after
    for kept in ("reviewscore_jobs", "reviewscore_queue_depth", "reviewscore_model_info"):
        assert f"# TYPE {kept} gauge" in after
    assert "reviewscore_model_info{" in after and "reviewscore_queue_depth{" in after
