"""Training a model from a user's labels (a training run, core/training_runs.py): the labeled
rows of the run's jobs, a stratified part of them held out, the rest (and IMDB's train split
with with_imdb) trained on; the new model is published under its own name and compared with
the default model on the held-out rows, each accuracy with its Wilson interval."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from reviewscore.core.db import session_scope
from reviewscore.core.evaluation import Z95, wilson
from reviewscore.core.labeled_texts import labeled_rows
from reviewscore.core.model_registry import (
    LocalModel,
    artifact_path,
    get_model,
    make_default,
    publish,
)
from reviewscore.core.settings import Settings
from reviewscore.core.training_runs import TrainingInputError, get_run
from reviewscore.model.scorer import load_scorer
from training.data import Reviews, concat_reviews, load_dataset, stratified_split
from training.train import MODEL_FILE, VALIDATION_FRACTION, predict, train_nbsvm

SEED = 1337
Progress = Callable[[float, str], None]


def user_reviews(job_ids: list[str]) -> Reviews:
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    for job_id in job_ids:
        for i, (text, label) in enumerate(labeled_rows(job_id)):
            ids.append(f"{job_id}:{i}")
            texts.append(text)
            labels.append(label)
    return Reviews(ids=ids, texts=texts, labels=np.array(labels, dtype=np.int32))


def accuracy(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    correct = int(((scores >= 0.5).astype(np.int32) == labels).sum())
    return asdict(wilson(correct, len(labels)))


def paired_difference(labels: np.ndarray, new: np.ndarray, old: np.ndarray) -> dict[str, Any]:
    """The new model's accuracy minus the default's on the same rows, with a 95 % interval for
    paired proportions (rows only one of the two gets right carry the difference)."""
    right_new = (new >= 0.5).astype(np.int32) == labels
    right_old = (old >= 0.5).astype(np.int32) == labels
    n = len(labels)
    only_new = int((right_new & ~right_old).sum())
    only_old = int((right_old & ~right_new).sum())
    diff = (only_new - only_old) / n
    half = Z95 * math.sqrt(max(0.0, only_new + only_old - n * diff * diff)) / n
    return {
        "value": diff,
        "low": max(-1.0, diff - half),
        "high": min(1.0, diff + half),
        "interval": "wald-paired",
        "only_new_right": only_new,
        "only_default_right": only_old,
    }


def default_scores(settings: Settings, texts: list[str]) -> tuple[dict[str, str], np.ndarray]:
    """The default model's scores of the held-out texts, loaded from the registry."""
    with session_scope(readonly=True) as session:
        info = get_model(session, None, settings.default_model)
    path = artifact_path(info, settings.var_dir / "model-cache")
    scorer = load_scorer(info.model_copy(update={"path": path}), settings.score_batch_size)
    return {"name": info.name, "version": info.version}, scorer.score(texts).p_positive


def train_run(run_id: str, settings: Settings, progress: Progress) -> tuple[str, dict[str, Any]]:
    """Trains, publishes and compares; returns the published version and the report."""
    with session_scope(readonly=True) as session:
        run = get_run(session, run_id)
        request, name = dict(run.request), run.model_name
    keras.utils.set_random_seed(SEED)
    progress(0.05, "reading the labeled rows")
    user = user_reviews(list(request["job_ids"]))
    if len(np.unique(user.labels)) < 2:
        raise TrainingInputError("the jobs' labeled rows (their texts kept) hold one class only")
    held_out, rest = stratified_split(user, settings.train_holdout_fraction, SEED)
    pool = rest
    imdb_rows = 0
    if request.get("with_imdb"):
        progress(0.1, "reading IMDB's train split")
        if not (settings.imdb_dir / "train.csv.gz").is_file():
            raise TrainingInputError(
                f"with_imdb: this worker has no {settings.imdb_dir / 'train.csv.gz'} "
                "(set REVIEWSCORE_IMDB_DIR to the folder holding it)"
            )
        imdb = load_dataset(settings.imdb_dir).train
        imdb_rows = len(imdb)
        pool = concat_reviews(rest, imdb)
    val, fit = stratified_split(pool, VALIDATION_FRACTION, SEED)
    progress(0.2, f"training {request['architecture']} on {len(pool):,} reviews")
    trained = train_nbsvm(fit, val, None, SEED)
    progress(0.7, f"comparing with the default model on {len(held_out):,} held-out rows")
    new_scores = predict(trained.model, held_out.texts)
    default, old_scores = default_scores(settings, held_out.texts)
    new_accuracy = accuracy(held_out.labels, new_scores)

    progress(0.9, "publishing")
    workdir = Path(tempfile.mkdtemp(prefix=f"train-{run_id[:8]}-", dir=_scratch(settings)))
    try:
        folder = workdir / name
        folder.mkdir()
        model_file = folder / MODEL_FILE
        trained.model.save(model_file)
        meta: dict[str, Any] = {
            "name": name,
            "architecture": trained.architecture,
            "model_file": MODEL_FILE,
            "max_tokens": trained.max_tokens,
            # No IMDB test figure: its figures are on the user's held-out rows, so it never
            # becomes the default by out-scoring the shipped models (see default_model_name).
            "test_accuracy": None,
            "held_out_accuracy": new_accuracy["value"],
            "trained_from": {
                "run": run_id,
                "jobs": request["job_ids"],
                "imdb_train": bool(request.get("with_imdb")),
            },
            "data": {"user_rows": len(user), "held_out": len(held_out), "imdb_rows": imdb_rows},
            "hyperparameters": trained.hyperparameters,
            "seed": SEED,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with session_scope() as session:
            info, _ = publish(session, LocalModel(folder, meta, model_file))
            if request.get("make_default"):
                make_default(session, info.name, info.version)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    positives = int(held_out.labels.sum())
    report = {
        "held_out": {
            "rows": len(held_out),
            "positive": positives,
            "negative": len(held_out) - positives,
            "fraction": settings.train_holdout_fraction,
        },
        "trained_on": {
            "user_rows": len(rest),
            "imdb_rows": imdb_rows,
            "fit": len(fit),
            "validation": len(val),
        },
        "model": {"name": info.name, "version": info.version, "accuracy": new_accuracy},
        "default_model": {**default, "accuracy": accuracy(held_out.labels, old_scores)},
        "difference": paired_difference(held_out.labels, new_scores, old_scores),
        "made_default": bool(request.get("make_default")),
    }
    return info.version, report


def _scratch(settings: Settings) -> Path:
    scratch = settings.var_dir / "training"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch
