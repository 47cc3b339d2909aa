"""result delivery: a job's results PUT to a URL once it is finished; the URL its input came
from; when an upload's bytes were last seen arriving

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("upload_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("source_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("result_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("result_format", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("delivery_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("delivery_next_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in (
            "delivery_error",
            "delivery_next_at",
            "delivery_attempts",
            "delivered_at",
            "result_format",
            "result_url",
            "source_url",
            "upload_seen_at",
        ):
            batch.drop_column(name)
