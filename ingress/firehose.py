"""Amazon Data Firehose's HTTP endpoint delivery in: a Firehose stream whose destination is an
HTTP endpoint (an existing stream, with what feeds it unchanged: Direct PUT, a Kinesis data
stream, CloudWatch Logs subscriptions, AWS WAF or other AWS services) pointed at the receiver's
webhook port, at `POST /firehose` or `/{tenant}/{dataset}/firehose`.

The body is Firehose's delivery request, `{"requestId", "timestamp", "records": [{"data"}]}`,
gzip'd when the stream's content encoding is GZIP. Each record's data (base64) is a record per
line, or a record per log event when it is a CloudWatch Logs subscription message (see
``cloudwatch``), each with `firehose_request_id` and `firehose_source_arn` (the
`X-Amz-Firehose-Source-Arn` header) unless it has fields of those names. The key is a bytefreezer
ingest key in `X-Amz-Firehose-Access-Key` (the stream's access key); at `/firehose` a dataset key
sends to its dataset, and the longer path names the tenant and dataset for any ingest key.
Firehose's answers: 200 `{"requestId", "timestamp"}` once the records are durable, and the same
with `errorMessage` otherwise (Firehose retries a request that is not answered 200, with the
same request id, and backs it up to S3 once its retry duration is over). A retry of a request
this receiver has stored is answered 200 and not stored again (``repeats``).
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import msgspec
from starlette.responses import JSONResponse

from bytefreezer.ingress.bodies import NOT_DECODED, BodyError, decompress, json_list
from bytefreezer.ingress.cloudwatch import payloads_records

REQUEST_ID = "x-amz-firehose-request-id"
SOURCE_ARN = "x-amz-firehose-source-arn"
ACCESS_KEY = "x-amz-firehose-access-key"


def key_of(headers: Any) -> str | None:
    """The ingest key of a request: the stream's access key."""
    key = headers.get(ACCESS_KEY, "").strip()
    return key or None


def request_id(headers: Any) -> str | None:
    """The request's id, which Firehose keeps when it sends the request again."""
    value = headers.get(REQUEST_ID, "").strip()
    return value or None


class _Record(msgspec.Struct):
    data: bytes  # base64 in the request, decoded by msgspec


class _Delivery(msgspec.Struct, rename="camel"):
    records: list[_Record]
    request_id: str = ""


_DELIVERY = msgspec.json.Decoder(_Delivery)


def request_records(raw: bytes, encoding: str, limit: int, headers: Any) -> list[bytes]:
    """The records of a delivery request; ``BodyError`` 400, 413, 415."""
    if not raw:
        raise BodyError(400, "empty body")
    data = decompress(raw, encoding, limit)
    try:  # the records' data decoded with the request, in one call
        delivery = _DELIVERY.decode(data)
        payloads, given = [record.data for record in delivery.records], delivery.request_id
    except NOT_DECODED:
        payloads, given = _payloads(data)  # says what is wrong, or reads what msgspec did not
    meta = {"firehose_request_id": str(headers.get(REQUEST_ID) or given)}
    if headers.get(SOURCE_ARN):
        meta["firehose_source_arn"] = headers[SOURCE_ARN]
    return payloads_records(payloads, meta)


def _payloads(data: bytes) -> tuple[list[bytes], str]:
    """The records' data and the request's id, record by record."""
    request, records = json_list(
        data, "records", 'Firehose delivery request is {"requestId", "records": [...]}'
    )
    payloads: list[bytes] = []
    for number, record in enumerate(records):
        encoded = record.get("data") if isinstance(record, dict) else None
        if not isinstance(encoded, str):
            raise BodyError(400, f"record {number} has no data")
        try:
            payloads.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise BodyError(400, f"record {number}'s data is not base64") from None
    return payloads, str(request.get("requestId", ""))


def answer(headers: Any, status: int = 200, reason: str | None = None) -> JSONResponse:
    """Firehose's response body: the request's id and the time, and why when not 200."""
    body: dict[str, Any] = {
        "requestId": headers.get(REQUEST_ID, ""),
        "timestamp": int(time.time() * 1000),
    }
    if reason is not None:
        body["errorMessage"] = reason
    return JSONResponse(body, status_code=status)
