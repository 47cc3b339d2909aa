"""A chunk's texts as one blob: what goes in comes out, in order, for any text the ingest
accepts; and the blobs of the first format (a JSON array in zlib) still read, so a database
upgraded mid-job scores the chunks it stored before."""

from __future__ import annotations

import json
import zlib

from reviewscore.core.chunk_texts import ZSTD_MAGIC, pack_texts, unpack_texts
from tests.conftest import sample_reviews


def test_texts_come_back_in_order_whatever_they_hold() -> None:
    texts = [r["text"] for r in sample_reviews(300, seed=8)]
    texts += ["", "line\u0085break", "zero\x00byte", "é 🙂 \u2028", "x" * 200_000]
    blob = pack_texts(texts)
    assert blob.startswith(ZSTD_MAGIC)
    assert unpack_texts(blob) == texts
    assert len(blob) < sum(len(t.encode()) for t in texts) / 2  # compressed, not just framed
    assert unpack_texts(pack_texts([])) == []


def test_a_blob_of_the_first_format_still_reads() -> None:
    texts = ["a review", "another \u0085 one", ""]
    legacy = zlib.compress(json.dumps(texts, ensure_ascii=False).encode(), 1)
    assert unpack_texts(legacy) == texts
