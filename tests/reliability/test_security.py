"""Security: keys hashed and never logged, tenants isolated, names cannot escape, rate limits."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

import httpx
import pytest

from tests.ingress.conftest import Receiver

LINES = b'{"a": 1}\n'


def test_keys_are_stored_hashed_and_never_logged(
    make_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = make_receiver()
    caplog.set_level(logging.DEBUG)
    secret = receiver.key.split("_")[2]
    rows = (
        sqlite3.connect(receiver.settings.control_db_path())
        .execute("SELECT * FROM api_keys")
        .fetchall()
    )
    assert rows and all(secret not in str(row) for row in rows)
    httpx.post(f"{receiver.url}/acme/web", content=LINES, headers=receiver.auth())
    httpx.post(
        f"{receiver.url}/acme/web",
        content=LINES,
        headers={"Authorization": receiver.auth()["Authorization"] + "x"},
    )
    assert secret not in caplog.text


def test_ingest_keys_cannot_manage_and_cannot_cross_tenants(
    make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver()
    other = receiver.control.create_key("other", "web").key
    for path in ("/acme/web", "/acme/arr", "/webhook/acme/text"):
        assert (
            httpx.post(
                f"{receiver.url}{path}", content=LINES, headers={"Authorization": f"Bearer {other}"}
            ).status_code
            == 403
        )
    from bytefreezer.control.app import create_app
    from tests.helpers import serve_app

    with serve_app(create_app(receiver.control)) as control:  # type: ignore[arg-type]
        for method, path in (
            ("GET", "/tenants"),
            ("POST", "/keys"),
            ("GET", "/leases"),
            ("DELETE", "/tenants/acme"),
        ):
            answer = httpx.request(
                method, f"{control}/api/v1{path}", headers=receiver.auth(), json={}
            )
            assert answer.status_code == 403, (method, path, answer.text)


@pytest.mark.parametrize(
    "path",
    [
        "/..%2F..%2Fetc/web",
        "/acme/..",
        "/%2e%2e/web",
        "/acme/web%00",
        "/ACME/web",
        "/acme/w%C3%A9b",
        "/%E2%80%AEacme/web",
        "/acme/" + "a" * 64,
    ],
)
def test_names_cannot_escape_their_prefix(receiver: Receiver, path: str) -> None:
    answer = httpx.post(f"{receiver.url}{path}", content=LINES, headers=receiver.auth())
    assert answer.status_code in (400, 404, 405), answer.text
    assert receiver.storage.intake.list() == []


def test_rate_limit_per_key_answers_429_with_retry_after(
    make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver(receiver={"rate_limit_per_second": 1, "rate_limit_burst": 3})
    statuses = [
        httpx.post(f"{receiver.url}/acme/web", content=LINES, headers=receiver.auth())
        for _ in range(5)
    ]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    limited = [r for r in statuses[3:] if r.status_code == 429]
    assert (
        limited
        and int(limited[0].headers["retry-after"]) >= 1
        and "rate limit" in limited[0].json()["error"]
    )
    second = receiver.control.create_key("acme").key  # another key has its own bucket
    assert (
        httpx.post(
            f"{receiver.url}/acme/web", content=LINES, headers={"Authorization": f"Bearer {second}"}
        ).status_code
        == 200
    )
