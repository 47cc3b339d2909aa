"""The benchmark's readers: wrk's output, the worker's chunk records, the Lua bodies it sends.
(The benchmark itself is `make bench`; speed targets live there, never in tests.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.load import parse_wrk, write_lua
from bench.phases import ChunkRecord, phase_summary
from bench.results import CpuShare, LoadRun, Rows
from bench.targets import targets

# As wrk 4.1 prints it: values in seconds keep a trailing space for alignment.
WRK_OUTPUT = f"""Running 10s test @ http://127.0.0.1:8000/v1/score
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    19.26ms    8.10ms  95.12ms   80.12%
    Req/Sec     2.75k   310.22     3.20k    70.00%
  Latency Distribution
     50%   19.26ms
     75%   23.01ms
     90%   28.44ms
     99%    1.02s{" "}
  27436 requests in 10.00s, 6.43MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2743.62
Transfer/sec:    658.37KB
"""


def test_wrk_output_gives_requests_errors_and_percentiles_in_ms() -> None:
    assert parse_wrk(WRK_OUTPUT) == {
        "requests": 27436,
        "errors": 7,
        "p50_ms": 19.26,
        "p99_ms": 1020.0,
    }


def test_wrk_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no summary"):
        parse_wrk("unable to connect to 127.0.0.1:8000 Connection refused")


def test_chunk_records_are_read_by_job_from_the_workers_json_lines(tmp_path: Path) -> None:
    record = {
        "job": "j1",
        "seq": 0,
        "attempt": 1,
        "rows": 1000,
        "scored": 900,
        "cached": 100,
        "claim_s": 0.01,
        "lookup_s": 0.02,
        "score_s": 0.09,
        "write_s": 0.03,
    }
    other = dict(record, job="j2")
    (tmp_path / "worker.log").write_text(
        "\n".join(
            [
                "[2026-11-26 22:00:00,000: INFO/ForkPoolWorker-1] loaded model nbsvm",
                f"[2026-11-26 22:00:01,000: INFO/ForkPoolWorker-1] chunk_written {json.dumps(record)}",
                f"[2026-11-26 22:00:01,000: INFO/ForkPoolWorker-2] chunk_written {json.dumps(other)}",
            ]
        )
    )
    summary = phase_summary(tmp_path, "j1", rows=1000, wall_s=0.3)
    assert summary is not None
    assert summary.chunks == 1
    assert summary.phase_seconds == {"claim": 0.01, "lookup": 0.02, "score": 0.09, "write": 0.03}
    assert summary.busy_fraction == pytest.approx(0.5)
    assert summary.model_reviews_per_s == pytest.approx(10_000)
    assert ChunkRecord.parse("chunk_skipped {}") is None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (scripts/install-wrk.sh)")
def test_wrk_sends_every_text_intact(tmp_path: Path) -> None:
    texts = ['He said "]====]" and left.', "Caf\u00e9 \\ <br /> \U0001f3ac", "plain"]
    received: list[bytes] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lua = write_lua(tmp_path / "score.lua", texts)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        subprocess.run(
            ["wrk", "-t1", "-c1", "-d1s", "-s", str(lua), f"{url}/v1/score"],
            capture_output=True,
            check=True,
        )
    finally:
        server.shutdown()
    sent = [json.loads(body)["reviews"] for body in received]
    assert len(sent) >= len(texts)
    assert all(len(reviews) == 1 for reviews in sent)
    assert {reviews[0] for reviews in sent} == set(texts)


def load_run(connections: int, p50: float, p99: float, requests: int) -> LoadRun:
    cpu = CpuShare(client=0.05, api=0.9, worker=0.6, redis=0.05, machine=1.9, cores=2)
    return LoadRun("wrk", connections, 10.0, requests, 0, p50, p99, cpu)


def test_singles_targets_read_1_and_64_connections() -> None:
    rows = Rows(singles=[load_run(1, 3.0, 6.0, 3000), load_run(64, 20.0, 60.0, 31_000)])
    found = {t.name: t for t in targets(rows, busy_connections=32)}
    assert found["singles p50 at 1 connection (ms)"].met is True
    assert found["singles at 64 connections (reviews/s)"].value == 3100
    assert found["singles p99 at 64 connections (ms)"].met is False
    assert found["bulk / limit"].met is None  # not measured in this run
