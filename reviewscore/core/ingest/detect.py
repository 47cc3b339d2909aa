"""Deciding how to read an upload from its first bytes: files that are not data at all (with the
fix in one sentence), the format (content first, then the file name and content type), the
text encoding and the CSV separator. Each can be overridden by an option."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
from pathlib import PurePosixPath

from reviewscore.core.errors import BadUploadError

FORMATS = ("csv", "tsv", "jsonl", "parquet")
PARQUET_MAGIC = b"PAR1"
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}
# The delimiter is judged on this many records from the start of the file, within this many
# characters (parsing a sample is bounded like the rows are).
SNIFF_RECORDS = 100
SNIFF_CHARS = 64 * 1024

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/json-lines": "jsonl",
    "application/json": "jsonl",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
}
_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable"),
    (b"SQLite format 3\x00", "an SQLite database"),
)
_COMPRESSED = (
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!", "RAR"),
)
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _not_data(what: str, fix: str) -> BadUploadError:
    return BadUploadError(f"this looks like {what}, not a file of reviews: {fix}")


def refuse_non_data(head: bytes) -> None:
    """Refuses spreadsheets, archives, images and other files that are not data we read, with
    the fix in the same sentence."""
    if head.startswith(b"PK\x03\x04"):
        # The names of a ZIP's members are in the clear in their local headers.
        if b"xl/" in head:
            raise _not_data("an Excel workbook (.xlsx)", "save it as CSV (UTF-8) and upload that")
        if b"opendocument.spreadsheet" in head:
            raise _not_data("an OpenDocument spreadsheet (.ods)", "save it as CSV and upload that")
        if b"[Content_Types].xml" in head:
            raise _not_data(
                "an Office document (.xlsx, .docx)",
                "save the reviews as CSV (UTF-8) and upload that",
            )
        raise _not_data("a ZIP archive", "unzip it and upload the file inside (or gzip it)")
    if head.startswith(_OLE2):
        raise _not_data(
            "an Excel 97-2003 workbook (.xls) or another Office file",
            "save it as CSV (UTF-8) and upload that",
        )
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            raise _not_data(what, "upload a CSV, TSV, JSON Lines or Parquet file")
    for signature, kind in _COMPRESSED:
        if head.startswith(signature):
            raise _not_data(f"a {kind} archive", "decompress it, or compress it with gzip instead")


def _suffix_format(filename: str | None) -> str | None:
    if not filename:
        return None
    suffixes = [s.lower() for s in PurePosixPath(filename).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".gzip"):
        suffixes.pop()
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


def named_format(filename: str | None, content_type: str | None) -> str | None:
    """The format the file's name, else its content type, says."""
    by_name = _suffix_format(filename)
    if by_name:
        return by_name
    ctype = (content_type or "").split(";")[0].strip().lower()
    return _CONTENT_TYPES.get(ctype)


def _text_start(head: bytes) -> bytes:
    return head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")


_JSON_ARRAY = re.compile(rb"\[\s*([{\[\"\]0-9tfn-]|$)")


