"""The tables the fault, resilience, multi-host and chaos suites print at the end of their run
(`make faults`, `make multihost`, `make chaos`): one fixture per module, one way of lining up the
columns, and, when REVIEWSCORE_REPORTS_DIR names a folder (those make targets set it), one JSON
file per table there, from which docs/gen_reference.py renders the faults report."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Unset in `make test` and CI, so a plain test run never rewrites the committed files.
REPORTS_DIR_ENV = "REVIEWSCORE_REPORTS_DIR"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        # A case that measured nothing there (NaN) shows as a blank, not as "nan".
        return "-" if math.isnan(value) else f"{value:,.1f}"
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


def _commit() -> str | None:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def table_record(
    name: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    command: str,
    notes: Sequence[str] = (),
    ran: str | None = None,
) -> dict[str, Any]:
    """The table as data: cells as the terminal shows them (so the page reads like the run),
    a row's extra value as its note, and where and when it was measured."""
    width = len(columns)
    return {
        "name": name,
        "title": title,
        "columns": list(columns),
        "rows": [[cell(v) for v in row[:width]] for row in rows],
        "row_notes": {
            str(row[0]): str(row[width]) for row in rows if len(row) > width and row[width]
        },
        "notes": list(notes),
        "command": command,
        # What was run, where it narrowed the command (a -k, a -m "not long").
        "ran": ran,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "commit": _commit(),
        "cores": os.cpu_count(),
        # Times in these tables stretch on a busy machine: say how busy it was.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "source": "measured",
    }


def write_table(
    name: str,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    command: str,
    notes: Sequence[str] = (),
    ran: str | None = None,
) -> Path | None:
    """Writes `<name>.json` into REVIEWSCORE_REPORTS_DIR when it is set; nothing otherwise."""
    folder = os.environ.get(REPORTS_DIR_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = table_record(name, title, columns, rows, command, notes, ran)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def table_fixture(
    title: str,
    columns: Sequence[str],
    rows: Callable[[], Sequence[Sequence[Any]]],
    *,
    name: str,
    command: str,
) -> Callable[[], Iterator[None]]:
    """A module-scoped autouse fixture that prints the module's table after its last test
    (with -s), when any test added a row, and writes it as `name`.json (see write_table)."""

    @pytest.fixture(scope="module", autouse=True)
    def print_table(pytestconfig: pytest.Config) -> Iterator[None]:
        yield
        found = rows()
        if found:
            print(render(title, columns, found))
            ran = " ".join(
                ["pytest", *(shlex.quote(a) for a in pytestconfig.invocation_params.args)]
            )
            write_table(name, title, columns, found, command, ran=ran)

    return print_table
