"""What one benchmark run measures and how much of it: the command line, and --quick sizes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
IMDB_DIR = REPO_ROOT.parent / "shared" / "data" / "imdb"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
ROWS = (
    "limit",
    "seed",
    "naive",
    "bulk",
    "singles",
    "dedup",
    "fairness",
    "big",
    "scale",
    "knobs",
    "singles-node",
    "resume",
    "coordination",
    "key-share",
    "stacks",
)
KNOBS: tuple[dict[str, str], ...] = (
    {},
    {"REVIEWSCORE_CHUNK_SIZE": "250"},
    {"REVIEWSCORE_CHUNK_SIZE": "4000"},
    {"REVIEWSCORE_SCORE_BATCH_SIZE": "64"},
    {"REVIEWSCORE_SCORE_BATCH_SIZE": "1024"},
    {"REVIEWSCORE_TF_THREADS": "1"},
)


@dataclass
class Config:
    models_dir: Path
    model: str | None
    bulk_rows: int
    big_rows: int
    quick: bool
    skip: set[str]
    baseline_models_dir: Path | None = None
    previous_graphs: bool = True
    limit_reviews: int = 4096
    limit_batch_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    limit_passes: int = 3
    labels_reviews: int = 25_000  # the whole test split, for a baseline's label agreement
    bulk_passes: int = 2
    compare_passes: int = 3
    batch1_calls: int = 200
    seed_reviews: int = 150
    naive_tasks: int = 500
    singles_connections: tuple[int, ...] = (1, 4, 32, 64)
    singles_seconds: float = 10.0
    busy_singles_connections: int = 32
    busy_singles_seconds: float = 10.0
    dedup_rows: int = 5000
    fairness_rows: int = 200
    chunk_size: int = 1000
    score_batch_size: int = 256
    knobs: tuple[dict[str, str], ...] = field(default=KNOBS)

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Config:
        p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
        p.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
        p.add_argument("--model", default=None, help="default: the default installed model")
        p.add_argument("--bulk-rows", type=int, default=20_000)
        p.add_argument("--big-rows", type=int, default=1_000_000)
        p.add_argument("--quick", action="store_true", help="small sizes: a check in minutes")
        p.add_argument("--skip", nargs="*", default=[], choices=ROWS, help="rows to leave out")
        p.add_argument(
            "--baseline-models-dir",
            type=Path,
            default=None,
            help="earlier saves of installed models (same folder layout), measured in the limit "
            "row beside them; the default model's labels are compared with its namesake's",
        )
        p.add_argument(
            "--no-previous-graphs",
            action="store_true",
            help="without --baseline-models-dir, the limit row also measures each installed "
            "model's weights in its previous graph (built in a minute); this leaves them out",
        )
        a = p.parse_args(argv)
        cfg = cls(a.models_dir.resolve(), a.model, a.bulk_rows, a.big_rows, a.quick, set(a.skip))
        cfg.previous_graphs = not a.no_previous_graphs
        cfg.baseline_models_dir = a.baseline_models_dir.resolve() if a.baseline_models_dir else None
        if a.quick:
            cfg.shrink()
        return cfg

    def shrink(self) -> None:
        """--quick: every row still runs, on sizes that take minutes, not an hour."""
        self.bulk_rows, self.big_rows = min(self.bulk_rows, 1000), min(self.big_rows, 5000)
        self.limit_reviews, self.batch1_calls, self.seed_reviews = 512, 30, 20
        self.limit_passes, self.labels_reviews = 1, 2000
        self.naive_tasks, self.singles_seconds, self.busy_singles_seconds = 50, 3.0, 2.0
        self.dedup_rows, self.fairness_rows, self.compare_passes = 500, 50, 2
        self.knobs = self.knobs[:2]
