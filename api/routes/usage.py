"""The caller's use of the service against its quotas (core/quotas.py)."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.jobs import Owner
from api.schemas import UsageView, error_responses
from reviewscore.core import quotas
from reviewscore.core.db import session_scope
from reviewscore.core.settings import get_settings

router = APIRouter(prefix="/v1", tags=["usage"])


@router.get("/usage", response_model=UsageView, responses=error_responses(503))
def get_usage(owner: Owner) -> UsageView:
    """Rows queued (received, not yet scored) and jobs not finished for the caller's key, with
    the key's limits: past one, new uploads get 429. With auth off: every anonymous job, and no
    limits."""
    with session_scope(readonly=True) as session:
        used = quotas.usage(session, owner, get_settings())
    return UsageView(
        key_id=owner,
        queued_rows=used.queued_rows,
        unfinished_jobs=used.unfinished_jobs,
        max_queued_rows=used.max_queued_rows,
        max_unfinished_jobs=used.max_unfinished_jobs,
        weight=used.weight,
    )
