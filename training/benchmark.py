"""Scoring throughput and batch-1 latency of installed models measured side by side on the same
machine: the worker's scorer, in-process, rounds alternating between models.
Usage: python -m training.benchmark --data PATH [--models-dir models] [--reviews 5000]
  [--baselines] [--threads N]
--baselines also loads the installed models' weights in the graphs they had before
(into temporary .keras files): `nbsvm-fingerprints`, the n-gram-fingerprint layer
NgramVocabularyLogit (its vocabulary rebuilt from the train reviews), and `cnn-500`, the CNN
without TrimPadding (every text padded to 500 tokens)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from reviewscore.core.model_registry import ModelInfo, local_model, local_models
from reviewscore.model.scorer import Scorer, configure_threads, load_scorer
from reviewscore.model.throughput import measure_throughput
from training.data import load_dataset

BASELINES = {"nbsvm": "nbsvm-fingerprints", "cnn": "cnn-500"}


def save_baselines(models_dir: Path, train_texts: list[str], folder: Path) -> list[ModelInfo]:
    """The installed models in their previous graphs, saved in `folder`, ready for load_scorer."""
    import keras

    from training.reexport import to_fingerprint_model

    infos = []
    for name, baseline in BASELINES.items():
        installed = local_model(models_dir, name)
        model = keras.saving.load_model(installed.path, compile=False)
        if name == "nbsvm":
            old = to_fingerprint_model(model, train_texts)
        else:
            vectorizer = model.get_layer("text_vectorization")
            inputs = keras.Input(shape=(), dtype="string", name="text")
            old = keras.Model(inputs, model.get_layer("cnn_network")(vectorizer(inputs)))
        path = folder / f"{baseline}.keras"
        old.save(path)
        infos.append(installed.model_copy(update={"name": baseline, "path": path}))
    return infos


def throughput(scorers: dict[str, Scorer], texts: list[str], rounds: int) -> dict[str, float]:
    """Median reviews/s per model over `rounds` rounds (the shared helper: each round scores
    `texts` once with every model in turn, so load changes hit every model alike). All texts
    go to the scorer in one call, as a worker's chunk does; the scorer makes the batches."""
    rates = measure_throughput(
        {name: scorer.score for name, scorer in scorers.items()}, texts, len(texts), rounds
    )
    return {name: rate.median for name, rate in rates.items()}


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
    parser.add_argument("--baselines", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        configure_threads(args.threads, args.threads)
    dataset = load_dataset(args.data)
    test = dataset.test.texts
    texts = test[:: max(1, len(test) // args.reviews)][: args.reviews]  # both labels
    infos = local_models(args.models_dir)
    with tempfile.TemporaryDirectory() as scratch:
        if args.baselines:
            infos += save_baselines(args.models_dir, dataset.train.texts, Path(scratch))
        figures = measure(infos, texts, args.rounds, args.batch_size, args.singles)
    rates = figures["reviews_per_second"]
    figures["speedup_over_baseline"] = {
        name: rates[name] / rates[baseline]
        for name, baseline in BASELINES.items()
        if baseline in rates
    }
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
