"""Training runs: a new model trained from the labeled rows of a key's finished jobs. The API
checks the request and records a run here; a worker (training/tasks.py) does the training and
reports its progress and outcome here. No TensorFlow in this module."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from reviewscore.core.clock import db_now
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadRequestError, JobStateError, ReviewscoreError
from reviewscore.core.jobs import get_job
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.schema import InputRow, TrainingRun, TrainingStatus
from reviewscore.core.settings import Settings

ARCHITECTURES = ("nbsvm",)
# Published model names: what a job's `model` or POST /v1/score's may name.
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_JOBS = 20


class TrainingRunNotFoundError(ReviewscoreError):
    status_code = 404

    def __init__(self, run_id: str) -> None:
        super().__init__(f"training run {run_id!r} not found")


class TrainingInputError(ReviewscoreError):
    """The jobs named cannot be trained from (too few labeled rows, one class only, ...)."""

    status_code = 422


@dataclass(frozen=True)
class TrainingRequest:
    job_ids: list[str]
    name: str | None = None
    with_imdb: bool = False
    make_default: bool = False
    architecture: str = "nbsvm"


def labeled_counts(session: Session, job_ids: list[str]) -> dict[int, int]:
    """How many scorable rows of the jobs carry each readable label (1 positive, 0 negative)."""
    rows = session.execute(
        select(InputRow.label, func.count())
        .where(
            InputRow.job_id.in_(job_ids),
            InputRow.label.in_((0, 1)),
            InputRow.error.is_(None),
        )
        .group_by(InputRow.label)
    ).all()
    return {int(label or 0): int(count) for label, count in rows}


def _check_job(session: Session, job_id: str, owner_key_id: int | None) -> None:
    # Another key's job reads as not found, as everywhere else in the API.
    job = get_job(session, job_id, owner_key_id)
    if not job.finished:
        raise JobStateError(
            f"job {job_id} is still {job.status}: train from it once it has finished"
        )
    if job.label_column is None:
        raise TrainingInputError(
            f"job {job_id} has no labels: upload the file with label_column=COLUMN to train from it"
        )
    if not job.keep_texts:
        raise TrainingInputError(
            f"job {job_id} was sent without keep_texts=true, so its texts were dropped once "
            "scored: send the file again with keep_texts=true to train from it"
        )


def _check_name(session: Session, request: TrainingRequest, settings: Settings) -> str:
    name = request.name or ""
    if not MODEL_NAME.fullmatch(name):
        raise BadRequestError(
            f"model name {name!r}: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )
    models = list_models(session)
    existing = next((m for m in models if m.name == name), None)
    if existing is not None and "trained_from" not in existing.metadata:
        raise TrainingInputError(
            f"model {name!r} is a model trained on IMDB; give the new model a name of its own"
        )
    if name == default_model_name(models, settings.default_model) and not request.make_default:
        raise TrainingInputError(
            f"model {name!r} is the default model: pass make_default to replace it, "
            "or give the new model a name of its own"
        )
    return name


def check_request(
    session: Session, request: TrainingRequest, owner_key_id: int | None, settings: Settings
) -> str:
    """Raises a clear error for a request that cannot be trained from; returns the model name."""
    if request.architecture not in ARCHITECTURES:
        raise BadRequestError(
            f"architecture {request.architecture!r}: choose {', '.join(ARCHITECTURES)}"
        )
    job_ids = list(dict.fromkeys(request.job_ids))
    if not job_ids:
        raise BadRequestError("name at least one job to train from (job_ids)")
    if len(job_ids) > MAX_JOBS:
        raise BadRequestError(f"{len(job_ids)} jobs; train from at most {MAX_JOBS} at once")
    for job_id in job_ids:
        _check_job(session, job_id, owner_key_id)
    counts = labeled_counts(session, job_ids)
    total = sum(counts.values())
    if total < settings.train_min_labeled_rows:
        raise TrainingInputError(
            f"{total} labeled rows in job(s) {', '.join(job_ids)}; training needs at least "
            f"{settings.train_min_labeled_rows}"
        )
    smaller = min(counts.get(0, 0), counts.get(1, 0))
    if smaller < settings.train_min_per_class:
        only = "positive" if counts.get(1, 0) > counts.get(0, 0) else "negative"
        raise TrainingInputError(
            f"the labeled rows are {counts.get(1, 0)} positive and {counts.get(0, 0)} negative "
            f"(nearly all {only}); training needs at least {settings.train_min_per_class} "
            "of each class"
        )
    return _check_name(session, request, settings)


def create_run(
    session: Session, request: TrainingRequest, owner_key_id: int | None, settings: Settings
) -> TrainingRun:
    run_id = uuid.uuid4().hex
    named = TrainingRequest(
        job_ids=list(dict.fromkeys(request.job_ids)),
        name=request.name or f"labels-{run_id[:8]}",
        with_imdb=request.with_imdb,
        make_default=request.make_default,
        architecture=request.architecture,
    )
    name = check_request(session, named, owner_key_id, settings)
    run = TrainingRun(
        id=run_id,
        owner_key_id=owner_key_id,
        status=TrainingStatus.queued,
        request={
            "job_ids": named.job_ids,
            "with_imdb": named.with_imdb,
            "make_default": named.make_default,
            "architecture": named.architecture,
        },
        model_name=name,
        progress=0.0,
        stage="queued",
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: str, owner_key_id: int | None = None) -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None or (owner_key_id is not None and run.owner_key_id != owner_key_id):
        raise TrainingRunNotFoundError(run_id)
    return run


# --- what the worker reports ----------------------------------------------------------------------


def start(run_id: str) -> bool:
    """The worker takes the run; False when it is already finished (a redelivered message)."""
    with session_scope() as session:
        taken = session.execute(
            update(TrainingRun)
            .where(
                TrainingRun.id == run_id,
                TrainingRun.status.in_((TrainingStatus.queued, TrainingStatus.running)),
            )
            .values(status=TrainingStatus.running, started_at=db_now(), error=None)
        ).rowcount  # type: ignore[attr-defined]
    return bool(taken)


def report_progress(run_id: str, progress: float, stage: str) -> None:
    with session_scope() as session:
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(progress=round(min(1.0, max(0.0, progress)), 3), stage=stage[:100])
        )


def finish(
    run_id: str,
    *,
    model_version: str | None = None,
    report: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    with session_scope() as session:
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id)
            .values(
                status=TrainingStatus.failed if error else TrainingStatus.succeeded,
                progress=1.0 if error is None else TrainingRun.progress,
                stage="failed" if error else "done",
                error=error,
                model_version=model_version,
                report=report,
                finished_at=db_now(),
            )
        )
