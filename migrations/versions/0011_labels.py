"""labels: a job's label column and each input row's own label and word count, for the
evaluation of a labeled upload

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-03 15:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("label_column", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("positive_from", sa.Float(), nullable=True))
    with op.batch_alter_table("input_rows") as batch:
        batch.add_column(sa.Column("label", sa.SmallInteger(), nullable=True))
        batch.add_column(sa.Column("words", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("input_rows") as batch:
        batch.drop_column("words")
        batch.drop_column("label")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("positive_from")
        batch.drop_column("label_column")
