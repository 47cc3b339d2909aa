"""slim rows: a score_cache entry is keyed by 16 bytes of one sha1 of (model version, text
hash) instead of both side by side, and results keep no model version (a job's results are all
by the version it is pinned to, jobs.model_version); both tables' columns ordered for no
alignment padding on PostgreSQL, where the primary keys of input rows and results now fill
their pages

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 19:00:00
"""

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COPY_BATCH = 10_000
FULL_INDEXES = ("pk_input_rows", "pk_results")
KEY_PG = postgresql.UUID(as_uuid=True)


def _entry_key(model_version: str, digest: bytes) -> bytes:
    # The same key as worker/cache.py's entry_key (copied: a migration never imports the code
    # it migrates for, which changes after it).
    return hashlib.sha1(model_version.encode() + b"\0" + digest).digest()[:16]


def _key_value(bind: sa.Connection, key: bytes) -> Any:
    return uuid.UUID(bytes=key) if bind.dialect.name == "postgresql" else key


def _copy_cache(bind: sa.Connection) -> None:
    """Every entry of the old table into the new one under its new key, in keyset pages (a
    cache of millions of entries is never held in memory)."""
    old = sa.table(
        "score_cache_0013",
        sa.column("model_version", sa.String()),
        sa.column("text_hash", sa.LargeBinary()),
        sa.column("p_positive", sa.Float()),
        sa.column("truncated", sa.Boolean()),
        sa.column("job_id", sa.String()),
    )
    key_type = KEY_PG if bind.dialect.name == "postgresql" else sa.LargeBinary(16)
    new = sa.table(
        "score_cache",
        sa.column("key", key_type),
        sa.column("p_positive", sa.Float()),
        sa.column("truncated", sa.Boolean()),
        sa.column("job_id", sa.String()),
    )
    last: tuple[str, bytes] | None = None
    while True:
        page = sa.select(old).order_by(old.c.model_version, old.c.text_hash).limit(COPY_BATCH)
        if last is not None:
            page = page.where(sa.tuple_(old.c.model_version, old.c.text_hash) > sa.tuple_(*last))
        rows = bind.execute(page).all()
        if not rows:
            return
        bind.execute(
            new.insert(),
            [
                {
                    "key": _key_value(bind, _entry_key(version, bytes(digest))),
                    "p_positive": p,
                    "truncated": truncated,
                    "job_id": job_id,
                }
                for version, digest, p, truncated, job_id in rows
            ],
        )
        last = (rows[-1][0], bytes(rows[-1][1]))


def upgrade() -> None:
    bind = op.get_bind()
    # The old table moves aside (its index and, on PostgreSQL, its primary key's name with it,
    # as index names are the schema's), the new one takes its name, the entries are copied.
    op.drop_index("ix_score_cache_job_id", table_name="score_cache")
    op.rename_table("score_cache", "score_cache_0013")
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE score_cache_0013 RENAME CONSTRAINT pk_score_cache TO pk_score_cache_0013"
        )
    # The key 16 bytes: PostgreSQL's uuid (fixed width), a blob on SQLite (schema.Key16).
    # Columns in this order: on PostgreSQL the 8-byte float, aligned to 8, comes last, so no
    # padding precedes it (8 bytes a row less than key, p_positive, truncated, job_id).
    op.create_table(
        "score_cache",
        sa.Column("key", sa.LargeBinary(length=16).with_variant(KEY_PG, "postgresql"), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("p_positive", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_score_cache")),
    )
    op.create_index(op.f("ix_score_cache_job_id"), "score_cache", ["job_id"])
    _copy_cache(bind)
    op.drop_table("score_cache_0013")
    # Results are copied into a table without model_version, truncated next to job_id (it
    # fills the padding before row_num on PostgreSQL: 8 bytes a row). One INSERT ... SELECT,
    # run by the database itself.
    op.rename_table("results", "results_0013")
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE results_0013 RENAME CONSTRAINT pk_results TO pk_results_0013")
        op.execute(
            "ALTER TABLE results_0013 RENAME CONSTRAINT fk_results_input_rows "
            "TO fk_results_0013_input_rows"
        )
    op.create_table(
        "results",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("row_num", sa.Integer(), nullable=False),
        sa.Column("p_positive", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id", "row_num"],
            ["input_rows.job_id", "input_rows.row_num"],
            name="fk_results_input_rows",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "row_num", name=op.f("pk_results")),
    )
    op.execute(
        "INSERT INTO results (job_id, truncated, row_num, p_positive, error) "
        "SELECT job_id, truncated, row_num, p_positive, error FROM results_0013"
    )
    op.drop_table("results_0013")
    if bind.dialect.name == "postgresql":
        # A job's rows come in row order, each job at its own place in these keys, and a full
        # page then splits where the last entry went (PostgreSQL's split for ascending keys):
        # pages can be filled whole, not to the default 90 % (6 bytes a row less in each).
        for index in FULL_INDEXES:
            op.execute(f"ALTER INDEX {index} SET (fillfactor = 100)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in FULL_INDEXES:
            op.execute(f"ALTER INDEX {index} RESET (fillfactor)")
    # Results get their job's version back; the cache cannot (its keys are one-way hashes), so
    # it is emptied: repeats are scored once more, then cached again.
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("model_version", sa.String(length=100), nullable=True))
    op.execute(
        "UPDATE results SET model_version = "
        "(SELECT jobs.model_version FROM jobs WHERE jobs.id = results.job_id)"
    )
    with op.batch_alter_table("results") as batch:
        batch.alter_column("model_version", existing_type=sa.String(length=100), nullable=False)
    op.drop_index(op.f("ix_score_cache_job_id"), table_name="score_cache")
    op.drop_table("score_cache")
    op.create_table(
        "score_cache",
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("text_hash", sa.LargeBinary(length=20), nullable=False),
        sa.Column("p_positive", sa.Float(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("model_version", "text_hash", name=op.f("pk_score_cache")),
    )
    op.create_index(op.f("ix_score_cache_job_id"), "score_cache", ["job_id"])
