"""Row 4, bulk: a CSV of real reviews uploaded over HTTP until every result is in SQL; the best
of several passes, each with its worker phase times."""

from __future__ import annotations

from pathlib import Path

from bench.results import BestOf
from bench.service import Service


def measure_bulk(service: Service, files: list[Path]) -> BestOf:
    return BestOf([service.timed_job(path) for path in files])
