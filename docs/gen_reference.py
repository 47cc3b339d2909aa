"""The docs' generated pages, written from the code at every build (an MkDocs hook, see
mkdocs.yml): the configuration from `Settings`, the CLI from its Typer app, the HTTP API from the
app's OpenAPI schema and routes, the Python client from its docstrings, the performance
report from bench/results/*.json and the faults report from the suites' tables in
bench/results/suites/*.json. Nothing here is copied by hand, so none of it can drift; a note
in docs/reference/notes.yml that names no setting or route fails the build."""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTES = Path(__file__).resolve().parent / "reference" / "notes.yml"
RESULTS = ROOT / "bench" / "results"
# What `make faults`, `make multihost` and `make chaos` write (tests/tables.py write_table).
SUITE_RESULTS = RESULTS / "suites"
EXAMPLES = ROOT / "docs" / "examples"


class DocsError(RuntimeError):
    """The code and the docs' notes disagree: the build stops and says where."""


def _notes() -> dict[str, Any]:
    return yaml.safe_load(NOTES.read_text()) or {}


def _cell(text: Any) -> str:
    """One Markdown table cell: no line breaks, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


# --- configuration ------------------------------------------------------------------------


def field_comments(source: str, class_name: str = "Settings") -> dict[str, str]:
    """The `#` comment block above each field of the class, by field name. As settings.py
    writes them, one block may cover a group of fields: a field right under another one (no
    blank line, no comment between) shares the comment of the field above it."""
    lines = source.splitlines()
    tree = ast.parse(source)
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        previous: ast.AnnAssign | None = None
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                previous = None
                continue
            block: list[str] = []
            index = item.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#"):
                block.insert(0, lines[index].strip().lstrip("#").strip())
                index -= 1
            if block:
                found[item.target.id] = " ".join(block)
            elif (
                previous is not None
                and isinstance(previous.target, ast.Name)
                and previous.end_lineno == item.lineno - 1
                and previous.target.id in found
            ):
                found[item.target.id] = found[previous.target.id]
            previous = item
    return found


def _type_name(annotation: Any) -> str:
    name = getattr(annotation, "__name__", None) or str(annotation)
    return name.replace("typing.", "")


def _default(value: Any) -> str:
    from reviewscore.core.settings import REPO_ROOT

    if isinstance(value, Path):
        try:
            return f"./{value.relative_to(REPO_ROOT)}"
        except ValueError:
            return str(value)
    if hasattr(value, "value"):  # an enum member
        return str(value.value)
    if value == "":
        return ""
    return repr(value) if isinstance(value, str) else f"{value}"


def _shown(default: str) -> str:
    return f"`{_cell(default)}`" if default else "empty"


def _constraints(field: Any) -> str:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        for key, sign in words.items():
            bound = getattr(item, key, None)
            if bound is not None:
                parts.append(f"{sign} {bound:,}" if isinstance(bound, int) else f"{sign} {bound}")
    return ", ".join(parts)


def configuration_page() -> str:
    from reviewscore.core import settings as module

    notes = _notes().get("settings", {})
    fields = module.Settings.model_fields
    unknown = sorted(set(notes) - set(fields))
    if unknown:
        raise DocsError(f"docs/reference/notes.yml: settings {unknown} are not fields of Settings")
    comments = field_comments(Path(module.__file__).read_text())
    prefix = module.Settings.model_config.get("env_prefix", "")
    out = [
        "# Configuration",
        "",
        "Generated from `reviewscore.core.settings.Settings` at every build: every field, its "
        f"environment variable (prefix `{prefix}`; a `.env` file in the working folder works "
        "too), type with its bounds, and default. Meanings come from `docs/reference/notes.yml`, or the "
        "field's comment in `settings.py` where the notes have none.",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in fields.items():
        meaning = notes.get(name) or comments.get(name)
        if not meaning:
            raise DocsError(
                f"Settings.{name} has no meaning: give it a comment in settings.py "
                "or a note in docs/reference/notes.yml"
            )
        out.append(
            f"| `{prefix}{name.upper()}` | `{_type_name(field.annotation)}` {_constraints(field)} "
            f"| {_shown(_default(field.default))} | {_cell(meaning)} |"
        )
    out += ["", _notes().get("settings_footer", "")]
    return "\n".join(out) + "\n"


# --- CLI ----------------------------------------------------------------------------------


def _commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, [*path, name])


def _param_row(param: Any) -> str:
    if "Argument" in type(param).__name__:
        name = f"`{(param.metavar or param.name).upper()}`"
    else:
        names = [*param.opts, *param.secondary_opts]
        name = " / ".join(f"`{n}`" for n in names)
    if getattr(param, "is_flag", False):
        kind = "flag"
    else:
        descriptor = getattr(param, "type_descriptor", None)
        annotation = getattr(descriptor, "annotation", None)
        kind = getattr(annotation, "__name__", "") or getattr(
            getattr(param, "type", None), "name", ""
        )
    default = param.default
    shown = "" if default is None or callable(default) else f"`{default}`"
    if param.required:
        shown = "required"
    envvar = f"`{param.envvar}`" if param.envvar else ""
    return f"| {name} | {kind} | {shown} | {envvar} | {_cell(getattr(param, 'help', '') or '')} |"


def cli_page() -> str:
    import typer.main

    from reviewscore.shell.cli import app

    root = typer.main.get_command(app)
    out = [
        "# CLI",
        "",
        "Generated from the Typer app in `reviewscore/shell/cli.py` at every build: every "
        "command and sub-command of `reviewscore`, with its options. `reviewscore COMMAND "
        "--help` prints the same.",
        "",
    ]
    for path, command in _commands(root, ["reviewscore"]):
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        if path[1:]:
            params = [p for p in params if p.name not in {"install_completion", "show_completion"}]
        out += [f"## `{' '.join(path)}`", ""]
        help_text = inspect.cleandoc(command.help or "")
        if help_text:
            out += [help_text.split("\b")[0].strip(), ""]
        if params:
            out += ["| parameter | type | default | env | help |", "|---|---|---|---|---|"]
            out += [_param_row(p) for p in params]
            out.append("")
    return "\n".join(out) + "\n"


# --- HTTP API -----------------------------------------------------------------------------


def _routes(routes: Any) -> Iterator[Any]:
    for route in routes:
        if hasattr(route, "original_router"):  # an included router (FastAPI >= 0.120)
            yield from _routes(route.original_router.routes)
        elif hasattr(route, "routes") and not hasattr(route, "methods"):
            yield from _routes(route.routes)
        else:
            yield route


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    return str(kind)


def http_page() -> str:
    from api.main import create_app

    app = create_app()
    schema = app.openapi()
    notes = _notes().get("routes", {})
    operations = {
        f"{method.upper()} {path}": operation
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }
    hidden = {
        f"{method} {route.path}": route
        for route in _routes(app.routes)
        if not getattr(route, "include_in_schema", True)
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"})
    }
    unknown = sorted(set(notes) - set(operations) - set(hidden))
    if unknown:
        raise DocsError(f"docs/reference/notes.yml: routes {unknown} are not routes of the API")
    out = [
        "# HTTP API",
        "",
        f"Generated from the app's OpenAPI schema (`{schema['info']['title']}` "
        f"{schema['info']['version']}) and its routes at every build. The running API serves the "
        "same schema at `/openapi.json` and interactive docs at `/docs`. Every error is JSON, "
        '`{"detail": "..."}`, one sentence naming the problem; timestamps are UTC, ISO 8601 '
        "with `Z`.",
        "",
        "| route | what it does |",
        "|---|---|",
    ]

    def text_of(key: str, operation: dict[str, Any]) -> str:
        # The route's own docstring first; a note where the code has none.
        return inspect.cleandoc(operation.get("description") or notes.get(key) or "")

    for key, operation in operations.items():
        anchor = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
        first = _first_sentence(text_of(key, operation)) or operation.get("summary", "")
        out.append(f"| [`{key}`](#{anchor}) | {_cell(first)} |")
    for key in hidden:
        out.append(f"| `{key}` | {_cell(notes.get(key, ''))} (not in the OpenAPI schema) |")
    out.append("")
    for key, operation in operations.items():
        anchor = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")
        out += [f"## `{key}` {{#{anchor}}}", ""]
        text = text_of(key, operation)
        if text:
            out += [text, ""]
        params = operation.get("parameters", [])
        if params:
            out += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
            for p in params:
                out.append(
                    f"| `{p['name']}` | {p['in']} | {_cell(_schema_type(p.get('schema', {})))} "
                    f"| {'yes' if p.get('required') else ''} "
                    f"| {_cell(p.get('description') or p.get('schema', {}).get('description', ''))} |"
                )
            out.append("")
        body = operation.get("requestBody")
        if body:
            kinds = ", ".join(
                f"`{kind}`" + (f" ({_schema_link(c.get('schema', {}))})" if c.get("schema") else "")
                for kind, c in body.get("content", {}).items()
            )
            out += [f"Request body: {kinds}.", ""]
        out += ["| status | meaning | body |", "|---|---|---|"]
        for status, answer in operation.get("responses", {}).items():
            shapes = [c.get("schema", {}) for c in answer.get("content", {}).values()]
            shown = ", ".join(_schema_link(x) for x in shapes if x)
            out.append(f"| {status} | {_cell(answer.get('description', ''))} | {shown} |")
        out.append("")
    out += ["## Routes outside the OpenAPI schema", ""]
    for key, route in hidden.items():
        doc = inspect.getdoc(getattr(route, "endpoint", None)) or ""
        text = notes.get(key) or doc.split("\n\n")[0]
        if not text:
            raise DocsError(f"{key} has no docstring: give it a note in docs/reference/notes.yml")
        out.append(f"- `{key}`: {_cell(text)}")
    out += ["", "## Schemas", ""]
    for name, shape in schema.get("components", {}).get("schemas", {}).items():
        out += [f"### `{name}` {{#schema-{name.lower()}}}", ""]
        if shape.get("description"):
            out += [inspect.cleandoc(shape["description"]), ""]
        properties = shape.get("properties", {})
        if properties:
            required = set(shape.get("required", []))
            out += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, prop in properties.items():
                out.append(
                    f"| `{field}` | {_cell(_schema_link(prop))} | {'yes' if field in required else ''} "
                    f"| {_cell(prop.get('description', ''))} |"
                )
            out.append("")
    return "\n".join(out) + "\n"


def _first_sentence(text: str) -> str:
    paragraph = " ".join(text.split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _schema_link(schema: dict[str, Any]) -> str:
    """A schema's type, its named parts linked to their section below."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#schema-{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_schema_link(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_link(schema.get('items', {}))}"
    return _schema_type(schema)


