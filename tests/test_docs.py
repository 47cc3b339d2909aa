"""The docs site (docs/, mkdocs.yml): it builds with warnings as errors and internal links and
anchors checked, its generated reference names every setting, route and CLI command, and its
runnable examples work against a real service. The README stays a short front page over it:
at most 200 lines, whose links, make targets and commands all exist."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import RunningStack

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
SQLITE = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
README = ROOT / "README.md"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_reference", ROOT / "docs" / "gen_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly_with_links_checked(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "WARNING" not in build.stderr
    for page in (
        "reference/configuration",
        "reference/cli",
        "reference/http-api",
        "reports/performance",
        "reports/faults",
    ):
        assert (tmp_path / "site" / page / "index.html").is_file()
    # The tutorial shows the example file itself, not the line that includes it.
    tutorial = (tmp_path / "site" / "tutorial" / "first-dump" / "index.html").read_text()
    assert "tempfile" in tutorial and "8&lt;" not in tutorial


def test_a_broken_internal_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[nowhere](missing.md) and [no anchor](#nope)\n")
    config = (ROOT / "mkdocs.yml").read_text()
    # The same validation options, without the nav and the generator.
    config = config.split("exclude_docs:")[0].replace("docs_dir: docs", f"docs_dir: {docs}")
    (tmp_path / "mkdocs.yml").write_text(config + "theme:\n  name: material\n  font: false\n")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode != 0
    assert "missing.md" in build.stderr
    assert "nope" in build.stderr


def test_every_setting_appears_in_the_configuration_reference() -> None:
    from reviewscore.core.settings import Settings

    page = generator().configuration_page()
    for name in Settings.model_fields:
        assert f"`REVIEWSCORE_{name.upper()}`" in page


def test_every_route_appears_in_the_http_reference() -> None:
    from api.main import create_app

    page = generator().http_page()
    for path, methods in create_app().openapi()["paths"].items():
        for method in methods:
            assert f"## `{method.upper()} {path}`" in page
    for hidden in ("GET /metrics", "GET /ui", "GET /docs"):
        assert f"`{hidden}`" in page


def test_every_cli_command_appears_in_the_cli_reference() -> None:
    import typer.main

    from reviewscore.shell.cli import app

    page = generator().cli_page()
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        assert f"## `reviewscore {name}`" in page
        for sub in getattr(command, "commands", {}):
            assert f"## `reviewscore {name} {sub}`" in page
    assert "`--part-mb`" in page and "`REVIEWSCORE_API_URL`" in page


def test_a_comment_above_a_group_of_settings_describes_each_of_them() -> None:
    source = """
class Settings:
    chunk_size: int = 1
    # How a webhook is sent: its timeout and its backoff.
    webhook_timeout_s: float = 10.0
    webhook_backoff_s: float = 5.0

    job_retention_days: float = 30.0
