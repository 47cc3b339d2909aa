"""quotas and fair share: per-key quotas and weight, the rows served to each key, and the task
that claimed a chunk

Revision ID: 0010
Revises: 0012
Create Date: 2026-12-03 15:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_queued_rows", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("max_unfinished_jobs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("weight", sa.Float(), nullable=True))
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("claim_task", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_chunks_queued",
        "chunks",
        ["job_id", "seq"],
        postgresql_where=sa.text("status = 'queued'"),
        sqlite_where=sa.text("status = 'queued'"),
    )
    op.create_table(
        "fair_shares",
        sa.Column("owner", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("served", sa.Float(), nullable=False),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_fair_shares")),
    )


def downgrade() -> None:
    op.drop_table("fair_shares")
    op.drop_index("ix_chunks_queued", table_name="chunks")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("claim_task")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("weight")
        batch.drop_column("max_unfinished_jobs")
        batch.drop_column("max_queued_rows")
