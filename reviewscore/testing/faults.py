"""The fault switches of the fault, resilience and multi-host tests, as a worker plugin
(worker/plugins.py): a worker started with `worker_env(...)` in its environment installs it;
any other worker has none of it, neither in its settings nor on its scoring path.

- poison_marker: scoring raises on any text holding it, as a model failure would.
- crash_marker: a text holding it kills the worker process outright, as a segfault would.
- score_delay_s: each chunk takes this much longer to score, as a slower model would, so
  faults land mid-job (spent in slices, stopping once the chunk's lease is lost).
- hold_marker: the first attempt of a chunk holding a text with the marker followed by
  "score" (or "commit") stops for HOLD_S while scoring (or inside its completion transaction,
  its row locks held), so a test can cut the host at that exact moment."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from reviewscore.core.chunks import ChunkWork

log = logging.getLogger(__name__)

PLUGIN = "reviewscore.testing.faults:install"
# Each switch is read from REVIEWSCORE_FAULT_<NAME> (not a setting: Settings knows none of them).
ENV_PREFIX = "REVIEWSCORE_FAULT_"
# How long a chunk marked by hold_marker stops: long enough for a test to see it and cut the
# host, shorter than a test's patience.
HOLD_S = 30.0
HOLD_POINTS = ("score", "commit")


class PoisonedTextError(RuntimeError):
    """Raised on a text holding the poison marker, as a model failure would."""


@dataclass(frozen=True)
class Faults:
    poison_marker: str = ""
    crash_marker: str = ""
    score_delay_s: float = 0.0
    hold_marker: str = ""

    def __post_init__(self) -> None:
        if self.score_delay_s < 0:
            raise ValueError(f"{ENV_PREFIX}SCORE_DELAY_S must be >= 0, not {self.score_delay_s}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        def read(name: str) -> str:
            return environ.get(f"{ENV_PREFIX}{name.upper()}", "")

        return cls(
            poison_marker=read("poison_marker"),
            crash_marker=read("crash_marker"),
            score_delay_s=float(read("score_delay_s") or 0),
            hold_marker=read("hold_marker"),
        )

    # --- the plugin's hooks (worker/plugins.py WorkerPlugin) ---

    def wrap_scorer(self, scorer: Any) -> Any:
        if not (self.poison_marker or self.crash_marker):
            return scorer
        return FaultyScorer(scorer, self)

    def before_scoring(self, work: ChunkWork, keeper: Callable[[], None]) -> None:
        self._hold(work, "score")
        # A slower model's extra time, in slices, stopping early once the lease is lost.
        deadline = time.monotonic() + self.score_delay_s
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.5))
            keeper()

    def before_commit(self, work: ChunkWork) -> None:
        self._hold(work, "commit")

    # --- the switches ---

    def check_texts(self, texts: Sequence[str]) -> None:
        if self.crash_marker and any(self.crash_marker in text for text in texts):
            os._exit(70)  # as a segfault in the model would: no exception, no cleanup
        if self.poison_marker and any(self.poison_marker in text for text in texts):
            raise PoisonedTextError(f"a text holds the poison marker {self.poison_marker!r}")

    def hold_point(self, work: ChunkWork) -> str | None:
        """Where hold_marker stops this attempt ("score" or "commit"), or None: only a chunk's
        first attempt stops, so its redelivery goes through."""
        if not self.hold_marker or work.attempt != 1:
            return None
        for row in work.rows:
            at = row.text.find(self.hold_marker)
            if at >= 0:
                rest = row.text[at + len(self.hold_marker) :]
                return next((point for point in HOLD_POINTS if rest.startswith(point)), None)
        return None

    def _hold(self, work: ChunkWork, here: str) -> None:
        if self.hold_point(work) != here:
            return
        log.warning(
            "fault injection: chunk %s/%s holds at %s for %.0fs",
            work.job_id,
            work.seq,
            here,
            HOLD_S,
        )
        time.sleep(HOLD_S)


class FaultyScorer:
    """A loaded scorer whose calls first meet the poison and crash markers; everything else
    (info, device, batch_size) is the real scorer's."""

    def __init__(self, scorer: Any, faults: Faults) -> None:
        self._scorer = scorer
        self._faults = faults

    def score(self, texts: Sequence[str]) -> Any:
        self._faults.check_texts(texts)
        return self._scorer.score(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)


def install() -> Faults:
    """The factory REVIEWSCORE_WORKER_PLUGIN names (see PLUGIN)."""
    faults = Faults.from_env()
    log.warning("fault switches on in this worker: %s", faults)
    return faults


def worker_env(
    *,
    poison_marker: str = "",
    crash_marker: str = "",
    score_delay_s: float = 0.0,
    hold_marker: str = "",
) -> dict[str, str]:
    """The environment of a worker that installs this plugin with these switches (the rest off):
    what the tests' fixtures give the processes they start."""
    switches = Faults(poison_marker, crash_marker, score_delay_s, hold_marker)
    env = {"REVIEWSCORE_WORKER_PLUGIN": PLUGIN}  # worker/plugins.py PLUGIN_ENV
    for f in fields(switches):
        value = getattr(switches, f.name)
        if value:
            env[f"{ENV_PREFIX}{f.name.upper()}"] = str(value)
    return env
