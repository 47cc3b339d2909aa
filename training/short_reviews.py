"""The short-review set: short texts cut from IMDB reviews, each with its review's label, made
deterministically on the fly (nothing is committed). Three kinds of piece:

- `first`: a review's first sentence, `last`: its last sentence (3..40 words each); a seeded
  sample of 1,000 per label and kind;
- `shortest`: whole reviews of at most 80 words (about the shortest 9 % of the test split).

Sentences are cut at `<br />` and after `.`, `!` or `?` followed by white space. No model
chooses the pieces: a first sentence is often plot, not verdict, so not every piece carries
its review's label, and that bounds the accuracy any model can reach here.

The measured set comes from the test split only (`short_pieces(dataset.test)`); training and
model choice use pieces of train reviews (`short_pieces(validation)` for choosing).

python -m training.short_reviews --data ../shared/data/imdb --measure [--record] [--models-dir models]
python -m training.short_reviews --data ../shared/data/imdb --write short.csv.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import Reviews, load_dataset

SEED = 1337
MIN_SENTENCE_WORDS = 3
MAX_SENTENCE_WORDS = 40
MAX_REVIEW_WORDS = 80
PER_LABEL = 1_000
KINDS = ("first", "last", "shortest")

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
# After sentence-final punctuation (and any closing quote or bracket), before white space.
_SENTENCE_END = re.compile(r"(?<=[.!?][\"')\]])\s+|(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    """The review's sentences, white space collapsed, empty ones dropped."""
    parts = _SENTENCE_END.split(_BREAK.sub("\n", text))
    return [" ".join(part.split()) for part in parts if part.strip()]


def words(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class Piece:
    id: str  # <review id>:<kind>
    kind: str
    label: int
    text: str

    @property
    def words(self) -> int:
        return words(self.text)


def candidates(reviews: Reviews) -> dict[str, list[Piece]]:
    """Every eligible piece of every review, by kind, in the reviews' order."""
    found: dict[str, list[Piece]] = {kind: [] for kind in KINDS}
    for review_id, text, label in zip(
        reviews.ids, reviews.texts, reviews.labels.tolist(), strict=True
    ):
        whole = " ".join(_BREAK.sub(" ", text).split())
        if words(whole) <= MAX_REVIEW_WORDS:
            found["shortest"].append(Piece(f"{review_id}:shortest", "shortest", label, whole))
        cut = sentences(text)
        if len(cut) < 2:
            continue  # one sentence: its first and last piece would be the review itself
        for kind, sentence in (("first", cut[0]), ("last", cut[-1])):
            if MIN_SENTENCE_WORDS <= words(sentence) <= MAX_SENTENCE_WORDS:
                found[kind].append(Piece(f"{review_id}:{kind}", kind, label, sentence))
    return found


def short_pieces(
    reviews: Reviews, per_label: int | None = PER_LABEL, seed: int = SEED
) -> list[Piece]:
    """The short-review set of `reviews`: first and last sentences (a seeded sample of
    `per_label` per label and kind; None: all) and all whole reviews of at most 80 words.
    A text met twice is kept once, and a text found under both labels is dropped."""
    rng = np.random.default_rng(seed)
    chosen: list[Piece] = []
    for kind, pieces in candidates(reviews).items():
        if kind == "shortest" or per_label is None:
            chosen.extend(pieces)
            continue
        for label in (0, 1):
            of_label = [p for p in pieces if p.label == label]
            pick = rng.permutation(len(of_label))[:per_label]
            chosen.extend(of_label[i] for i in sorted(pick))
    labels_of: dict[str, set[int]] = {}
    for piece in chosen:
        labels_of.setdefault(piece.text.lower(), set()).add(piece.label)
    seen: set[str] = set()
    kept = []
    for piece in chosen:
        key = piece.text.lower()
        if len(labels_of[key]) == 1 and key not in seen:
            seen.add(key)
            kept.append(piece)
    return kept


def training_pieces(reviews: Reviews, kinds: str) -> Reviews:
    """Sentences of `reviews` as extra training texts with their review's label: `kinds` is a
    comma list of `first`, `last` (the review's first / last sentence) and `every` (every
    sentence), each of 3..40 words; a review of one sentence gives none."""
    wanted = set(kinds.split(",")) - {""}
    ids, texts, labels = [], [], []
    for review_id, text, label in zip(
        reviews.ids, reviews.texts, reviews.labels.tolist(), strict=True
    ):
        cut = sentences(text)
        if len(cut) < 2:
            continue
        picked = list(enumerate(cut)) if "every" in wanted else []
        if "every" not in wanted:
            picked += [(0, cut[0])] if "first" in wanted else []
            picked += [(len(cut) - 1, cut[-1])] if "last" in wanted else []
        for index, sentence in picked:
            if MIN_SENTENCE_WORDS <= words(sentence) <= MAX_SENTENCE_WORDS:
                ids.append(f"{review_id}:s{index}")
                texts.append(sentence)
                labels.append(label)
    return Reviews(ids=ids, texts=texts, labels=np.asarray(labels, dtype=np.int32))


def as_reviews(pieces: list[Piece]) -> Reviews:
    return Reviews(
        ids=[p.id for p in pieces],
        texts=[p.text for p in pieces],
        labels=np.asarray([p.label for p in pieces], dtype=np.int32),
    )


def write_csv(pieces: list[Piece], path: Path) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "kind", "label", "text"])
        for piece in pieces:
            writer.writerow([piece.id, piece.kind, piece.label, piece.text])


