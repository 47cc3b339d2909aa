"""The worker's chunk task in-process on a stub scorer (no TensorFlow), on real SQLite and
PostgreSQL: failure isolation, the lease heartbeat, and a lost lease that stops the work."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import select

from reviewscore.core import sweeper
from reviewscore.core.chunks import ChunkWork
from reviewscore.core.db import session_scope
from reviewscore.core.schema import Chunk, ChunkStatus, Result
from tests import factories as f
from worker import lease, plugins, tasks
from worker.scoring import score_texts_isolating_failures

pytestmark = pytest.mark.usefixtures("database")


def test_a_row_that_makes_the_model_raise_fails_alone() -> None:
    scorer = f.StubScorer(batch_size=8, fail_on="POISON")
    texts = [f"review {i}" for i in range(20)]
    texts[13] = "POISON here"
    p, _, errors = score_texts_isolating_failures(scorer, texts)  # type: ignore[arg-type]
    assert list(errors) == [13] and "stub model failure" in errors[13]
    assert sum(1 for value in p if value == value) == 19  # every other row has a score


def test_the_lease_is_renewed_on_a_timer_while_no_batch_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = f.make_job(12, 12)
    work = f.claim(job_id, 0)
    assert work is not None
    renewals: list[bool] = []
    real_renew = lease.chunks.renew_lease

    def counting(w: object, lease_s: float) -> bool:
        renewals.append(real_renew(w, lease_s))  # type: ignore[arg-type]
        return renewals[-1]

    monkeypatch.setattr(lease.chunks, "renew_lease", counting)
    with lease.LeaseKeeper(work, lease_s=0.3) as keeper:  # every 0.1 s
        time.sleep(0.55)  # the scorer busy in one call: no batch ends, no piece ends
        keeper()
    assert len(renewals) >= 3 and all(renewals), renewals


def test_a_worker_that_lost_its_chunk_stops_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = f.make_job(12, 12)
    stale = f.claim(job_id, 0)
    assert stale is not None
    assert f.claim(job_id, 0) is not None  # the sweeper gave it to another worker meanwhile
    monkeypatch.setattr(
        tasks, "get_scorer", lambda _name, _version=None: f.StubScorer(batch_size=4)
    )
    with pytest.raises(lease.ChunkLostError), lease.LeaseKeeper(stale, lease_s=60) as keeper:
        tasks._score_and_write(stale, 0.0, keeper)
    with session_scope(readonly=True) as s:
        assert s.execute(select(Result)).first() is None


class OneLongCallScorer(f.StubScorer):
    """A slow host or model: one call to the scorer (a whole chunk) outlasts the lease; the
    sweeper runs while it scores, as beat would, and hands back any chunk whose lease ran out."""

    def __init__(self, seconds: float) -> None:
        super().__init__(batch_size=256)
        self.seconds = seconds
        self.handed_back: list[tuple[str, int]] = []

    def score(self, texts: Sequence[str]) -> f.StubScores:
        time.sleep(self.seconds)
        self.handed_back += sweeper.requeue_expired_leases()
        return super().score(texts)


# System tier (not `make test-fast`): it waits out several leases by design, about 8 s.
@pytest.mark.system
def test_a_chunk_scored_in_one_call_longer_than_its_lease_keeps_its_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = f.make_job(12, 12)  # one chunk, one piece: no renewal between pieces could help
    scorer = OneLongCallScorer(seconds=2.5)
    settings = tasks.get_settings()
    monkeypatch.setattr(settings, "chunk_lease_s", 1.0)
    monkeypatch.setattr(tasks, "get_scorer", lambda _name, _version=None: scorer)
    # Each delivery of the chunk's message (the sweeper re-sends a handed-back chunk), until it
    # is done: the last claim past the attempt cap gives its rows up.
    for _ in range(settings.chunk_max_attempts + 1):
        tasks.score_chunk(job_id, 0)
        with session_scope(readonly=True) as s:
            status, attempts = s.execute(select(Chunk.status, Chunk.attempts)).one()
        if status == ChunkStatus.done:
            break
    with session_scope(readonly=True) as s:
        errors = s.execute(select(Result.error).where(Result.error.is_not(None))).scalars().all()
    assert errors == [], errors[:1]
    assert scorer.handed_back == [], "the sweeper took the chunk from a worker still scoring it"
    assert (f.job(job_id).scored_rows, attempts) == (12, 1)


def with_texts(work: ChunkWork, texts: dict[int, str]) -> ChunkWork:
    """The claimed chunk with some rows' texts replaced (by index in the chunk)."""
    rows = [
        dataclasses.replace(row, text=texts[i]) if i in texts else row
        for i, row in enumerate(work.rows)
    ]
    return dataclasses.replace(work, rows=rows)


def test_with_no_plugin_installed_a_chunk_never_meets_the_fault_switches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every switch set in the environment, old names and new, and texts that hold each marker:
    # a worker that did not install the plugin scores them all, at once, as any other text.
    for name in ("POISON_MARKER", "CRASH_MARKER", "HOLD_MARKER", "SCORE_DELAY_S"):
        value = "30" if name == "SCORE_DELAY_S" else "\u2620"
        monkeypatch.setenv(f"REVIEWSCORE_{name}", value)
        monkeypatch.setenv(f"REVIEWSCORE_FAULT_{name}", value)
    assert plugins.installed is None
    job_id = f.make_job(12, 12)
    claimed = f.claim(job_id, 0)
    assert claimed is not None
    work = with_texts(claimed, {3: "a \u2620 text", 5: "\u2620score", 7: "\u2620commit"})
    monkeypatch.setattr(tasks, "get_scorer", lambda _name, _version=None: f.StubScorer())
    monkeypatch.setattr(tasks, "_deliver_soon", lambda _job_id: None)  # no Redis here
    started = time.monotonic()
    with lease.LeaseKeeper(work, lease_s=60) as keeper:
        tasks._score_and_write(work, 0.0, keeper)
    assert time.monotonic() - started < 5, "a switch held or slowed the chunk"
    with session_scope(readonly=True) as s:
        errors = s.execute(select(Result.error).where(Result.error.is_not(None))).all()
    assert errors == [] and f.job(job_id).scored_rows == 12


class RecordingPlugin:
    """Stands for the fault plugin: records where the chunk's path calls it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def wrap_scorer(self, scorer: object) -> object:
        return scorer

    def before_scoring(self, work: ChunkWork, keeper: Callable[[], None]) -> None:
        keeper()
        self.calls.append(f"before_scoring {work.seq}")

    def before_commit(self, work: ChunkWork) -> None:
        self.calls.append(f"before_commit {work.seq}")


def test_an_installed_plugin_is_called_before_scoring_and_inside_the_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = RecordingPlugin()
    monkeypatch.setattr(plugins, "installed", plugin)
    monkeypatch.setattr(tasks, "get_scorer", lambda _name, _version=None: f.StubScorer())
    monkeypatch.setattr(tasks, "_deliver_soon", lambda _job_id: None)
    job_id = f.make_job(12, 12)
    work = f.claim(job_id, 0)
    assert work is not None
    with lease.LeaseKeeper(work, lease_s=60) as keeper:
        tasks._score_and_write(work, 0.0, keeper)
    assert plugin.calls == ["before_scoring 0", "before_commit 0"]
