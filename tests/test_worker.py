"""The worker's chunk task in-process on a stub scorer (no TensorFlow), on real SQLite and
PostgreSQL: failure isolation, the lease heartbeat, and a lost lease that stops the work."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from reviewscore.core.db import session_scope
from reviewscore.core.schema import Result
from tests import factories as f
from worker import tasks
from worker.scoring import score_texts_isolating_failures

pytestmark = pytest.mark.usefixtures("database")


def test_a_row_that_makes_the_model_raise_fails_alone() -> None:
    scorer = f.StubScorer(batch_size=8, fail_on="POISON")
    texts = [f"review {i}" for i in range(20)]
    texts[13] = "POISON here"
    p, _, errors = score_texts_isolating_failures(scorer, texts)  # type: ignore[arg-type]
    assert list(errors) == [13] and "stub model failure" in errors[13]
    assert sum(1 for value in p if value == value) == 19  # every other row has a score


def test_the_lease_is_renewed_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = f.make_job(12, 12)
    work = f.claim(job_id, 0)
    assert work is not None
    keeper = tasks.LeaseKeeper(work, lease_s=0.0)  # renew after every piece of 4 batches
    scorer = f.StubScorer(version="stub-1", batch_size=1)
    renewals: list[bool] = []
    real_renew = tasks.chunks.renew_lease

    def counting(w: object, lease_s: float) -> bool:
        renewals.append(real_renew(w, lease_s))  # type: ignore[arg-type]
        return renewals[-1]

    monkeypatch.setattr(tasks.chunks, "renew_lease", counting)
    score_texts_isolating_failures(scorer, [r.text for r in work.rows], keeper)  # type: ignore[arg-type]
    assert renewals == [True, True, True]


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
    monkeypatch.setattr(tasks.get_settings(), "chunk_lease_s", 0.0)
    with pytest.raises(tasks.ChunkLostError):
        tasks._score_and_write(stale, 0.0)
    with session_scope(readonly=True) as s:
        assert s.execute(select(Result)).first() is None
