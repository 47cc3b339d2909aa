"""Measures reviewscore side by side in one run: the model's in-process limit, the seed's
one-predict-per-review path, a naive task per review, bulk CSV jobs, singles under wrk, a big
dump (memory, ingest, dedup, fairness), 1 vs 2 workers, and the coordination path on PostgreSQL
(bench/coordination.py), fair share between API keys (bench/key_share.py) and singles on the stack
`make run` starts beside this one (bench/stacks.py). Run with `make bench` (or
`python -m bench --quick` for a check in minutes).

Prints the tables and writes the same figures to bench/results/<date>-<host>.json.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import psutil  # noqa: E402

from bench import report  # noqa: E402
from bench.config import IMDB_DIR, Config  # noqa: E402
from bench.data import Texts, bulk_files, load_reviews  # noqa: E402
from bench.load import load_generator  # noqa: E402
from bench.results import Results, save  # noqa: E402
from bench.rows import (  # noqa: E402
    big,
    bulk,
    dedup,
    fairness,
    knobs,
    limit,
    naive,
    resume,
    scale,
    seed,
    singles,
)
from bench.service import log, running_service  # noqa: E402
from bench.targets import targets  # noqa: E402
from reviewscore.core.model_registry import local_model  # noqa: E402


def load_average() -> list[float]:
    """1, 5 and 15 minute load: the machine is shared, so the run records how busy it was."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from reviewscore.model.scorer import default_device

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "device": default_device(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
        "note": "2 cores shared with other engineers' tests and training: figures are noisy; "
        "every row ran in this one run so their ratios hold",
    }


STACK = (
    "bench/service.py: the processes `reviewscore run` starts (embedded Redis, API, one worker "
    "node of one pool process per core, beat; SQLite) but Flower, singles timeout 120 s; each "
    "row's stack is its own"
)


def run_main_stack(cfg: Config, model: str, texts: Texts, tmp: Path, results: Results) -> None:
    """Rows 3-6 and 8 share one stack, in an order that keeps caches honest."""
    want = {"naive", "bulk", "singles", "dedup", "fairness", "big"} - cfg.skip
    if not want:
        return
    rows = results.rows
    with (
        running_service(cfg, model, "main") as service,
        load_generator(texts.any[:2000]) as load,
    ):
        results.meta["stack_start_s"] = service.started_s
        if "naive" in want:
            rows.naive = naive.measure_naive(cfg, service, texts.any)
            log(f"naive: {rows.naive.reviews_per_s:.1f} reviews/s")
        if "bulk" in want:
            rows.bulk = bulk.measure_bulk(service, bulk_files(texts, tmp, cfg.bulk_passes))
            log(f"bulk: {rows.bulk.reviews_per_s:.0f} reviews/s")
        if "singles" in want:
            rows.singles = singles.measure_singles(cfg, service, load)
        if "dedup" in want:
            rows.dedup = dedup.measure_dedup(cfg, service, texts, tmp)
            log(f"dedup speedup: {rows.dedup.speedup:.1f}x")
        if "fairness" in want:
            rows.fairness.alone = fairness.measure_alone(service, texts, tmp)
        if "big" in want:

            def under_dump(dump_id: str) -> None:
                fairness.measure_under_dump(cfg, service, texts, tmp, dump_id, load, rows.fairness)

            rows.big = big.measure_big_dump(
                cfg, service, texts, tmp, under_dump if "fairness" in want else None
            )
            log(
                f"big: ingest {rows.big.run.ingest_rows_per_s:.0f} rows/s, "
                f"{rows.big.run.seconds:.0f}s"
            )


def run_bulk_api_parse(cfg: Config, model: str, texts: Texts, tmp: Path, results: Results) -> None:
    """Row 4 again on a stack whose API parses every row (the path before ingest design (b)),
    so the default's bulk figure has the older path's beside it, measured in the same run."""
    with running_service(
        cfg, model, "bulk-api", env={"REVIEWSCORE_INGEST_PARSE": "api"}
    ) as service:
        results.rows.bulk_api_parse = bulk.measure_bulk(
            service, bulk_files(texts, tmp / "api", cfg.bulk_passes)
        )
    log(f"bulk, the API parsing: {results.rows.bulk_api_parse.reviews_per_s:.0f} reviews/s")


