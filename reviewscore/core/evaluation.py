"""How well a job's scores agree with its rows' own labels: accuracy, precision, recall, F1,
ROC AUC, the confusion matrix, calibration (ECE and a reliability diagram) and accuracy by
review length, each with a 95 % interval. Pure Python over counted cells, so the database
does the counting (core/results.py) and a million rows never sit in memory."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

# Scores are compared as the results files write them, to 6 decimals: the figures can be
# checked against a download exactly.
SCORE_SCALE = 1_000_000
CALIBRATION_BINS = 10
# Review length bins by word count: lower bounds, the last one open-ended.
LENGTH_BINS = (1, 100, 200, 400)
Z95 = 1.959963984540054
# ECE's interval: resamples of the counted cells, seeded so a summary read twice agrees.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 2026


class Cell(NamedTuple):
    """Rows alike for every figure: score (p_positive * SCORE_SCALE, rounded), the predicted
    and the true label (1 positive, 0 negative), the length bin, and how many rows. A plain
    tuple of the five does as well (the database's grouped rows are passed as they come)."""

    score: int
    predicted: int
    label: int
    length_bin: int
    rows: int


@dataclass(frozen=True)
class Figure:
    value: float | None
    low: float | None
    high: float | None
    # How the interval was found: wilson, hanley-mcneil or bootstrap.
    interval: str


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    count: int
    mean_p: float | None
    # The share of the bin's rows labeled positive, with its Wilson interval.
    share_positive: Figure


@dataclass(frozen=True)
class LengthBin:
    words_from: int
    words_to: int | None  # None: open-ended
    count: int
    accuracy: Figure


@dataclass(frozen=True)
class Evaluation:
    rows: int
    accuracy: Figure
    precision: Figure
    recall: Figure
    f1: Figure
    roc_auc: Figure
    ece: Figure
    # Keys true_positive, false_positive, true_negative, false_negative.
    confusion: dict[str, int]
    calibration: list[CalibrationBin]
    by_length: list[LengthBin]
    left_out: dict[str, int] = field(default_factory=dict)


def length_bin(words: int) -> int:
    """The LENGTH_BINS index for a word count."""
    index = 0
    for i, start in enumerate(LENGTH_BINS):
        if words >= start:
            index = i
    return index


def calibration_bin(score: int) -> int:
    """The bin of a scaled score: [i/10, (i+1)/10), the last bin including 1.0 (as the
    summary's histogram)."""
    return min(score * CALIBRATION_BINS // SCORE_SCALE, CALIBRATION_BINS - 1)


def wilson(successes: int, trials: int, method: str = "wilson") -> Figure:
    """A proportion with Wilson's score interval (sound near 0 and 1 and for small counts)."""
    if trials <= 0:
        return Figure(None, None, None, method)
    share = successes / trials
    z2 = Z95 * Z95
    centre = (share + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z95 * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials))
    half /= 1 + z2 / trials
    # At 0 of n (n of n) the interval starts at 0 (ends at 1) exactly, not a rounding away.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Figure(share, low, high, method)


def _f1(tp: int, fp: int, fn: int) -> Figure:
    """F1 = 2J / (1 + J) with J = TP / (TP + FP + FN) (the Jaccard index), a proportion of the
    rows positive by label or prediction: its Wilson interval maps through, F1 rising in J."""
    jaccard = wilson(tp, tp + fp + fn)
    if jaccard.value is None or jaccard.low is None or jaccard.high is None:
        return Figure(None, None, None, "wilson")

    def mapped(j: float) -> float:
        return 2 * j / (1 + j)

    return Figure(mapped(jaccard.value), mapped(jaccard.low), mapped(jaccard.high), "wilson")


def _auc(wins: float, positives: int, negatives: int) -> Figure:
    """ROC AUC from the positive-over-negative wins (ties half) counted by _Tally, with Hanley
    and McNeil's (1982) standard error."""
    method = "hanley-mcneil"
    if not positives or not negatives:
        return Figure(None, None, None, method)
    auc = wins / (positives * negatives)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    ) / (positives * negatives)
    half = Z95 * math.sqrt(max(variance, 0.0))
    return Figure(auc, max(0.0, auc - half), min(1.0, auc + half), method)


@dataclass
class _CalibrationCells:
    """Per calibration bin and label: rows and the sum of their scores."""

    counts: list[list[int]]
    sums: list[list[float]]

    def ece(self, counts: list[list[int]] | None = None) -> float:
        """Expected calibration error; with `counts` (a resample), each cell's mean score kept."""
        counts = counts or self.counts
        total = sum(n for pair in counts for n in pair)
        error = 0.0
        for b in range(CALIBRATION_BINS):
            n = counts[b][0] + counts[b][1]
            if not n:
                continue
            mean_p = sum(
                counts[b][y] * self.sums[b][y] / self.counts[b][y]
                for y in (0, 1)
                if self.counts[b][y]
            )
            error += abs(counts[b][1] - mean_p) / total
        return error


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: the normal approximation once n p (1 - p) >= 25, else geometric skips
    between successes (at most about 50 steps there)."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if n * p * (1 - p) >= 25:
        draw = round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))
        return min(max(draw, 0), n)
    q = min(p, 1 - p)
    log_miss = math.log(1 - q)
    hits, position = 0, 0
    while True:
        position += int(math.log(1 - rng.random()) / log_miss) + 1
        if position > n:
            break
        hits += 1
    return hits if q == p else n - hits


