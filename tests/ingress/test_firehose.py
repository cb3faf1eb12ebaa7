"""Amazon Data Firehose's HTTP endpoint delivery in: requests as Firehose sends them (its
documented request format and headers; Firehose itself cannot run here) through the receiver,
piper and packer to Parquet: Direct PUT records, CloudWatch Logs subscriptions delivered through
Firehose, gzip'd bodies, a dataset key at `/firehose`, refusals in Firehose's answer format."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import uuid
from typing import Any

import httpx
import pytest

from bytefreezer.control.models import DatasetSpec
from bytefreezer.ingress.repeats import DeliveredRequests
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy_kinesis import cloudwatch

ARN = "arn:aws:firehose:eu-west-1:123456789012:deliverystream/app-logs"


def delivery(payloads: list[bytes], request_id: str) -> bytes:
    """A delivery request's body, as Firehose writes it."""
    records = [{"data": base64.b64encode(p).decode()} for p in payloads]
    return json.dumps(
        {"requestId": request_id, "timestamp": 1_767_225_600_000, "records": records}
    ).encode()


def headers(key: str, request_id: str, **extra: str) -> dict[str, str]:
    return {
        "X-Amz-Firehose-Protocol-Version": "1.0",
        "X-Amz-Firehose-Request-Id": request_id,
        "X-Amz-Firehose-Source-Arn": ARN,
        "X-Amz-Firehose-Access-Key": key,
        "Content-Type": "application/json",
        **extra,
    }