def sniff_format(head: bytes) -> str | None:
    """What the content itself shows: Parquet's magic, a JSON object or a JSON array."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    start = _text_start(head)
    if start.startswith(b"{"):
        return "jsonl"
    if _JSON_ARRAY.match(start[:64]):
        return "json-array"
    return None


def choose_format(
    head: bytes, requested: str | None, filename: str | None, content_type: str | None
) -> str:
    """The format to read: an explicit `format` wins unless the content contradicts it; else
    the content decides, then the name, then the content type; CSV when nothing says."""
    sniffed = sniff_format(head)
    if requested:
        requested = requested.strip().lower()
        if requested not in FORMATS:
            raise BadUploadError(
                f"unknown format {requested!r}: use one of {', '.join(FORMATS)} "
                "(or leave it out to have it detected)"
            )
        if (sniffed == "parquet") != (requested == "parquet"):
            raise BadUploadError(
                "format=parquet, but the file is not Parquet (no PAR1 magic)"
                if requested == "parquet"
                else f"format={requested}, but the file is Parquet: pass format=parquet "
                "or leave format out"
            )
        return requested
    if sniffed == "json-array":
        raise BadUploadError(
            "this is a JSON array, not JSON Lines: write one JSON object per line "
            "(e.g. jq -c '.[]' reviews.json > reviews.jsonl) and upload that"
        )
    named = named_format(filename, content_type)
    if sniffed:
        return sniffed
    if named == "parquet":
        raise BadUploadError(
            f"{filename or 'the file'} is named or typed as Parquet but is not Parquet "
            "(no PAR1 magic): upload the real file, or pass format"
        )
    return named or "csv"


# --- text encodings ------------------------------------------------------------------------

# Legacy single-byte files from spreadsheets in Western locales are Windows-1252 far more often
# than the near-identical code pages a detector may rank first on English text (cp1250, cp852):
# when Windows-1252 decodes the sample and reads about as cleanly, it is taken.
PREFERRED_LEGACY = "cp1252"
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_HIGH_BYTE = re.compile(rb"[\x80-\xff]")


def codec_name(encoding: str) -> str:
    """A usable text codec for the name given, or a clear refusal."""
    try:
        name = codecs.lookup(encoding.strip()).name
        # str.encode refuses codecs that are not text encodings (rot13, base64, zlib...).
        "".encode(name)
    except (LookupError, UnicodeError, ValueError) as exc:
        raise BadUploadError(
            f"unknown or unusable text encoding {encoding!r}: pass a name such as utf-8, "
            "cp1252 (Windows-1252), latin-1 or utf-16"
        ) from exc
    return "utf-8-sig" if name == "utf-8" else name


def display_name(codec: str) -> str:
    return {"utf-8-sig": "utf-8", "cp1252": "windows-1252"}.get(codec, codec)


def is_ascii_compatible(codec: str) -> bool:
    """Whether ASCII bytes decode to the same characters (0x0A is always a line break), so the
    file can be split into lines before it is decoded."""
    probe = b"\n\r,;\t|\"'{}[]:azAZ09 "
    try:
        return codecs.decode(probe, codec) == probe.decode("ascii")
    except (UnicodeError, LookupError):
        return False


def _utf16_without_bom(head: bytes) -> str | None:
    sample = head[:4096]
    if len(sample) < 8:
        return None
    even_zeros = sample[0::2].count(0) / len(sample[0::2])
    odd_zeros = sample[1::2].count(0) / len(sample[1::2])
    if odd_zeros > 0.4 and even_zeros < 0.05:
        return "utf-16-le"
    if even_zeros > 0.4 and odd_zeros < 0.05:
        return "utf-16-be"
    return None


def detect_encoding(head: bytes, at_eof: bool) -> str:
    """The encoding of the file whose first bytes are `head`: a BOM, else UTF-8 if the sample
    is valid UTF-8 (or mostly so: a few bad bytes in a UTF-8 file are reported at their row),
    else UTF-16 recognised by its NULs, else charset-normalizer's best guess."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in head:
        utf16 = _utf16_without_bom(head)
        if utf16:
            return utf16
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=at_eof)
        return "utf-8-sig"  # NUL bytes in it are dropped from texts later
    except UnicodeDecodeError:
        pass
    if b"\x00" in head:
        raise BadUploadError(
            "this is not a text file: it holds binary data (NUL bytes); upload a CSV, TSV, "
            "JSON Lines or Parquet file"
        )
    valid = len(_UTF8_SEQUENCE.findall(head))
    if valid and valid * 3 >= len(_HIGH_BYTE.findall(head)):
        return "utf-8-sig"
    return guess_legacy(head)


def guess_legacy(sample: bytes) -> str:
    """charset-normalizer's guess for bytes that are not UTF-8 (Windows-1252 preferred, see
    PREFERRED_LEGACY)."""
    import charset_normalizer
    from charset_normalizer.md import mess_ratio

    best = charset_normalizer.from_bytes(sample).best()
    try:
        legacy = sample.decode(PREFERRED_LEGACY)
    except UnicodeDecodeError:
        legacy = None
    if legacy is not None and (best is None or mess_ratio(legacy, 1.0) <= best.chaos + 0.02):
        return PREFERRED_LEGACY
    if best is None:
        raise BadUploadError(
            "the file's text encoding cannot be told: pass encoding "
            "(e.g. encoding=cp1252 for Windows-1252)"
        )
    return codec_name(best.encoding)


# --- CSV separators ------------------------------------------------------------------------


def delimiter_option(value: str) -> str:
    """The delimiter option as a single character: one of , ; tab | (by character or by name:
    comma, semicolon, tab, pipe) or any other single character but a quote or a line break."""
    named = DELIMITER_NAMES.get(value.strip().lower()) if value.strip() else None
    if named:
        return named
    if len(value) == 1 and value not in '"\r\n':
        return value
    raise BadUploadError(
        f"delimiter {value!r} is not one character: use , ; | or tab (or comma, semicolon, "
        "pipe, tab)"
    )


def detect_delimiter(sample: str) -> str:
    """The separator, judged on the first records: the candidate that splits the header into
    at least two columns and the most following records into as many fields (then the widest
    header); a comma when none splits the header (a one-column file)."""
    best: tuple[tuple[float, int], str] | None = None
    if len(sample) > SNIFF_CHARS:
        cut = sample.rfind("\n", 0, SNIFF_CHARS)
        sample = sample[: cut + 1 if cut > 0 else SNIFF_CHARS]
    for candidate in DELIMITERS:
        if candidate not in sample.partition("\n")[0]:
            continue
        reader = csv.reader(io.StringIO(sample), delimiter=candidate)
        try:
            records = [r for r in itertools.islice(reader, SNIFF_RECORDS + 1) if r]
        except csv.Error:
            continue
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        # The last record of the sample may be cut short: it is not judged.
        body = records[1:-1] if len(records) > 2 else records[1:]
        consistent = sum(len(r) == width for r in body) / len(body) if body else 1.0
        score = (consistent, width)
        if best is None or score > best[0]:
            best = (score, candidate)
    return best[1] if best else ","


def first_lines(head: bytes, codec: str, at_eof: bool) -> str:
    """The sample as text for the separator sniffing: decoded leniently, cut after its last
    complete line (unless it is the whole file)."""
    if not at_eof and b"\n" in head:
        head = head[: head.rindex(b"\n") + 1]
    return head.decode(codec, errors="replace")
