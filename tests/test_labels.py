"""Labeled uploads on their own: how a row's label is read in every form, which column holds it,
and the evaluation's figures against scikit-learn's on the same rows (pure, no service)."""

from __future__ import annotations

import io
import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics

from reviewscore.core import evaluation
from reviewscore.core.errors import BadUploadError
from reviewscore.core.evaluation import SCORE_SCALE, Cell, evaluate_cells, length_bin, wilson
from reviewscore.core.ingest import IngestLimits, UploadOptions, open_reviews
from reviewscore.core.ingest.labels import NEGATIVE, POSITIVE, UNREADABLE, parse_label

LIMITS = IngestLimits(
    max_upload_bytes=10**9, max_text_bytes=10_000, max_rows=10_000, max_gzip_ratio=50
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pos", POSITIVE),
        ("neg", NEGATIVE),
        ("Positive", POSITIVE),
        (" NEGATIVE ", NEGATIVE),
        ("1", POSITIVE),
        ("0", NEGATIVE),
        ("1.0", POSITIVE),
        (1, POSITIVE),
        (0, NEGATIVE),
        ("true", POSITIVE),
        ("False", NEGATIVE),
        (True, POSITIVE),
        (False, NEGATIVE),
    ],
)
def test_the_usual_label_forms_read_as_positive_or_negative(value: object, expected: int) -> None:
    assert parse_label(value) == expected


@pytest.mark.parametrize("value", [None, "", "   ", math.nan])
def test_an_empty_label_is_missing(value: object) -> None:
    assert parse_label(value) is None


@pytest.mark.parametrize("value", ["meh", "8", 7, "2", -1, "inf", {"a": 1}, [1], "posi"])
def test_other_labels_are_unreadable_without_positive_from(value: object) -> None:
    assert parse_label(value) == UNREADABLE


@pytest.mark.parametrize(
    ("value", "positive_from", "expected"),
    [
        ("10", 7, POSITIVE),
        ("7", 7, POSITIVE),
        (6, 7, NEGATIVE),
        ("1", 7, NEGATIVE),
        (4.0, 4, POSITIVE),
        ("3.5", 4, NEGATIVE),
        ("pos", 4, POSITIVE),
        ("five", 4, UNREADABLE),
    ],
)
def test_star_ratings_read_with_positive_from(
    value: object, positive_from: float, expected: int
) -> None:
    assert parse_label(value, positive_from) == expected


def labels_of(data: bytes, **options: object) -> tuple[str | None, list[int | None]]:
    reviews = open_reviews(io.BytesIO(data), LIMITS, UploadOptions(**options))  # type: ignore[arg-type]
    return reviews.label_column, [row.label for row in reviews]


def test_the_label_column_is_found_by_name_in_order() -> None:
    data = b"text,Rating,Sentiment\ngreat,9,pos\nbad,2,neg\n"
    assert labels_of(data) == ("Sentiment", [POSITIVE, NEGATIVE])
    assert labels_of(data, label_column="Rating", positive_from=7) == (
        "Rating",
        [POSITIVE, NEGATIVE],
    )
    assert labels_of(b"text,stars\nok,5\nno,1\n", positive_from=4) == ("stars", [1, 0])
    assert labels_of(b"text,score\nok,5\n") == (None, [None])


def test_missing_and_malformed_labels_are_kept_apart() -> None:
    data = b"id,text,label\n1,a,1\n2,b,\n3,c,maybe\n4,d\n"
    assert labels_of(data) == ("label", [POSITIVE, None, UNREADABLE, None])


def test_a_label_column_that_is_not_there_is_refused_naming_the_columns() -> None:
    with pytest.raises(BadUploadError, match=r"label_column 'truth' is not in the file.*'text'"):
        labels_of(b"text,label\na,1\n", label_column="truth")
    with pytest.raises(BadUploadError, match="positive_from is given but the file has no label"):
        labels_of(b"text,score\na,1\n", positive_from=7)


