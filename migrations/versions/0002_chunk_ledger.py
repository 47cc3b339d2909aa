"""chunk ledger: a job's counts are summed from its chunks; chunks know who holds them

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_COUNTERS = ("received_rows", "scored_rows", "failed_rows", "chunks_total")


def _results_of_chunk(failed: bool) -> str:
    condition = "IS NOT NULL" if failed else "IS NULL"
    return (
        "(SELECT count(*) FROM results r WHERE r.job_id = chunks.job_id"
        " AND r.row_num >= chunks.first_row AND r.row_num < chunks.first_row + chunks.row_count"
        f" AND r.error {condition})"
    )


def upgrade() -> None:
    with op.batch_alter_table("chunks") as batch:
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("done_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("scored_rows", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("failed_rows", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute("UPDATE chunks SET created_at = queued_at")
    op.execute(
        f"UPDATE chunks SET scored_rows = {_results_of_chunk(False)}, "
        f"failed_rows = {_results_of_chunk(True)}, "
        "done_at = (SELECT j.updated_at FROM jobs j WHERE j.id = chunks.job_id) "
        "WHERE status = 'done'"
    )
    with op.batch_alter_table("chunks") as batch:
        batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(
        "ix_chunks_open",
        "chunks",
        ["job_id"],
        postgresql_where=sa.text("status <> 'done'"),
        sqlite_where=sa.text("status <> 'done'"),
    )
    # `failed` is final now: a job that failed while its kept rows were still being scored
    # runs on (with its error) and ends failed once they are done.
    op.execute(
        "UPDATE jobs SET status = 'running', finished_at = NULL WHERE status = 'failed' "
        "AND EXISTS (SELECT 1 FROM chunks c WHERE c.job_id = jobs.id AND c.status <> 'done')"
    )
    with op.batch_alter_table("jobs") as batch:
        for name in JOB_COUNTERS:
            batch.drop_column(name)


def upgrade_counter_sql(column: str) -> str:
    sums = {
        "received_rows": "sum(c.row_count)",
        "scored_rows": "sum(c.scored_rows)",
        "failed_rows": "sum(c.failed_rows)",
        "chunks_total": "count(*)",
    }
    return f"(SELECT coalesce({sums[column]}, 0) FROM chunks c WHERE c.job_id = jobs.id)"


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in JOB_COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE jobs SET " + ", ".join(f"{c} = {upgrade_counter_sql(c)}" for c in JOB_COUNTERS)
    )
    op.drop_index("ix_chunks_open", table_name="chunks")
    with op.batch_alter_table("chunks") as batch:
        for name in ("failed_rows", "scored_rows", "done_at", "claimed_by", "created_at"):
            batch.drop_column(name)
