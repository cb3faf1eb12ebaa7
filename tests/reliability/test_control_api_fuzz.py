"""Schema-driven fuzzing of the control service against its own OpenAPI document."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from bytefreezer.control import ControlStore
from bytefreezer.control.app import create_app
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.control.openapi import control_openapi
from bytefreezer.transforms import validate_chain
from tests.helpers import serve_app

schema = schemathesis.openapi.from_dict(control_openapi())
ADMIN = {"value": ""}


@schema.auth()
class _Admin:
    """The admin key, given the way schemathesis can also leave it out on purpose."""

    def get(self, case: schemathesis.Case, context: object) -> str:
        return ADMIN["value"]

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory: Path = tmp_path_factory.mktemp("control-fuzz")
    store = ControlStore(
        directory / "c.db",
        destination_for=lambda t, d: f"file:///tmp/out/{t}/{d}",
        validate_chain=validate_chain,
    )
    store.create_tenant(Tenant(name="acme"))
    store.create_dataset("acme", DatasetSpec(name="web"))
    ADMIN["value"] = store.create_key(None, role="admin").key
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(serve_app(create_app(store)))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_control_conforms_to_its_openapi(case: schemathesis.Case, control: str) -> None:
    response = case.call(base_url=control)
    assert response.status_code < 500, response.text
    case.validate_response(response)


def test_document_is_served(control: str) -> None:
    import httpx

    document = httpx.get(f"{control}/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/api/v1/leases/acquire" in document["paths"]
