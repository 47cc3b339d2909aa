"""Row 7, scale: one worker process against two, as two Celery nodes or as one node with two
pool processes (each then gets cores / 2 TensorFlow threads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import Config
from bench.results import BestOf
from bench.rows.compare import compare_stacks

ONE = "1_node_x1"


def measure_scale(cfg: Config, model: str, files: list[Path]) -> dict[str, BestOf]:
    variants: dict[str, dict[str, Any]] = {
        ONE: {"concurrency": 1},
        "2_nodes_x1": {"workers": 2, "concurrency": 1},
        "1_node_x2": {"concurrency": 2},
    }
    return compare_stacks(cfg, model, "scale", variants, files)
