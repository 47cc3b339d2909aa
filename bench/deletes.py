"""Deleting a big job on SQLite while another upload streams: one job of `--rows` scored rows
(input rows, results and chunks as a finished job keeps them), deleted once in one transaction
(the way before issue 20) and once as `jobs.delete_job` does it now (marked deleted, then
batches), each time with another upload storing 1,000-row chunks meanwhile. Prints the delete's
time and the other upload's longest wait for one chunk's write. Run with
`python -m bench.deletes --rows 2000000` (minutes on 2 cores)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

CHUNK = 1000


def use_database(url: str) -> None:
    from reviewscore.core import db, settings

    os.environ["REVIEWSCORE_DATABASE_URL"] = url
    for engine in (db.get_engine, db.get_read_engine):
        if engine.cache_info().currsize:
            engine().dispose()
        engine.cache_clear()
    db._session_factory.cache_clear()
    settings.get_settings.cache_clear()


def new_job(uploading: bool) -> str:
    from reviewscore.core import jobs
    from reviewscore.core.db import session_scope

    with session_scope() as s:
        job_id = jobs.create_job(
            s,
            model_name="m",
            model_version="m-1",
            filename=None,
            text_column="text",
            id_column="id",
        )
        if not uploading:
            jobs.finish_upload(s, job_id)
    return job_id


def parsed(n: int, start: int) -> list[Any]:
    from reviewscore.core.ingest import ParsedRow

    return [ParsedRow(i, f"id-{i}", f"review {i} " * 20, None) for i in range(start, start + n)]


def build(rows: int) -> str:
    """A finished job of `rows` rows, each with its result."""
    from sqlalchemy import update

    from reviewscore.core import chunks, jobs
    from reviewscore.core.db import session_scope
    from reviewscore.core.schema import Chunk, ChunkStatus, ChunkText, Result

    job_id = new_job(uploading=True)
    for seq, start in enumerate(range(1, rows + 1, CHUNK)):
        batch = parsed(min(CHUNK, rows + 1 - start), start)
        with session_scope() as s:
            chunks.add_chunk(s, job_id, seq, batch)
            s.execute(
                insert(Result),
                [
                    {
                        "job_id": job_id,
                        "row_num": r.row_num,
                        "p_positive": 0.5,
                        "truncated": False,
                        "model_version": "m-1",
                    }
                    for r in batch
                ],
            )
            s.execute(delete(ChunkText).where(ChunkText.job_id == job_id, ChunkText.seq == seq))
            s.execute(
                update(Chunk)
                .where(Chunk.job_id == job_id, Chunk.seq == seq)
                .values(status=ChunkStatus.done, scored_rows=len(batch))
            )
    with session_scope() as s:
        jobs.finish_upload(s, job_id)
    jobs.try_complete(job_id)
    return job_id


def delete_in_one_transaction(job_id: str) -> None:
    """The delete before issue 20: every row of the job in one transaction."""
    from reviewscore.core.db import session_scope
    from reviewscore.core.schema import Chunk, ChunkText, InputRow, Job, JobPart, Result

    with session_scope() as session:
        for table in (Result, InputRow, ChunkText, Chunk, JobPart):
            session.execute(delete(table).where(table.job_id == job_id))
        session.execute(delete(Job).where(Job.id == job_id))


def measure(job_id: str, how: Any) -> dict[str, float]:
    from reviewscore.core import chunks
    from reviewscore.core.db import session_scope

    other = new_job(uploading=True)
    waits: list[float] = []
    done = threading.Event()

    def upload() -> None:
        seq = 0
        while not done.is_set():
            started = time.perf_counter()
            with session_scope() as s:
                chunks.add_chunk(s, other, seq, parsed(CHUNK, seq * CHUNK + 1))
            waits.append(time.perf_counter() - started)
            seq += 1

    streaming = threading.Thread(target=upload)
    streaming.start()
    time.sleep(1.0)  # the upload is under way
    started = time.perf_counter()
    how(job_id)
    took = time.perf_counter() - started
    done.set()
    streaming.join()
    return {
        "delete_s": round(took, 1),
        "other_upload_chunks_during": len(waits),
        "other_upload_longest_write_s": round(max(waits), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    from reviewscore.core import jobs
    from reviewscore.core.migrate import upgrade

    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "base.db"
        upgrade(f"sqlite:///{base}")
        use_database(f"sqlite:///{base}")
        started = time.perf_counter()
        job_id = build(args.rows)
        built = time.perf_counter() - started
        out: dict[str, Any] = {"rows": args.rows, "build_s": round(built, 1)}
        for name, how in (
            ("one transaction", delete_in_one_transaction),
            ("batches", jobs.delete_job),
        ):
            copy = Path(folder) / f"{name.replace(' ', '-')}.db"
            use_database(f"sqlite:///{base}")
            use_database("sqlite://")  # nothing holds the base file while it is copied
            shutil.copy(base, copy)
            use_database(f"sqlite:///{copy}")
            out[name] = measure(job_id, how)
            copy.unlink()
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
