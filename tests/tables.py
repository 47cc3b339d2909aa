"""The tables the fault, resilience and multi-host suites print at the end of their module
(`make faults`, `make multihost`): one fixture per module, one way of lining up the columns."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Text columns left-aligned, numbers right-aligned, each column as wide as it needs; a
    row may carry one more value than there are columns, printed below the table as a note."""
    width = len(columns)
    cells = [[cell(v) for v in row[:width]] for row in rows]
    widths = [max([len(columns[i])] + [len(r[i]) for r in cells]) for i in range(width)]
    text = [i == 0 or any(isinstance(row[i], str) for row in rows) for i in range(width)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if left else v.rjust(w)
            for v, w, left in zip(values, widths, text, strict=True)
        ).rstrip()

    lines = [line(columns)] + [line(r) for r in cells]
    notes = [f"  {row[0]}: {row[width]}" for row in rows if len(row) > width and row[width]]
    return "\n".join([f"\n\n{title}", *lines, *notes])


def table_fixture(
    title: str, columns: Sequence[str], rows: Callable[[], Sequence[Sequence[Any]]]
) -> Callable[[], Iterator[None]]:
    """A module-scoped autouse fixture that prints the module's table after its last test
    (with -s), when any test added a row."""

    @pytest.fixture(scope="module", autouse=True)
    def print_table() -> Iterator[None]:
        yield
        found = rows()
        if found:
            print(render(title, columns, found))

    return print_table
