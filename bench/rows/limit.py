"""Row 1, the model's own limit: every installed model and its baseline (the same weights in
the previous graph, or the saves in --baseline-models-dir) scored in-process, compiled `model(batch)` at several batch sizes, models
alternating in each round; the worker's Scorer.score at its batch size; one review per call."""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.data import read_split
from bench.results import Agreement, Batch1Latency, LimitRow, ModelLimit
from bench.service import log
from reviewscore.core.model_registry import ModelInfo, local_models
from reviewscore.model.throughput import measure_throughput


@dataclass
class Loaded:
    info: ModelInfo
    baseline: bool
    model: Any  # the Keras model
    call: Callable[[list[str]], Any]  # compiled call, waits for its answer


def load(info: ModelInfo, baseline: bool = False) -> Loaded:
    import keras
    import tensorflow as tf

    import reviewscore.model.layers  # noqa: F401  (custom layers)
    from reviewscore.model.scorer import compile_model_call

    model = keras.saving.load_model(info.path, compile=False)
    compiled = compile_model_call(model)
    return Loaded(info, baseline, model, lambda batch: compiled(tf.constant(batch)).numpy())


def models_to_measure(cfg: Config, scratch: Path) -> list[tuple[ModelInfo, bool]]:
    """The installed models, and each one's baseline: the saves in --baseline-models-dir, or
    by default the same weights in the graph it had before (built into `scratch` as
    `python -m training.benchmark --baselines` builds them), so the old and the new graph are
    measured side by side in every run."""
    found = [(info, False) for info in local_models(cfg.models_dir)]
    if cfg.baseline_models_dir is not None:
        found += [(info, True) for info in local_models(cfg.baseline_models_dir)]
    elif cfg.previous_graphs:
        from training.benchmark import BASELINES, save_baselines

        log("limit: building the previous graphs of the installed models (same weights)")
        train = [text for text, _ in read_split("train")]
        names = {old: name for name, old in BASELINES.items()}
        for info in save_baselines(cfg.models_dir, train, scratch):
            found.append((info.model_copy(update={"name": names[info.name]}), True))
    return found


def key(loaded: Loaded) -> str:
    return f"{loaded.info.name} (baseline)" if loaded.baseline else loaded.info.name


def batch1_latency(call: Callable[[list[str]], Any], texts: list[str]) -> Batch1Latency:
    call(texts[:1])
    times = []
    for text in texts:
        started = time.perf_counter()
        call([text])
        times.append(time.perf_counter() - started)
    ordered = sorted(times)
    return Batch1Latency(
        p50_ms=statistics.median(times) * 1e3,
        p99_ms=ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1e3,
    )


def scorer_rates(cfg: Config, loaded: list[Loaded], sample: list[str]) -> dict[str, float]:
    """What the worker's Scorer.score does per review (model call plus the truncation count)."""
    from reviewscore.model.scorer import load_scorer

    scorers = {key(m): load_scorer(m.info, cfg.score_batch_size).score for m in loaded}
    rates = measure_throughput(scorers, sample, cfg.score_batch_size, cfg.limit_passes)
    return {name: rate.best for name, rate in rates.items()}


def agreement(cfg: Config, default: Loaded, baseline: Loaded) -> Agreement:
    """Labels of the default model against its earlier save, on the test split."""
    reviews = read_split("test")[: cfg.labels_reviews]
    texts = [t for t, _ in reviews]
    labels = [y for _, y in reviews]

    def predict(m: Loaded) -> list[int]:
        out: list[int] = []
        for start in range(0, len(texts), 512):
            out += [int(p >= 0.5) for p in m.call(texts[start : start + 512])]
        return out

    new, old = predict(default), predict(baseline)
    return Agreement(
        reviews=len(texts),
        same_label_fraction=sum(a == b for a, b in zip(new, old, strict=True)) / len(texts),
        accuracy=sum(a == y for a, y in zip(new, labels, strict=True)) / len(texts),
        baseline_accuracy=sum(b == y for b, y in zip(old, labels, strict=True)) / len(texts),
    )


def measure_limit(cfg: Config, texts: list[str], default: ModelInfo) -> LimitRow:
    with tempfile.TemporaryDirectory(prefix="reviewscore-bench-baselines-") as scratch:
        return _measure_limit(cfg, texts, default, models_to_measure(cfg, Path(scratch)))


def _measure_limit(
    cfg: Config, texts: list[str], default: ModelInfo, models: list[tuple[ModelInfo, bool]]
) -> LimitRow:
    loaded = [load(info, baseline) for info, baseline in models]
    sample = texts[: cfg.limit_reviews]
    by_batch: dict[str, dict[int, float]] = {key(m): {} for m in loaded}
    for batch in cfg.limit_batch_sizes:
        log(f"limit: batch {batch}, {len(loaded)} model(s) alternating")
        calls = {key(m): m.call for m in loaded}
        for name, rate in measure_throughput(calls, sample, batch, cfg.limit_passes).items():
            by_batch[name][batch] = rate.best
    scorer = scorer_rates(cfg, loaded, sample)
    row = LimitRow(
        default_model=default.name,
        models=[
            ModelLimit(
                name=m.info.name,
                version=m.info.version,
                test_accuracy=m.info.test_accuracy,
                reviews_per_s_by_batch=by_batch[key(m)],
                scorer_reviews_per_s=scorer[key(m)],
                batch1=batch1_latency(m.call, texts[: cfg.batch1_calls]),
                baseline=m.baseline,
            )
            for m in loaded
        ],
    )
    new = next((m for m in loaded if m.info.name == default.name and not m.baseline), None)
    old = next((m for m in loaded if m.info.name == default.name and m.baseline), None)
    if new is not None and old is not None:
        row.agreement = agreement(cfg, new, old)
    del loaded
    gc.collect()
    return row


def recheck_limit(cfg: Config, texts: list[str], row: LimitRow, default: ModelInfo) -> None:
    """The default model's best batch again after the stacks: the ratios use the better of the
    two, so load from other work on the machine at one moment does not flatter the service."""
    loaded = load(default)
    rate = measure_throughput(
        {default.name: loaded.call},
        texts[: cfg.limit_reviews],
        row.default.best_batch,
        cfg.limit_passes,
    )[default.name]
    row.recheck_reviews_per_s = rate.best
    del loaded
    gc.collect()
