"""Property-based fuzzing of gsrm-serve from its own /openapi.json (schemathesis).

Why: the hand-written cases in test_server.py cover the contracts we thought of; schemathesis
generates bodies from the published schema (valid and edge-case ones) and asserts the server
never answers 5xx, i.e. that no input crashes it. It runs against a live uvicorn on 127.0.0.1
with the fake chat backend (so /v1/chat/completions works too), bounded to a fixed number of
examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.test_server import FakeChatBackend, fast_gsrm, live_server, wait_ready

MAX_EXAMPLES = 30  # per operation: keeps the whole file well under a minute


@pytest.fixture(scope="module")
def api_schema() -> Iterator[Any]:
    # small limits so generated bodies also exercise the 413 paths
    with live_server(fast_gsrm(FakeChatBackend(max_new_tokens=32)), max_new_tokens=32,
                     max_items=8, max_reasoning_chars=2000, max_steps=16,
                     max_body_bytes=64_000) as srv:
        wait_ready(srv)
        yield schemathesis.openapi.from_url(srv.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error])