# --- Python client ------------------------------------------------------------------------


def _signature(function: Any) -> str:
    """A signature as written in the source (annotations are strings there), without self."""
    parts = []
    star_shown = False
    for param in inspect.signature(function).parameters.values():
        if param.name == "self":
            continue
        if param.kind is param.KEYWORD_ONLY and not star_shown:
            parts.append("*")
            star_shown = True
        text = param.name
        if param.kind is param.VAR_KEYWORD:
            text = f"**{text}"
        if param.annotation is not param.empty:
            text += f": {param.annotation}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        parts.append(text)
    returns = inspect.signature(function).return_annotation
    arrow = "" if returns is inspect.Signature.empty or returns == "None" else f" -> {returns}"
    return f"({', '.join(parts)}){arrow}"


def client_page() -> str:
    from reviewscore import client as module

    summary, _, example = (module.__doc__ or "").partition("\n\n")
    out = [
        "# Python client",
        "",
        "Generated from the docstrings of `reviewscore/client.py` at every build.",
        "",
        " ".join(summary.split()),
        "",
        "```python",
        inspect.cleandoc(example),
        "```",
        "",
        "## `Client`",
        "",
        inspect.getdoc(module.Client) or "",
        "",
        f"```python\nClient{_signature(module.Client.__init__)}\n```",
        "",
    ]
    for name, member in inspect.getmembers(module.Client, inspect.isfunction):
        if name.startswith("_"):
            continue
        out += [f"### `{name}`", "", f"```python\n{name}{_signature(member)}\n```", ""]
        if member.__doc__:
            out += [inspect.cleandoc(member.__doc__), ""]
    out += ["## Examples", ""]
    for example in sorted(EXAMPLES.glob("*.py")):
        doc = ast.get_docstring(ast.parse(example.read_text())) or ""
        out += [
            f"### `{example.name}`",
            "",
            doc.split("\n\n")[0],
            "",
            "```python",
            example.read_text().rstrip(),
            "```",
            "",
        ]
    out += ["## Errors", ""]
    for name, member in vars(module).items():
        if (
            inspect.isclass(member)
            and issubclass(member, Exception)
            and member.__module__ == module.__name__
        ):
            bases = ", ".join(b.__name__ for b in member.__bases__)
            out.append(f"- `{name}({bases})`: {_cell(inspect.getdoc(member) or '')}")
    return "\n".join(out) + "\n"


