"""Row 6, dedup: the same number of rows, all distinct, against a tenth as many texts each seen
ten times (the worker's content-hash cache serves the repeats)."""

from __future__ import annotations

from pathlib import Path

from bench.config import Config
from bench.data import Texts, write_csv
from bench.results import DedupRow
from bench.service import Service


def measure_dedup(cfg: Config, service: Service, texts: Texts, tmp: Path) -> DedupRow:
    repeated = [texts.dedup_base[i % len(texts.dedup_base)] for i in range(cfg.dedup_rows)]
    distinct = write_csv(tmp / "dedup-distinct.csv", texts.dedup_unique, "distinct")
    again = write_csv(tmp / "dedup-repeated.csv", repeated, "repeated")
    return DedupRow(
        distinct=service.timed_job(distinct, count_computed=True),
        repeated_10x=service.timed_job(again, count_computed=True),
    )