def test_json_lines_and_parquet_labels_read_alike() -> None:
    lines = [
        {"text": "a", "label": 1},
        {"text": "b", "label": "neg"},
        {"text": "c", "label": True},
        {"text": "d", "label": None},
        {"text": "e", "label": {"x": 1}},
        {"text": "f", "review": {"stars": 5}},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    assert labels_of(data) == ("label", [1, 0, 1, None, UNREADABLE, None])
    table = pa.table({"text": ["a", "b", "c", "d"], "rating": [10, 3, None, 7]})
    out = io.BytesIO()
    pq.write_table(table, out)
    assert labels_of(out.getvalue(), positive_from=7) == ("rating", [1, 0, None, 1])


def test_wilson_matches_the_published_interval() -> None:
    # Wilson's interval for 8 of 10 (e.g. Newcombe 1998, table I): 0.490 to 0.943.
    figure = wilson(8, 10)
    assert (round(figure.low or 0, 3), round(figure.high or 0, 3)) == (0.49, 0.943)


def random_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    labels = np.array([rng.random() < 0.45 for _ in range(n)], dtype=int)
    # Scores that lean towards the label, rounded to the exported 6 decimals, with ties.
    p = np.array(
        [
            round(min(max(rng.gauss(0.35 + 0.3 * y, 0.25), 0), 1), 2 if i % 3 else 6)
            for i, y in enumerate(labels)
        ]
    )
    words = np.array([rng.randint(1, 900) for _ in range(n)])
    return p, labels, words


def cells_of(p: np.ndarray, labels: np.ndarray, words: np.ndarray) -> list[Cell]:
    """One cell per row, in score order (as the database sends them)."""
    cells = [
        Cell(round(pi * SCORE_SCALE), int(pi >= 0.5), int(y), length_bin(int(w)), 1)
        for pi, y, w in zip(p, labels, words, strict=True)
    ]
    return sorted(cells, key=lambda c: c.score)


def test_the_figures_agree_with_scikit_learn() -> None:
    p, labels, words = random_rows(3000, seed=7)
    predicted = (p >= 0.5).astype(int)
    found = evaluate_cells(cells_of(p, labels, words), {"no_label": 2})
    assert found.rows == 3000 and found.left_out == {"no_label": 2}
    assert found.accuracy.value == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert found.precision.value == pytest.approx(metrics.precision_score(labels, predicted))
    assert found.recall.value == pytest.approx(metrics.recall_score(labels, predicted))
    assert found.f1.value == pytest.approx(metrics.f1_score(labels, predicted))
    assert found.roc_auc.value == pytest.approx(metrics.roc_auc_score(labels, p))
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predicted).ravel()
    assert found.confusion == {
        "true_positive": tp,
        "false_positive": fp,
        "true_negative": tn,
        "false_negative": fn,
    }
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(labels[bins == b].mean() - p[bins == b].mean()) * (bins == b).sum() / len(p)
        for b in range(10)
        if (bins == b).any()
    )
    assert found.ece.value == pytest.approx(ece)
    for figure in (
        found.accuracy,
        found.precision,
        found.recall,
        found.f1,
        found.roc_auc,
        found.ece,
    ):
        assert figure.low is not None and figure.high is not None and figure.value is not None
        assert figure.low <= figure.value <= figure.high, figure
    assert [b.count for b in found.calibration] == [int((bins == b).sum()) for b in range(10)]
    long_reviews = words >= 400
    assert found.by_length[-1].count == int(long_reviews.sum())
    assert found.by_length[-1].accuracy.value == pytest.approx(
        metrics.accuracy_score(labels[long_reviews], predicted[long_reviews])
    )


def test_the_intervals_cover_the_truth_about_as_often_as_they_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows drawn from a known model: its accuracy is known, and the 95 % interval from 200
    rows should hold it in about 38 of 40 draws (binomial spread: at least 34)."""
    monkeypatch.setattr(evaluation, "BOOTSTRAP_RESAMPLES", 200)  # the test's time, not its point
    covered_accuracy = covered_ece = 0
    for seed in range(40):
        rng = random.Random(seed)
        p = np.array([rng.random() for _ in range(200)])
        labels = np.array([int(rng.random() < q) for q in p])  # calibrated: the true ECE is ~0
        found = evaluate_cells(cells_of(np.round(p, 6), labels, np.full(200, 50)))
        true_accuracy = 0.75  # E[max(p, 1 - p)] for uniform p
        covered_accuracy += found.accuracy.low <= true_accuracy <= found.accuracy.high  # type: ignore[operator]
        covered_ece += (found.ece.low or 0) <= 0.1
    assert covered_accuracy >= 34
    assert covered_ece >= 38


def test_one_class_only_leaves_auc_undefined() -> None:
    found = evaluate_cells([Cell(200_000, 0, 1, 0, 5), Cell(900_000, 1, 1, 0, 5)])
    assert found.roc_auc.value is None
    assert found.precision.value == 1.0 and found.recall.value == 0.5


def test_cells_out_of_score_order_are_refused() -> None:
    with pytest.raises(ValueError, match="score order"):
        evaluate_cells([Cell(900_000, 1, 1, 0, 5), Cell(200_000, 0, 1, 0, 5)])


def test_wilson_at_none_and_all_reaches_the_bound_exactly() -> None:
    assert wilson(0, 7).low == 0.0 and wilson(7, 7).high == 1.0
    assert wilson(0, 0).value is None