# --- reports ------------------------------------------------------------------------------


def _kind(path: Path) -> str:
    """`2026-12-03-vm-coordination.json` -> `vm-coordination`."""
    return re.sub(r"^\d{4}-\d{2}-\d{2}-", "", path.stem)


def _target_rows(targets: list[dict[str, Any]]) -> list[str]:
    rows = ["| target | measured | wanted | met |", "|---|---|---|---|"]
    for t in targets:
        if t.get("value") is None:
            continue
        value = t["value"]
        shown = f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        met = {True: "yes", False: "**no**"}.get(t.get("met"), "-")
        note = f" ({t['limited_by']})" if t.get("limited_by") else ""
        rows.append(f"| {_cell(t['name'])} | {shown} | {t['op']} {t['wanted']} | {met}{note} |")
    return rows if len(rows) > 2 else []


TITLES = {
    "vm": "The main run (`make bench`)",
    "vm-bulk": "Bulk end to end (`python -m bench` with the limit and bulk rows only)",
    "vm-resume": "Resumed uploads (`python -m bench` with the resume row only)",
    "vm-key-share": "Fair share between API keys (`python -m bench.key_share`)",
    "vm-stacks": "Singles on `reviewscore run` beside the benchmark's stack (`python -m bench.stacks`)",
    "vm-coordination": "Coordination on PostgreSQL (`make bench-coordination`)",
    "vm-ingest": "One dump's ingest on PostgreSQL (`python -m bench.coordination --ingest-only`)",
    "storage": "Storage per row (`make bench-storage`)",
    "growth": "Growth: deletes of big jobs, and scrapes with many jobs kept",
}
REPORT_NOTES = Path(__file__).resolve().parent / "reports" / "notes.yml"


