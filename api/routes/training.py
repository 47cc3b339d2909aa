"""Training from a user's labels: POST /v1/models/train checks the request and queues a training
run for a worker; GET /v1/models/train/{id} follows it. The training itself never runs here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from api.auth import current_key_id
from api.schemas import TrainingRunView, TrainRequest, error_responses
from reviewscore.core import training_runs
from reviewscore.core.celery_app import enqueue_training
from reviewscore.core.db import session_scope
from reviewscore.core.errors import ServiceUnavailableError
from reviewscore.core.schema import TrainingRun, TrainingStatus
from reviewscore.core.settings import get_settings

router = APIRouter(prefix="/v1/models/train", tags=["models"])
RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="a training run id")]
Owner = Annotated[int | None, Depends(current_key_id)]


def run_view(run: TrainingRun) -> TrainingRunView:
    status = TrainingStatus(run.status)
    return TrainingRunView(
        id=run.id,
        status=status.value,
        finished=status in (TrainingStatus.succeeded, TrainingStatus.failed),
        progress=run.progress,
        stage=run.stage,
        model_name=run.model_name,
        model_version=run.model_version,
        job_ids=list(run.request.get("job_ids", [])),
        with_imdb=bool(run.request.get("with_imdb")),
        make_default=bool(run.request.get("make_default")),
        architecture=str(run.request.get("architecture", "nbsvm")),
        error=run.error,
        report=run.report,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


@router.post(
    "",
    status_code=202,
    response_model=TrainingRunView,
    responses=error_responses(400, 404, 409, 422, 503),
)
def train(body: TrainRequest, owner: Owner) -> TrainingRunView:
    """Train a new model from the labeled rows of finished jobs (sent with `label_column` and
    `keep_texts=true`), on a worker. A stratified part of the rows is held out; the run's report
    compares the new model with the default on them. The model is published under `name` and
    is not the default unless `make_default`. Follow it with GET /v1/models/train/{id}."""
    request = training_runs.TrainingRequest(
        job_ids=body.job_ids,
        name=body.name,
        with_imdb=body.with_imdb,
        make_default=body.make_default,
        architecture=body.architecture,
    )
    with session_scope() as session:
        run = training_runs.create_run(session, request, owner, get_settings())
        run_id = run.id
    try:
        enqueue_training(run_id)
    except Exception as exc:
        training_runs.finish(run_id, error="the training task could not be queued")
        raise ServiceUnavailableError(f"the queue (Redis) is unavailable: {exc}") from exc
    with session_scope(readonly=True) as session:
        return run_view(training_runs.get_run(session, run_id))


@router.get("/{run_id}", response_model=TrainingRunView, responses=error_responses(404))
def training_run(run_id: RunId, owner: Owner) -> TrainingRunView:
    """A training run: its status and progress, then its model version and report."""
    with session_scope(readonly=True) as session:
        return run_view(training_runs.get_run(session, run_id, owner))
