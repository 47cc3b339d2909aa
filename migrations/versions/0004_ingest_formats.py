"""ingest formats: how each job's upload was read, and input columns kept next to the scores

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("input_format", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("encoding", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("delimiter", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("keep_columns", sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table("input_rows") as batch:
        batch.add_column(sa.Column("extra", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("input_rows") as batch:
        batch.drop_column("extra")
    with op.batch_alter_table("jobs") as batch:
        for name in ("keep_columns", "delimiter", "encoding", "input_format"):
            batch.drop_column(name)