def _report_notes() -> dict[str, str]:
    """The context written for each result file (docs/reports/notes.yml), by file name."""
    return (yaml.safe_load(REPORT_NOTES.read_text()) or {}).get("performance") or {}


def _variant(path: Path, data: dict[str, Any]) -> tuple[str, str]:
    """A kind, and for a benchmark run with another configuration (the coordination sweep over
    1-8 workers, or one worker with the ingest rows) that configuration: the newest run of each
    is shown, so a narrower rerun does not hide the wider one."""
    config = data.get("config")
    return _kind(path), json.dumps(config, sort_keys=True) if config else ""


def _variant_title(kind: str, config: dict[str, Any] | None) -> str:
    title = TITLES.get(kind, kind)
    if config and config.get("ingest_only"):
        title += f": {config['rows']:,} rows per run"
    elif config and "rows" in config and "workers" in config:
        workers = "/".join(str(w) for w in config["workers"])
        title += f": {config['rows']:,} rows per run, worker processes {workers}"
    return title


def _run_section(path: Path, data: dict[str, Any], notes: dict[str, str]) -> list[str]:
    out = [f"From `bench/results/{path.name}`.", ""]
    if data.get("source"):
        out += [f"Source: the {data['source']}.", ""]
    machine = data.get("meta", {}).get("machine")
    if machine and machine.get("cpu_model"):
        out += [
            f"Run {data['meta'].get('date', '')} on {machine.get('cores')} cores "
            f"({machine.get('cpu_model')}), {machine.get('memory_gb')} GB, Python "
            f"{machine.get('python')}, TensorFlow {machine.get('tensorflow')}. "
            f"{machine.get('note', '')}",
            "",
        ]
    elif machine:
        out += [f"Run {data['meta'].get('date', '')}: {machine.get('note', '')}", ""]
    rows = _target_rows(data.get("targets") or [])
    if rows:
        out += rows + [""]
    table = data.get("table")
    if isinstance(table, str) and table.strip():
        out += ["```text", table.rstrip(), "```", ""]
    for part in data.get("tables") or []:
        out += [f"{part['title']} Rerun: `{part['command']}`.", ""]
        out += _markdown_table(part["columns"], part["rows"]) + [""]
    if data.get("notes"):
        out += ["\n\n".join(data["notes"]), ""]
    if path.stem in notes:
        out += [notes[path.stem].strip(), ""]
    return out


