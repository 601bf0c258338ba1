"""Property-based API fuzzing: schemathesis reads ``/openapi.json`` and no generated request may cause a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.web.conftest import AppServer

MAX_EXAMPLES = 25
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def fuzz(operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]) -> None:
    """Up to ``MAX_EXAMPLES`` generated requests to one operation; raises on the first 5xx."""

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_generated_requests_never_cause_a_server_error(app_server: AppServer) -> None:
    app_server.connect("user-1")  # ids 1.. exist, so some generated requests reach a real connection
    schema = schemathesis.openapi.from_url(f"{app_server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {app_server.api_key}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, app_server.url, headers)
            except Unsatisfiable:  # nothing to break in a request without parameters (GET /healthz)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 7, f"the schema lists only {operations} operations"
    if failures:
        pytest.fail("server errors found:\n\n" + "\n\n".join(failures), pytrace=False)
