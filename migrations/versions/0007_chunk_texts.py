"""chunk texts: a chunk's review texts as one compressed blob, dropped once the chunk is done
unless its job keeps them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("keep_texts", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "chunk_texts",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_chunk_texts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_chunk_texts")),
    )


def downgrade() -> None:
    op.drop_table("chunk_texts")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("keep_texts")
