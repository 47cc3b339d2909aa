"""What one /metrics scrape costs with many jobs kept: `--jobs` finished jobs (each one done
chunk of 1,000 rows in the ledger, finished an hour ago) and 10 running ones, on SQLite and
PostgreSQL, with a real Redis. Prints the time of the first scrape (which reads every job) and
of the steady scrapes after it (the median of 5), and how long Redis ran the scrape's commands
(SLOWLOG: the time Redis, the broker, was blocked for it). Run with
`python -m bench.scrape --jobs 50000` (about a minute)."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from bench.coordination import postgres
from bench.deletes import use_database

RUNNING = 10


def fill(jobs: int) -> None:
    from reviewscore.core.clock import db_now_plus
    from reviewscore.core.db import session_scope
    from reviewscore.core.schema import Chunk, ChunkStatus, Job, JobStatus

    for start in range(0, jobs + RUNNING, 5000):
        ids = [uuid.uuid4().hex for _ in range(min(5000, jobs + RUNNING - start))]
        with session_scope() as s:
            s.execute(
                insert(Job),
                [
                    {
                        "id": job_id,
                        "status": JobStatus.succeeded if start + i < jobs else JobStatus.running,
                        "model_name": "m",
                        "model_version": "m-1",
                        "text_column": "text",
                    }
                    for i, job_id in enumerate(ids)
                ],
            )
            s.execute(
                insert(Chunk),
                [
                    {
                        "job_id": job_id,
                        "seq": 0,
                        "first_row": 1,
                        "row_count": 1000,
                        "status": ChunkStatus.done,
                        "scored_rows": 990,
                        "failed_rows": 10,
                    }
                    for job_id in ids
                ],
            )
    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.status == JobStatus.succeeded)
            .values(finished_at=db_now_plus(-3600))
        )


def scrape(client: Any) -> tuple[float, float]:
    from api import metrics

    client.slowlog_reset()
    started = time.perf_counter()
    metrics.render()
    took = time.perf_counter() - started
    log = client.execute_command("SLOWLOG", "GET", 100_000)
    redis_us = sum(int(entry[2]) for entry in log if entry[3][0].upper() != b"SLOWLOG")
    return took, redis_us / 1e6


def run(url: str, jobs: int, client: Any) -> dict[str, Any]:
    from reviewscore.core.migrate import upgrade

    upgrade(url)
    use_database(url)
    fill(jobs)
    if url.startswith("postgresql"):
        from sqlalchemy import text

        from reviewscore.core.db import single_statement

        with single_statement() as conn:  # as autovacuum would have by now
            conn.execute(text("VACUUM ANALYZE"))
    client.flushall()
    first = scrape(client)
    steady = [scrape(client) for _ in range(5)]
    return {
        "first_scrape_s": round(first[0], 3),
        "first_redis_s": round(first[1], 4),
        "steady_scrape_s": round(statistics.median(s[0] for s in steady), 3),
        "steady_redis_s": round(statistics.median(s[1] for s in steady), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50_000)
    args = parser.parse_args()
    import os

    from reviewscore.shell.redis_server import EmbeddedRedis

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        server = EmbeddedRedis(tmp / "redis").start()
        try:
            os.environ["REVIEWSCORE_REDIS_URL"] = server.url
            client = server.client(timeout=60)
            client.config_set("slowlog-log-slower-than", 0)
            client.config_set("slowlog-max-len", 100_000)
            out: dict[str, Any] = {"jobs_kept": args.jobs, "running": RUNNING}
            out["sqlite"] = run(f"sqlite:///{tmp / 'scrape.db'}", args.jobs, client)
            print(json.dumps(out), flush=True)
            with postgres(tmp) as (url, _):
                from api import metrics

                metrics._redis.cache_clear()
                out["postgresql"] = run(url, args.jobs, client)
                use_database("sqlite://")
            print(json.dumps(out), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