def performance_page(results: Path = RESULTS, notes: dict[str, str] | None = None) -> str:
    notes = _report_notes() if notes is None else notes
    files = sorted(results.glob("*.json"))
    unknown = sorted(set(notes) - {p.stem for p in files})
    if unknown:
        raise DocsError(f"docs/reports/notes.yml: {unknown} name no file in bench/results/")
    loaded = {path: json.loads(path.read_text()) for path in files}
    newest: dict[tuple[str, str], Path] = {}
    for path in files:
        newest[_variant(path, loaded[path])] = path  # sorted by date: the last one wins
    out = [
        "# Performance",
        "",
        "Generated from the newest `bench/results/*.json` of each kind at every build; each "
        "table is the one the benchmark printed when it wrote the file, and the text under it "
        "(`docs/reports/notes.yml`) says how that run was made. A run's figures hold on its own "
        "machine (below); ratios within a run are what to compare.",
        "",
    ]

    def rank(variant: tuple[str, str]) -> tuple[int, str, str]:
        kind = variant[0]
        return (list(TITLES).index(kind) if kind in TITLES else 99, kind, variant[1])

    for variant in sorted(newest, key=rank):
        path = newest[variant]
        data = loaded[path]
        out += [f"## {_variant_title(variant[0], data.get('config'))}", ""]
        out += _run_section(path, data, notes)
    older = [p for p in files if p not in newest.values()]
    if older:
        out += ["## Older runs", "", ", ".join(f"`{p.name}`" for p in older), ""]
        for path in older:
            if path.stem in notes:
                out += [f"### `{path.name}`", "", notes[path.stem].strip(), ""]
    return "\n".join(out) + "\n"


# The suites' tables, in this order; a file of another name comes after them. Each intro says
# what the suite does to the service; the table says what it measured.
SUITES: dict[str, tuple[str, str]] = {
    "faults": (
        "Faults mid-job (`tests/test_faults.py`)",
        "Each case starts the real stack, uploads thousands of real reviews (chunks of 100) and "
        "breaks something mid-job; every job reaches a final state without a person stepping "
        "in. Lost = accepted rows without a result; duplicated = extra result rows (both read "
        "from the database). A row that crashes the process (rather than raising) takes its "
        "whole chunk with it once the attempts are used up; a row that raises costs only itself.",
    ),
    "resilience": (
        "The service stays up (`tests/test_resilience.py`)",
        "Each case runs on the real stack (`reviewscore run` itself for supervision), breaks or "
        "floods a part, and measures what a user sees. Rows, where a job is involved, are "
        "checked in SQL against the job's counters (lost and duplicated must be 0). Three "
        "more cases of this kind are tested where their code is: a job cancelled during an "
        "upload that never ended is closed and purged, and one job that cannot be purged does "
        "not stop the sweep (`tests/test_sweeper.py`); a 50 MB row of commas is refused while "
        "it is read (`tests/test_bad_input.py`; API memory under a 200 MB row: +11.5 MB, "
        "`python bench/comma_bomb.py`); bytes invalid at data row 10,001 name that row and keep "
        "the 10,000 before it, and a text column named twice is a 422 naming both "
        "(`tests/test_bad_input.py`, `tests/test_ingest.py`).",
    ),
    "multihost": (
        "Several hosts: what each fault costs (`tests/multihost`)",
        "Hosts are network namespaces on one machine (needs root): a data host with PostgreSQL "
        "and Redis behind passwords (Redis with AOF every second), an API host with the API "
        "and beat, two worker hosts of one pool process each with empty models folders. 4,000 "
        "real reviews per job in chunks of 200, lease 20 s, a sweep every 3 s, each chunk "
        "slowed by 0.5 s so the faults land mid-job. Small job: an unrelated 400-row job "
        "uploaded during the fault, upload to finished. Score: the longest wait for an answer "
        "of `POST /v1/score` during the fault. Every case must show 0 lost, 0 duplicated, the "
        "job's counters equal to its result rows, no row failed and no HTTP 500 (why those "
        "hold: the [chunk protocol](../explanation/chunk-protocol.md)). `make test` runs the "
        'short form (`-m "not long"`).',
    ),
    "chaos": (
        "The chaos soak (`tests/chaos`)",
        "On the multi-host suite's hosts, four threads with three API keys send every kind of "
        "request while a nemesis applies one fault at a time on a schedule drawn from the seed "
        "(the same seed replays the same faults); once every job is final the checker reads the "
        "history and PostgreSQL: no row lost or duplicated, nothing changed after a job was "
        "final, no HTTP 500, no key reached another key's job, every `POST /v1/score` answered "
        "in time. Each run's table: per fault kind, what the requests sent meanwhile got; its "
        "last line is the checker's verdict.",
    ),
}


