"""Reviews per second of scoring functions, timed one way for every benchmark: training's side by
side comparison (python -m training.benchmark) and the model-limit row of `make bench`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# Scores one batch of texts; what it returns is not looked at (make it wait for the result).
ScoreBatch = Callable[[list[str]], object]


@dataclass(frozen=True)
class Throughput:
    reviews: int
    batch_size: int
    passes: tuple[float, ...]  # reviews/s of each timed pass, in order

    @property
    def best(self) -> float:
        """Other load on the machine only ever slows a pass: the best is the least disturbed."""
        return max(self.passes)

    @property
    def median(self) -> float:
        return statistics.median(self.passes)


def timed_pass(score: ScoreBatch, texts: Sequence[str], batch_size: int) -> float:
    """Reviews/s of one pass over `texts` in batches of `batch_size`."""
    started = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        score(list(texts[start : start + batch_size]))
    return len(texts) / (time.perf_counter() - started)


def measure_throughput(
    scorers: Mapping[str, ScoreBatch], texts: Sequence[str], batch_size: int, passes: int
) -> dict[str, Throughput]:
    """Each scorer warmed on one batch, then `passes` rounds; a round times one pass over `texts`
    with every scorer in turn, so a change in the machine's load hits all of them alike."""
    for score in scorers.values():
        score(list(texts[:batch_size]))
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    for _ in range(passes):
        for name, score in scorers.items():
            rates[name].append(timed_pass(score, texts, batch_size))
    return {
        name: Throughput(reviews=len(texts), batch_size=batch_size, passes=tuple(values))
        for name, values in rates.items()
    }
