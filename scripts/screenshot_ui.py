"""Takes the README's pictures of the /ui page: one review scored and one bulk job finished, at
desktop width (docs/ui.png) and at a 375 px phone's (docs/ui-phone.png).

    .venv/bin/python scripts/screenshot_ui.py                  # starts a temporary service
    .venv/bin/python scripts/screenshot_ui.py --url http://127.0.0.1:8000   # uses a running one

Needs Debian's chromium (make browser) and an installed model.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reviewscore.core.settings import REPO_ROOT, Settings

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMDB_TEST = REPO_ROOT.parent / "shared" / "data" / "imdb" / "test.csv.gz"
FALLBACK_REVIEWS = [
    "A wonderful film, I loved every minute.",
    "Dull, slow and far too long.",
    "The acting was fine but the plot made no sense.",
    "One of the best movies of the year.",
    "I want my two hours back.",
]
MAX_PNG_BYTES = 500 * 1024


def write_sample_csv(path: Path, rows: int) -> Path:
    """A CSV of `rows` IMDB test reviews (drawn at random: the file is sorted by label)."""
    if IMDB_TEST.exists():
        with gzip.open(IMDB_TEST, "rt", encoding="utf-8", newline="") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
        texts = random.Random(2026).sample(texts, min(rows, len(texts)))
    else:
        texts = [FALLBACK_REVIEWS[i % len(FALLBACK_REVIEWS)] for i in range(rows)]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([f"review-{i + 1}", text] for i, text in enumerate(texts))
    return path


@contextmanager
def temporary_service(models_dir: Path) -> Iterator[str]:
    """The whole service (embedded Redis, API, one worker) on a throwaway SQLite database."""
    from reviewscore.core.migrate import upgrade
    from reviewscore.shell.runner import Stack

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="reviewscore-ui-") as tmp:
        var_dir = Path(tmp)
        settings = Settings(
            var_dir=var_dir,
            database_url=f"sqlite:///{var_dir / 'reviewscore.db'}",
            models_dir=models_dir,
            api_port=port,
            redis_url="",
        )
        upgrade(settings.database_url)
        stack = Stack(settings, extra_env={"REVIEWSCORE_CHUNK_SIZE": "50"})
        try:
            stack.start(flower=False, beat=True)
            stack.wait_ready(timeout=240)
            yield f"http://127.0.0.1:{port}"
        finally:
            stack.stop()


def check_size(out: Path) -> None:
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1024:.0f} KB)")
    if size > MAX_PNG_BYTES:
        sys.exit(f"{out} is over {MAX_PNG_BYTES // 1024} KB")


def score_an_example(page: Any, expect: Any) -> None:
    page.get_by_role("button", name="I love this movie! It is amazing.").click()
    page.get_by_role("button", name="Score", exact=True).click()
    expect(page.locator("#score-output")).to_be_visible(timeout=60_000)


def take_screenshots(url: str, out: Path, phone_out: Path, rows: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        sys.exit("chromium is not installed: run `make browser`")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        sample = write_sample_csv(Path(tmp) / "imdb-sample.csv", rows)
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="light")
        page.goto(f"{url}/ui")
        expect(page.locator("#service-status")).to_contain_text("ready ·", timeout=30_000)
        score_an_example(page, expect)

        page.set_input_files("#csv-file", str(sample))
        expect(page.get_by_label("Text column")).to_have_value("text")
        page.get_by_role("button", name="Upload and score").click()
        expect(page.locator("#download-link")).to_be_visible(timeout=300_000)
        expect(page.locator("#jobs-body tr").first).to_contain_text("succeeded", timeout=15_000)
        page.mouse.move(0, 0)
        # Let the bars finish their width transition before the picture.
        page.wait_for_timeout(500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)

        phone = browser.new_page(
            viewport={"width": 375, "height": 812},
            device_scale_factor=1,
            is_mobile=True,
            has_touch=True,
            color_scheme="light",
        )
        phone.goto(f"{url}/ui")
        expect(phone.locator("#service-status")).to_contain_text("ready ·", timeout=30_000)
        expect(phone.locator("#jobs-body tr").first).to_contain_text("succeeded", timeout=15_000)
        score_an_example(phone, expect)
        phone.wait_for_timeout(500)
        phone.screenshot(path=str(phone_out), full_page=True)
        browser.close()
    check_size(out)
    check_size(phone_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service; default: start a temporary one")
    parser.add_argument("--models-dir", type=Path, default=Settings().models_dir)
    parser.add_argument("--rows", type=int, default=500, help="reviews in the bulk job")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "ui.png")
    parser.add_argument("--phone-out", type=Path, default=REPO_ROOT / "docs" / "ui-phone.png")
    args = parser.parse_args()
    if args.url:
        take_screenshots(args.url.rstrip("/"), args.out, args.phone_out, args.rows)
        return
    if not any(args.models_dir.glob("*/metadata.json")):
        sys.exit(f"no model in {args.models_dir}: train one, or pass --models-dir or --url")
    with temporary_service(args.models_dir) as url:
        take_screenshots(url, args.out, args.phone_out, args.rows)


if __name__ == "__main__":
    main()
