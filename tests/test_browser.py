"""The /ui page in a real headless Chromium, against the real stack (API, Redis, worker)."""

from __future__ import annotations

import csv
import gzip
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reviewscore.core.settings import Environment, Settings
from tests.conftest import RunningStack, free_port, write_csv

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("service", ["sqlite"], indirect=True),
]

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCORE_TIMEOUT_MS = 60_000
JOB_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (make browser)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


class OpenPage:
    """A fresh browser context on one server that refuses (and remembers) any other address."""

    def __init__(self, browser: Any, base_url: str, **options: Any) -> None:
        self.base_url = base_url
        self.foreign: list[str] = []
        options.setdefault("viewport", {"width": 1200, "height": 900})
        self.context = browser.new_context(base_url=base_url, accept_downloads=True, **options)
        self.context.route("**/*", self._only_this_server)
        self.page = self.context.new_page()

    def _only_this_server(self, route: Any) -> None:
        if route.request.url.startswith(self.base_url + "/"):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser: Any, service: RunningStack) -> Iterator[Any]:
    opened = OpenPage(browser, service.url)
    yield opened.page
    opened.close()
    assert opened.foreign == [], "the page fetched something from another server"


def choose_csv(page: Any, path: Path) -> None:
    page.set_input_files("#csv-file", str(path))
    expect(page.locator("#file-info")).to_contain_text(path.name)


def test_single_review_shows_both_scores_and_the_model_version(
    ui: Any, service: RunningStack
) -> None:
    ui.goto("/ui")
    expect(ui).to_have_title("Movie Review Sentiment Classification")
    expect(ui.locator("#service-status")).to_have_text("ready · 1 worker")
    expect(ui.locator("#banner")).to_be_hidden()
    expect(ui.get_by_label("Input Text")).to_have_attribute("rows", "5")

    ui.get_by_role("button", name="I love this movie! It is amazing.").click()
    expect(ui.get_by_label("Input Text")).to_have_value("I love this movie! It is amazing.")
    ui.get_by_role("button", name="Score", exact=True).click()

    expect(ui.locator("#score-output")).to_be_visible(timeout=SCORE_TIMEOUT_MS)
    positive = float(ui.locator("#positive-score").inner_text())
    negative = float(ui.locator("#negative-score").inner_text())
    assert 0.0 <= positive <= 1.0
    assert abs(positive + negative - 1.0) < 0.0015
    assert ui.locator("#verdict").inner_text() == ("Positive" if positive >= 0.5 else "Negative")
    with service.http() as http:
        default = next(m for m in http.get("/v1/models").json()["models"] if m["default"])
    expect(ui.locator("#model-version")).to_have_text(default["version"])
    expect(ui.locator("#model-name")).to_have_text(default["name"])


def test_bulk_upload_follows_the_job_and_downloads_the_results(
    ui: Any, service: RunningStack, tmp_path: Path
) -> None:
    rows = [
        {"id": f"r{i}", "headline": f"headline {i}", "review_text": text}
        for i, text in enumerate(
            [
                "A wonderful film, I loved every minute.",
                "Dull, slow and far too long.",
                "The acting was fine but the plot made no sense.",
                "One of the best movies of the year.",
                "I want my two hours back.",
            ]
        )
    ]
    path = write_csv(tmp_path / "reviews.csv", rows)
    ui.goto("/ui")
    choose_csv(ui, path)
    text_column = ui.get_by_label("Text column")
    # No 'text' or 'review' column: nothing is preselected, every header cell is offered.
    expect(text_column).to_have_value("")
    options = text_column.locator("option").all_inner_texts()
    assert options[1:] == ["id", "headline", "review_text"]
    expect(ui.get_by_label("ID column")).to_have_value("id")
    text_column.select_option("review_text")
    ui.get_by_role("button", name="Upload and score").click()

    link = ui.locator("#download-link")
    expect(link).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(ui.locator("#job-status")).to_have_text("succeeded")
    expect(ui.locator("#job-progress")).to_contain_text("5 / 5 rows scored")
    expect(ui.locator("#job-progress")).to_contain_text("rows/s")
    href = link.get_attribute("href")
    assert href is not None and href.endswith("/results?format=csv")
    job_id = href.split("/")[3]

    with ui.expect_download() as download_info:
        link.click()
    download = download_info.value
    body = Path(download.path()).read_text(encoding="utf-8")
    results = list(csv.DictReader(body.splitlines()))
    assert [r["id"] for r in results] == [r["id"] for r in rows]
    assert all(r["error"] == "" for r in results)
    assert all(0.0 <= float(r["p_positive"]) <= 1.0 for r in results)

    # The recent-jobs table lists it with its status and a results link.
    row = ui.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_contain_text("reviews.csv")
    expect(row).to_contain_text("succeeded")
    expect(row.get_by_role("link", name="results")).to_be_visible()


def test_upload_waits_for_a_text_column_to_be_chosen(ui: Any, tmp_path: Path) -> None:
    path = tmp_path / "no-text.csv"
    path.write_text("title,body\nSome title,Some body\n", encoding="utf-8")
    ui.goto("/ui")
    choose_csv(ui, path)
    expect(ui.locator("#file-info")).to_contain_text("no 'text' or 'review' column")
    button = ui.get_by_role("button", name="Upload and score")
    expect(button).to_be_disabled()
    ui.get_by_label("Text column").select_option("body")
    expect(button).to_be_enabled()
    ui.get_by_label("Text column").select_option("")
    expect(button).to_be_disabled()


def test_a_workbook_is_refused_before_the_upload(ui: Any, tmp_path: Path) -> None:
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    ui.goto("/ui")
    ui.set_input_files("#csv-file", str(path))
    expect(ui.locator("#file-info")).to_contain_text("Excel workbook")
    expect(ui.get_by_role("button", name="Upload and score")).to_be_disabled()
    assert ui.get_by_label("Text column").locator("option").count() == 0


def test_separator_and_encoding_are_detected_and_sent_when_chosen(ui: Any, tmp_path: Path) -> None:
    path = tmp_path / "excel-fr.csv"
    path.write_bytes("id;critique;note\r\n1;Très bon film, j'ai adoré;5\r\n".encode("cp1252"))
    ui.goto("/ui")
    choose_csv(ui, path)
    text_column = ui.get_by_label("Text column")
    assert text_column.locator("option").all_inner_texts()[1:] == ["id", "critique", "note"]
    expect(ui.get_by_label("Separator")).to_have_value("")  # detect
    text_column.select_option("critique")
    ui.get_by_label("Encoding").select_option("windows-1252")
    ui.get_by_label("Separator").select_option(";")
    text_column.select_option("critique")  # the header was read again with the new choices
    with ui.expect_request(lambda r: "/v1/jobs?" in r.url and r.method == "POST") as sent:
        ui.get_by_role("button", name="Upload and score").click()
    query = sent.value.url.split("?", 1)[1]
    assert "delimiter=%3B" in query and "encoding=windows-1252" in query
    assert "text_column=critique" in query and "id_column=id" in query


def test_header_is_read_from_quoted_and_gzipped_files(ui: Any, tmp_path: Path) -> None:
    plain = tmp_path / "quoted.csv"
    plain.write_text('\ufeff"id","title, with comma","Review"\n1,a,"good"\n', encoding="utf-8")
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(b"id,text,stars\n1,great,5\n"))
    ui.goto("/ui")

    choose_csv(ui, plain)
    text_column = ui.get_by_label("Text column")
    assert text_column.locator("option").all_inner_texts() == ["id", "title, with comma", "Review"]
    expect(text_column).to_have_value("Review")

    choose_csv(ui, packed)
    assert text_column.locator("option").all_inner_texts() == ["id", "text", "stars"]
    expect(text_column).to_have_value("text")


# ---------------------------------------------------------------- API keys and readiness ----


