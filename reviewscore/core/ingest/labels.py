"""A row's own label (the truth a job is evaluated against): read as positive or negative from
the usual forms (pos/neg, positive/negative, 1/0, true/false) or, with positive_from, from a
star rating. Stored per input row as a small code: a missing label and an unreadable one are
kept apart, so the evaluation can say how many rows it left out and why."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

# Tried in order when label_column is not given (case-insensitive, never the text column).
LABEL_COLUMN_DEFAULTS = ("label", "sentiment", "polarity", "rating", "stars")

# InputRow.label: these codes, or NULL for a row with no label at all.
POSITIVE = 1
NEGATIVE = 0
UNREADABLE = -1

_WORDS = {
    "pos": POSITIVE,
    "positive": POSITIVE,
    "true": POSITIVE,
    "neg": NEGATIVE,
    "negative": NEGATIVE,
    "false": NEGATIVE,
}


def _number(value: Any) -> float | None:
    """A number from a cell: text of one, or a value that converts (ints, floats, Parquet's
    decimals); None for anything else (objects, lists, dates)."""
    if not isinstance(value, str | int | float | Decimal):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


def parse_label(value: Any, positive_from: float | None = None) -> int | None:
    """POSITIVE, NEGATIVE, UNREADABLE, or None when the row has no label (empty, null, NaN).

    Words and booleans read the same whatever positive_from says. A number is a rating when
    positive_from is given (positive from that value up); without it only 1 and 0 are labels,
    so a 1-10 rating column left without positive_from is counted unreadable, not guessed."""
    if value is None:
        return None
    if isinstance(value, bool):
        return POSITIVE if value else NEGATIVE
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        word = value.strip().casefold()
        if not word:
            return None
        if word in _WORDS:
            return _WORDS[word]
    number = _number(value)
    if number is None:
        return UNREADABLE
    if math.isnan(number):
        return None  # how pandas and Parquet writers spell an empty cell
    if not math.isfinite(number):
        return UNREADABLE
    if positive_from is not None:
        return POSITIVE if number >= positive_from else NEGATIVE
    if number == 1:
        return POSITIVE
    if number == 0:
        return NEGATIVE
    return UNREADABLE
