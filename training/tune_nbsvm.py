"""Validation-only sweep of the nbsvm settings (the test split is never read here).
Usage: python -m training.tune_nbsvm --data PATH [--grid NAME] > log; one JSON line per run."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.data import load_dataset, stratified_split
from training.metrics import classification_metrics
from training.short_reviews import accuracy_rows, short_pieces
from training.train import (
    NBSVM_SETTINGS,
    VALIDATION_FRACTION,
    fit_nbsvm,
    nbsvm_features,
    predict,
)

GRIDS: dict[str, list[dict[str, Any]]] = {
    "buckets": [{"vocabulary_size": 0, "num_buckets": 2**b} for b in (20, 21, 22)],
    "optimizer": [
        {"learning_rate": lr, "weight_decay": wd}
        for lr in (5e-4, 2e-3, 1e-2)
        for wd in (0.0, 1e-4, 1e-2)
    ],
    "ngrams": [{"ngram_max": n} for n in (2, 3)],
    "vocabulary": [{"vocabulary_size": v} for v in (400_000, 800_000, 1_500_000)],
    "vocabulary_small": [
        {"vocabulary_size": v, "learning_rate": lr, "weight_decay": 1e-5}
        for v in (200_000, 400_000)
        for lr in (5e-3, 2e-2)
    ],
    "vocabulary_regularization": [
        {"vocabulary_size": 400_000, "weight_decay": wd, "nb_alpha": alpha, "batch_size": bs}
        for wd, alpha, bs in ((1e-3, 1.0, 64), (1e-5, 0.5, 64), (1e-5, 1.0, 256))
    ],
    # Sentence-level pieces of the train reviews (training.short_reviews), judged on the
    # validation reviews and on the short-review set cut from them.
    "pieces": [{"sentence_pieces": k} for k in ("", "first,last", "every")],
    "vocabulary_lr": [
        {"vocabulary_size": 800_000, "learning_rate": lr, "weight_decay": wd}
        for lr, wd in ((2e-2, 1e-6), (2e-3, 1e-4), (5e-3, 1e-5))
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="buckets")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE base override")
    parser.add_argument(
        "--ensemble-with", type=Path, help="a CNN .keras file trained on the same split"
    )
    args = parser.parse_args()
    base = dict(NBSVM_SETTINGS)
    for item in args.set:
        key, value = item.split("=", 1)
        base[key] = type(base[key])(float(value)) if key in base else float(value)
    train = load_dataset(args.data).train
    val, fit = stratified_split(train, VALIDATION_FRACTION, args.seed)
    short_val = short_pieces(val)
    cnn_val = None
    if args.ensemble_with:
        cnn = keras.saving.load_model(args.ensemble_with, compile=False)
        cnn_val = np.clip(predict(cnn, val.texts).astype(np.float64), 1e-7, 1 - 1e-7)
    cache: dict[tuple[Any, ...], Any] = {}
    for change in GRIDS[args.grid]:
        settings = {**base, **change}
        key = tuple(
            settings[k]
            for k in (
                "num_buckets",
                "ngram_max",
                "nb_alpha",
                "vocabulary_size",
                "min_df",
                "sentence_pieces",
            )
        )
        if key not in cache:
            cache.clear()
            cache[key] = nbsvm_features(fit, val, settings)
        keras.utils.set_random_seed(args.seed)
        started = time.perf_counter()
        cpu_started = time.process_time()
        trained = fit_nbsvm(cache[key], settings, None, args.seed)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        nbsvm_val = predict(trained.model, val.texts).astype(np.float64)
        metrics = classification_metrics(val.labels, nbsvm_val)
        short_scores = predict(trained.model, [p.text for p in short_val])
        short = accuracy_rows(short_val, short_scores)
        ensembles = {}
        if cnn_val is not None:
            nbsvm_logit = np.log(
                np.clip(nbsvm_val, 1e-7, 1 - 1e-7) / (1 - np.clip(nbsvm_val, 1e-7, 1 - 1e-7))
            )
            cnn_logit = np.log(cnn_val / (1 - cnn_val))
            for cnn_weight in (0.2, 0.3, 0.4, 0.5):
                mixed = 1 / (1 + np.exp(-(cnn_weight * cnn_logit + (1 - cnn_weight) * nbsvm_logit)))
                m = classification_metrics(val.labels, mixed)
                ensembles[str(cnn_weight)] = [round(m["accuracy"], 4), round(m["log_loss"], 4)]
        print(
            json.dumps(
                {
                    "ensemble_cnn_weight_to_val_accuracy_log_loss": ensembles,
                    "settings": settings,
                    "val_accuracy": round(metrics["accuracy"], 4),
                    "val_log_loss": round(metrics["log_loss"], 4),
                    "val_short_accuracy": {k: round(c / n, 4) for k, (c, n) in short.items()},
                    "best_epoch": trained.best_epoch,
                    "val_accuracy_by_epoch": trained.history.get("val_accuracy"),
                    "fit_seconds": round(seconds, 1),
                    "fit_cpu_seconds": round(cpu_seconds, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
