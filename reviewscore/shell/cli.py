"""The `reviewscore` command: run the service, score files through it, manage keys, train.

Every failure of a command that talks to the API is one line on stderr that says what to do
next (no traceback unless --debug): `main()` renders the client's errors in one place."""

from __future__ import annotations

import csv
import io
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from reviewscore.client import (
    ApiError,
    Client,
    ClientError,
    ServiceUnreachableError,
    result_format_for,
)
from reviewscore.core.settings import get_settings

app = typer.Typer(
    help="reviewscore: batch scoring of movie-review sentiment.",
    no_args_is_help=True,
    # A traceback's locals could show an API key; --debug shows the traceback alone.
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(help="API keys (needed when REVIEWSCORE_ENV=production).")
db_app = typer.Typer(help="The database schema.")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
console = Console(stderr=True)
SOURCE_SCHEMES = ("http://", "https://", "file://")  # fetched by the service
INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C (128 + SIGINT)

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="REVIEWSCORE_API_URL", help="the API's address")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="REVIEWSCORE_API_KEY", help="an API key, when the server needs one"
    ),
]
JobArg = Annotated[str, typer.Argument(help="a job id, or the start of one (as `jobs` lists)")]
ResultsFormat = Annotated[
    str | None,
    typer.Option("--format", help="csv, jsonl or parquet (default: from the file's suffix)"),
]


@dataclass
class CliState:
    debug: bool = False


state = CliState()


@app.callback()
def options(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
) -> None:
    state.debug = debug


def say(message: str) -> None:
    """One line on stderr, never wrapped or read as markup."""
    console.print(escape(message), soft_wrap=True, highlight=False)


def stdout_console() -> Console:
    # Piped output gets room for full job ids instead of rich's 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=160)


def _client(url: str | None, api_key: str | None) -> Client:
    return Client(url or get_settings().api_url, api_key)


