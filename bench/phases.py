"""Where a job's worker time went, read from the worker's structured log: one
`chunk_written {...}` JSON record per chunk (worker/tasks.py), with its phase times."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from bench.results import PhaseSummary

RECORD = "chunk_written "
PHASES = ("claim", "lookup", "score", "write")


@dataclass(frozen=True)
class ChunkRecord:
    job: str
    seq: int
    rows: int
    scored: int  # rows the model scored now (the others came from the dedup cache)
    seconds: dict[str, float]  # per phase

    @classmethod
    def parse(cls, line: str) -> ChunkRecord | None:
        if RECORD not in line:
            return None
        record = json.loads(line.split(RECORD, 1)[1])
        return cls(
            job=record["job"],
            seq=record["seq"],
            rows=record["rows"],
            scored=record["scored"],
            seconds={p: float(record[f"{p}_s"]) for p in PHASES},
        )


def chunk_records(log_dir: Path, job_id: str) -> list[ChunkRecord]:
    found = []
    for path in sorted(log_dir.glob("worker*.log")):
        for line in path.read_text(errors="replace").splitlines():
            record = ChunkRecord.parse(line)
            if record is not None and record.job == job_id:
                found.append(record)
    return found


def wait_for_records(log_dir: Path, job_id: str, rows: int, timeout: float) -> list[ChunkRecord]:
    """The job's records once they cover its rows: a worker logs its chunk's record just after
    the commit that can finish the job, so the last one may land after the client saw it done."""
    deadline = time.monotonic() + timeout
    while True:
        records = chunk_records(log_dir, job_id)
        if sum(r.rows for r in records) >= rows or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def phase_summary(log_dir: Path, job_id: str, rows: int, wall_s: float) -> PhaseSummary | None:
    """Seconds per phase summed over the job's chunks, the workers' busy fraction, and the
    model's rate inside the worker."""
    records = wait_for_records(log_dir, job_id, rows, timeout=10)
    if not records:
        return None
    totals = {p: sum(r.seconds[p] for r in records) for p in PHASES}
    return PhaseSummary(
        chunks=len(records),
        phase_seconds=totals,
        busy_fraction=sum(totals.values()) / wall_s,
        model_reviews_per_s=sum(r.scored for r in records) / max(totals["score"], 1e-9),
    )
