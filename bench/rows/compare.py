"""Rows 7 and the knobs: bulk under several stack shapes, all started at once and measured in
turns (pass 1 on each, then pass 2 on each...), so a change in the machine's load hits every
variant alike."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.results import BestOf, JobRun
from bench.service import log, running_service


def compare_stacks(
    cfg: Config, model: str, name: str, variants: dict[str, dict[str, Any]], files: list[Path]
) -> dict[str, BestOf]:
    runs: dict[str, list[JobRun]] = {label: [] for label in variants}
    with ExitStack() as stacks:
        services = {
            label: stacks.enter_context(running_service(cfg, model, f"{name}{i}", **shape))
            for i, (label, shape) in enumerate(variants.items())
        }
        labels = list(services)
        for k, path in enumerate(files):
            # A different variant goes first on each pass: no one always follows the same one.
            for label in labels[k % len(labels) :] + labels[: k % len(labels)]:
                runs[label].append(services[label].timed_job(path))
    out = {label: BestOf(passes) for label, passes in runs.items()}
    for label, best in out.items():
        log(f"{name} {label}: {best.reviews_per_s:.0f} reviews/s")
    return out