def start_extra_api(
    service: RunningStack,
    var_dir: Path,
    *,
    env: Environment,
    own_redis: bool,
    extra_env: dict[str, str] | None = None,
) -> tuple[Any, str]:
    """One more API process on the service's database: with its Redis (and workers) or a
    Redis of its own that no worker listens to; `extra_env`: more settings of its own."""
    from reviewscore.shell.runner import Stack

    port = free_port()
    settings = Settings(
        env=env,
        var_dir=var_dir if own_redis else service.settings.var_dir,
        database_url=service.settings.database_url,
        models_dir=service.settings.models_dir,
        api_port=port,
        redis_url="",
        flower_password="browser-test-secret",
    )
    # The child reads its settings from the environment, and production refuses the default.
    stack = Stack(
        settings,
        extra_env={"REVIEWSCORE_FLOWER_PASSWORD": settings.flower_password, **(extra_env or {})},
    )
    if own_redis:
        stack.start_redis()
    stack.spawn("api", stack.api_args())
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until(
            "API", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 60
        )
    except BaseException:
        stack.stop()
        raise
    return stack, url


def test_a_server_that_needs_a_key_asks_for_it_and_sends_it(
    browser: Any, service: RunningStack, tmp_path: Path
) -> None:
    from sqlalchemy.orm import Session

    from reviewscore.core import keys

    with Session(service.engine()) as session:
        _, key = keys.create_key(session, "browser-test")
        session.commit()
    stack, url = start_extra_api(service, tmp_path, env=Environment.production, own_redis=False)
    opened = OpenPage(browser, url)
    try:
        page = opened.page
        page.goto("/ui")
        panel = page.locator("#key-panel")
        expect(panel).to_be_visible()
        page.get_by_label("API key", exact=True).fill("rs_not-a-real-key")
        page.get_by_role("button", name="Use this key").click()
        expect(panel).to_be_visible()
        expect(page.locator("#key-message")).to_contain_text("unknown or revoked")

        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Use this key").click()
        expect(panel).to_be_hidden()
        expect(page.locator("#jobs-empty")).not_to_contain_text("cannot be listed")
        assert page.evaluate("sessionStorage.getItem('reviewscore.apiKey')") == key

        page.get_by_role("button", name="Bad movie.").click()
        page.get_by_role("button", name="Score", exact=True).click()
        expect(page.locator("#score-output")).to_be_visible(timeout=SCORE_TIMEOUT_MS)
        expect(page.locator("#score-error")).to_be_hidden()
        assert 0.0 <= float(page.locator("#positive-score").inner_text()) <= 1.0

        # A reload keeps the key for this tab.
        page.reload()
        expect(page.locator("#key-status")).to_be_visible()
        expect(page.locator("#key-panel")).to_be_hidden()
    finally:
        opened.close()
        stack.stop()
    assert opened.foreign == []


def test_a_service_without_workers_says_it_is_not_ready(
    browser: Any, service: RunningStack, tmp_path: Path
) -> None:
    stack, url = start_extra_api(service, tmp_path, env=Environment.development, own_redis=True)
    opened = OpenPage(browser, url)
    try:
        page = opened.page
        page.goto("/ui")
        expect(page.locator("#banner")).to_have_text("service not ready: no worker", timeout=15_000)
        expect(page.locator("#service-status")).to_have_text("not ready")
    finally:
        opened.close()
        stack.stop()
    assert opened.foreign == []


