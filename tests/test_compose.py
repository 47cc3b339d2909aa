"""docker-compose.yml: its promises read as data, and the file loaded by a real compose
implementation (`docker-compose config`) and checked against the Compose Specification's
schema (no Docker engine runs here, so nothing is started)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reviewscore.core.settings import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_the_whole_stack_is_there() -> None:
    assert {
        "redis",
        "postgres",
        "migrate",
        "api",
        "worker",
        "worker-singles",
        "beat",
        "flower",
    } <= set(SERVICES)


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        if name != "migrate":
            assert "test" in service.get("healthcheck", {}), name


def test_app_services_wait_for_a_successful_migration() -> None:
    for name in ("api", "worker", "worker-singles", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_redis_keeps_an_append_only_file_behind_a_password_and_is_not_published() -> None:
    command = SERVICES["redis"]["command"]
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--requirepass" in command
    assert "ports" not in SERVICES["redis"]


def test_single_reviews_have_a_worker_that_takes_no_bulk_chunk() -> None:
    command = SERVICES["worker-singles"]["command"]
    assert command[command.index("-Q") + 1] == "singles"
    assert "singles" in SERVICES["worker"]["command"][-1]  # the others take both queues


def test_workers_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_production_mode_and_secrets_come_from_the_env_file() -> None:
    env = SERVICES["api"]["environment"]
    assert env["REVIEWSCORE_ENV"] == "production"
    assert env["REVIEWSCORE_DATABASE_URL"].startswith("postgresql+psycopg://")
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (REPO_ROOT / ".env.example").read_text()
    assert required and all(f"{name}=" in example for name in required)


# --- the file as compose implementations read it ---------------------------------------------------


def _example_env() -> dict[str, str]:
    """The variables of .env.example, as a user's .env would set them."""
    pairs = (
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _tool(name: str, installed_by: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"COMPOSE CHECK NOT RUN: `{name}` is not installed ({installed_by})")
    return path


def test_docker_compose_config_accepts_the_file_and_resolves_what_the_services_need(
    tmp_path: Path,
) -> None:
    # A real compose implementation (Debian's docker-compose 1.29) loads the file, checks it
    # against its schema, merges the anchors and interpolates the .env values.
    compose = _tool("docker-compose", "scripts/install-test-tools.sh installs it as root")
    shutil.copy(REPO_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    env = {**_example_env(), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(
        [compose, "config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    password = env["POSTGRES_PASSWORD"]
    for name in ("api", "worker", "beat", "migrate"):
        url = resolved[name]["environment"]["REVIEWSCORE_DATABASE_URL"]
        assert url == f"postgresql+psycopg://reviewscore:{password}@postgres:5432/reviewscore"
        assert resolved[name]["environment"]["REVIEWSCORE_REDIS_URL"].startswith(
            f"redis://:{env['REDIS_PASSWORD']}@redis:6379/"
        )
    assert f"--requirepass {env['REDIS_PASSWORD']}" in resolved["redis"]["command"]
    # Only Flower is given its password: the API, the workers and beat never use it.
    assert (
        resolved["flower"]["environment"]["REVIEWSCORE_FLOWER_PASSWORD"] == env["FLOWER_PASSWORD"]
    )
    assert [
        n for n, s in resolved.items() if "REVIEWSCORE_FLOWER_PASSWORD" in s.get("environment", {})
    ] == ["flower"]


def test_docker_compose_config_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    compose = _tool("docker-compose", "scripts/install-test-tools.sh installs it as root")
    shutil.copy(REPO_ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    done = subprocess.run(
        [compose, "config"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and re.search(r"set \w+_PASSWORD in \.env", done.stderr), (
        done.stderr
    )


def test_the_file_follows_the_compose_specification_schema() -> None:
    checker = _tool("check-jsonschema", "a dev dependency in pyproject.toml")
    done = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(REPO_ROOT / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
