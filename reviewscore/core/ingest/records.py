"""A chunk's records stored unparsed: what an API process keeps of an upload's text rows, one
blob a chunk, so that parsing them (the csv module's field splitting, JSON, the row checks) is
done by the worker that scores the chunk and grows with worker cores (ingest design (b)).

The API still reads every record as its reader does, so what ends an upload (a malformed
record, one over the size caps, bytes that do not decode, the row limit) ends it as before,
at the same row. What it skips is turning records into fields and rows and storing one SQL row
per review: it stores the chunk's records as read, with how to read them (a RecordSpec).

The blob: MAGIC, then one zstd frame holding the spec as JSON, the records' byte lengths and
the records. Blobs of packed texts (core/chunk_texts.py) start with zstd's own magic."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import asdict

import zstandard

from reviewscore.core.ingest import delimited, jsonl
from reviewscore.core.ingest.rows import IngestLimits, ParsedRow, RecordSpec, RowChecks

MAGIC = b"RSR1"
# zstd's level 1: 4.4 us a 1.3 KB review on this VM against 3.1 at level -5, for 2.4x smaller
# blobs against 1.5x: the blobs of a dump being scored are what its upload leaves in the
# database meanwhile.
LEVEL = 1
# No upload reaches these: the API counted the rows and capped the records already.
_UNLIMITED = 1 << 62


def is_records(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC


def pack(spec: RecordSpec, records: Sequence[bytes]) -> bytes:
    head = json.dumps(asdict(spec), separators=(",", ":")).encode()
    sizes = struct.pack(f"<II{len(records)}I", len(head), len(records), *map(len, records))
    # A compressor per call: they must not be shared between threads (parts are stored in
    # several at once), and one costs microseconds a chunk.
    return MAGIC + zstandard.ZstdCompressor(level=LEVEL).compress(sizes + head + b"".join(records))


def parse(blob: bytes, first_row: int) -> list[ParsedRow]:
    """The chunk's rows, numbered from `first_row`, exactly as the upload's reader yields them."""
    payload = memoryview(zstandard.ZstdDecompressor().decompress(blob[len(MAGIC) :]))
    head_size, count = struct.unpack_from("<II", payload)
    sizes = struct.unpack_from(f"<{count}I", payload, 8)
    position = 8 + 4 * count
    spec = RecordSpec(**json.loads(bytes(payload[position : position + head_size])))
    position += head_size
    records = []
    for size in sizes:
        records.append(str(payload[position : position + size], spec.codec, spec.errors))
        position += size
    limits = IngestLimits(
        max_upload_bytes=_UNLIMITED,
        max_text_bytes=spec.max_text_bytes,
        max_rows=_UNLIMITED,
        max_gzip_ratio=0,
    )
    checks = RowChecks(limits, spec.id_column, check_unicode=spec.check_unicode)
    checks.rows = first_row - 1
    reader = jsonl if spec.format == "jsonl" else delimited
    rows = reader.parse_records(spec, records, checks)
    if len(rows) != count:
        raise ValueError(f"a chunk of {count} records read as {len(rows)} rows")
    return rows
