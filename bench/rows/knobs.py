"""The knobs: bulk rate under other chunk sizes, model-batch sizes and TensorFlow threads."""

from __future__ import annotations

from pathlib import Path

from bench.config import Config
from bench.results import BestOf
from bench.rows.compare import compare_stacks


def label(env: dict[str, str]) -> str:
    return ",".join(f"{k.removeprefix('REVIEWSCORE_').lower()}={v}" for k, v in env.items())


def measure_knobs(cfg: Config, model: str, files: list[Path]) -> dict[str, BestOf]:
    variants = {label(env) or "defaults": {"env": env} for env in cfg.knobs}
    return compare_stacks(cfg, model, "knobs", variants, files)
