"""Scoring throughput of installed models measured side by side on the same machine:
the worker's scorer, batched, in-process, rounds alternating between models.
Usage: python -m training.benchmark --data PATH [--models-dir models] [--reviews 5000]"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from reviewscore.core.model_registry import list_models
from reviewscore.model.scorer import load_scorer
from reviewscore.model.throughput import measure_throughput
from training.data import load_dataset


def measure(models_dir: Path, texts: list[str], rounds: int, batch_size: int) -> dict[str, float]:
    """Median reviews/s of each installed model's scorer, rounds alternating between models."""
    scorers = {info.name: load_scorer(info, batch_size) for info in list_models(models_dir)}
    rates = measure_throughput(
        {name: scorer.score for name, scorer in scorers.items()}, texts, batch_size, rounds
    )
    return {name: rate.median for name, rate in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reviews", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    test = load_dataset(args.data).test.texts
    texts = test[:: max(1, len(test) // args.reviews)][: args.reviews]  # both labels
    rates = measure(args.models_dir, texts, args.rounds, args.batch_size)
    print(
        json.dumps(
            {
                "reviews": len(texts),
                "cpu_count": os.cpu_count(),
                "batch_size": args.batch_size,
                "reviews_per_second": rates,
            }
        )
    )


if __name__ == "__main__":
    main()
