"""A job's own terms, parsed and checked in one place: its labels (`metadata`), its deadline,
how long its results are kept once it is finished, and the share of failed rows it may have.
Durations are written `90s`, `30m`, `2h`, `1d` (the one parser)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from reviewscore.core.clock import db_now_plus
from reviewscore.core.errors import BadRequestError
from reviewscore.core.settings import Settings

MAX_LABELS = 16
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 256
# A deadline further out than this is a typo, not a plan (and keeps the sums in range).
MAX_DEADLINE_S = 365 * 86400.0
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", re.IGNORECASE)


def parse_duration(name: str, value: str) -> float:
    """Seconds from `90s`, `30m`, `2h` or `1d`; a 422 naming the option otherwise."""
    found = _DURATION.fullmatch(value)
    if found is None:
        raise BadRequestError(
            f"{name} {value[:40]!r} is not a duration: write a number and a unit, e.g. 90s, "
            "30m, 2h or 1d"
        )
    seconds = float(found[1]) * UNITS[found[2].lower()]
    if seconds <= 0:
        raise BadRequestError(f"{name} must be longer than 0 (got {value[:40]!r})")
    return seconds


def _shown_days(seconds: float) -> str:
    return f"{seconds / 86400:g} day{'' if seconds == 86400 else 's'}"


def parse_labels(given: list[str] | None) -> dict[str, str]:
    """`key:value` pairs (split at the first colon), at most MAX_LABELS, each key once."""
    labels: dict[str, str] = {}
    for pair in given or []:
        key, colon, value = pair.partition(":")
        key = key.strip()
        if not colon or not key:
            raise BadRequestError(f"label {pair[:60]!r} is not key:value (e.g. label=team:search)")
        if len(key) > MAX_LABEL_KEY or len(value) > MAX_LABEL_VALUE:
            raise BadRequestError(
                f"label {key[:40]!r}: keys are at most {MAX_LABEL_KEY} characters and values "
                f"at most {MAX_LABEL_VALUE}"
            )
        if "\x00" in pair:
            raise BadRequestError(f"label {key[:40]!r} holds a NUL character")
        if key in labels:
            raise BadRequestError(f"label {key[:40]!r} is given twice: each key once")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise BadRequestError(f"a job has at most {MAX_LABELS} labels (got {len(labels)})")
    return labels


def label_filter(given: str) -> tuple[str, str | None]:
    """A filter of GET /v1/jobs: `key:value`, or `key` alone for any value."""
    key, colon, value = given.partition(":")
    if not key.strip():
        raise BadRequestError(f"label filter {given[:60]!r} is not key:value or key")
    return key.strip(), value if colon else None


@dataclass(frozen=True)
class JobOptions:
    """The terms a job is created with (all optional)."""

    labels: dict[str, str] = field(default_factory=dict)
    deadline_s: float | None = None
    retention_s: float | None = None
    max_failed_fraction: float | None = None

    def job_fields(self) -> dict[str, Any]:
        """Column values for jobs.create_job; the deadline counts from the database's clock."""
        return {
            "labels": self.labels,
            "deadline_at": None if self.deadline_s is None else db_now_plus(self.deadline_s),
            "retention_s": self.retention_s,
            "max_failed_fraction": self.max_failed_fraction,
        }


def job_options(
    *,
    labels: list[str] | None,
    deadline: str | None,
    results_expire_after: str | None,
    max_failed_fraction: float | str | None,
    settings: Settings,
) -> JobOptions:
    """The options as sent (query, form fields or JSON), checked: a 422 names the one wrong."""
    deadline_s = parse_duration("deadline", deadline) if deadline else None
    if deadline_s is not None and deadline_s > MAX_DEADLINE_S:
        raise BadRequestError(f"deadline {deadline!r} is over the longest, 365d")
    retention_s = None
    if results_expire_after:
        retention_s = parse_duration("results_expire_after", results_expire_after)
        most = settings.job_retention_days * 86400
        if retention_s > most:
            raise BadRequestError(
                f"results_expire_after {results_expire_after!r} is beyond the service's "
                f"retention of {_shown_days(most)} (REVIEWSCORE_JOB_RETENTION_DAYS): give at "
                "most that"
            )
    fraction = None
    if max_failed_fraction not in (None, ""):
        try:
            fraction = float(max_failed_fraction)  # type: ignore[arg-type]
        except ValueError:
            fraction = -1.0
        if not 0 <= fraction < 1:
            raise BadRequestError(
                f"max_failed_fraction must be a number from 0 to under 1, e.g. 0.2 "
                f"(got {str(max_failed_fraction)[:40]!r})"
            )
    return JobOptions(parse_labels(labels), deadline_s, retention_s, fraction)
