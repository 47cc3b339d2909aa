"""Property-based checks of the live API against its OpenAPI schema: no 500s, and every answer
(status code, content type, body) is one the schema documents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.main import app
from tests.conftest import RunningStack

# The schema the live server serves is the app's own (checked below); reading it from the app
# lets pytest collect one test per operation before any server runs.
schema = schemathesis.openapi.from_dict(app.openapi())
# Unknown query parameters are ignored, as by most HTTP APIs; do not count that as a failure.
schema.config.generation.update(allow_extra_parameters=False)


@pytest.fixture(scope="module")
def secured(production_stack: RunningStack) -> tuple[RunningStack, str]:
    """A production stack (the schema declares bearer auth) and a key for it."""
    from reviewscore.core import keys
    from reviewscore.core.db import make_engine, session_scope

    engine = make_engine(production_stack.settings.database_url)
    with session_scope(engine) as session:
        _, key = keys.create_key(session, "schemathesis")
    engine.dispose()
    return production_stack, key


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
