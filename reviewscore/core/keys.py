"""API keys: created and revoked by the CLI, stored as sha256 hashes, never in clear. Each key
also gets the secret that signs its jobs' webhooks (core/webhooks.py), shown once with it."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from reviewscore.core.schema import ApiKey, utcnow
from reviewscore.core.webhooks import new_secret

KEY_PREFIX = "rs_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, name: str, callback_url: str | None = None) -> tuple[ApiKey, str]:
    """Returns the stored record (its webhook_secret included) and the key itself, which is
    shown once and not kept. `callback_url`: the default of the key's jobs (checked by the
    caller)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        name=name,
        key_hash=hash_key(key),
        prefix=key[:10],
        created_at=utcnow(),
        webhook_secret=new_secret(),
        callback_url=callback_url,
    )
    session.add(record)
    session.flush()
    return record, key


def find_record(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    """An active key by its id or its prefix (as `keys list` shows them)."""
    query = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if key_id_or_prefix.isdigit():
        query = query.where(ApiKey.id == int(key_id_or_prefix))
    else:
        query = query.where(ApiKey.prefix == key_id_or_prefix[:10])
    return session.execute(query).scalars().first()


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey | None:
    record = find_record(session, key_id_or_prefix)
    if record is not None:
        record.revoked_at = utcnow()
    return record


# A quota given as this means "back to the settings' default".
DEFAULT = -1


def set_quota(
    session: Session,
    key_id_or_prefix: str,
    *,
    max_queued_rows: int | None = None,
    max_unfinished_jobs: int | None = None,
    weight: float | None = None,
) -> ApiKey | None:
    """Sets a key's own quotas and weight (None: unchanged; DEFAULT: the settings' default)."""
    record = find_record(session, key_id_or_prefix)
    if record is None:
        return None
    if max_queued_rows is not None:
        record.max_queued_rows = None if max_queued_rows == DEFAULT else max_queued_rows
    if max_unfinished_jobs is not None:
        record.max_unfinished_jobs = None if max_unfinished_jobs == DEFAULT else max_unfinished_jobs
    if weight is not None:
        record.weight = None if weight == DEFAULT else weight
    return record


def find_active(session: Session, key: str) -> int | None:
    return session.execute(
        select(ApiKey.id).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).scalar_one_or_none()


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.execute(select(ApiKey).order_by(ApiKey.id)).scalars())