def accuracy_rows(pieces: list[Piece], scores: np.ndarray) -> dict[str, tuple[int, int]]:
    """(correct, count) per kind and for `all`."""
    right = (scores >= 0.5).astype(np.int32) == np.asarray([p.label for p in pieces])
    rows: dict[str, tuple[int, int]] = {}
    for kind in (*KINDS, "all"):
        mask = np.asarray([kind in ("all", p.kind) for p in pieces])
        rows[kind] = (int(right[mask].sum()), int(mask.sum()))
    return rows


def measure(models_dir: Path, pieces: list[Piece]) -> dict[str, dict[str, tuple[int, int]]]:
    """Accuracy of every installed model on `pieces`, through the worker's scorer."""
    from reviewscore.core.model_registry import local_models
    from reviewscore.model.scorer import load_scorer

    texts = [p.text for p in pieces]
    figures = {}
    for info in local_models(models_dir):
        scores = np.asarray(load_scorer(info).score(texts).p_positive)
        figures[info.name] = accuracy_rows(pieces, scores)
    return figures


def record(models_dir: Path, figures: dict[str, dict[str, tuple[int, int]]]) -> None:
    """Write each model's figures into its metadata.json as `short_reviews` (the model file,
    and so its version, is untouched)."""
    from reviewscore.core.evaluation import wilson

    for name, rows in figures.items():
        path = models_dir / name / "metadata.json"
        metadata = json.loads(path.read_text())
        metadata["short_reviews"] = {
            "recipe": "training.short_reviews (IMDB test split, seed 1337)",
            **{
                kind: {
                    "n": count,
                    "accuracy": correct / count,
                    "low": wilson(correct, count).low,
                    "high": wilson(correct, count).high,
                }
                for kind, (correct, count) in rows.items()
            },
        }
        path.write_text(json.dumps(metadata, indent=2) + "\n")


def format_table(figures: dict[str, dict[str, tuple[int, int]]]) -> str:
    from reviewscore.core.evaluation import wilson

    lines = ["| model | " + " | ".join(f"{kind} (n)" for kind in (*KINDS, "all")) + " |"]
    lines.append("|---" * (len(KINDS) + 2) + "|")
    for name, rows in figures.items():
        cells = []
        for kind in (*KINDS, "all"):
            correct, count = rows[kind]
            figure = wilson(correct, count)
            assert figure.value is not None and figure.low is not None and figure.high is not None
            cells.append(f"{figure.value:.1%} [{figure.low:.1%}, {figure.high:.1%}] ({count:,})")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--measure", action="store_true", help="accuracy of installed models")
    parser.add_argument(
        "--record", action="store_true", help="with --measure: store the figures in metadata.json"
    )
    parser.add_argument("--write", type=Path, help="write the set as a gzip CSV")
    args = parser.parse_args(argv)
    pieces = short_pieces(load_dataset(args.data).test)
    counts = {kind: sum(p.kind == kind for p in pieces) for kind in KINDS}
    print(f"short-review set (IMDB test): {len(pieces):,} pieces, {counts}")
    if args.write:
        write_csv(pieces, args.write)
        print(f"wrote {args.write}")
    if args.measure:
        figures = measure(args.models_dir, pieces)
        print(format_table(figures))
        if args.record:
            record(args.models_dir, figures)


if __name__ == "__main__":
    main()
