"""Database bytes per finished row, on SQLite and on PostgreSQL: one job of `--rows` real IMDB
reviews (new texts: no cache hits) uploaded, scored by real workers with a trivial model (the
stored results and cache entries are the real ones) and finished; then the database's size is
read: SQLite's used pages (page_count - freelist_count), PostgreSQL's relations after a plain
VACUUM (which returns the trailing pages of deleted rows, as a steady service reuses them).
Two jobs per database side by side: the default (a chunk's texts dropped once it is done) and
keep_texts=true (texts kept, compressed per chunk). Run with `make bench-storage` or
`python -m bench.storage --rows N` (minutes per 100,000 rows on 2 cores)."""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.coordination import (
    REPO_ROOT,
    RESULTS_DIR,
    build_trivial_model,
    csv_bytes,
    postgres,
    reviews,
    wait,
)
from reviewscore.core.settings import Settings

TABLES = ("jobs", "chunks", "chunk_texts", "input_rows", "results", "score_cache", "job_parts")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqlite_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def postgres_bytes(url: str) -> int:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM")
        found = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(%s)",
            (list(TABLES),),
        ).fetchone()
    return int(found[0]) if found else 0


def run_one(database_url: str, tmp: Path, texts: list[str], rows: int) -> dict[str, Any]:
    from reviewscore.shell.runner import Stack

    port = _port()
    settings = Settings(
        var_dir=tmp / "var",
        database_url=database_url,
        models_dir=build_trivial_model(tmp / "models"),
        api_port=port,
        redis_url="",
    )
    env = {"REVIEWSCORE_DEFAULT_MODEL": "trivial", "REVIEWSCORE_API_PORT": str(port)}
    stack = Stack(settings, extra_env=env)
    for command in (["db", "upgrade"], ["models", "publish", str(settings.models_dir)]):
        subprocess.run(
            [str(Path(sys.executable).parent / "reviewscore"), *command],
            env=stack.env(),
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
    measure = (
        (lambda: sqlite_bytes(Path(database_url.removeprefix("sqlite:///"))))
        if database_url.startswith("sqlite")
        else (lambda: postgres_bytes(database_url))
    )
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        stack.start(flower=False, beat=False)
        stack.wait_ready(timeout=300)
        for name, params in (("texts dropped", {}), ("keep_texts", {"keep_texts": "true"})):
            before = measure()
            body = csv_bytes(texts, rows, f"storage-{name}-{time.time_ns()}")
            job = httpx.post(
                url + "/v1/jobs",
                params={"id_column": "id", **params},
                content=body,
                headers={"Content-Type": "text/csv"},
                timeout=3600,
            ).json()
            status = f"{url}/v1/jobs/{job['id']}"
            wait(
                "the job to finish",
                lambda: httpx.get(status, timeout=10).json()["finished"],  # noqa: B023 - now
                3600,
            )
            out[name] = {
                "rows": rows,
                "csv_bytes_per_row": len(body) / rows,
                "bytes_per_row": (measure() - before) / rows,
            }
    finally:
        stack.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=100_000)
    a = p.parse_args(argv)
    texts = reviews()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="storage-") as name:
        tmp = Path(name)
        (tmp / "sqlite").mkdir()
        results["sqlite"] = run_one(
            f"sqlite:///{tmp / 'sqlite' / 'reviewscore.db'}", tmp / "sqlite", texts, a.rows
        )
        with postgres(tmp) as (url, _):
            (tmp / "pg-stack").mkdir()
            results["postgres"] = run_one(url, tmp / "pg-stack", texts, a.rows)
    lines = [f"database bytes per finished row ({a.rows:,} real reviews, trivial model):"]
    for db, runs in results.items():
        for how, r in runs.items():
            lines.append(
                f"  {db:<9} {how:<14} {r['bytes_per_row']:>8,.0f} B/row "
                f"(the CSV: {r['csv_bytes_per_row']:,.0f} B/row)"
            )
    text = "\n".join(lines)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{time.strftime('%Y-%m-%d')}-storage.json"
    out.write_text(json.dumps({"rows": a.rows, "results": results, "table": text}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
