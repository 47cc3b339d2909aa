"""The labeled rows of a finished job with their texts, for training from a user's labels: texts
from the chunks' blobs (kept after scoring with keep_texts=true), or from input_rows for rows
stored before blobs existed. Read a chunk at a time."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from reviewscore.core.chunk_texts import unpack_texts
from reviewscore.core.db import session_scope
from reviewscore.core.schema import Chunk, ChunkText, InputRow


def labeled_rows(job_id: str) -> Iterator[tuple[str, int]]:
    """(text, label) of each scorable row of the job with a readable label (1 or 0)."""
    with session_scope(readonly=True) as session:
        spans = session.execute(
            select(Chunk.seq, Chunk.first_row, Chunk.row_count)
            .where(Chunk.job_id == job_id)
            .order_by(Chunk.first_row)
        ).all()
    for seq, first_row, row_count in spans:
        with session_scope(readonly=True) as session:
            packed = session.execute(
                select(ChunkText.data).where(ChunkText.job_id == job_id, ChunkText.seq == seq)
            ).scalar_one_or_none()
            found = session.execute(
                select(InputRow.row_num, InputRow.text, InputRow.label, InputRow.error)
                .where(
                    InputRow.job_id == job_id,
                    InputRow.row_num >= first_row,
                    InputRow.row_num < first_row + row_count,
                )
                .order_by(InputRow.row_num)
            ).all()
        texts = unpack_texts(packed) if packed is not None else [row.text for row in found]
        for (_, _, label, error), text in zip(found, texts, strict=True):
            if error is None and label in (0, 1) and text:
                yield text, int(label)
