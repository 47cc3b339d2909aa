"""Validation-only sweep of the nbsvm settings (the test split is never read here).
Usage: python -m training.tune_nbsvm --data PATH [--grid NAME] > log; one JSON line per run."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import keras

from training.data import load_dataset, stratified_split
from training.metrics import classification_metrics
from training.train import (
    NBSVM_SETTINGS,
    VALIDATION_FRACTION,
    fit_nbsvm,
    nbsvm_features,
    predict,
)

GRIDS: dict[str, list[dict[str, Any]]] = {
    "buckets": [{"num_buckets": 2**b} for b in (20, 21, 22)],
    "optimizer": [
        {"learning_rate": lr, "weight_decay": wd}
        for lr in (5e-4, 2e-3, 1e-2)
        for wd in (0.0, 1e-4, 1e-2)
    ],
    "ngrams": [{"ngram_max": n} for n in (2, 3)],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--grid", choices=sorted(GRIDS), default="buckets")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE base override")
    args = parser.parse_args()
    base = dict(NBSVM_SETTINGS)
    for item in args.set:
        key, value = item.split("=", 1)
        base[key] = type(base[key])(float(value)) if key in base else float(value)
    train = load_dataset(args.data).train
    val, fit = stratified_split(train, VALIDATION_FRACTION, args.seed)
    cache: dict[tuple[int, int, float], Any] = {}
    for change in GRIDS[args.grid]:
        settings = {**base, **change}
        key = (settings["num_buckets"], settings["ngram_max"], settings["nb_alpha"])
        if key not in cache:
            cache.clear()
            cache[key] = nbsvm_features(fit, val, settings)
        keras.utils.set_random_seed(args.seed)
        started = time.perf_counter()
        trained = fit_nbsvm(cache[key], settings, None, args.seed)
        seconds = time.perf_counter() - started
        metrics = classification_metrics(val.labels, predict(trained.model, val.texts))
        print(
            json.dumps(
                {
                    "settings": settings,
                    "val_accuracy": round(metrics["accuracy"], 4),
                    "val_log_loss": round(metrics["log_loss"], 4),
                    "best_epoch": trained.best_epoch,
                    "val_accuracy_by_epoch": trained.history.get("val_accuracy"),
                    "fit_seconds": round(seconds, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