def run(cfg: Config) -> Results:
    default = local_model(cfg.models_dir, cfg.model)
    results = Results(
        meta={
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "model": default.name,
            "model_version": default.version,
            "default_model": local_model(cfg.models_dir, None).name,
            "models_dir": str(cfg.models_dir),
            "baseline_models_dir": str(cfg.baseline_models_dir or ""),
            "quick": cfg.quick,
            "bulk_rows": cfg.bulk_rows,
            "big_rows": cfg.big_rows,
            "skipped": sorted(cfg.skip),
            "knobs": {"chunk_size": cfg.chunk_size, "score_batch_size": cfg.score_batch_size},
            # Which stack the figures are from (issue 20, defect 10): `python -m bench.stacks`
            # (last in this run) measures singles on `reviewscore run` beside it.
            "stack": STACK,
        }
    )
    log(f"load average {load_average()}; loading reviews from {IMDB_DIR}")
    texts = Texts.split(load_reviews(), cfg)
    rows = results.rows
    started = time.perf_counter()
    if "limit" not in cfg.skip:
        rows.limit = limit.measure_limit(cfg, texts.any, default)
        log(f"limit: {rows.limit.reviews_per_s:.0f} reviews/s")
    if "seed" not in cfg.skip:
        rows.seed = seed.measure_seed(cfg, texts.any, default)
        log(f"seed: {rows.seed.reviews_per_s:.1f} reviews/s")
    with tempfile.TemporaryDirectory(prefix="reviewscore-bench-data-") as tmp_name:
        tmp = Path(tmp_name)
        run_main_stack(cfg, default.name, texts, tmp, results)
        if "bulk" not in cfg.skip:
            (tmp / "api").mkdir()
            run_bulk_api_parse(cfg, default.name, texts, tmp, results)
        files = bulk_files(texts, tmp, cfg.compare_passes)
        if "scale" not in cfg.skip:
            rows.scale = scale.measure_scale(cfg, default.name, files)
        if "knobs" not in cfg.skip:
            rows.knobs = knobs.measure_knobs(cfg, default.name, files)
        if "singles-node" not in cfg.skip:
            rows.singles_node = fairness.measure_with_singles_node(cfg, default.name, texts, tmp)
        if "resume" not in cfg.skip:
            with running_service(cfg, default.name, "resume") as service:
                rows.resume = resume.measure_resume(cfg, service, texts, tmp)
            log(
                f"resume: sent {rows.resume.sent_ratio:.2f}x the file in {rows.resume.seconds:.0f}s"
            )
    if rows.limit is not None:
        limit.recheck_limit(cfg, texts.any, rows.limit, default)
        log(f"limit recheck: {rows.limit.recheck_reviews_per_s:.0f} reviews/s")
    results.meta["total_seconds"] = time.perf_counter() - started
    results.meta["load_average_at_end"] = load_average()
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = Config.parse(argv)
    results = run(cfg)
    results.targets = targets(results.rows, cfg.busy_singles_connections)
    results.table = report.render(results)
    print(f"\nwritten: {save(results)}")
    if "coordination" not in cfg.skip:
        # Its own PostgreSQL and stack, after the others have stopped: the claim / write / count
        # path alone, with 1 to 8 worker processes (its table and file are its own).
        from bench import coordination

        log("coordination: PostgreSQL, trivial model")
        coordination.main(["--quick"] if cfg.quick else [])
    if "key-share" not in cfg.skip:
        # Fair share between API keys, on a stack of its own with auth on (its own table and
        # file): B's small job during A's dump, and A's throughput with and without it.
        from bench import key_share

        log("key-share: fair share between two API keys")
        key_share.main(
            (["--quick"] if cfg.quick else []) + (["--model", cfg.model] if cfg.model else [])
        )
    if "stacks" not in cfg.skip:
        # Singles on the stack users start (`reviewscore run`, Flower and every default
        # included) beside the benchmark's stack, in turns (its own table and file).
        from bench import stacks

        log("stacks: singles on `reviewscore run` beside the benchmark's stack")
        stacks.main(["--rounds", "1", "--seconds", "3"] if cfg.quick else [])
    return 0
