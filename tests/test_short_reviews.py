"""The short-review set (training/short_reviews.py): made from the test split only, the same
every time, of short pieces carrying their review's label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import Reviews, load_dataset
from training.short_reviews import (
    KINDS,
    MAX_REVIEW_WORDS,
    MAX_SENTENCE_WORDS,
    MIN_SENTENCE_WORDS,
    sentences,
    short_pieces,
    training_pieces,
)

IMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"
needs_imdb = pytest.mark.skipif(
    not (IMDB / "test.csv.gz").is_file(), reason=f"IMDB data not found at {IMDB}"
)

REVIEWS = Reviews(
    ids=["test_pos_1", "test_neg_2", "test_pos_3"],
    texts=[
        "What a film! The plot drags at times.<br /><br />I loved every minute of it.",
        "Dull.",
        "A long opening sentence about the plot and nothing else " * 9
        + ". Great cast, great music, a great night out.",
    ],
    labels=np.asarray([1, 0, 1], dtype=np.int32),
)


def test_sentences_are_cut_at_line_breaks_and_final_punctuation():
    assert sentences(REVIEWS.texts[0]) == [
        "What a film!",
        "The plot drags at times.",
        "I loved every minute of it.",
    ]
    assert sentences('He said "no." Then left.') == ['He said "no."', "Then left."]


def test_pieces_are_first_and_last_sentences_and_whole_short_reviews_with_their_label():
    pieces = {p.id: p for p in short_pieces(REVIEWS)}
    assert pieces["test_pos_1:first"].text == "What a film!"
    assert pieces["test_pos_1:last"].text == "I loved every minute of it."
    assert pieces["test_pos_1:shortest"].text == (
        "What a film! The plot drags at times. I loved every minute of it."
    )
    # A one-sentence review is a whole short review only; its sentence is not repeated.
    assert pieces["test_neg_2:shortest"].label == 0
    assert "test_neg_2:first" not in pieces
    # The 90-word first sentence is too long; the review itself is over 80 words.
    assert "test_pos_3:first" not in pieces and "test_pos_3:shortest" not in pieces
    assert pieces["test_pos_3:last"].text == "Great cast, great music, a great night out."
    assert all(p.label == 1 for p in pieces.values() if p.id.startswith("test_pos"))


def test_training_pieces_are_the_sentences_of_the_chosen_kinds():
    assert training_pieces(REVIEWS, "first,last").texts == [
        "What a film!",
        "I loved every minute of it.",
        "Great cast, great music, a great night out.",
    ]
    every = training_pieces(REVIEWS, "every")
    assert every.texts[:3] == sentences(REVIEWS.texts[0])
    assert every.labels.tolist() == [1, 1, 1, 1]
    assert len(training_pieces(REVIEWS, "")) == 0


@needs_imdb
def test_the_set_comes_from_test_reviews_only_is_deterministic_and_short():
    test = load_dataset(IMDB).test
    pieces = short_pieces(test)
    every_fifth = test.subset(np.arange(0, len(test), 5))
    assert short_pieces(every_fifth) == short_pieces(every_fifth)  # seeded
    assert {p.id.split(":")[0] for p in pieces} <= set(test.ids)
    assert all(p.id.startswith("test_") for p in pieces)
    counts = {
        kind: [sum(p.kind == kind and p.label == y for p in pieces) for y in (0, 1)]
        for kind in KINDS
    }
    # 1,000 per label and kind, less the few texts met twice.
    assert all(980 <= n <= 1_000 for kind in ("first", "last") for n in counts[kind])
    assert 2_000 < sum(counts["shortest"]) < 2_500
    for piece in pieces:
        limit = MAX_REVIEW_WORDS if piece.kind == "shortest" else MAX_SENTENCE_WORDS
        assert (MIN_SENTENCE_WORDS if piece.kind != "shortest" else 1) <= piece.words <= limit
    assert len({p.text.lower() for p in pieces}) == len(pieces)
