"""The reviews every row uses: real IMDB texts, split into disjoint sets so no measurement is
helped by scores another one left in the dedup cache; and the CSV files made from them."""

from __future__ import annotations

import csv
import gzip
import random
from dataclasses import dataclass
from pathlib import Path

from bench.config import IMDB_DIR, Config


def read_split(split: str) -> list[tuple[str, int]]:
    """(text, label) of one IMDB split, in file order."""
    with gzip.open(IMDB_DIR / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f)]


def load_reviews() -> list[str]:
    """Every distinct IMDB review (test and train), shuffled: the files are sorted by label."""
    texts = [text for split in ("test", "train") for text, _ in read_split(split)]
    unique = list(dict.fromkeys(texts))
    random.Random(2026).shuffle(unique)
    return unique


def distinct_rows(pool: list[str], n: int) -> list[str]:
    """n distinct texts: the pool, then the pool again with a marker (a new text to the cache)."""
    return [
        pool[i % len(pool)] + ("" if i < len(pool) else f" ({i // len(pool)})") for i in range(n)
    ]


@dataclass
class Texts:
    bulk: list[str]
    fairness_alone: list[str]
    fairness_busy: list[str]
    dedup_unique: list[str]
    dedup_base: list[str]
    dump: list[str]
    any: list[str]

    @classmethod
    def split(cls, pool: list[str], cfg: Config) -> Texts:
        f, d = cfg.fairness_rows, cfg.dedup_rows
        cuts = [f, 2 * f, 2 * f + d, 2 * f + d + d // 10]
        held = pool[: cuts[-1]]
        rest = pool[cuts[-1] :]
        return cls(
            bulk=distinct_rows(rest, cfg.bulk_rows),
            fairness_alone=held[: cuts[0]],
            fairness_busy=held[cuts[0] : cuts[1]],
            dedup_unique=held[cuts[1] : cuts[2]],
            dedup_base=held[cuts[2] : cuts[3]],
            dump=pool[cuts[1] :],  # everything but the fairness jobs' texts
            any=pool,
        )


def write_csv(path: Path, texts: list[str], prefix: str) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows((f"{prefix}-{i}", t) for i, t in enumerate(texts))
    return path


def write_repeating_csv(path: Path, texts: list[str], rows: int, prefix: str) -> Path:
    """rows lines cycling through texts, each with a unique id (the big dump)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for start in range(0, rows, 10_000):
            end = min(rows, start + 10_000)
            writer.writerows((f"{prefix}-{i}", texts[i % len(texts)]) for i in range(start, end))
    return path


def bulk_files(texts: Texts, tmp: Path, passes: int) -> list[Path]:
    """One CSV per pass; later passes mark each text so none is a cache hit on the same stack."""
    return [
        write_csv(
            tmp / f"bulk-{k}.csv",
            texts.bulk if k == 0 else [f"{t} (pass {k})" for t in texts.bulk],
            f"bulk{k}",
        )
        for k in range(passes)
    ]