def local_time(value: Any) -> str:
    """An API timestamp (UTC, ...Z) in this machine's time zone."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def summary_rows(summary: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A job's results summary as (name, value) lines, whatever its nesting: counts per label,
    the share positive, a histogram, failed rows by reason."""
    if isinstance(summary, dict):
        flat = all(not isinstance(v, dict | list) for v in summary.values())
        if flat and prefix:
            return [(prefix, ", ".join(f"{k} {_number(v)}" for k, v in summary.items()) or "-")]
        rows: list[tuple[str, str]] = []
        for key, value in summary.items():
            rows += summary_rows(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(summary, list):
        counts = [
            item.get("count", item.get("n")) if isinstance(item, dict) else item for item in summary
        ]
        return [(prefix, " ".join(_number(c) for c in counts))]
    return [(prefix or "summary", _number(summary))]


def _figure(figure: Any) -> str:
    if not isinstance(figure, dict) or figure.get("value") is None:
        return "-"
    return f"{figure['value']:.3f} (95 % {figure['low']:.3f}-{figure['high']:.3f})"


def evaluation_rows(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """A labeled job's evaluation as (name, value) lines: each figure with its interval, the
    confusion matrix, the reliability bins and accuracy by length."""
    left = ", ".join(f"{k} {_number(n)}" for k, n in evaluation.get("left_out", {}).items() if n)
    rows = [("rows", _number(evaluation.get("rows", 0)) + (f" (left out: {left})" if left else ""))]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "ece"):
        rows.append((name, _figure(evaluation.get(name))))
    rows.append(
        ("confusion", ", ".join(f"{k} {_number(v)}" for k, v in evaluation["confusion"].items()))
    )
    bins = [
        f"{b['low']:.1f}-{b['high']:.1f}: {_number(b['share_positive']['value'])}"
        f" of {_number(b['count'])}"
        for b in evaluation.get("calibration", [])
        if b.get("count")
    ]
    rows.append(("reliability (share labeled positive by p bin)", "; ".join(bins) or "-"))
    for b in evaluation.get("by_length", []):
        words = (
            f"{b['words_from']}+" if b["words_to"] is None else f"{b['words_from']}-{b['words_to']}"
        )
        rows.append(
            (f"accuracy, {words} words", f"{_figure(b['accuracy'])}, {_number(b['count'])} rows")
        )
    return rows


JOB_FIELDS = ("id", "status", "filename", "model", "model_version", "device", "error")
TIME_FIELDS = ("created_at", "started_at", "finished_at", "deadline_at")
LabelOption = Annotated[
    list[str] | None,
    typer.Option("--label", help="a label key=value (repeat it, up to 16)", show_default=False),
]


def label_pairs(given: list[str] | None) -> dict[str, str] | None:
    """--label key=value options as the job's labels."""
    labels: dict[str, str] = {}
    for pair in given or []:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ClientError(f"--label {pair!r} is not key=value (e.g. --label team=search)")
        labels[key] = value
    return labels or None


def print_job(job: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in JOB_FIELDS:
        if job.get(key) not in (None, ""):
            table.add_row(key, str(job[key]))
    if job.get("metadata"):
        table.add_row("labels", ", ".join(f"{k}={v}" for k, v in job["metadata"].items()))
    total = "?" if job.get("total") is None else _number(job["total"])
    rows = f"{_number(job.get('done', 0))} of {total} done"
    rows += f" ({_number(job.get('scored', 0))} scored, {_number(job.get('failed', 0))} failed)"
    table.add_row("rows", rows)
    if job.get("rate"):
        table.add_row("rate", f"{job['rate']:,.0f} rows/s")
    if job.get("eta_seconds") is not None:
        table.add_row("eta", f"{job['eta_seconds']:,.0f} s")
    for key in TIME_FIELDS:
        if job.get(key):
            table.add_row(key.removesuffix("_at"), local_time(job[key]))
    summary = job.get("summary")
    if isinstance(summary, dict | list):
        evaluation = summary.get("evaluation") if isinstance(summary, dict) else None
        if isinstance(summary, dict):
            summary = {k: v for k, v in summary.items() if k != "evaluation"}
        for name, value in summary_rows(summary):
            table.add_row(f"summary {name}", value)
        if isinstance(evaluation, dict):
            for name, value in evaluation_rows(evaluation):
                table.add_row(f"evaluation {name}", value)
    stdout_console().print(table)


def _follow(client: Client, job_id: str, output: Path | None) -> dict[str, Any]:
    """Follows a job with a progress bar until the server says it is finished. Ctrl-C or a lost
    service stops following (the job goes on) and says how to re-attach."""
    again = f"reviewscore wait {job_id} -o {output or 'FILE'}"
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"job {job_id[:8]}", total=1, rate="")

            def show(job: dict[str, Any]) -> None:
                progress.update(
                    task,
                    completed=job["done"],
                    total=job["total"] or max(job["received"], 1),
                    rate=f"{job['rate']:,.0f} rows/s" if job.get("rate") else "",
                    description=f"job {job_id[:8]} {job['status']}",
                )

            return client.wait(job_id, on_progress=show)
    except KeyboardInterrupt:
        say(f"stopped following job {job_id}; it goes on. Re-attach with: {again}")
        raise typer.Exit(INTERRUPTED) from None
    except ServiceUnreachableError as exc:
        raise ServiceUnreachableError(
            f"{exc} Job {job_id} goes on once the service is back; re-attach with: {again}",
            exc.url,
        ) from exc


def _download(
    client: Client, job_id: str, output: Path, fmt: str | None, partial: bool = False
) -> None:
    try:
        written = client.download(job_id, output, fmt or result_format_for(output), partial)
    except ApiError as exc:
        if exc.status_code != 409:
            raise
        job = client.job(job_id)
        if job.get("finished"):
            raise
        total = "?" if job.get("total") is None else f"{job['total']:,}"
        raise ClientError(
            f"job {job_id} is {job['status']} ({job['done']:,} of {total} rows done): "
            f"wait for it with `reviewscore wait {job_id} -o {output}`, or pass --partial "
            "for the rows done so far"
        ) from exc
    except KeyboardInterrupt:
        say(f"download stopped; again with: reviewscore download {job_id} -o {output}")
        raise typer.Exit(INTERRUPTED) from None
    say(f"{written:,} bytes -> {output}")


def _finish(job: dict[str, Any]) -> None:
    say(
        f"job {job['id']} {job['status']}: {job['scored']:,} scored, {job['failed']:,} failed"
        + (f" ({job['error']})" if job.get("error") else "")
    )
    if job["status"] != "succeeded":
        raise typer.Exit(2)


@app.command()
def score(
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE_OR_URL",
            help="CSV, TSV, JSON Lines or Parquet (gzip welcome), or the http(s):// or file:// "
            "URL of one for the service to fetch itself",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the results")],
    text_column: Annotated[str | None, typer.Option(help="default: 'text', else 'review'")] = None,
    id_column: Annotated[
        str | None, typer.Option(help="default: an id column, else row number")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="an installed model (default if omitted)")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="the file's encoding (default: detected)")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="the CSV separator: , ; tab | (default: detected)")
    ] = None,
    input_format: Annotated[
        str | None, typer.Option("--format", help="csv, tsv, jsonl or parquet (default: detected)")
    ] = None,
    keep_columns: Annotated[
        str | None, typer.Option(help="input columns to return with the scores, comma-separated")
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(
            help="the rows' own labels, to evaluate the model (default: a column named label, "
            "sentiment, polarity, rating or stars)"
        ),
    ] = None,
    positive_from: Annotated[
        float | None,
        typer.Option(help="the labels are ratings: positive from this value (7 for 1-10 stars)"),
    ] = None,
    results_format: Annotated[
        str | None,
        typer.Option(help="csv, jsonl or parquet (default: from the output file's suffix)"),
    ] = None,
    keep_texts: Annotated[
        bool,
        typer.Option(
            "--keep-texts", help="keep the texts once scored (to train from the labels later)"
        ),
    ] = False,
    parallel: Annotated[
        int,
        typer.Option(
            min=0,
            max=64,
            help="parts sent at once (the file is cut at record boundaries); 0: one request",
        ),
    ] = 4,
    part_mb: Annotated[
        float, typer.Option(min=0.01, max=64, help="the size of a part in MiB (default 8)")
    ] = 8.0,
    label: LabelOption = None,
    deadline: Annotated[
        str | None,
        typer.Option(help="e.g. 2h: past it the job ends expired, the rows done kept"),
    ] = None,
    results_expire_after: Annotated[
        str | None, typer.Option(help="keep the results this long once done (e.g. 7d)")
    ] = None,
    max_failed_fraction: Annotated[
        float | None,
        typer.Option(min=0, max=0.999999, help="end the job failed past this share of failed rows"),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="the same key and file within 24 h answer the same job"),
    ] = None,
    callback_url: Annotated[
        str | None,
        typer.Option(help="POST a signed completion webhook here once the job is finished"),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload a file, show progress while the workers score it, and write the results.

    The file goes in parts, --parallel at a time, each retried on failure; killed or cut off,
    the same command run again resumes the same job and sends only the parts not stored.
    Given a URL instead, the service fetches the file itself (the operator must list the URL
    in REVIEWSCORE_URL_ALLOW, or its folder in REVIEWSCORE_URL_FILE_DIRS)."""
    client = _client(url, api_key)
    # The job's options, the same for a file sent and a URL fetched.
    options: dict[str, Any] = {
        "text_column": text_column,
        "id_column": id_column,
        "model": model,
        "encoding": encoding,
        "delimiter": delimiter,
        "format": input_format,
        "keep_columns": keep_columns,
        "label_column": label_column,
        "positive_from": positive_from,
        "keep_texts": keep_texts,
        "labels": label_pairs(label),
        "deadline": deadline,
        "results_expire_after": results_expire_after,
        "max_failed_fraction": max_failed_fraction,
        "idempotency_key": idempotency_key,
        "callback_url": callback_url,
    }
    if source.lower().startswith(SOURCE_SCHEMES):
        say(f"the service fetches {source.split('?', 1)[0]}")
        job = client.submit_url(source, **options)
        _score_job(client, job, output, results_format)
        return
    input_file = Path(source)
    if not input_file.is_file():
        what = "is a folder, not a file" if input_file.is_dir() else "does not exist"
        say(f"error: {source} {what} (give a file, or an http(s):// or file:// URL)")
        raise typer.Exit(2)
    try:
        with Progress(
            TextColumn("upload"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("upload", total=input_file.stat().st_size)
            job = client.submit(
                input_file,
                progress=lambda n: progress.advance(task, n),
                parallel=parallel,
                part_bytes=int(part_mb * 1024 * 1024),
                on_resume=say,
                **options,
            )
    except KeyboardInterrupt:
        say(
            "upload interrupted: run the same command again to resume it (the parts already "
            "stored are not sent again)"
            if parallel
            else "upload interrupted: the server keeps the rows it received in a job that ends "
            "failed (`reviewscore jobs` lists it); run the same command again to score it all"
        )
        raise typer.Exit(INTERRUPTED) from None
    _score_job(client, job, output, results_format)


def _score_job(
    client: Client, job: dict[str, Any], output: Path, results_format: str | None
) -> None:
    say(
        f"job {job['id']} ({job['received']:,} rows); "
        f"re-attach with: reviewscore wait {job['id']} -o {output}"
    )
    job = _follow(client, job["id"], output)
    _download(client, job["id"], output, results_format)
    _finish(job)


@app.command()
def status(job_id: JobArg, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Show a job's status, progress and results summary."""
    client = _client(url, api_key)
    print_job(client.job(client.resolve(job_id)))


@app.command()
def wait(
    job_id: JobArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write the results here once done")
    ] = None,
    fmt: ResultsFormat = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Follow a job until it finishes, then write its results with -o (exit 0 if it succeeded)."""
    client = _client(url, api_key)
    job_id = client.resolve(job_id)
    job = _follow(client, job_id, output)
    print_job(job)
    if output is not None:
        _download(client, job_id, output, fmt)
    _finish(job)


@app.command()
def download(
    job_id: JobArg,
    output: Annotated[Path, typer.Option("-o", "--output")],
    fmt: ResultsFormat = None,
    partial: Annotated[bool, typer.Option(help="allow an unfinished job's results")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Write a job's results to a file."""
    client = _client(url, api_key)
    _download(client, client.resolve(job_id), output, fmt, partial)


REVIEW_SUFFIXES = {".json": "labelstudio", ".jsonl": "jsonl", ".csv": "csv"}


@app.command()
def review(
    job_id: JobArg,
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="where to write them: .csv, .jsonl, or .json (Label Studio)"
        ),
    ],
    order: Annotated[
        str,
        typer.Option(
            help="uncertain (nearest 0.5) or disagree (model and label disagree, most "
            "confident first)"
        ),
    ] = "uncertain",
    n: Annotated[int, typer.Option("-n", min=1, max=10_000, help="how many rows")] = 200,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, jsonl or labelstudio (default: from -o's suffix)"),
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Write the rows a person should look at first (GET /v1/jobs/{id}/review)."""
    client = _client(url, api_key)
    chosen = fmt or REVIEW_SUFFIXES.get(output.suffix.lower(), "csv")
    found = client.review(client.resolve(job_id), n=n, order=order, format=chosen)
    if chosen == "csv":
        output.write_text(found, encoding="utf-8", newline="")
        count = max(sum(1 for _ in csv.reader(io.StringIO(found))) - 1, 0)
    elif chosen == "labelstudio":
        output.write_text(json.dumps(found, ensure_ascii=False), encoding="utf-8")
        count = len(found)
    else:
        output.write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in found), encoding="utf-8"
        )
        count = len(found)
    say(f"{count:,} rows ({order}) -> {output}")


@app.command()
def cancel(job_id: JobArg, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel an unfinished job (rows already scored keep their results)."""
    client = _client(url, api_key)
    print_job(client.cancel(client.resolve(job_id)))


@app.command()
def delete(job_id: JobArg, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Delete a job with its rows and results."""
    client = _client(url, api_key)
    job_id = client.resolve(job_id)
    client.delete(job_id)
    say(f"deleted job {job_id}")


@app.command()
def jobs(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    label: LabelOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """List recent jobs (full ids; any unique start of one works in the other commands);
    --label key=value lists only the jobs labelled so."""
    listing = _client(url, api_key).jobs(limit, labels=label_pairs(label))
    table = Table("id", "status", "rows done", "file", "created")
    table.columns[0].no_wrap = True
    table.columns[0].min_width = 32
    for job in listing["jobs"]:
        total = "?" if job["total"] is None else _number(job["total"])
        table.add_row(
            job["id"],
            job["status"],
            f"{_number(job['done'])} / {total}",
            job.get("filename") or "",
            local_time(job["created_at"]),
        )
    stdout_console().print(table)
    if listing["total"] > len(listing["jobs"]):
        say(f"{len(listing['jobs'])} of {listing['total']:,} jobs; --limit shows more")


@app.command()
def usage(url: UrlOption = None, api_key: KeyOption = None) -> None:
    """This key's use against its quotas: rows queued (received, not yet scored) and jobs not
    finished, with the limits past which uploads are refused (429)."""
    used = _client(url, api_key).usage()

    def limit(value: int | None) -> str:
        return "no limit" if value is None else _number(value)

    table = Table("", "in use", "limit")
    table.add_row("rows queued", _number(used["queued_rows"]), limit(used["max_queued_rows"]))
    table.add_row(
        "unfinished jobs", _number(used["unfinished_jobs"]), limit(used["max_unfinished_jobs"])
    )
    table.add_row("weight (share of the workers)", f"{used['weight']:g}", "")
    stdout_console().print(table)


models_app = typer.Typer(help="The models: listed by the API, published to the shared registry.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """List the models the API serves (the current version of each)."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table("name", "version", "test accuracy", "reads", "default")
    for m in _client(url, api_key).models()["models"]:
        acc = f"{m['test_accuracy']:.2%}" if m.get("test_accuracy") is not None else ""
        reads = "every token" if m.get("max_tokens") is None else f"{m['max_tokens']} tokens"
        table.add_row(m["name"], m["version"], acc, reads, "yes" if m["default"] else "")
    stdout_console().print(table)


@models_app.command("publish")
def models_publish(
    folder: Annotated[
        Path | None, typer.Argument(help="a models folder (default: REVIEWSCORE_MODELS_DIR)")
    ] = None,
) -> None:
    """Publish the models of a folder to the registry: new jobs use the new versions at once,
    on every worker host, with no restart; running jobs finish on the version they began with."""
    from reviewscore.core.model_registry import publish_folder

    published = publish_folder(folder or get_settings().models_dir)
    if not published:
        say(
            f"error: no model folder (with a metadata.json) in {folder or get_settings().models_dir}"
        )
        raise typer.Exit(1)
    for info, new in published:
        console.print(f"{info.version}: {'published' if new else 'already published'}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations to REVIEWSCORE_DATABASE_URL."""
    from sqlalchemy.engine import make_url

    from reviewscore.core.migrate import upgrade

    upgrade()
    # Never print the password (it lands in deploy logs).
    shown = make_url(get_settings().database_url).render_as_string(hide_password=True)
    console.print(f"database at head: {shown}")


@keys_app.command("create")
def keys_create(
    name: str,
    callback_url: Annotated[
        str | None,
        typer.Option(help="the webhook URL of this key's jobs that name none (--callback-url)"),
    ] = None,
) -> None:
    """Create an API key and its webhook signing secret; both are printed once (the key is
    stored only as a hash)."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope
    from reviewscore.core.errors import URLRefusedError
    from reviewscore.core.settings import get_settings
    from reviewscore.core.urls import check_url

    if callback_url:
        try:
            check_url(callback_url, get_settings())
        except URLRefusedError as exc:
            say(f"error: --callback-url: {exc}")
            raise typer.Exit(1) from None
    with session_scope() as session:
        record, key = keys.create_key(session, name, callback_url)
        key_id, secret = record.id, record.webhook_secret
    console.print(
        f"key {key_id} ({name}) created; keep it and its webhook secret now, neither is shown "
        "again:"
    )
    # The key last: scripts take the last line.
    print(f"webhook secret: {secret}")
    print(key)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="key id or key prefix")]) -> None:
    """Revoke an API key."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    with session_scope() as session:
        record = keys.revoke_key(session, key)
        if record is None:
            say(f"error: no active key {key!r}")
            raise typer.Exit(1)
    console.print(f"revoked key {key}")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (prefixes only), with their own quotas and weight ("default": the
    settings')."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    def own(value: float | None) -> str:
        return "default" if value is None else f"{value:,g}"

    table = Table(
        "id", "name", "prefix", "created", "revoked", "queued rows", "unfinished jobs", "weight"
    )
    with session_scope(readonly=True) as session:
        for k in keys.list_keys(session):
            table.add_row(
                str(k.id),
                k.name,
                k.prefix,
                str(k.created_at),
                str(k.revoked_at or ""),
                own(k.max_queued_rows),
                own(k.max_unfinished_jobs),
                own(k.weight),
            )
    Console().print(table)


def _quota(value: str | None, what: str, kind: type[int] | type[float]) -> float | None:
    """A quota option: a number, "default" (the settings' value), or None (left as is)."""
    from reviewscore.core import keys

    if value is None:
        return None
    if value.strip().lower() == "default":
        return keys.DEFAULT
    try:
        number = kind(value.replace(",", "").replace("_", ""))
    except ValueError:
        say(f"error: {what} must be a number or 'default', not {value!r}")
        raise typer.Exit(2) from None
    if number < 0 or (kind is float and number == 0):
        say(f"error: {what} must be {'above' if kind is float else 'at least'} 0, not {value}")
        raise typer.Exit(2)
    return number


@keys_app.command("set-quota")
def keys_set_quota(
    key: Annotated[str, typer.Argument(help="key id or key prefix")],
    queued_rows: Annotated[
        str | None,
        typer.Option(
            "--queued-rows",
            help="rows received and not yet scored, at most (or 'default': "
            "REVIEWSCORE_KEY_MAX_QUEUED_ROWS)",
        ),
    ] = None,
    unfinished_jobs: Annotated[
        str | None,
        typer.Option(
            "--unfinished-jobs",
            help="jobs not finished, at most (or 'default': REVIEWSCORE_KEY_MAX_UNFINISHED_JOBS)",
        ),
    ] = None,
    weight: Annotated[
        str | None,
        typer.Option(
            "--weight",
            help="the key's share of the workers next to other keys with work (default 1)",
        ),
    ] = None,
) -> None:
    """Set a key's own quotas and fair-share weight; options left out stay as they are."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    rows = _quota(queued_rows, "--queued-rows", int)
    jobs_at_most = _quota(unfinished_jobs, "--unfinished-jobs", int)
    share = _quota(weight, "--weight", float)
    if rows is None and jobs_at_most is None and share is None:
        say("error: give --queued-rows, --unfinished-jobs or --weight")
        raise typer.Exit(2)
    with session_scope() as session:
        record = keys.set_quota(
            session,
            key,
            max_queued_rows=None if rows is None else int(rows),
            max_unfinished_jobs=None if jobs_at_most is None else int(jobs_at_most),
            weight=share,
        )
        if record is None:
            say(f"error: no active key {key!r}")
            raise typer.Exit(1)
        shown = (record.id, record.max_queued_rows, record.max_unfinished_jobs, record.weight)

    def own(value: float | None) -> str:
        return "default" if value is None else f"{value:,g}"

    console.print(
        f"key {shown[0]}: queued rows {own(shown[1])}, unfinished jobs {own(shown[2])}, "
        f"weight {own(shown[3])}"
    )


@app.command()
def run(
    flower: Annotated[bool, typer.Option(help="start Flower too")] = True,
    workers: Annotated[int, typer.Option(help="worker processes (Celery nodes)")] = 1,
    singles_worker: Annotated[
        bool,
        typer.Option(
            help="one more worker process for single reviews only, so they never wait behind "
            "a bulk chunk (one more model in memory)"
        ),
    ] = False,
) -> None:
    """Start the whole service locally: embedded Redis, API, worker, beat and Flower. A part
    that crashes is started again; Ctrl-C stops it all (a second Ctrl-C at once)."""
    from reviewscore.core.migrate import upgrade
    from reviewscore.core.model_registry import publish_folder
    from reviewscore.shell.runner import Stack, StackConflictError

    settings = get_settings()
    refusal = settings.unsafe_flower_password() if flower else None
    if refusal is not None:
        say(f"error: {refusal} (or pass --no-flower)")
        raise typer.Exit(1)
    stack = Stack(settings, notify=lambda line: console.print(line, markup=False, soft_wrap=True))
    try:
        # Before anything starts: a live older run, or a taken port, is one line and exit 1.
        stack.preflight(flower=flower)
    except StackConflictError as exc:
        say(f"error: {exc}")
        raise typer.Exit(1) from None
    upgrade()
    publish_folder(settings.models_dir)
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        if stopping:
            stack.hurry.set()
            console.print("stopping now (workers' chunks go back to the queue)")
            return
        stopping = True
        console.print(
            f"\n{signal.Signals(signum).name}: stopping (workers finish their chunk; "
            "press Ctrl-C again to stop at once)..."
        )
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stack.write_pidfile()
    code = 0
    try:
        stack.start(flower=flower, workers=workers, singles_worker=singles_worker)
        console.print("starting... (logs in " + str(stack.log_dir) + ")", markup=False)
        announced = False
        while True:
            stack.supervise()
            if not announced and stack.ready():
                _announce(settings, flower)
                announced = True
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError, OSError) as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        stack.stop()
        stack.remove_pidfile()
        console.print("stopped.")
    if code:
        raise typer.Exit(code)


def _announce(settings: Any, flower: bool) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    console.print(
        f"[green]reviewscore is up[/green] ({settings.env.value}, database {settings.database_url})"
    )
    console.print(f"  API        {api}   (docs: {api}/docs)")
    console.print(f"  page       {api}/ui")
    if flower:
        console.print(
            f"  Flower     http://127.0.0.1:{settings.flower_port}   (user {settings.flower_user})"
        )
    console.print("  A part that crashes is restarted. Ctrl-C stops everything.")


@app.command()
def train(
    arch: Annotated[
        str | None, typer.Option(help="cnn or nbsvm (training on the IMDB data at --data)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="csv.gz folder, aclImdb/ folder or its .tar.gz")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="models folder (default: the setting)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 1337,
    limit: Annotated[int | None, typer.Option(help="train on a sample of this size")] = None,
    from_job: Annotated[
        list[str] | None,
        typer.Option(
            "--from-job",
            help="train on the service from this finished labeled job's rows (repeatable)",
        ),
    ] = None,
    with_imdb: Annotated[
        bool, typer.Option("--with-imdb", help="with --from-job: IMDB's train split too")
    ] = False,
    name: Annotated[str | None, typer.Option(help="with --from-job: the new model's name")] = None,
    make_default: Annotated[
        bool, typer.Option("--make-default", help="with --from-job: make it the default model")
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Train a model: from the IMDB data into the models folder (--arch, --data), or on the
    service from the labeled rows of your jobs (--from-job), published under its own name."""
    if from_job:
        _train_from_jobs(
            _client(url, api_key), from_job, name, with_imdb, make_default, arch or "nbsvm"
        )
        return
    if arch is None or data is None:
        say("error: give --arch and --data (train on IMDB here), or --from-job JOB")
        raise typer.Exit(2)
    from training.train import run_training

    folder = run_training(
        arch, data, out or get_settings().models_dir, epochs=epochs, seed=seed, limit=limit
    )
    console.print(f"model written to {folder}")


def _train_from_jobs(
    client: Client,
    job_ids: list[str],
    name: str | None,
    with_imdb: bool,
    make_default: bool,
    arch: str,
) -> None:
    run = client.train(
        [client.resolve(job_id) for job_id in job_ids],
        name=name,
        with_imdb=with_imdb,
        make_default=make_default,
        architecture=arch,
    )
    say(f"training run {run['id']}: model {run['model_name']}")
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(f"train {run['model_name']}", total=1.0)

            def show(state: dict[str, Any]) -> None:
                progress.update(
                    task,
                    completed=state["progress"],
                    description=f"train {run['model_name']}: {state['stage'] or state['status']}",
                )

            run = client.wait_training(run["id"], on_progress=show)
    except KeyboardInterrupt:
        say(f"stopped following; training run {run['id']} goes on (GET /v1/models/train/ID)")
        raise typer.Exit(INTERRUPTED) from None
    if run["status"] != "succeeded":
        say(f"error: training run {run['id']} failed: {run['error']}")
        raise typer.Exit(1)
    print_training_report(run)


def print_training_report(run: dict[str, Any]) -> None:
    report = run["report"]
    held = report["held_out"]
    table = Table(
        title=f"held-out rows: {held['rows']} ({held['positive']} positive, "
        f"{held['negative']} negative); accuracy with 95 % intervals"
    )
    for column in ("model", "version", "accuracy"):
        table.add_column(column)
    table.add_row(
        f"{report['model']['name']} (new)",
        report["model"]["version"],
        _figure(report["model"]["accuracy"]),
    )
    table.add_row(
        f"{report['default_model']['name']} (default)",
        report["default_model"]["version"],
        _figure(report["default_model"]["accuracy"]),
    )
    difference = report["difference"]
    table.add_row(
        "difference",
        "new - default",
        f"{difference['value']:+.3f} (95 % {difference['low']:+.3f} to {difference['high']:+.3f})",
    )
    out = stdout_console()
    out.print(table)
    default = "it is now the default" if report["made_default"] else "the default is unchanged"
    out.print(f"published {report['model']['version']}; {default}")


def main() -> None:
    """The `reviewscore` entry point: the client's errors, and any other, become one line."""
    try:
        app()
    except ClientError as exc:
        if state.debug:
            raise
        message = f"{exc.detail} (HTTP {exc.status_code})" if isinstance(exc, ApiError) else exc
        say(f"error: {message}")
        sys.exit(1)
    except Exception as exc:
        if state.debug:
            raise
        say(f"error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