"""
    comments = generator().field_comments(source)
    assert comments == {
        "webhook_timeout_s": "How a webhook is sent: its timeout and its backoff.",
        "webhook_backoff_s": "How a webhook is sent: its timeout and its backoff.",
    }


def test_a_note_for_a_setting_that_does_not_exist_fails_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = generator()
    notes = tmp_path / "notes.yml"
    notes.write_text("settings:\n  chunk_sise: a typo\n")
    monkeypatch.setattr(module, "NOTES", notes)
    with pytest.raises(module.DocsError, match="chunk_sise"):
        module.configuration_page()


def test_the_performance_report_shows_the_newest_run_of_each_kind(tmp_path: Path) -> None:
    import json

    for name, value in (("2026-01-01-vm", 1.0), ("2026-02-01-vm", 2.0)):
        targets = [{"name": "bulk / seed", "value": value, "op": ">=", "wanted": 100, "met": False}]
        (tmp_path / f"{name}.json").write_text(json.dumps({"targets": targets, "table": "T"}))
    page = generator().performance_page(tmp_path, notes={})
    assert "From `bench/results/2026-02-01-vm.json`" in page
    assert "| bulk / seed | 2.00 | >= 100 | **no** |" in page
    assert "`2026-01-01-vm.json`" in page  # listed among the older runs


def test_the_performance_report_keeps_the_newest_run_of_each_configuration(
    tmp_path: Path,
) -> None:
    import json

    runs = {
        "2026-01-01-vm-coordination": {"rows": 100000, "workers": [1, 2, 4, 8]},
        "2026-02-01-vm-coordination": {"rows": 40000, "workers": [1]},
    }
    for name, config in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"config": config, "table": name}))
    growth = {
        "source": "README (measured 2026-12-03), not rerun",
        "tables": [
            {"title": "Deletes.", "command": "python -m bench.deletes", "columns": ["delete", "took"],
             "rows": [["one transaction", "20.9 s"]]}
        ],
    }  # fmt: skip
    (tmp_path / "2026-03-01-growth.json").write_text(json.dumps(growth))
    notes = {"2026-01-01-vm-coordination": "How the sweep was run."}
    page = generator().performance_page(tmp_path, notes=notes)
    # A narrower rerun does not hide the sweep over 1-8 workers, nor its notes.
    assert "100,000 rows per run, worker processes 1/2/4/8" in page
    assert "40,000 rows per run, worker processes 1" in page
    assert "How the sweep was run." in page
    assert "Source: the README (measured 2026-12-03), not rerun." in page
    assert "| one transaction | 20.9 s |" in page
    assert "Rerun: `python -m bench.deletes`." in page


def test_a_performance_note_for_a_missing_result_file_fails_the_build(tmp_path: Path) -> None:
    module = generator()
    with pytest.raises(module.DocsError, match="2026-09-09-vm"):
        module.performance_page(tmp_path, notes={"2026-09-09-vm": "gone"})


def test_the_faults_report_shows_every_table_the_suites_wrote() -> None:
    import json

    page = generator().faults_page()
    files = sorted((ROOT / "bench" / "results" / "suites").glob("*.json"))
    assert {p.stem.split("-")[0] for p in files} >= {"faults", "resilience", "multihost", "chaos"}
    for path in files:
        table = json.loads(path.read_text())
        assert f"**{table['title']}**" in page, path.name
        assert f"rerun: `{table['command']}` (`bench/results/suites/{path.name}`)" in page
        for row in table["rows"]:
            assert f"| {row[0]} |" in page, (path.name, row[0])


def test_a_table_a_suite_writes_appears_on_the_faults_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.tables import write_table

    rows = [("worker killed", 4000, 4000, 0, 12.5), ("poison row", 1000, 999, 1, 3.0, "bisected")]
    columns = ("case", "accepted", "scored", "failed", "seconds")
    monkeypatch.delenv("REVIEWSCORE_REPORTS_DIR", raising=False)
    # A plain test run (no folder named) writes nothing: the committed files stay as they are.
    assert write_table("faults", "fault suite", columns, rows, "make faults") is None
    monkeypatch.setenv("REVIEWSCORE_REPORTS_DIR", str(tmp_path))
    written = write_table("faults", "fault suite", columns, rows, "make faults", ["all final"])
    assert written == tmp_path / "faults.json"

    page = generator().faults_page(tmp_path)
    assert "## Faults mid-job" in page
    assert "**fault suite**" in page
    assert "rerun: `make faults` (`bench/results/suites/faults.json`)" in page
    assert "| case | accepted | scored | failed | seconds |" in page
    assert "| worker killed | 4,000 | 4,000 | 0 | 12.5 |" in page
    assert "| poison row | 1,000 | 999 | 1 | 3.0 |" in page
    assert "- poison row: bisected" in page
    assert "- all final" in page
    assert f"{os.cpu_count()} cores (load average" in page


def test_a_chaos_runs_table_appears_under_the_chaos_soak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.chaos.checker import TABLE_COLUMNS, TABLE_TITLE, Report
    from tests.tables import write_table

    report = Report(seed=5, faults=2, jobs=3, rows=30)
    report.fault_rows = [("redis_restart", 2, 8.5, 40, 30, 10, 0, 0, 1.25)]
    monkeypatch.setenv("REVIEWSCORE_REPORTS_DIR", str(tmp_path))
    command = "make chaos SEED=5 MINUTES=1.5"
    write_table(
        "chaos-5", TABLE_TITLE, TABLE_COLUMNS, report.fault_rows, command, [report.last_line()]
    )
    page = generator().faults_page(tmp_path)
    assert "## The chaos soak" in page
    assert "rerun: `make chaos SEED=5 MINUTES=1.5` (`bench/results/suites/chaos-5.json`)" in page
    assert "| redis_restart | 2 | 8.5 | 40 | 30 | 10 | 0 | 0 | 1.2 |" in page
    assert "- chaos: seed 5, 2 faults, 3 jobs, 30 rows, 0 lost, 0 duplicated" in page


def run_example(name: str, service: RunningStack) -> list[str]:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / name), service.url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's client
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


def test_every_example_is_shown_in_the_client_reference() -> None:
    page = generator().client_page()
    for example in EXAMPLES.glob("*.py"):
        assert f"### `{example.name}`" in page


@SQLITE
def test_the_single_reviews_example_answers_in_order(service: RunningStack) -> None:
    lines = run_example("score_reviews.py", service)
    assert [line.split()[0] for line in lines[:2]] == ["positive", "negative"]
    assert lines[2].startswith("model: ")


@SQLITE
def test_the_tutorial_example_scores_a_dump(service: RunningStack) -> None:
    lines = run_example("score_first_dump.py", service)
    assert lines[0] == "succeeded 300 scored, 0 failed"
    assert lines[1].startswith("r-000 negative ")
    assert lines[2] == "share positive: 0.5"


def readme_links() -> list[str]:
    """Every link target of the README: Markdown links and images, and HTML src/href."""
    text = README.read_text()
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'(?:src|href)="([^"]+)"', text)


def test_the_readme_is_a_front_page_of_at_most_200_lines() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_every_relative_link_in_the_readme_names_a_file_of_the_repository() -> None:
    # GitHub readers see the README, so docs pages are linked as their docs/...md files; the
    # generated reference and report pages are not files, and a link to one would be broken.
    relative = [link for link in readme_links() if not re.match(r"[a-z]+:|#", link)]
    assert relative, "the README links into the docs"
    missing = [link for link in relative if not (ROOT / link.split("#")[0]).is_file()]
    assert missing == []


def test_every_make_target_the_readme_names_has_a_rule() -> None:
    rules = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"`make ([a-z][\w-]*)", README.read_text()))
    assert {"run", "test", "docs"} <= named
    assert named - rules == set()


def test_every_cli_command_the_readme_runs_exists() -> None:
    import typer.main

    from reviewscore.shell.cli import app

    commands = set(typer.main.get_command(app).commands)
    # Commands as run: `.venv/bin/reviewscore X`, or `reviewscore X` in backticks.
    used = set(re.findall(r"(?:bin/|`)reviewscore ([a-z][\w-]*)", README.read_text()))
    assert {"score", "status", "wait", "download", "jobs"} <= used
    assert used - commands == set()
