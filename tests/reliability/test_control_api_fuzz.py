"""Schema-driven fuzzing of the control service against its own OpenAPI document."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from bytefreezer.control import ControlStore
from bytefreezer.control.app import create_app
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.control.openapi import control_openapi
from bytefreezer.transforms import validate_chain
from bytefreezer.transforms.preview import preview_chain
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

    def preview(steps: list[dict[str, Any]], lines: list[str], tenant: str, dataset: str) -> Any:
        return preview_chain(steps, lines, tenant=tenant, dataset=dataset)

    with contextlib.ExitStack() as stack:
        yield stack.enter_context(serve_app(create_app(store, preview=preview)))


# A dataset's chain is checked against the transforms registered at run time (plugins
# included), which a static document cannot list: a schema-valid step of an unknown type is
# rightly refused, so those operations skip only the "valid data is accepted" check.
_CHAIN_BODIES = {
    ("POST", "/api/v1/tenants/{tenant}/datasets"),
    ("PUT", "/api/v1/tenants/{tenant}/datasets/{dataset}"),
}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_control_conforms_to_its_openapi(case: schemathesis.Case, control: str) -> None:
    response = case.call(base_url=control)
    assert response.status_code < 500, response.text
    excluded = []
    if (case.method.upper(), case.path) in _CHAIN_BODIES and response.status_code == 400:
        excluded = [positive_data_acceptance]
    case.validate_response(response, excluded_checks=excluded)


def test_document_is_served(control: str) -> None:
    import httpx

    document = httpx.get(f"{control}/openapi.json").json()
    assert document["openapi"].startswith("3.") and "/api/v1/leases/acquire" in document["paths"]


def test_what_fuzzing_found_on_a_fresh_machine(control: str) -> None:
    """Schema-valid requests the service refused with 400 (stop 28): a status whose body names
    another dataset than its path (a conflict: 409), a usage day of the document's pattern that
    is no date (the document now says it is a date), and a usage count beyond 64 bits (the
    document bounds them now)."""
    import httpx

    headers = {"Authorization": f"Bearer {ADMIN['value']}"}
    status = {"tenant": "", "dataset": "", "stage": "piper", "state": "ok"}
    response = httpx.put(
        f"{control}/api/v1/tenants/acme/datasets/web/status/piper", json=status, headers=headers
    )
    assert response.status_code == 409, response.text
    usage = control_openapi()["components"]["schemas"]["Usage"]["properties"]["day"]
    assert usage["format"] == "date"
    # and, once days were dates, a count SQLite cannot store: refused by the document now
    huge = [{"tenant": "acme", "dataset": "web", "day": "2026-01-01", "bytes": 10**36}]
    response = httpx.post(f"{control}/api/v1/usage", json=huge, headers=headers)
    assert response.status_code == 400 and "bytes" in response.text
    counts = control_openapi()["components"]["schemas"]["Usage"]["properties"]["bytes"]
    assert counts["maximum"] == 2**53