def test_direct_put_and_cloudwatch_logs_through_firehose_to_parquet(receiver: Receiver) -> None:
    key = receiver.control.create_key("acme", "web").key  # a dataset key: /firehose
    first = str(uuid.uuid4())
    payloads = [json.dumps({"n": n}).encode() + b"\n" for n in range(10)]
    payloads.append(b'{"n": 10}\n{"n": 11}\nplain 12\n')  # records aggregated by the producer
    response = httpx.post(
        f"{receiver.url}/firehose",
        content=gzip.compress(delivery(payloads, first)),
        headers=headers(key, first, **{"Content-Encoding": "gzip"}),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["requestId"] == first and isinstance(answer["timestamp"], int)
    assert "errorMessage" not in answer

    second = str(uuid.uuid4())  # CloudWatch Logs → subscription filter → Firehose
    events = cloudwatch([(1_767_225_600_000, "START 13"), (1_767_225_601_500, "END 14")])
    control = gzip.compress(json.dumps({"messageType": "CONTROL_MESSAGE"}).encode())
    response = httpx.post(
        f"{receiver.url}/acme/web/firehose",
        # log events between plain records, one of them gzip'd: each as it is
        content=delivery([b'{"n": 15}', events, control, gzip.compress(b'{"n": 16}')], second),
        headers=headers(receiver.key, second),  # a tenant key names the dataset in the path
    )
    assert response.status_code == 200 and response.json()["requestId"] == second

    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()

    def number(row: dict[str, Any]) -> int:
        if row.get("n") is not None:
            return int(row["n"])
        return int((row.get("raw") or row["message"]).split()[1])

    assert sorted(number(r) for r in rows) == list(range(17))
    assert {r["firehose_source_arn"] for r in rows} == {ARN}
    by_request = {r["firehose_request_id"] for r in rows if r.get("n") is not None and r["n"] < 15}
    assert by_request == {first}
    start = next(r for r in rows if r.get("message") == "START 13")
    assert (start["timestamp"], start["log_group"]) == (
        "2026-01-01T00:00:00.000Z",
        "/aws/lambda/checkout",
    )
    assert start["firehose_request_id"] == second


@pytest.mark.parametrize(
    ("path", "key", "body", "status", "reason"),
    [
        ("/firehose", None, delivery([b"{}"], "r"), 401, "access key"),
        ("/firehose", "acme", delivery([b"{}"], "r"), 400, "tenant key names the dataset"),
        ("/acme/web/firehose", "bfk_unknown", delivery([b"{}"], "r"), 401, "malformed API key"),
        ("/acme/web/firehose", "acme", b"{nope", 400, "not JSON"),
        ("/acme/web/firehose", "acme", b'{"requestId": "r"}', 400, '"records"'),
        ("/acme/web/firehose", "acme", b'{"records": [{"data": "@@"}]}', 400, "not base64"),
        ("/acme/web/firehose", "acme", b'{"records": [{}]}', 400, "record 0 has no data"),
        ("/acme/nope/firehose", "acme", delivery([b"{}"], "r"), 404, "nope"),
    ],
)
def test_refusals_answer_as_firehose_expects_and_store_nothing(
    receiver: Receiver, path: str, key: str | None, body: bytes, status: int, reason: str
) -> None:
    sent = headers(receiver.key if key == "acme" else key or "", "req-1")
    if key is None:
        del sent["X-Amz-Firehose-Access-Key"]
    response = httpx.post(f"{receiver.url}{path}", content=body, headers=sent)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["requestId"] == "req-1" and isinstance(answer["timestamp"], int)
    assert reason in answer["errorMessage"]
    assert not receiver.storage.intake.list("acme/")


def test_an_empty_delivery_is_answered_and_stores_nothing(receiver: Receiver) -> None:
    response = httpx.post(
        f"{receiver.url}/acme/web/firehose",
        content=delivery([], "empty"),
        headers=headers(receiver.key, "empty"),
    )
    assert response.status_code == 200 and response.json()["requestId"] == "empty"
    assert not receiver.storage.intake.list("acme/")


def stored_lines(receiver: Receiver, prefix: str) -> list[dict[str, Any]]:
    """Every record stored under ``prefix`` of the intake bucket."""
    return [
        json.loads(line)
        for obj in receiver.storage.intake.list(prefix)
        for line in gzip.decompress(receiver.storage.intake.get(obj.key)).splitlines()
        if line
    ]


def test_a_retried_request_is_answered_and_stored_once(receiver: Receiver) -> None:
    """Firehose sends a request again, with the same id, when its answer was late or lost:
    the retry is answered 200 and not stored again, whether it comes after the first try or
    while the first is being stored; the same id sent to another dataset is its own."""
    body = delivery([json.dumps({"n": n}).encode() for n in range(5)], "req-7")
    sent = headers(receiver.key, "req-7")
    url = f"{receiver.url}/acme/web/firehose"
    first = httpx.post(url, content=body, headers=sent)
    again = httpx.post(url, content=body, headers=sent)
    assert first.status_code == again.status_code == 200
    assert again.json()["requestId"] == "req-7" and "errorMessage" not in again.json()
    assert sorted(r["n"] for r in stored_lines(receiver, "acme/web/")) == list(range(5))

    async def together() -> list[int]:  # two tries of one request at once
        async with httpx.AsyncClient() as client:
            both = [
                client.post(url, content=body, headers=headers(receiver.key, "req-8"))
                for _ in range(2)
            ]
            return [r.status_code for r in await asyncio.gather(*both)]

    assert asyncio.run(together()) == [200, 200]
    receiver.control.create_dataset("acme", DatasetSpec(name="other"))
    other = httpx.post(f"{receiver.url}/acme/other/firehose", content=body, headers=sent)
    assert other.status_code == 200
    assert len(stored_lines(receiver, "acme/web/")) == 10  # req-7 and req-8, once each
    assert len(stored_lines(receiver, "acme/other/")) == 5
    assert receiver.state.delivered.repeats == 2


def test_a_request_refused_before_it_was_stored_is_stored_when_retried(receiver: Receiver) -> None:
    body = delivery([b'{"n": 1}'], "req-9")
    url = f"{receiver.url}/acme/web/firehose"
    too_big = httpx.post(url, content=b"{" * 100, headers=headers(receiver.key, "req-9"))
    assert too_big.status_code == 400  # refused: nothing stored under req-9
    retried = httpx.post(url, content=body, headers=headers(receiver.key, "req-9"))
    assert retried.status_code == 200
    assert [r["n"] for r in stored_lines(receiver, "acme/web/")] == [1]
    assert receiver.state.delivered.repeats == 0


def test_delivered_requests_are_forgotten_after_their_time_and_past_their_number() -> None:
    now = [0.0]
    delivered = DeliveredRequests(ttl=60, capacity=2, clock=lambda: now[0])

    async def scenario() -> None:
        for request in ("a", "b", "c"):
            assert await delivered.claim(("t", "d", request))
            delivered.done(("t", "d", request), stored=True)
        assert not await delivered.claim(("t", "d", "c"))  # remembered
        assert await delivered.claim(("t", "d", "a"))  # the oldest, forgotten past capacity
        delivered.done(("t", "d", "a"), stored=True)
        now[0] = 61
        assert await delivered.claim(("t", "d", "c"))  # past its time
        # a retry waiting on a first try that fails stores it itself
        waiting = asyncio.ensure_future(delivered.claim(("t", "d", "c")))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        delivered.done(("t", "d", "c"), stored=False)
        assert await waiting

    asyncio.run(scenario())
