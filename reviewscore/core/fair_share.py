"""Fair share between API keys: which key's chunk a worker claims next (chunks.claim_next).

Stride scheduling: each key has a virtual time, `fair_shares.served`, the rows it was served
divided by its weight (`api_keys.weight`, 1 if unset). The next chunk goes to the key with work
queued whose virtual time is the lowest, so keys with work take turns, a key of weight 3 three
chunks for one of a key of weight 1. Within a key, chunks go by position across its jobs (the
first chunk of each, then the second of each...), so a key's small job is not stuck behind its
own big one either. Jobs of no key (auth off) are one more key, owner 0.

A key's virtual time is judged against the lowest one among the keys with work (the floor), and
held within one chunk of it: a key that comes back after a pause does not get every worker
until it has caught up with the others (below the floor it counts as the floor), and one that
was served alone for hours is not shut out until the others catch up (above the floor plus one
of its chunks it counts as that)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from reviewscore.core.clock import db_now
from reviewscore.core.schema import ApiKey, Chunk, ChunkStatus, FairShare, Job, JobStatus

NO_KEY = 0
NEVER = datetime.min.replace(tzinfo=UTC)
# A job can have queued chunks only in these; the status index keeps the look-up small.
ACTIVE_STATUSES = (JobStatus.uploading, JobStatus.queued, JobStatus.running)


@dataclass
class Turn:
    """One key with queued work: its weight, its virtual time, and its jobs with queued chunks,
    in the order their next chunks go (by the position of their first queued chunk)."""

    owner: int
    weight: float
    served: float | None
    served_at: datetime | None
    jobs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Order:
    """The keys in the order they are served next, and the floor their times are judged from."""

    turns: list[Turn]
    floor: float
    chunk_rows: int

    def ceiling(self, turn: Turn) -> float:
        return self.floor + self.chunk_rows / turn.weight


def effective(served: float | None, floor: float, ceiling: float) -> float:
    return min(max(served if served is not None else floor, floor), ceiling)


def order(conn: Connection, chunk_rows: int) -> Order:
    """The keys with queued chunks, the one to serve first first (of two level, the one served longer ago)."""
    owner = func.coalesce(Job.owner_key_id, NO_KEY)
    # The position of the job's first queued chunk (NULL: none): one probe of ix_chunks_queued.
    first_queued = (
        select(Chunk.seq)
        .where(Chunk.job_id == Job.id, Chunk.status == ChunkStatus.queued)
        .order_by(Chunk.seq)  # not min(): SQLite would read every entry of the job's
        .limit(1)
        .correlate(Job)
        .scalar_subquery()
    )
    found = conn.execute(
        select(Job.id, first_queued, owner, ApiKey.weight, FairShare.served, FairShare.served_at)
        .select_from(Job)
        .outerjoin(ApiKey, ApiKey.id == Job.owner_key_id)
        .outerjoin(FairShare, FairShare.owner == owner)
        .where(Job.status.in_(ACTIVE_STATUSES))
        .order_by(Job.created_at, Job.id)
    ).all()
    turns: dict[int, Turn] = {}
    positions: dict[str, int] = {}
    for job_id, position, key, weight, served, served_at in found:
        if position is None:
            continue
        share = weight if weight and weight > 0 else 1.0
        turn = turns.setdefault(key, Turn(key, share, served, served_at))
        turn.jobs.append(job_id)
        positions[job_id] = position
    for turn in turns.values():
        # By position across the key's jobs, the older first at the same position (stable).
        turn.jobs.sort(key=lambda job_id: positions[job_id])
    known = [t.served for t in turns.values() if t.served is not None]
    floor = min(known) if known else 0.0
    result = Order([], floor, max(1, chunk_rows))
    result.turns.extend(
        sorted(
            turns.values(),
            key=lambda t: (
                effective(t.served, floor, result.ceiling(t)),
                t.served_at is not None,  # never served yet: first
                t.served_at or NEVER,
                t.owner,
            ),
        )
    )
    return result


def charge(conn: Connection, order: Order, turn: Turn, rows: int) -> None:
    """Counts `rows` served to `turn`'s key, in one statement (an increment: concurrent claims
    of one key all count)."""
    amount = rows / turn.weight
    floor, ceiling = order.floor, order.ceiling(turn)
    stmt: postgresql.Insert | sqlite.Insert
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(FairShare)
        held = func.least(func.greatest(FairShare.served, floor), ceiling)
    else:
        stmt = sqlite.insert(FairShare)
        held = func.min(func.max(FairShare.served, floor), ceiling)
    conn.execute(
        stmt.values(
            owner=turn.owner, served=floor + amount, served_at=db_now()
        ).on_conflict_do_update(
            index_elements=[FairShare.owner], set_={"served": held + amount, "served_at": db_now()}
        )
    )
