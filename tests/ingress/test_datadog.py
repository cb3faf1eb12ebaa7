"""Datadog's log intake in: Datadog's own API client (`LogsApi.submit_log`, gzip) sends logs
through the receiver, piper and packer to Parquet; the query's attributes, text bodies, tenant
keys in the path, refusals as Datadog's error bodies."""

from __future__ import annotations

import json
import zlib

import httpx
import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v2.api.logs_api import LogsApi
from datadog_api_client.v2.model.content_encoding import ContentEncoding
from datadog_api_client.v2.model.http_log import HTTPLog
from datadog_api_client.v2.model.http_log_item import HTTPLogItem
from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.ingress.bodies import BodyError
from bytefreezer.ingress.datadog import log_records
from bytefreezer.keys import IntakeKey
from tests.ingress.conftest import Receiver


def logs_api(url: str, key: str) -> tuple[ApiClient, LogsApi]:
    configuration = Configuration(host=url)
    configuration.api_key["apiKeyAuth"] = key
    client = ApiClient(configuration)
    return client, LogsApi(client)


def test_datadogs_client_submits_logs_to_parquet(receiver: Receiver) -> None:
    key = receiver.control.create_key("acme", "web").key
    client, api = logs_api(receiver.url, key)
    with client:
        for batch in range(3):
            items = [
                HTTPLogItem(
                    ddsource="nginx",
                    ddtags=f"env:prod,batch:{batch}",
                    hostname="web-1",
                    service="checkout",
                    message=f"GET /order/{batch * 10 + n} 200",
                )
                for n in range(10)
            ]
            assert api.submit_log(body=HTTPLog(items), content_encoding=ContentEncoding.GZIP) == {}
    keys = [IntakeKey.parse(o.key) for o in receiver.storage.intake.list("acme/web/")]
    assert keys and {k.hint for k in keys} == {"ndjson"}
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(r["message"].split("/")[2].split()[0]))
    assert [r["message"] for r in rows] == [f"GET /order/{n} 200" for n in range(30)]
    assert {(r["ddsource"], r["hostname"], r["service"]) for r in rows} == {
        ("nginx", "web-1", "checkout")
    }
    assert rows[25]["ddtags"] == "env:prod,batch:2"


def test_a_tenant_key_in_the_path_text_bodies_and_query_attributes(receiver: Receiver) -> None:
    url = f"{receiver.url}/acme/web/api/v2/logs?ddsource=app&service=billing"
    body = json.dumps([{"message": "one", "service": "own"}, {"message": "two", "level": "warn"}])
    response = httpx.post(
        url,
        content=zlib.compress(body.encode()),
        headers={"DD-API-KEY": receiver.key, "Content-Encoding": "deflate",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 202 and response.json() == {}
    response = httpx.post(
        f"{receiver.url}/acme/web/api/v2/logs?dd-api-key={receiver.key}&hostname=h9",
        content=b"three\nfour\n",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 202, response.text
    table = receiver.pack("web")
    assert table is not None
    rows = {r["message"]: r for r in table.to_pylist()}
    assert (rows["one"]["service"], rows["one"]["ddsource"]) == ("own", "app")
    assert (rows["two"]["service"], rows["two"]["level"]) == ("billing", "warn")
    assert rows["four"]["hostname"] == "h9"


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "detail"),
    [
        ("/api/v2/logs", {}, b"[]", 401, "DD-API-KEY"),
        ("/api/v2/logs", None, b"[]", 400, "tenant key names the dataset"),
        ("/acme/web/api/v2/logs", None, b"[1]", 400, "log 0 is not a JSON object"),
        ("/acme/web/api/v2/logs", None, b"{nope", 400, "not JSON"),
        ("/acme/web/api/v2/logs", {"Content-Type": "application/xml"}, b"<a/>", 415, "xml"),
        ("/acme/nope/api/v2/logs", None, b"[]", 404, "nope"),
    ],
)
def test_refusals_store_nothing(
    receiver: Receiver,
    path: str,
    headers: dict[str, str] | None,
    body: bytes,
    status: int,
    detail: str,
) -> None:
    sent = {"DD-API-KEY": receiver.key, **(headers or {})} if headers is None or headers else {}
    response = httpx.post(f"{receiver.url}{path}", content=body, headers=sent)
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert error["status"] == str(status) and detail in error["detail"]
    assert not receiver.storage.intake.list("acme/")


def test_the_client_sees_a_refused_key(receiver: Receiver) -> None:
    client, api = logs_api(receiver.url, "bfk_not_a_key")
    with client, pytest.raises(ApiException) as info:
        api.submit_log(body=HTTPLog([HTTPLogItem(message="x")]))
    assert info.value.status == 401


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.dictionaries(st.text(max_size=6), _VALUES, max_size=4), max_size=6),
    st.sampled_from([{}, {"indent": 2}]),
)
def test_logs_become_their_records_compact_or_not(logs: list[dict], layout: dict) -> None:
    """A compact array (what the Agent and Vector send) is taken as sent, log by log; a
    pretty-printed one is read log by log: the same records either way."""
    body = json.dumps(logs, ensure_ascii=False, **layout).encode()
    records = log_records(body, "", "application/json", 1 << 30, {})
    assert [json.loads(record) for record in records] == logs
    assert all(b"\n" not in record for record in records)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'[{"a": 1}, 2]', "log 1 is not a JSON object"),
        (b'[{"a": "\xff"}]', "not JSON"),
        (b'[{"a": 1}', "not JSON"),
    ],
)
def test_a_compact_array_that_is_not_all_logs_is_refused(body: bytes, detail: str) -> None:
    with pytest.raises(BodyError) as refused:
        log_records(body, "", "application/json", 1 << 30, {})
    assert refused.value.status == 400 and detail in refused.value.message
