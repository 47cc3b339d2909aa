"""The typed results of one benchmark run: one dataclass per row, saved as JSON in bench/results/."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import RESULTS_DIR

# --- row 1: the model alone, in-process -------------------------------------------------------


@dataclass
class Batch1Latency:
    """One review per model call, as the seed's page scored."""

    p50_ms: float
    p99_ms: float

    @property
    def one_per_call_rps(self) -> float:
        return 1000 / self.p50_ms


@dataclass
class ModelLimit:
    name: str
    version: str
    test_accuracy: float | None
    reviews_per_s_by_batch: dict[int, float]  # compiled model call, best pass per batch size
    scorer_reviews_per_s: float  # Scorer.score (what the worker calls) at the worker's batch
    batch1: Batch1Latency
    baseline: bool = False  # an earlier save, from --baseline-models-dir

    @property
    def best_batch(self) -> int:
        return max(self.reviews_per_s_by_batch, key=lambda b: self.reviews_per_s_by_batch[b])

    @property
    def reviews_per_s(self) -> float:
        return self.reviews_per_s_by_batch[self.best_batch]


@dataclass
class Agreement:
    """The default model against its baseline namesake on the test split."""

    reviews: int
    same_label_fraction: float
    accuracy: float
    baseline_accuracy: float


@dataclass
class LimitRow:
    default_model: str
    models: list[ModelLimit]
    recheck_reviews_per_s: float | None = None  # the default model again, after the stacks
    agreement: Agreement | None = None

    def model(self, name: str, baseline: bool = False) -> ModelLimit | None:
        return next((m for m in self.models if m.name == name and m.baseline == baseline), None)

    @property
    def default(self) -> ModelLimit:
        found = self.model(self.default_model)
        assert found is not None
        return found

    @property
    def reviews_per_s(self) -> float:
        """The better of start and recheck: load from other work at one moment does not flatter
        the ratios against the service."""
        return max(self.default.reviews_per_s, self.recheck_reviews_per_s or 0.0)


# --- rows 2 and 3 -----------------------------------------------------------------------------


@dataclass
class CallsRow:
    """The seed's one predict per review, or the naive one Celery task per review."""

    calls: int
    seconds: float

    @property
    def reviews_per_s(self) -> float:
        return self.calls / self.seconds


# --- jobs: bulk, dedup, fairness, scale, knobs ------------------------------------------------


@dataclass
class PhaseSummary:
    """Where the worker's time went, from its `chunk_written {...}` JSON records."""

    chunks: int
    phase_seconds: dict[str, float]  # claim, lookup, score, write: summed over chunks
    busy_fraction: float  # worker-seconds in chunks / wall seconds of the job
    model_reviews_per_s: float  # reviews scored / seconds in the score phase

    @property
    def phase_share(self) -> dict[str, float]:
        busy = sum(self.phase_seconds.values()) or 1.0
        return {phase: s / busy for phase, s in self.phase_seconds.items()}


@dataclass
class JobRun:
    """A CSV uploaded over HTTP, from its first byte to the job's final status."""

    job_id: str
    rows: int
    seconds: float
    upload_seconds: float
    computed: int | None = None  # rows the model scored (the rest came from the dedup cache)
    phases: PhaseSummary | None = None

    @property
    def reviews_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def ingest_rows_per_s(self) -> float:
        return self.rows / self.upload_seconds


@dataclass
class BestOf:
    """The best of several passes: other load on the machine only ever slows a pass."""

    passes: list[JobRun]

    @property
    def best(self) -> JobRun:
        return max(self.passes, key=lambda p: p.reviews_per_s)

    @property
    def reviews_per_s(self) -> float:
        return self.best.reviews_per_s


@dataclass
class DedupRow:
    distinct: JobRun
    repeated_10x: JobRun

    @property
    def speedup(self) -> float:
        return self.repeated_10x.reviews_per_s / self.distinct.reviews_per_s


# --- singles: load from wrk (or the Python fallback) ------------------------------------------