def _suite(path: Path) -> str:
    """`chaos-44677.json` -> `chaos`: one suite may write a file per run."""
    return path.stem.split("-")[0]


def suite_tables(results: Path = SUITE_RESULTS) -> list[dict[str, Any]]:
    """Every table the suites wrote, in SUITES' order, within a suite the measured ones before
    those carried over from elsewhere (the README), then by file name."""
    order = list(SUITES)
    tables = []
    for path in results.glob("*.json"):
        data = json.loads(path.read_text())
        missing = {"title", "columns", "rows", "command"} - set(data)
        if missing:
            raise DocsError(f"{path}: not a suite's table (no {', '.join(sorted(missing))})")
        tables.append({**data, "file": path.name})

    def rank(table: dict[str, Any]) -> tuple[int, bool, str]:
        suite = _suite(Path(table["file"]))
        carried = table.get("source", "measured") != "measured"
        return (order.index(suite) if suite in order else 99, carried, table["file"])

    return sorted(tables, key=rank)


def _markdown_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def faults_page(results: Path = SUITE_RESULTS) -> str:
    out = [
        "# Faults, several hosts and chaos",
        "",
        "Generated at every build from the tables the fault, resilience, multi-host and chaos "
        "suites wrote (`bench/results/suites/*.json`; `tests/tables.py`). The suites print the "
        "same tables at the end of each module; `make faults`, `make multihost` and "
        "`make chaos` also write them there (a plain `make test` writes nothing). Each table "
        "names the command that reruns it, when and where it ran.",
        "",
    ]
    shown: set[str] = set()
    for table in suite_tables(results):
        suite = _suite(Path(table["file"]))
        if suite not in shown:
            heading, intro = SUITES.get(suite, (suite, ""))
            out += [f"## {heading}", ""] + ([intro, ""] if intro else [])
            shown.add(suite)
        commit = f", commit `{table['commit']}`" if table.get("commit") else ""
        cores = f", {table['cores']} cores" if table.get("cores") else ""
        if table.get("load_average"):
            cores += f" (load average {table['load_average'][0]:g} at the end)"
        source = table.get("source", "measured")
        where = (
            f"Measured {table.get('date', '')}{cores}{commit}"
            if source == "measured"
            else f"From the {source}"
        )
        out += [
            f"**{_cell(table['title'])}**",
            "",
            f"{where}; rerun: `{table['command']}` (`bench/results/suites/{table['file']}`)"
            + (f"; this run: `{table['ran']}`." if table.get("ran") else "."),
            "",
            *_markdown_table(table["columns"], table["rows"]),
            "",
        ]
        notes = [f"{_cell(k)}: {_cell(v)}" for k, v in (table.get("row_notes") or {}).items()]
        notes += [_cell(n) for n in table.get("notes") or []]
        if notes:
            out += [f"- {n}" for n in notes] + [""]
    if not shown:
        out += ["No suite has written its table yet: run `make faults`.", ""]
    return "\n".join(out) + "\n"


# --- the hook -----------------------------------------------------------------------------

PAGES = {
    "reference/configuration.md": configuration_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": http_page,
    "reference/python-client.md": client_page,
    "reports/performance.md": performance_page,
    "reports/faults.md": faults_page,
}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    # This checkout's code, not whatever an editable install elsewhere points at (MkDocs puts
    # the hook's folder on sys.path only while it loads the hook).
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for uri, page in PAGES.items():
        files.append(File.generated(config, uri, content=page()))
    return files
