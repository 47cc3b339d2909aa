"""The `reviewscore` command: run the service, score CSV files through it, manage keys, train."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from reviewscore.client import ApiError, Client
from reviewscore.core.settings import get_settings

app = typer.Typer(
    help="reviewscore: batch scoring of movie-review sentiment.", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys (needed when REVIEWSCORE_ENV=production).")
db_app = typer.Typer(help="The database schema.")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
console = Console(stderr=True)

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="REVIEWSCORE_API_URL", help="the API's address")
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="REVIEWSCORE_API_KEY", help="an API key, when the server needs one"
    ),
]


def _client(url: str | None, api_key: str | None) -> Client:
    return Client(url or get_settings().api_url, api_key)


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _wait(client: Client, job_id: str, poll: float = 0.5) -> dict[str, Any]:
    """Follows a job with a progress bar until the server says it is finished."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
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

        return client.wait(job_id, poll=poll, on_progress=show)


def _print_job(job: dict[str, Any]) -> None:
    table = Table(show_header=False)
    for key in (
        "id",
        "status",
        "model_version",
        "total",
        "scored",
        "failed",
        "rate",
        "eta_seconds",
        "device",
        "error",
        "created_at",
        "finished_at",
    ):
        value = job.get(key)
        if isinstance(value, float):
            value = f"{value:,.1f}"
        table.add_row(key, "" if value is None else str(value))
    Console().print(table)


@app.command()
def score(
    csv_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".csv or .csv.gz")],
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the results")],
    text_column: Annotated[str | None, typer.Option(help="default: 'text', else 'review'")] = None,
    id_column: Annotated[str | None, typer.Option(help="default: the row number")] = None,
    model: Annotated[
        str | None, typer.Option(help="an installed model (default if omitted)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Upload a CSV, show progress while the workers score it, and write the results."""
    client = _client(url, api_key)
    size = csv_file.stat().st_size
    try:
        with Progress(
            TextColumn("upload"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("upload", total=size)
            job = client.upload(
                csv_file,
                text_column=text_column,
                id_column=id_column,
                model=model,
                progress=lambda n: progress.advance(task, n),
            )
        console.print(
            f"job {job['id']} ({job['received']:,} rows); "
            f"re-attach with: reviewscore wait {job['id']}"
        )
        job = _wait(client, job["id"])
        client.download(job["id"], output, fmt)
    except ApiError as exc:
        _fail(exc.detail)
    console.print(
        f"{job['status']}: {job['scored']:,} scored, {job['failed']:,} failed -> {output}"
    )
    if job["status"] != "succeeded":
        raise typer.Exit(2)


@app.command()
def status(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Show a job's status and progress."""
    try:
        _print_job(_client(url, api_key).job(job_id))
    except ApiError as exc:
        _fail(exc.detail)


@app.command()
def wait(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Follow a job until it finishes (exit 0 if it succeeded)."""
    try:
        job = _wait(_client(url, api_key), job_id)
    except ApiError as exc:
        _fail(exc.detail)
    _print_job(job)
    if job["status"] != "succeeded":
        raise typer.Exit(2)


@app.command()
def download(
    job_id: str,
    output: Annotated[Path, typer.Option("-o", "--output")],
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    partial: Annotated[bool, typer.Option(help="allow an unfinished job's results")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Write a job's results to a file."""
    try:
        written = _client(url, api_key).download(job_id, output, fmt, partial)
    except ApiError as exc:
        _fail(exc.detail)
    console.print(f"{written:,} bytes -> {output}")


@app.command()
def cancel(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel an unfinished job (rows already scored keep their results)."""
    try:
        _print_job(_client(url, api_key).cancel(job_id))
    except ApiError as exc:
        _fail(exc.detail)


@app.command()
def jobs(limit: int = 20, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """List recent jobs."""
    try:
        listing = _client(url, api_key).jobs(limit)
    except ApiError as exc:
        _fail(exc.detail)
    table = Table("id", "status", "total", "scored", "failed", "created_at")
    for job in listing["jobs"]:
        table.add_row(
            job["id"],
            job["status"],
            str(job["total"]),
            str(job["scored"]),
            str(job["failed"]),
            job["created_at"],
        )
    Console().print(table)


@app.command()
def models() -> None:
    """List the models installed in the models folder."""
    from reviewscore.core.model_registry import default_model_name, list_models

    settings = get_settings()
    installed = list_models(settings.models_dir)
    default = default_model_name(installed, settings.default_model)
    table = Table("name", "version", "architecture", "test accuracy", "default")
    for m in installed:
        acc = f"{m.test_accuracy:.2%}" if m.test_accuracy is not None else ""
        table.add_row(m.name, m.version, m.architecture, acc, "yes" if m.name == default else "")
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations to REVIEWSCORE_DATABASE_URL."""
    from reviewscore.core.migrate import upgrade

    upgrade()
    console.print(f"database at head: {get_settings().database_url}")


@keys_app.command("create")
def keys_create(name: str) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    with session_scope() as session:
        record, key = keys.create_key(session, name)
        key_id = record.id
    console.print(f"key {key_id} ({name}) created; keep it now, it is not shown again:")
    print(key)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="key id or key prefix")]) -> None:
    """Revoke an API key."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    with session_scope() as session:
        record = keys.revoke_key(session, key)
        if record is None:
            _fail(f"no active key {key!r}")
    console.print(f"revoked key {key}")


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (prefixes only)."""
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    table = Table("id", "name", "prefix", "created", "revoked")
    with session_scope(readonly=True) as session:
        for k in keys.list_keys(session):
            table.add_row(str(k.id), k.name, k.prefix, str(k.created_at), str(k.revoked_at or ""))
    Console().print(table)


@app.command()
def run(
    flower: Annotated[bool, typer.Option(help="start Flower too")] = True,
    workers: Annotated[int, typer.Option(help="worker processes (Celery nodes)")] = 1,
) -> None:
    """Start the whole service locally: embedded Redis, API, worker, beat and Flower. A part
    that crashes is started again; Ctrl-C stops it all (a second Ctrl-C at once)."""
    from reviewscore.core.migrate import upgrade
    from reviewscore.shell.runner import Stack, StackConflictError

    settings = get_settings()
    stack = Stack(settings, notify=lambda line: console.print(line, markup=False, soft_wrap=True))
    try:
        # Before anything starts: a live older run, or a taken port, is one line and exit 1.
        stack.preflight(flower=flower)
    except StackConflictError as exc:
        console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    upgrade()
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
        stack.start(flower=flower, workers=workers)
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
        console.print(f"error: {exc}", markup=False, soft_wrap=True)
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
    arch: Annotated[str, typer.Option(help="cnn or the stronger default model's architecture")],
    data: Annotated[Path, typer.Option(help="csv.gz folder, aclImdb/ folder or its .tar.gz")],
    out: Annotated[Path | None, typer.Option(help="models folder (default: the setting)")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 1337,
    limit: Annotated[int | None, typer.Option(help="train on a sample of this size")] = None,
) -> None:
    """Train a model from the IMDB data and install it in the models folder."""
    from training.train import run_training

    folder = run_training(
        arch, data, out or get_settings().models_dir, epochs=epochs, seed=seed, limit=limit
    )
    console.print(f"model written to {folder}")


if __name__ == "__main__":
    app()
