"""Which columns hold the text, the id and the kept values: names match ignoring case (and, for
the id, spaces, `_`, `-` and `.`), a name found twice is refused naming both places, and error
messages list a file's columns only in a short, capped form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.labels import LABEL_COLUMN_DEFAULTS
from reviewscore.core.ingest.rows import MAX_KEPT_COLUMNS, UploadOptions

# Tried in order when text_column is not given.
TEXT_COLUMN_DEFAULTS = ("text", "review", "review_text", "content")
# Tried in order when id_column is not given; compared ignoring case, spaces, _ - and . so
# "Review ID", "review-id" and "ReviewId" all count as review_id.
ID_COLUMN_DEFAULTS = (
    "id",
    "review_id",
    "uuid",
    "key",
    "row_id",
    "record_id",
    "doc_id",
    "document_id",
)
# id_column=@row: number the rows even though the file has an id-like column.
ROW_NUMBER_ID = "@row"
# Error messages list at most this many names, each cut to NAME_CHARS characters: a JSON
# document or a binary file misread as a header must not come back as kilobytes of "columns".
LISTED_NAMES = 12
NAME_CHARS = 40


def listing(names: Sequence[str]) -> str:
    """The names for an error message: quoted, capped in number and in length."""
    shown = []
    for name in names[:LISTED_NAMES]:
        cut = name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"
        shown.append(repr(cut))
    more = len(names) - LISTED_NAMES
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def _id_key(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch not in " _-.")


def _positions(indexes: Sequence[int]) -> str:
    places = [str(i + 1) for i in indexes]
    return " and ".join([", ".join(places[:-1]), places[-1]]) if len(places) > 1 else places[0]


def _twice(role: str, names: Sequence[str], found: Sequence[int]) -> BadUploadError:
    shown = listing([names[i] for i in found])
    same = len({names[i] for i in found}) == 1
    fix = "rename one of them" if same else f"pass {role} with the exact name"
    return BadUploadError(
        f"the {role.replace('_', ' ')} is named more than once in the header ({shown} at "
        f"columns {_positions(found)}): {fix}"
    )


def find(names: Sequence[str], wanted: str, role: str, exact_first: bool = True) -> int | None:
    """The one column called `wanted` (exactly, else ignoring case); None if there is none.
    Without exact_first (a default name, not one the user typed) a match ignoring case that
    is not alone is ambiguous even if one of them is exact."""
    exact = [i for i, name in enumerate(names) if name == wanted]
    if len(exact) == 1 and exact_first:
        return exact[0]
    folded = wanted.casefold()
    found = exact if len(exact) > 1 else [i for i, n in enumerate(names) if n.casefold() == folded]
    if len(found) > 1:
        raise _twice(role, names, found)
    return found[0] if found else None


def _missing(role: str, wanted: str, names: Sequence[str], what: str) -> BadUploadError:
    return BadUploadError(f"{role} {wanted!r} is not in the file; its {what} are: {listing(names)}")


@dataclass(frozen=True)
class ColumnChoice:
    text: int
    id: int | None
    keep: list[int]
    label: int | None = None


def choose(names: Sequence[str], options: UploadOptions, what: str = "columns") -> ColumnChoice:
    """Resolves the text, id and kept columns against a header (`what` names its entries in
    messages: columns, or a JSON object's fields)."""
    text = _text_column(names, options.text_column, what)
    id_index = _id_column(names, options.id_column, text, what)
    keep = []
    for wanted in options.keep_columns:
        index = find(names, wanted, "keep_columns")
        if index is None:
            raise _missing("keep_columns", wanted, names, what)
        if index in keep:
            raise BadUploadError(f"keep_columns names {wanted!r} twice")
        keep.append(index)
    label = _label_column(names, options, text, what)
    return ColumnChoice(text, id_index, keep, label)


def _label_column(names: Sequence[str], options: UploadOptions, text: int, what: str) -> int | None:
    """The column of each row's own label: as named, else the first default name the file
    has (never the text column); None when the file has none."""
    if options.label_column:
        index = find(names, options.label_column, "label_column")
        if index is None:
            raise _missing("label_column", options.label_column, names, what)
        if index == text:
            raise BadUploadError(f"label_column {options.label_column!r} is the text column")
        return index
    for candidate in LABEL_COLUMN_DEFAULTS:
        index = find(names, candidate, "label_column", exact_first=False)
        if index is not None and index != text:
            return index
    if options.positive_from is not None:
        raise BadUploadError(
            f"positive_from is given but the file has no label column: name it with "
            f"label_column (by default {', '.join(repr(c) for c in LABEL_COLUMN_DEFAULTS)}); "
            f"the file's {what} are: {listing(names)}"
        )
    return None


def _text_column(names: Sequence[str], requested: str | None, what: str) -> int:
    if requested:
        index = find(names, requested, "text_column")
        if index is None:
            raise _missing("text_column", requested, names, what)
        return index
    for candidate in TEXT_COLUMN_DEFAULTS:
        index = find(names, candidate, "text_column", exact_first=False)
        if index is not None:
            return index
    raise BadUploadError(
        f"no text column: name it with text_column (by default {TEXT_COLUMN_DEFAULTS[0]!r}, "
        f"else {', '.join(repr(c) for c in TEXT_COLUMN_DEFAULTS[1:])}); the file's {what} are: "
        f"{listing(names)}"
    )


def _id_column(names: Sequence[str], requested: str | None, text: int, what: str) -> int | None:
    if requested == ROW_NUMBER_ID:
        return None
    if requested:
        index = find(names, requested, "id_column")
        if index is None:
            raise _missing("id_column", requested, names, what)
        return index
    keys = [_id_key(name) for name in names]
    for candidate in ID_COLUMN_DEFAULTS:
        found = [i for i, key in enumerate(keys) if key == _id_key(candidate) and i != text]
        if len(found) > 1:
            raise _twice("id_column", names, found)
        if found:
            return found[0]
    return None


def parse_keep_columns(value: str | None) -> tuple[str, ...]:
    """keep_columns as sent: names separated by commas."""
    names = tuple(name.strip() for name in (value or "").split(",") if name.strip())
    if len(names) > MAX_KEPT_COLUMNS:
        raise BadUploadError(
            f"keep_columns names {len(names)} columns; at most {MAX_KEPT_COLUMNS} can be kept"
        )
    return names