@dataclass
class CpuShare:
    """CPU seconds per wall second (1.0 = one core) of each side during a load run."""

    client: float
    api: float
    worker: float
    redis: float
    machine: float  # every process on the host, ours and others'
    cores: int


@dataclass
class LoadRun:
    generator: str  # "wrk", or the labelled Python fallback
    connections: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    cpu: CpuShare

    @property
    def reviews_per_s(self) -> float:
        return self.requests / self.seconds


# --- row 6: the big dump ----------------------------------------------------------------------


@dataclass
class RssSummary:
    start_mb: float
    max_mb: float
    end_mb: float
    samples: int

    @property
    def growth_pct(self) -> float:
        return (self.end_mb - self.start_mb) / self.start_mb * 100


@dataclass
class BigRow:
    run: JobRun
    csv_mb: float
    api_rss: RssSummary | None
    worker_rss: RssSummary | None


@dataclass
class FairnessRow:
    alone: JobRun | None = None
    under_dump: JobRun | None = None
    singles_under_dump: LoadRun | None = None
    dump_still_running: bool | None = None


@dataclass
class SinglesNodeRow:
    """Row 8b: the same singles load on a stack with a worker node for single reviews only
    (`reviewscore run --singles-worker`), idle and while a dump is scored."""

    idle: LoadRun | None = None
    under_dump: LoadRun | None = None
    dump_rows: int = 0


@dataclass
class ResumeRow:
    """Row 10: a CLI upload SIGKILLed `kills` times and run again each time."""

    rows: int
    file_bytes: int
    sent_bytes: int  # by every run together, counted by a proxy in front of the API
    kills: int
    resumes: int  # runs that said "resuming job ..."
    seconds: float
    ids_once_in_order: bool
    seed: int
    last_resume: str

    @property
    def sent_ratio(self) -> float:
        return self.sent_bytes / self.file_bytes


# --- the run --------------------------------------------------------------------------------


@dataclass
class Rows:
    limit: LimitRow | None = None
    seed: CallsRow | None = None
    naive: CallsRow | None = None
    bulk: BestOf | None = None
    # The same bulk jobs on a stack whose API parses every row (REVIEWSCORE_INGEST_PARSE=api,
    # the path before ingest design (b)), beside the default in the same run.
    bulk_api_parse: BestOf | None = None
    singles: list[LoadRun] = field(default_factory=list)
    dedup: DedupRow | None = None
    big: BigRow | None = None
    fairness: FairnessRow = field(default_factory=FairnessRow)
    singles_node: SinglesNodeRow | None = None
    scale: dict[str, BestOf] = field(default_factory=dict)
    knobs: dict[str, BestOf] = field(default_factory=dict)
    resume: ResumeRow | None = None

    def singles_at(self, connections: int) -> LoadRun | None:
        return next((r for r in self.singles if r.connections == connections), None)


@dataclass
class Target:
    name: str
    value: float | None
    op: str  # ">=", "<=" or "<"
    wanted: float
    limited_by: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.op == ">=":
            return self.value >= self.wanted
        if self.op == "<=":
            return self.value <= self.wanted
        return self.value < self.wanted


@dataclass
class Results:
    meta: dict[str, Any]
    rows: Rows = field(default_factory=Rows)
    targets: list[Target] = field(default_factory=list)
    table: str = ""


def _jsonable(value: Any) -> Any:
    """Dataclasses as dicts with their derived figures (properties) too, for readers of the JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in dir(type(value)):
            if isinstance(getattr(type(value), name, None), property):
                try:
                    out[name] = _jsonable(getattr(value, name))
                except (AssertionError, ValueError, ZeroDivisionError):
                    pass
        return out
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def save(results: Results) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    day = dt.datetime.now(dt.UTC).date().isoformat()
    host = socket.gethostname().split(".")[0]
    suffix = "-quick" if results.meta.get("quick") else ""
    path = RESULTS_DIR / f"{day}-{host}{suffix}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    tmp.replace(path)
    return path
