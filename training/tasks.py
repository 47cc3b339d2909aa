"""The Celery task that trains a model from a user's labels (training/from_labels.py). Each
worker imports this module when it starts (the app's `include`); TensorFlow and the training
code load inside the task, in the pool process, never in the worker's parent process."""

from __future__ import annotations

import logging

from reviewscore.core import training_runs
from reviewscore.core.celery_app import TRAIN_MODEL, celery_app
from reviewscore.core.errors import ReviewscoreError
from reviewscore.core.settings import get_settings

log = logging.getLogger(__name__)


@celery_app.task(name=TRAIN_MODEL, ignore_result=True)
def train_model(run_id: str) -> None:
    if not training_runs.start(run_id):
        log.info("training run %s is already finished", run_id)
        return

    def progress(fraction: float, stage: str) -> None:
        log.info("training run %s: %.0f%% %s", run_id, fraction * 100, stage)
        training_runs.report_progress(run_id, fraction, stage)

    try:
        from training.from_labels import train_run

        version, report = train_run(run_id, get_settings(), progress)
    except ReviewscoreError as exc:
        training_runs.finish(run_id, error=str(exc))
        return
    except Exception as exc:
        log.exception("training run %s failed", run_id)
        training_runs.finish(run_id, error=f"{type(exc).__name__}: {exc}"[:1000])
        return
    training_runs.finish(run_id, model_version=version, report=report)
    log.info("training run %s published %s", run_id, version)