def test_job_options_from_the_form_are_sent_and_shown_on_the_job(
    browser: Any, service: RunningStack, tmp_path: Path
) -> None:
    # An API that lets webhooks go to this (unanswered) prefix, signed with a secret of its
    # own; the service's own API lists no prefix.
    hooks = f"http://127.0.0.1:{free_port()}/hooks/"
    stack, url = start_extra_api(
        service,
        tmp_path,
        env=Environment.development,
        own_redis=False,
        extra_env={
            "REVIEWSCORE_URL_ALLOW": hooks,
            "REVIEWSCORE_WEBHOOK_SECRET": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
    )
    rows = [
        {"id": "a", "text": "A wonderful film, I loved every minute.", "verdict": "pos"},
        {"id": "b", "text": "Dull, slow and far too long.", "verdict": "neg"},
        {"id": "c", "text": "One of the best movies of the year.", "verdict": "pos"},
    ]
    # 'verdict' is no label column the server would pick by itself: only the form's choice.
    path = write_csv(tmp_path / "labeled.csv", rows)
    opened = OpenPage(browser, url)
    try:
        page = opened.page
        page.goto("/ui")
        choose_csv(page, path)
        label_column = page.get_by_label("Label column")
        expect(label_column).to_have_value("")  # detect
        assert label_column.locator("option").all_inner_texts()[1:] == ["id", "text", "verdict"]
        label_column.select_option("verdict")
        page.get_by_label("Labels").fill("team:search, run:7")
        page.get_by_label("Deadline").fill("2h")
        page.get_by_label("Webhook URL").fill(hooks + "done")
        with page.expect_response(
            lambda r: "/v1/jobs?" in r.url and r.request.method == "POST"
        ) as answered:
            page.get_by_role("button", name="Upload and score").click()
        response = answered.value
        assert response.status == 202, response.text()
        query = response.url.split("?", 1)[1]
        assert "label=team%3Asearch&label=run%3A7" in query
        assert "label_column=verdict" in query and "deadline=2h" in query

        job_id = response.json()["id"]
        with httpx.Client(base_url=url, timeout=30) as http:
            job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["metadata"] == {"team": "search", "run": "7"}
        assert job["callback_url"] == hooks + "done"
        assert job["label_column"] == "verdict"
        assert job["deadline_at"] is not None
        # The page shows them on the job it follows (the webhook's line changes as it is
        # tried), and the evaluation against 'verdict' once the job is done.
        expect(page.locator("#job-labels")).to_contain_text("team: search")
        expect(page.locator("#job-labels")).to_contain_text("run: 7")
        expect(page.locator("#job-webhook")).to_contain_text("webhook")
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
        expect(page.locator("#job-summary")).to_contain_text("3 labeled rows")
        finished = service.wait_job(job_id)
        assert finished["summary"]["evaluation"]["rows"] == 3
    finally:
        opened.close()
        stack.stop()
    assert opened.foreign == []


def test_root_redirects_to_the_page_and_unknown_assets_are_404(service: RunningStack) -> None:
    with service.http() as http:
        root = http.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui"
        page = http.get("/ui")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert http.get("/ui/static/app.js").status_code == 200
        missing = http.get("/ui/static/..%2Fui.py")
        assert missing.status_code == 404 and "detail" in missing.json()


# ---------------------------------------------------------------- issue 12: the page's points ----


def finished_job(service: RunningStack, tmp_path: Path, name: str, rows: int = 5) -> dict[str, Any]:
    texts = ["A wonderful film.", "Dull and slow.", "Fine acting.", "Loved it.", "Awful."]
    path = write_csv(tmp_path / name, [{"text": texts[i % 5]} for i in range(rows)])
    return service.wait_job(service.client.submit(path)["id"])


def test_recent_jobs_show_status_rows_and_results_at_phone_width(
    browser: Any, service: RunningStack, tmp_path: Path
) -> None:
    job = finished_job(service, tmp_path, "phone-width-reviews.csv")
    opened = OpenPage(browser, service.url, viewport={"width": 375, "height": 800}, is_mobile=True)
    try:
        page = opened.page
        page.goto("/ui")
        row = page.locator(f'tr[data-job-id="{job["id"]}"]')
        expect(row).to_be_visible()
        for part in (
            row.locator(".badge"),
            row.locator("td.rows"),
            row.get_by_role("link", name="results"),
            row.get_by_role("button", name=f"delete job {job['id']}"),
        ):
            expect(part).to_be_visible()
            box = part.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
        expect(row.locator(".badge")).to_have_text("succeeded")
        expect(row.locator("td.rows")).to_contain_text("5 / 5")
        # Nothing wider than the phone: no sideways scrolling of the page.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        opened.close()
    assert opened.foreign == []


def test_model_choice_lists_the_models_and_scores_with_the_chosen_one(
    ui: Any, service: RunningStack
) -> None:
    models = service.client.models()["models"]
    ui.goto("/ui")
    choice = ui.locator("#single-model")
    expect(choice).to_be_enabled()
    assert choice.locator("option").evaluate_all("os => os.map(o => o.value)") == [
        m["name"] for m in models
    ]
    default = next(m for m in models if m["default"])
    expect(choice).to_have_value(default["name"])
    expect(ui.locator("#bulk-model")).to_have_value(default["name"])
    for model in models:
        choice.select_option(model["name"])
        placeholder = ui.get_by_label("Input Text").get_attribute("placeholder") or ""
        if model["max_tokens"] is None:
            assert "reads all of it" in placeholder and "500" not in placeholder
        else:
            assert f"first {model['max_tokens']} tokens" in placeholder
    other = next((m for m in models if not m["default"]), default)
    choice.select_option(other["name"])
    ui.get_by_role("button", name="Bad movie.").click()
    ui.get_by_role("button", name="Score", exact=True).click()
    expect(ui.locator("#model-name")).to_have_text(other["name"], timeout=SCORE_TIMEOUT_MS)
    expect(ui.locator("#model-version")).to_have_text(other["version"])


def test_a_finished_job_can_be_deleted_from_the_page(
    ui: Any, service: RunningStack, tmp_path: Path
) -> None:
    job = finished_job(service, tmp_path, "to-delete.csv")
    ui.goto("/ui")
    row = ui.locator(f'tr[data-job-id="{job["id"]}"]')
    expect(row).to_be_visible()
    ui.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"delete job {job['id']}").click()
    expect(row).to_have_count(0)
    with service.http() as http:
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 404


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata"])
def test_job_times_are_shown_in_the_browsers_time_zone(
    browser: Any, service: RunningStack, tmp_path: Path, zone: str
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    job = finished_job(service, tmp_path, f"zone-{zone.replace('/', '-')}.csv")
    assert job["created_at"].endswith("Z")  # the API sends UTC, marked as such
    utc = datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
    expected = utc.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    opened = OpenPage(browser, service.url, timezone_id=zone)
    try:
        page = opened.page
        page.goto("/ui")
        created = page.locator(f'tr[data-job-id="{job["id"]}"] td.created')
        expect(created).to_have_text(expected)
    finally:
        opened.close()
    assert opened.foreign == []


def test_a_finished_jobs_summary_is_shown(ui: Any, service: RunningStack, tmp_path: Path) -> None:
    job = finished_job(service, tmp_path, "summary.csv")
    summary = service.client.job(job["id"])["summary"]
    ui.goto("/ui")
    ui.get_by_role("button", name=f"details of job {job['id']}").click()
    box = ui.locator("#job-summary")
    expect(box).to_be_visible()
    expect(ui.locator("#job-title")).to_have_text("summary.csv")
    expect(box).to_contain_text("share positive")
    expect(box).to_contain_text(f"{summary['share_positive'] * 100:.1f} %")
    expect(box.locator(".histogram span")).to_have_count(10)


def test_the_status_pill_says_unreachable_soon_after_the_service_dies(
    browser: Any, service: RunningStack, tmp_path: Path
) -> None:
    stack, url = start_extra_api(service, tmp_path, env=Environment.development, own_redis=False)
    opened = OpenPage(browser, url)
    try:
        page = opened.page
        page.goto("/ui")
        pill = page.locator("#service-status")
        expect(pill).to_have_text(re.compile(r"^ready"), timeout=30_000)
        stack.stop()
        # Polled every 5 s with a 4 s limit: well within 15 s (it said "ready" for 30 s before).
        expect(pill).to_have_text("unreachable", timeout=15_000)
        expect(page.locator("#banner")).to_contain_text("unreachable")
    finally:
        opened.close()
        stack.stop()


def test_api_docs_render_with_the_network_blocked(ui: Any) -> None:
    # The `ui` fixture aborts every request to another host and fails on any.
    ui.goto("/docs")
    expect(ui.locator(".swagger-ui .info .title")).to_contain_text("reviewscore", timeout=30_000)
    expect(
        ui.locator(".opblock-summary-path", has_text="/v1/jobs/{job_id}/results")
    ).to_be_visible()
