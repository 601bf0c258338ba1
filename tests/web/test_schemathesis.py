"""Property-based API fuzzing: schemathesis reads ``/openapi.json`` and no generated request may cause a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from tests.web.conftest import AppServer

# 25 requests per operation: most of them valid (they reach the code behind validation), some invalid.
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 10}


def fuzz(
    operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode, base_url: str, headers: dict[str, str]
) -> None:
    """``EXAMPLES[mode]`` generated requests to one operation; raises on the first 5xx."""

    @settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure here is reproducible
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_generated_requests_never_cause_a_server_error(app_server: AppServer) -> None:
    app_server.connect("user-1")  # ids 1.. exist, so some generated requests reach a real connection
    headers = {"Authorization": f"Bearer {app_server.api_key}"}
    schema = schemathesis.openapi.from_url(f"{app_server.url}/openapi.json", headers=headers)  # it needs the key
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the schema is invalid: {result.err()}")
            continue
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, app_server.url, headers)
            except Unsatisfiable:  # nothing to break in a request without parameters (GET /healthz)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 9, f"the schema lists only {operations} operations"  # 8 under /api/, and /healthz
    if failures:
        pytest.fail("server errors found:\n\n" + "\n\n".join(failures), pytrace=False)
