"""docker-compose.yml, read as data: no Docker engine runs here, so its promises are checked by reading."""

from __future__ import annotations

import re
from typing import Any

import yaml

from reviewscore.core.settings import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_the_whole_stack_is_there() -> None:
    assert {"redis", "postgres", "migrate", "api", "worker", "beat", "flower"} <= set(SERVICES)


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        if name != "migrate":
            assert "test" in service.get("healthcheck", {}), name


def test_app_services_wait_for_a_successful_migration() -> None:
    for name in ("api", "worker", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_redis_keeps_an_append_only_file_behind_a_password_and_is_not_published() -> None:
    command = SERVICES["redis"]["command"]
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--requirepass" in command
    assert "ports" not in SERVICES["redis"]


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
