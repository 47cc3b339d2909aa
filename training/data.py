"""Loading the IMDB reviews from the shared csv.gz folder, an `aclImdb/` folder or its
`aclImdb_v1.tar.gz` tarball, plus seeded stratified sampling and splitting."""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OFFICIAL_TARBALL_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"

# aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt; train/unsup is not labelled.
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


@dataclass(frozen=True)
class Reviews:
    """One labelled split: parallel lists, label 1 = positive."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray  # int32 [n]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray) -> Reviews:
        return Reviews(
            ids=[self.ids[i] for i in index],
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
        )


@dataclass(frozen=True)
class Dataset:
    train: Reviews
    test: Reviews
    source: str

    def fingerprint(self) -> str:
        """sha256 over the sorted (split, label, text) triples: the same data gives the same
        fingerprint whichever layout it was read from, and regardless of order."""
        digest = hashlib.sha256()
        for split, reviews in (("train", self.train), ("test", self.test)):
            for label, text in sorted(zip(reviews.labels.tolist(), reviews.texts, strict=True)):
                digest.update(f"{split}\t{label}\t".encode())
                digest.update(text.encode("utf-8"))
                digest.update(b"\x00")
        return digest.hexdigest()


def load_dataset(path: Path) -> Dataset:
    """Read IMDB from a folder holding train.csv.gz/test.csv.gz, an aclImdb folder (or
    its parent), or the aclImdb_v1.tar.gz tarball."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _load_tarball(path)
    if (path / "train.csv.gz").is_file() and (path / "test.csv.gz").is_file():
        return Dataset(
            train=_load_csv(path / "train.csv.gz"),
            test=_load_csv(path / "test.csv.gz"),
            source=str(path),
        )
    for folder in (path, path / "aclImdb"):
        if (folder / "train" / "pos").is_dir() and (folder / "test" / "neg").is_dir():
            return _load_folder(folder)
    raise FileNotFoundError(
        f"{path}: expected train.csv.gz + test.csv.gz, an aclImdb/ folder or aclImdb_v1.tar.gz"
    )


def _load_csv(path: Path) -> Reviews:
    ids: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            ids.append(row["id"])
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return Reviews(ids=ids, texts=texts, labels=np.asarray(labels, dtype=np.int32))


def _collect(rows: list[tuple[str, str, int, int, str]]) -> dict[str, Reviews]:
    """rows: (split, polarity, n, rating, text) -> Reviews per split, csv order and ids."""
    splits: dict[str, Reviews] = {}
    for split in ("train", "test"):
        chosen = sorted((r for r in rows if r[0] == split), key=lambda r: (r[1] != "pos", r[2]))
        splits[split] = Reviews(
            ids=[f"{split}_{polarity}_{n}" for _, polarity, n, _, _ in chosen],
            texts=[text for *_, text in chosen],
            labels=np.asarray([polarity == "pos" for _, polarity, *_ in chosen], dtype=np.int32),
        )
    return splits


def _load_folder(folder: Path) -> Dataset:
    rows = []
    for file in sorted(folder.glob("*/*/*.txt")):
        match = _MEMBER.search("aclImdb/" + file.relative_to(folder).as_posix())
        if match:
            split, polarity, n, rating = match.groups()
            rows.append((split, polarity, int(n), int(rating), file.read_text(encoding="utf-8")))
    splits = _collect(rows)
    return Dataset(train=splits["train"], test=splits["test"], source=str(folder))


def _load_tarball(path: Path) -> Dataset:
    rows = []
    # "r|*" streams the archive member by member: nothing is extracted to disk.
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            match = _MEMBER.search(member.name) if member.isfile() else None
            if not match:
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            split, polarity, n, rating = match.groups()
            rows.append((split, polarity, int(n), int(rating), handle.read().decode("utf-8")))
    splits = _collect(rows)
    return Dataset(train=splits["train"], test=splits["test"], source=str(path))


def download_tarball(destination: Path, url: str = OFFICIAL_TARBALL_URL) -> Path:
    """Fetch the official aclImdb_v1.tar.gz (about 84 MB) unless it is already there."""
    destination = Path(destination)
    if not destination.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_suffix(".part")
        urllib.request.urlretrieve(url, partial)  # noqa: S310 (fixed https URL)
        partial.rename(destination)
    return destination


def concat_reviews(first: Reviews, second: Reviews) -> Reviews:
    return Reviews(
        ids=first.ids + second.ids,
        texts=first.texts + second.texts,
        labels=np.concatenate([first.labels, second.labels]),
    )


def stratified_sample(reviews: Reviews, size: int, seed: int) -> Reviews:
    """A seeded random sample of `size` reviews with the label balance of `reviews`."""
    if size >= len(reviews):
        return reviews.subset(np.random.default_rng(seed).permutation(len(reviews)))
    first, _ = stratified_split(reviews, size / len(reviews), seed)
    return first


def stratified_split(reviews: Reviews, fraction: float, seed: int) -> tuple[Reviews, Reviews]:
    """Split into (fraction, rest), each label split in the same proportion; both shuffled."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for label in np.unique(reviews.labels):
        index = rng.permutation(np.flatnonzero(reviews.labels == label))
        cut = int(round(len(index) * fraction))
        chosen.append(index[:cut])
        rest.append(index[cut:])
    first = rng.permutation(np.concatenate(chosen))
    second = rng.permutation(np.concatenate(rest))
    return reviews.subset(first), reviews.subset(second)
