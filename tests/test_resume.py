"""`reviewscore score FILE -o OUT` SIGKILLed at random moments of its upload and run again:
the same job is resumed (only the parts not stored are sent), and the results hold every id
exactly once, in input order. Bytes go through a counting TCP proxy, so what the CLI sent in
all its runs is measured against the file's size."""

from __future__ import annotations

import csv
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import RunningStack, sample_reviews, wait_for, write_csv

KILLS = 3


@contextmanager
def counting_proxy(target_port: int) -> Iterator[tuple[int, list[int]]]:
    """A loopback proxy to the API: its port, and the bytes clients sent through it so far."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    sent = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with lock:
                        sent[0] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for args in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=pipe, args=args, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1]), sent
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_a_killed_cli_resumes_its_upload_and_every_id_comes_back_once_in_order(
    service: RunningStack, tmp_path: Path
) -> None:
    rows = sample_reviews(6000, seed=31)
    source = write_csv(tmp_path / "reviews.csv", rows, ["id", "text"])
    out = tmp_path / "scored.csv"
    size = source.stat().st_size
    env = dict(os.environ, REVIEWSCORE_STATE_DIR=str(tmp_path / "state"))
    seed = int(os.environ.get("RESUME_SEED", random.randrange(1_000_000)))
    print(f"resume test seed: {seed} (RESUME_SEED={seed} replays it)")
    chance = random.Random(seed)
    with counting_proxy(int(service.url.rsplit(":", 1)[1])) as (port, sent):
        command = [
            sys.executable,
            "-m",
            "reviewscore.shell.cli",
            "score",
            str(source),
            "-o",
            str(out),
            "--id-column",
            "id",
            "--part-mb",
            "0.25",
            "--parallel",
            "3",
            "--url",
            f"http://127.0.0.1:{port}",
        ]
        said: list[str] = []
        for _ in range(KILLS):
            start = sent[0]
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            # Killed once it has sent a random share of the file (never before it began).
            share = chance.uniform(0.05, 0.3) * size
            wait_for(
                lambda s=start, p=process, share=share: (
                    sent[0] - s > share  # type: ignore[misc]
                    or p.poll() is not None
                ),
                120,
                "the CLI to send part of the file",
            )
            process.send_signal(signal.SIGKILL)
            said.append(process.communicate(timeout=30)[1])
            time.sleep(0.05)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        said.append(done.stderr)
    assert done.returncode == 0, done.stderr
    resumed = [line for text in said for line in text.splitlines() if "resuming job" in line]
    assert resumed, said
    assert resumed[-1].endswith("parts already stored")
    with out.open(newline="") as f:
        ids = [r["id"] for r in csv.DictReader(f)]
    assert ids == [r["id"] for r in rows], "every id once, in input order"
    print(
        f"sent {sent[0]:,} bytes for a {size:,}-byte file ({sent[0] / size:.2f}x) in {KILLS + 1} runs"
    )
    assert sent[0] < 1.5 * size + 64_000 * (KILLS + 1)
