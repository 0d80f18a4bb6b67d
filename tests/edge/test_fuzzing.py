"""Property-based fuzzing of every operation in a running edge's /openapi.json (schemathesis):
generated requests, valid by the document, never get a 5xx, and every answer matches the
document (status, content type, headers, body schema). Bounded so it stays well under a
minute: it runs in the normal test command."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.core.result import Err
from schemathesis.specs.openapi import checks as openapi_checks

from edge.process import EdgeProcess
from tests.edge.conftest import TokenMinter

# Examples per operation; the test edge fronts a dozen operations of echo and the wallet.
MAX_EXAMPLES = 25

CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]


def _no_requested_delay(case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
    """Echo's delayMs asks the service to sleep (up to 10 s) to exercise deadlines; a delay
    beyond the CATALOG budget is answered 504 by design (test_errors covers it), so the
    fuzzer does not ask for one."""
    if isinstance(case.body, dict) and "delayMs" in case.body:
        case.body["delayMs"] = 0
    return case


def test_every_operation_answers_within_its_document(
    edge: EdgeProcess, tokens: TokenMinter
) -> None:
    # The document is read from the running edge, as client teams and fuzzers read it.
    schema = schemathesis.openapi.from_url(f"{edge.url()}/openapi.json")
    # A valid token (for a player of its own): authenticated operations get past the token
    # check and reach the services.
    headers = tokens.bearer("player-fuzz")
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy().map(_no_requested_delay))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=headers, timeout=10, checks=CHECKS)

        fuzz()
