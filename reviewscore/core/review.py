"""Rows for human review: the scored rows the model is least sure of (nearest 0.5), or, for a
labeled job, those where model and label disagree most confidently; as CSV, JSON Lines or
Label Studio tasks with the model's prediction (its JSON import format, with `predictions`)."""

from __future__ import annotations

import csv
import io
import json
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reviewscore.core import parts
from reviewscore.core.chunks import unpack_texts
from reviewscore.core.errors import JobStateError
from reviewscore.core.exports import neutralise
from reviewscore.core.ingest.labels import NEGATIVE, POSITIVE
from reviewscore.core.results import label_of
from reviewscore.core.schema import Chunk, ChunkText, InputRow, Job, Result

ORDERS = ("uncertain", "disagree")
LABEL_NAMES = {POSITIVE: "positive", NEGATIVE: "negative"}
FORMATS = ("csv", "jsonl", "labelstudio")
MAX_ROWS = 10_000
# The Label Studio labeling config the tasks fit (docs/how-to/evaluate.md):
# <Text name="text" value="$text"/> and <Choices name="sentiment" toName="text"> with the
# choices Positive and Negative.
LS_FROM_NAME = "sentiment"
LS_TO_NAME = "text"
LS_CHOICES = {"positive": "Positive", "negative": "Negative"}


@dataclass(frozen=True)
class ReviewRow:
    id: str
    p_positive: float
    predicted: str
    # The row's own label, when it has a usable one.
    label: str | None
    model_version: str
    # None when the job did not keep its texts (keep_texts) and the row's chunk is done.
    text: str | None
    row_num: int


def _texts(session: Session, job_id: str, row_nums: list[int]) -> dict[int, str]:
    """The texts of these rows that are still stored: in their chunk's blob, or (rows stored
    before chunk blobs) on the input row itself."""
    found: dict[int, str] = {}
    if not row_nums:
        return found
    wanted = set(row_nums)
    # One short row per chunk of the job; each wanted row's chunk is found by its range.
    chunks = session.execute(
        select(Chunk.seq, Chunk.first_row, Chunk.row_count).where(Chunk.job_id == job_id)
    ).all()
    ordered = sorted(wanted)
    holding = {
        seq: first_row
        for seq, first_row, count in chunks
        if bisect_left(ordered, first_row) < bisect_left(ordered, first_row + count)
    }
    for seq, first_row in holding.items():
        data = session.execute(
            select(ChunkText.data).where(ChunkText.job_id == job_id, ChunkText.seq == seq)
        ).scalar_one_or_none()
        if data is None:
            continue
        for i, text in enumerate(unpack_texts(data)):
            if first_row + i in wanted:
                found[first_row + i] = text
    for row_num, text in session.execute(
        select(InputRow.row_num, InputRow.text).where(
            InputRow.job_id == job_id,
            InputRow.row_num.in_(wanted - set(found)),
            InputRow.text != "",
        )
    ):
        found[row_num] = text
    return found


def review_rows(session: Session, job_id: str, n: int, order: str) -> list[ReviewRow]:
    """The `n` scored rows to review first, in `order` (see ORDERS)."""
    margin = func.abs(Result.p_positive - 0.5)
    query = (
        select(
            InputRow.row_num,
            InputRow.ext_id,
            InputRow.label,
            Result.p_positive,
        )
        .join(InputRow, (Result.job_id == InputRow.job_id) & (Result.row_num == InputRow.row_num))
        .where(Result.job_id == job_id, Result.p_positive.is_not(None), Result.error.is_(None))
    )
    if order == "disagree":
        if not session.execute(select(Job.label_column).where(Job.id == job_id)).scalar():
            raise JobStateError(
                f"job {job_id} has no labels (its file had no label column): order=disagree "
                "needs them; order=uncertain works for any job"
            )
        query = query.where(
            ((Result.p_positive >= 0.5) & (InputRow.label == NEGATIVE))
            | ((Result.p_positive < 0.5) & (InputRow.label == POSITIVE))
        ).order_by(margin.desc(), InputRow.row_num)
    else:
        query = query.order_by(margin, InputRow.row_num)
    found = session.execute(query.limit(n)).all()
    offsets = parts.ordinal_offsets(session, job_id)
    # Results keep no version: every one is by the version the job is pinned to.
    version = session.execute(select(Job.model_version).where(Job.id == job_id)).scalar_one()
    texts = _texts(session, job_id, [row[0] for row in found])
    return [
        ReviewRow(
            id=ext_id if ext_id is not None else parts.default_id(row_num, offsets),
            p_positive=p or 0.0,  # never None: the query takes scored rows only
            predicted=label_of(p) or "",
            label=LABEL_NAMES.get(label) if label is not None else None,
            model_version=version,
            text=texts.get(row_num),
            row_num=row_num,
        )
        for row_num, ext_id, label, p in found
    ]


COLUMNS = ["id", "p_positive", "predicted", "label", "model_version", "text"]


def _fields(row: ReviewRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "p_positive": round(row.p_positive, 6),
        "predicted": row.predicted,
        "label": row.label,
        "model_version": row.model_version,
        "text": row.text,
    }


def csv_file(rows: list[ReviewRow]) -> bytes:
    """CSV with the cells a spreadsheet would run as formulas neutralised (as results CSV)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(
            [
                neutralise(row.id),
                f"{row.p_positive:.6f}",
                row.predicted,
                row.label or "",
                neutralise(row.model_version),
                neutralise(row.text or ""),
            ]
        )
    return out.getvalue().encode()


def jsonl_file(rows: list[ReviewRow]) -> bytes:
    return "".join(json.dumps(_fields(r), ensure_ascii=False) + "\n" for r in rows).encode()


def labelstudio_task(row: ReviewRow) -> dict[str, Any]:
    """One task of Label Studio's JSON import: `data` (the text, and the id, score and label
    for reference) and one prediction, a `choices` result with the model's confidence in it
    as `score` (Label Studio sorts tasks by it)."""
    data: dict[str, Any] = {"text": row.text, "id": row.id, "p_positive": round(row.p_positive, 6)}
    if row.label is not None:
        data["label"] = LS_CHOICES[row.label]
    return {
        "data": data,
        "predictions": [
            {
                "model_version": row.model_version,
                "score": round(max(row.p_positive, 1 - row.p_positive), 6),
                "result": [
                    {
                        "id": f"row-{row.row_num}",
                        "from_name": LS_FROM_NAME,
                        "to_name": LS_TO_NAME,
                        "type": "choices",
                        "value": {"choices": [LS_CHOICES[row.predicted]]},
                    }
                ],
            }
        ],
    }


def labelstudio_file(rows: list[ReviewRow]) -> bytes:
    """A JSON array of tasks, for Label Studio's import (UI or API); every row needs its text."""
    missing = [r.id for r in rows if r.text is None]
    if missing:
        raise JobStateError(
            f"the texts of {len(missing):,} of these rows are no longer stored (row "
            f"{missing[0]!r}...): a Label Studio task needs its text; upload with "
            "keep_texts=true, or take format=csv and join the texts by id"
        )
    return json.dumps([labelstudio_task(r) for r in rows], ensure_ascii=False).encode()


MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "labelstudio": "application/json",
}
WRITERS: dict[str, Callable[[list[ReviewRow]], bytes]] = {
    "csv": csv_file,
    "jsonl": jsonl_file,
    "labelstudio": labelstudio_file,
}
