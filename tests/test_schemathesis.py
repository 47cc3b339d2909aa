"""Property-based checks of the live API against its OpenAPI schema: no 500s, and every answer
(status code, content type, body) is one the schema documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.main import app
from tests.conftest import RunningStack, start_stack

# The schema the live server serves is the app's own (checked below); reading it from the app
# lets pytest collect one test per operation before any server runs.
schema = schemathesis.openapi.from_dict(app.openapi())
# Unknown query parameters are ignored, as by most HTTP APIs; do not count that as a failure.
schema.config.generation.update(allow_extra_parameters=False)


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[RunningStack, str]]:
    """A production stack (the schema declares bearer auth) and a key for it."""
    from reviewscore import keys
    from reviewscore.db import make_engine, session_scope

    var_dir = tmp_path_factory.mktemp("var-schema")
    url = f"sqlite:///{var_dir / 'reviewscore.db'}"
    running = start_stack(
        var_dir,
        url,
        models_dir,
        {"REVIEWSCORE_ENV": "production", "REVIEWSCORE_FLOWER_PASSWORD": "s3cret-for-tests"},
    )
    engine = make_engine(url)
    with session_scope(engine) as session:
        _, key = keys.create_key(session, "schemathesis")
    engine.dispose()
    yield running, key
    running.stack.stop()


def test_live_schema_is_the_apps(secured: tuple[RunningStack, str]) -> None:
    assert httpx.get(secured[0].url + "/openapi.json").json() == app.openapi()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, secured: tuple[RunningStack, str]) -> None:
    stack, key = secured
    case.call_and_validate(
        base_url=stack.url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        # The API checks more than JSON Schema can say (an empty review, a CSV's content), so a
        # schema-valid request may rightly get a 4xx; every other check stays on.
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
