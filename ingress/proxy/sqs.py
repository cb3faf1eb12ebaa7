"""An SQS queue read by the proxy's `sqs` input (the original ByteFreezer proxy's SQS plugin;
Vector's `aws_sqs` and `aws_s3` sources): a message is deleted from the queue only once every
record it makes is in the spool, so a crash leaves it in the queue to be read again (at least
once) and nothing is lost.

A message's body makes a record per line (a JSON object line as it is, other text wrapped), each
with `sqs_message_id`. With `s3_notifications`, each message is an S3 event notification (sent
by S3 itself, through SNS, or by EventBridge) and every object it announces as created is read
from S3, gzip'd, zstd'd or not, a record per line with `s3_bucket` and `s3_key`; a line holding a
CloudTrail log file (`{"Records": [...]}`) makes a record per event. An object is read in
pieces, at most two in memory at once, so its size is not bounded by memory; the message
stays invisible to other readers meanwhile (its visibility timeout is extended as it goes).

A message that cannot be read (not a notification, an object that is gone or denied) is left in
the queue with its reason logged and counted: the queue's redrive policy moves it to its
dead-letter queue after `maxReceiveCount` receives, which is where SQS users look for them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson
import zstandard

from bytefreezer.compression import InflateError
from bytefreezer.compression import decompressobj as inflater
from bytefreezer.ingress.proxy.records import (
    RecordBlock,
    lines_records_with,
    nonblank_lines,
    records_with,
    split_lines,
)
from bytefreezer.lines import BLANK, is_blank, longest_line

log = logging.getLogger(__name__)

RECEIVE_LIMIT = 10  # SQS's largest ReceiveMessage and DeleteMessageBatch
PIECE_BYTES = 1024 * 1024  # an object is read (as stored), split and spooled this much at a time
_GZIP = 16 + 15


class Unreadable(Exception):
    """A message left in the queue, and why."""


@dataclass(frozen=True)
class ObjectRef:
    """An object an S3 event notification announces."""

    bucket: str
    key: str


def notified_objects(body: str) -> list[ObjectRef]:
    """The objects an S3 event notification announces as created (none for S3's test event,
    for an SNS subscription's confirmation or for other events); ``Unreadable`` if ``body`` is
    no notification S3, SNS or EventBridge sends."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Unreadable("the message is not JSON, so not an S3 event notification") from None
    if not isinstance(message, dict):
        raise Unreadable("the message is not a JSON object, so not an S3 event notification")
    kind = message.get("Type")
    if kind == "Notification" and isinstance(message.get("Message"), str):
        return notified_objects(message["Message"])  # S3 → SNS → SQS
    if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        return []
    if message.get("Event") == "s3:TestEvent":
        return []  # S3 checks the queue when a notification is configured
    if message.get("source") == "aws.s3" and "detail" in message:
        return _eventbridge(message)
    records = message.get("Records")
    if not isinstance(records, list):
        raise Unreadable(
            "the message is not an S3 event notification (no Records, not SNS, not EventBridge)"
        )
    found = []
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            raise Unreadable("a record of the notification is not an S3 event")
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue  # removals, restores, replication: nothing to read
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = unquote_plus(record["s3"]["object"]["key"])  # S3 sends keys URL-encoded
        except (KeyError, TypeError):
            raise Unreadable("an ObjectCreated record names no bucket or key") from None
        found.append(ObjectRef(str(bucket), key))
    return found


def _eventbridge(message: dict[str, Any]) -> list[ObjectRef]:
    if message.get("detail-type") != "Object Created":
        return []
    try:
        detail = message["detail"]
        return [ObjectRef(str(detail["bucket"]["name"]), str(detail["object"]["key"]))]
    except (KeyError, TypeError):
        raise Unreadable("an EventBridge Object Created event names no bucket or key") from None


def object_records(piece: bytes | list[str], meta: dict[str, str]) -> list[bytes] | RecordBlock:
    """Records of a piece of an object (see ``ObjectLines``): a CloudTrail log file's line (one
    JSON object whose ``Records`` is a list of objects) a record per event, any other line as
    ``records_with``; a piece of whole lines with no CloudTrail file among them as one block
    (``lines_records_with``)."""
    if isinstance(piece, bytes):
        if not piece.startswith(b'{"Records"') and b'\n{"Records"' not in piece:
            return lines_records_with(piece, meta)
        piece = nonblank_lines(piece)
    lines = piece
    if not any(line.startswith('{"Records"') for line in lines):
        return records_with(lines, meta)  # the usual case: no CloudTrail file among them
    records: list[bytes] = []
    plain: list[str] = []
    for line in lines:
        if line.startswith('{"Records"'):
            events = _cloudtrail_events(line)
            if events is not None:
                records += records_with(plain, meta)
                plain = []
                records += records_with(events, meta)
                continue
        plain.append(line)
    return records + records_with(plain, meta)


def _cloudtrail_events(line: str) -> list[str] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    events = value.get("Records") if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return None
    return [orjson.dumps(event).decode() for event in events]


class ObjectLines:
    """The lines of one object's body (a botocore stream), gzip or zstd inflated as it is read
    (every member or frame), in pieces of about ``PIECE_BYTES`` as stored: a piece of whole
    lines as read (bytes, each line ending in a newline, for ``lines_records_with``), or, where
    a line longer than ``max_line_bytes`` is cut, its lines as text, blank ones dropped."""

    def __init__(self, body: Any, max_line_bytes: int) -> None:
        self._body = body
        self._max_line = max_line_bytes
        self._inflater: Any = None
        self._new: Callable[[], Any] | None = None  # a new inflater for the next member
        self._kind = ""
        self._first = True
        self._rest = b""
        self._done = False

    def __iter__(self) -> Iterator[bytes | list[str]]:
        return self

    def __next__(self) -> bytes | list[str]:
        """The next piece's complete lines; StopIteration at the end."""
        while not self._done:
            raw = self._body.read(PIECE_BYTES)
            if not raw:
                self._done = True
                data = self._rest
                self._rest = b""
            else:
                data = self._rest + self._inflate(raw)
                end = data.rfind(b"\n")
                if end < 0:  # a line longer than a piece: only what is kept of it is held
                    self._rest = data[: self._max_line * 4 + 4]  # (UTF-8: four bytes a char)
                    continue
                data, self._rest = data[: end + 1], data[end + 1 :]
            if data and not data.endswith(b"\n"):  # the object's last line
                data += b"\n"
            if data and longest_line(data) <= self._max_line:
                return data  # nothing to cut: as read
            lines = [  # not is_blank's call a line: a tenth of the input's time
                line[: self._max_line]
                for line in split_lines(data.decode("utf-8", "replace"))
                if line.strip(BLANK)
            ]
            if lines:
                return lines
        raise StopIteration

    def _inflate(self, raw: bytes) -> bytes:
        if self._first:
            self._first = False
            if raw[:2] == b"\x1f\x8b":
                self._kind, self._new = "gzip", lambda: inflater(_GZIP)
            elif raw[:4] == b"\x28\xb5\x2f\xfd":
                self._kind, self._new = "zstd", zstandard.ZstdDecompressor().decompressobj
            if self._new is not None:
                self._inflater = self._new()
        if self._inflater is None or self._new is None:
            return raw
        new = self._new
        out = []
        try:
            while raw:
                out.append(self._inflater.decompress(raw))
                if not self._inflater.eof:
                    break
                raw = self._inflater.unused_data  # the next member (gzip) or frame (zstd)
                if raw:
                    self._inflater = new()
        except (InflateError, zstandard.ZstdError) as exc:
            raise Unreadable(f"the object is {self._kind} but does not inflate: {exc}") from None
        return b"".join(out)

    def close(self) -> None:
        self._body.close()


@dataclass
class Message:
    """One message received from the queue."""

    id: str
    receipt: str
    body: str
    received: float  # monotonic time of the receive, or of the last extension of its visibility


class QueueReader:
    """The queue at ``queue_url`` (botocore, in the caller's thread; ``endpoint_url`` for an
    SQS other than AWS's, ``s3_endpoint_url`` for an S3 other than AWS's: MinIO, SeaweedFS)."""

    def __init__(
        self,
        queue_url: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        s3_endpoint_url: str | None = None,
        wait_seconds: int = 10,
        visibility_timeout: int = 300,
        max_line_bytes: int = 1024 * 1024,
    ) -> None:
        import botocore.config
        import botocore.session

        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.max_line_bytes = max_line_bytes
        region = region or os.environ.get("AWS_REGION") or "us-east-1"
        session = botocore.session.get_session()
        # a long poll must not be cut by the client's own read timeout
        timeouts = botocore.config.Config(read_timeout=wait_seconds + 30)
        self._sqs = session.create_client(
            "sqs", region_name=region, endpoint_url=endpoint_url, config=timeouts
        )
        s3_config = botocore.config.Config(
            s3={"addressing_style": "path"} if s3_endpoint_url else {}
        )
        self._s3 = session.create_client(
            "s3", region_name=region, endpoint_url=s3_endpoint_url, config=s3_config
        )
        self.messages_read = 0
        self.records_read = 0
        self.objects_read = 0
        self.failed = 0

    def receive(self) -> list[Message]:
        """Up to ten messages, waiting up to ``wait_seconds`` for one (a long poll)."""
        page = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=RECEIVE_LIMIT,
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
        )
        now = time.monotonic()
        return [
            Message(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""), now)
            for m in page.get("Messages", [])
        ]

    def body_records(self, message: Message) -> list[bytes]:
        """The records of a message whose body is the data."""
        lines = [line for line in split_lines(message.body) if not is_blank(line)]
        lines = [line[: self.max_line_bytes] for line in lines]
        return records_with(lines, {"sqs_message_id": message.id})

    def open(self, ref: ObjectRef) -> ObjectLines:
        """The lines of an announced object; ``Unreadable`` if S3 refuses it (gone, denied)."""
        from botocore.exceptions import ClientError

        try:
            found = self._s3.get_object(Bucket=ref.bucket, Key=ref.key)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise Unreadable(
                f"s3://{ref.bucket}/{ref.key} cannot be read: "
                f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
            ) from None
        return ObjectLines(found["Body"], self.max_line_bytes)

    def keep_invisible(self, message: Message) -> None:
        """Extend the message's visibility once half of it has passed (a large object)."""
        now = time.monotonic()
        if now - message.received < self.visibility_timeout / 2:
            return
        self._sqs.change_message_visibility(
            QueueUrl=self.queue_url,
            ReceiptHandle=message.receipt,
            VisibilityTimeout=self.visibility_timeout,
        )
        message.received = now

    def delete(self, messages: list[Message]) -> None:
        """Delete messages whose records are spooled."""
        self._batch("delete_message_batch", messages, {})
        self.messages_read += len(messages)

    def release(self, messages: list[Message]) -> None:
        """Make messages visible again at once (taken but not spooled: the proxy is stopping)."""
        self._batch("change_message_visibility_batch", messages, {"VisibilityTimeout": 0})

    def _batch(self, operation: str, messages: list[Message], extra: dict[str, Any]) -> None:
        for start in range(0, len(messages), RECEIVE_LIMIT):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt, **extra}
                for i, m in enumerate(messages[start : start + RECEIVE_LIMIT])
            ]
            answer = getattr(self._sqs, operation)(QueueUrl=self.queue_url, Entries=entries)
            for failure in answer.get("Failed", []):
                # a receipt that expired: the message is visible again and is read again
                log.warning(
                    "sqs %s of a message of %s failed: %s %s", operation, self.queue_url,
                    failure.get("Code"), failure.get("Message"),
                )  # fmt: skip
