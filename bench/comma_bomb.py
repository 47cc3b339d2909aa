"""The comma bomb (issue 11, item 2): how much the API's memory grows while it refuses an upload
whose one row is 200 MB of commas. Starts the API (with its embedded Redis, no worker) on a
temporary SQLite file, sends the row as multipart and as a raw body, samples the API's RSS.

    python bench/comma_bomb.py [--mb 200]

Target (README, Performance): API RSS growth < 100 MB.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reviewscore.core.migrate import upgrade  # noqa: E402
from reviewscore.core.model_registry import publish_folder  # noqa: E402
from reviewscore.core.settings import Settings  # noqa: E402
from reviewscore.shell.runner import Stack  # noqa: E402

HEAD = b"id,text\n1,A fine film.\n2,A dull film.\n3,A good film.\n"
BLOCK = b"," * (1024 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bomb(mb: int, multipart: bool) -> Iterator[bytes]:
    if multipart:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="bomb.csv"\r\n\r\n'
    yield HEAD
    for _ in range(mb):
        yield BLOCK
    yield b"\n"
    if multipart:
        yield b"\r\n--b--\r\n"


def measure(url: str, api: psutil.Process, mb: int, multipart: bool) -> dict[str, object]:
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(api.memory_info().rss)
            stop.wait(0.02)

    before = api.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ctype = "multipart/form-data; boundary=b" if multipart else "text/csv"
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=600) as http:
            response = http.post(
                f"{url}/v1/jobs", content=bomb(mb, multipart), headers={"Content-Type": ctype}
            )
        status, detail = response.status_code, response.json().get("detail")
    except httpx.HTTPError as exc:  # the API may answer and close before the body is all sent
        status, detail = 0, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    time.sleep(0.5)
    stop.set()
    sampler.join()
    return {
        "body": "multipart" if multipart else "raw text/csv",
        "status": status,
        "detail": str(detail)[:200],
        "seconds": round(seconds, 1),
        "rss_before_mb": round(before / 1024**2, 1),
        "rss_peak_mb": round(max(samples) / 1024**2, 1),
        "growth_mb": round((max(samples) - before) / 1024**2, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the row of commas")
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="reviewscore-comma-bomb-"))
    port = free_port()
    settings = Settings(
        var_dir=var_dir,
        database_url=f"sqlite:///{var_dir / 'reviewscore.db'}",
        api_port=port,
        redis_url="",
    )
    upgrade(settings.database_url)
    publish_folder(REPO / "models", settings.database_url)  # uploads name a published model
    stack = Stack(settings, extra_env={"REVIEWSCORE_API_PORT": str(port)})
    try:
        stack.start(flower=False, beat=False, workers=0)
        url = f"http://127.0.0.1:{port}"
        stack.wait_until(
            "API", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 120
        )
        api = psutil.Process(stack.children["api"].process.pid)
        for multipart in (True, False):
            print(measure(url, api, args.mb, multipart), flush=True)
    finally:
        stack.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
