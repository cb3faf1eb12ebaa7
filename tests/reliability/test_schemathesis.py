"""Schema-driven fuzzing of the receiver against its own OpenAPI document: no 5xx, and every
response matches the document."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from bytefreezer.ingress.openapi import receiver_openapi
from tests.ingress.conftest import Receiver

schema = schemathesis.openapi.from_dict(receiver_openapi())
INGEST_KEY = {"value": ""}


@schemathesis.serializer("application/x-ndjson")
def _ndjson(context: object, value: object) -> bytes:
    """Generated values as NDJSON: a string as sent, anything else as one JSON line."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


@schema.auth()
class _Bearer:
    """The ingest key, given the way schemathesis can also leave it out on purpose."""

    def get(self, case: schemathesis.Case, context: object) -> str:
        return INGEST_KEY["value"]

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Receiver:
    import contextlib

    from tests.conftest import fast_settings
    from tests.ingress.conftest import seeded_control, start_receiver

    stack = contextlib.ExitStack()
    settings = fast_settings(
        tmp_path_factory.mktemp("fuzz") / "data", receiver={"max_body_bytes": 200_000}
    )
    receiver = start_receiver(stack, settings, seeded_control(settings))
    INGEST_KEY["value"] = receiver.key
    yield receiver  # type: ignore[misc]
    stack.close()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_receiver_conforms_to_its_openapi(case: schemathesis.Case, running: Receiver) -> None:
    webhook = not case.path.startswith(("/api/", "/openapi.json"))
    response = case.call(base_url=running.url if webhook else running.api)
    assert response.status_code < 500, response.text
    # A body's validity depends on its content (framing, compression), which a JSON schema
    # cannot describe, so "schema-valid data must be accepted" does not apply to ingest.
    excluded = [checks.positive_data_acceptance] if webhook and case.method == "POST" else []
    case.validate_response(response, excluded_checks=excluded)
