"""Scoring throughput and batch-1 latency of installed models measured side by side on the same
machine: the worker's scorer, in-process, rounds alternating between models.
Usage: python -m training.benchmark --data PATH [--models-dir models] [--reviews 5000]
  [--baseline-nbsvm] [--threads N]
--baseline-nbsvm also loads the installed nbsvm's weights in the n-gram-fingerprint graph it
had before the token-hash table (NgramVocabularyLogit, rebuilt from the train reviews into a
temporary .keras file), as `nbsvm-fingerprints`."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from reviewscore.model_registry import ModelInfo, get_model, list_models
from reviewscore.scorer import Scorer, configure_threads, load_scorer
from training.data import load_dataset

BASELINE = "nbsvm-fingerprints"


def save_fingerprint_baseline(models_dir: Path, train_texts: list[str], folder: Path) -> ModelInfo:
    """The installed nbsvm as the fingerprint graph, saved in `folder`, ready for load_scorer."""
    import keras

    from training.reexport import to_fingerprint_model

    installed = get_model(models_dir, "nbsvm")
    table_model = keras.saving.load_model(installed.path, compile=False)
    path = folder / "model.keras"
    to_fingerprint_model(table_model, train_texts).save(path)
    return installed.model_copy(update={"name": BASELINE, "version": BASELINE, "path": path})


def throughput(scorers: dict[str, Scorer], texts: list[str], rounds: int) -> dict[str, float]:
    """Median reviews/s per model over `rounds` rounds; each round scores `texts` once with
    every model in turn, so load changes hit every model alike."""
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    for _ in range(rounds):
        for name, scorer in scorers.items():
            started = time.perf_counter()
            scorer.score(texts)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def batch1_latency_ms(scorers: dict[str, Scorer], texts: list[str]) -> dict[str, float]:
    """p50 of one-review calls, models alternating review by review."""
    seconds: dict[str, list[float]] = {name: [] for name in scorers}
    for text in texts:
        for name, scorer in scorers.items():
            started = time.perf_counter()
            scorer.score([text])
            seconds[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in seconds.items()}


def measure(
    infos: list[ModelInfo], texts: list[str], rounds: int, batch_size: int, singles: int
) -> dict[str, Any]:
    scorers = {info.name: load_scorer(info, batch_size) for info in infos}
    for scorer in scorers.values():
        scorer.score(texts[:batch_size])
    return {
        "reviews_per_second": throughput(scorers, texts, rounds),
        "batch1_p50_ms": batch1_latency_ms(scorers, texts[:singles]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reviews", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--singles", type=int, default=300, help="reviews for batch-1 latency")
    parser.add_argument("--baseline-nbsvm", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        configure_threads(args.threads, args.threads)
    dataset = load_dataset(args.data)
    test = dataset.test.texts
    texts = test[:: max(1, len(test) // args.reviews)][: args.reviews]  # both labels
    infos = list_models(args.models_dir)
    with tempfile.TemporaryDirectory() as scratch:
        if args.baseline_nbsvm:
            infos.append(
                save_fingerprint_baseline(args.models_dir, dataset.train.texts, Path(scratch))
            )
        figures = measure(infos, texts, args.rounds, args.batch_size, args.singles)
    rates = figures["reviews_per_second"]
    if BASELINE in rates:
        figures["nbsvm_speedup"] = rates["nbsvm"] / rates[BASELINE]
    print(
        json.dumps(
            {
                "reviews": len(texts),
                "cpu_count": os.cpu_count(),
                "threads": args.threads or "default",
                "batch_size": args.batch_size,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