def _multinomial(rng: random.Random, n: int, weights: list[int]) -> list[int]:
    left, rest = n, sum(weights)
    drawn = []
    for weight in weights:
        k = _binomial(rng, left, weight / rest) if rest > 0 else 0
        drawn.append(k)
        left -= k
        rest -= weight
    return drawn


def _ece(calibration: _CalibrationCells, rows: int) -> Figure:
    """ECE with a percentile bootstrap: the rows resampled as counts of (bin, label) cells."""
    if not rows:
        return Figure(None, None, None, "bootstrap")
    rng = random.Random(BOOTSTRAP_SEED)
    flat = [n for pair in calibration.counts for n in pair]
    draws = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        sample = _multinomial(rng, rows, flat)
        draws.append(calibration.ece([sample[i : i + 2] for i in range(0, len(sample), 2)]))
    draws.sort()
    low = draws[int(0.025 * (BOOTSTRAP_RESAMPLES - 1))]
    high = draws[int(math.ceil(0.975 * (BOOTSTRAP_RESAMPLES - 1)))]
    return Figure(calibration.ece(), low, high, "bootstrap")


@dataclass
class _Tally:
    """Everything the figures need, counted in one pass over cells in score order: nothing
    per row is kept, so a job of millions of rows is a stream of grouped counts."""

    # Rows by predicted label, then true label: matrix[1][1] true positives, [1][0] false.
    matrix: list[list[int]] = field(default_factory=lambda: [[0, 0], [0, 0]])
    # Per length bin: rows, and rows predicted right.
    lengths: list[list[int]] = field(default_factory=lambda: [[0, 0] for _ in LENGTH_BINS])
    calibration: _CalibrationCells = field(
        default_factory=lambda: _CalibrationCells(
            [[0, 0] for _ in range(CALIBRATION_BINS)], [[0.0, 0.0] for _ in range(CALIBRATION_BINS)]
        )
    )
    # ROC AUC: positive-over-negative pairs won (ties half), negatives at lower scores, and
    # the rows at the score being counted.
    wins: float = 0.0
    negatives_below: int = 0
    score: int | None = None
    here: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, cell: tuple[int, int, int, int, int]) -> None:
        score, predicted, label, length_bin, count = cell
        if score != self.score:
            if self.score is not None and score < self.score:
                raise ValueError("cells must come in score order")
            self._close_score()
            self.score = score
        self.here[label] += count
        self.matrix[predicted][label] += count
        lengths = self.lengths[length_bin]
        lengths[0] += count
        if predicted == label:
            lengths[1] += count
        b = min(score * CALIBRATION_BINS // SCORE_SCALE, CALIBRATION_BINS - 1)
        self.calibration.counts[b][label] += count
        self.calibration.sums[b][label] += count * score / SCORE_SCALE

    def _close_score(self) -> None:
        negatives, positives = self.here
        self.wins += positives * (self.negatives_below + negatives / 2)
        self.negatives_below += negatives
        self.here = [0, 0]

    def finish(self) -> None:
        self._close_score()


def evaluate_cells(
    cells: Iterable[tuple[int, int, int, int, int]], left_out: dict[str, int] | None = None
) -> Evaluation:
    """The evaluation of counted cells, which must come in score order (ValueError if not);
    `left_out` says how many scored rows had no usable label."""
    tally = _Tally()
    for cell in cells:
        tally.add(cell)
    tally.finish()
    calibration, length_counts = tally.calibration, tally.lengths
    (tn, fn), (fp, tp) = tally.matrix
    confusion = {
        "true_positive": tp,
        "false_positive": fp,
        "true_negative": tn,
        "false_negative": fn,
    }
    rows = tp + fp + tn + fn
    bins = []
    for b in range(CALIBRATION_BINS):
        n = sum(calibration.counts[b])
        bins.append(
            CalibrationBin(
                low=b / CALIBRATION_BINS,
                high=(b + 1) / CALIBRATION_BINS,
                count=n,
                mean_p=sum(calibration.sums[b]) / n if n else None,
                share_positive=wilson(calibration.counts[b][1], n),
            )
        )
    by_length = [
        LengthBin(
            words_from=start,
            words_to=LENGTH_BINS[i + 1] - 1 if i + 1 < len(LENGTH_BINS) else None,
            count=length_counts[i][0],
            accuracy=wilson(length_counts[i][1], length_counts[i][0]),
        )
        for i, start in enumerate(LENGTH_BINS)
    ]
    return Evaluation(
        rows=rows,
        accuracy=wilson(tp + tn, rows),
        precision=wilson(tp, tp + fp),
        recall=wilson(tp, tp + fn),
        f1=_f1(tp, fp, fn),
        roc_auc=_auc(tally.wins, tp + fn, tn + fp),
        ece=_ece(calibration, rows),
        confusion=confusion,
        calibration=bins,
        by_length=by_length,
        left_out=dict(left_out or {}),
    )
