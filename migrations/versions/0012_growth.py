"""growth: each score_cache entry names the job that added it (deleted with it), jobs carry
deleted_at (a delete in batches), and jobs.finished_at is indexed (/metrics reads recent ones)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The entries made before cannot be tied to a job, so no delete would ever remove them:
    # they go now (a cache: repeats are scored once more, then cached under their job).
    op.execute("DELETE FROM score_cache")
    with op.batch_alter_table("score_cache") as batch:
        batch.add_column(sa.Column("job_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_score_cache_job_id"), ["job_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_jobs_finished_at"), ["finished_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_finished_at"))
        batch.drop_column("deleted_at")
    with op.batch_alter_table("score_cache") as batch:
        batch.drop_index(batch.f("ix_score_cache_job_id"))
        batch.drop_column("job_id")
