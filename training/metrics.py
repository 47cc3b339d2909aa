"""Classification metrics on P(positive) scores, in plain numpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from reviewscore.core.results import POSITIVE_FROM


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    hits = labels[order].astype(np.float64)
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tp = np.cumsum(hits)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    positives = max(hits.sum(), 1.0)
    negatives = max(len(hits) - hits.sum(), 1.0)
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def reliability_bins(
    labels: np.ndarray, scores: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Per equal-width bin of P(positive): count, mean score and observed positive rate."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        inside = index == b
        count = int(inside.sum())
        table.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": count,
                "mean_score": float(scores[inside].mean()) if count else float("nan"),
                "positive_rate": float(labels[inside].mean()) if count else float("nan"),
            }
        )
    return table


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Mean |observed positive rate - mean P(positive)| over equal-width bins, weighted by count."""
    total = len(scores)
    return float(
        sum(
            row["count"] / total * abs(row["positive_rate"] - row["mean_score"])
            for row in reliability_bins(labels, scores, bins)
            if row["count"]
        )
    )


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    predicted = (scores >= POSITIVE_FROM).astype(int)
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    log_loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    return {
        "n": int(len(labels)),
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(labels, scores),
        "ece": expected_calibration_error(labels, scores),
        "log_loss": log_loss,
        # rows: true label (negative, positive); columns: predicted label (negative, positive)
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
