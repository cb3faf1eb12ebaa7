"""The systemd journal read by the proxy's `journald` input (Fluent Bit's `systemd` input,
Vector's `journald` source): `journalctl --follow --output=json` is run and its entries read as
they come; the cursor of the last entry spooled is the checkpoint, so a restart reads on after it
(`--after-cursor`) and a crash reads again what was not spooled (at least once).

An entry becomes a record with its fields as the journal names them (`_SYSTEMD_UNIT`,
`PRIORITY`, `_HOSTNAME`, `__CURSOR`, ...), except `MESSAGE`, which becomes `message`, and
`__REALTIME_TIMESTAMP`, which becomes `timestamp` (RFC 3339 to the microsecond; packer partitions
by it). A field journalctl gives as bytes (not UTF-8) is text when it decodes, base64 otherwise.
A line journalctl writes that is not an entry is kept as a record with `journald_error`.
"""

from __future__ import annotations

import base64
import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from bytefreezer.ingress.proxy import checkpoints
from bytefreezer.ingress.proxy.records import now_rfc3339


def entry_record(line: bytes) -> tuple[bytes, str | None]:
    """The record of one line of ``journalctl --output=json``, and the entry's cursor."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        entry = None
        reason = f"not a journal entry: {exc}"
    else:
        reason = "not a journal entry: not a JSON object"
    if not isinstance(entry, dict):
        raw = line.decode("utf-8", "replace").rstrip("\n")
        return orjson.dumps(
            {"timestamp": now_rfc3339(), "raw": raw, "journald_error": reason}
        ), None
    record: dict[str, Any] = {}
    realtime = entry.pop("__REALTIME_TIMESTAMP", None)
    if isinstance(realtime, str) and realtime.isascii() and realtime.isdigit():
        seconds, micros = divmod(int(realtime), 1_000_000)
        record["timestamp"] = f"{_second(seconds)}.{micros:06d}Z"
    message = entry.pop("MESSAGE", None)
    record["message"] = _text(message) if type(message) is list else message
    record.update(entry)
    for name, value in entry.items():
        if type(value) is list:  # bytes, or a field the entry has several times
            record[name] = _text(value)
    cursor = entry.get("__CURSOR")
    return orjson.dumps(record), cursor if isinstance(cursor, str) else None


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _text(value: Any) -> Any:
    """A field's value: journalctl writes bytes that are not printable UTF-8 as a list of
    numbers, and a field the entry has several times as a list of those values."""
    if isinstance(value, list):
        if value and all(isinstance(b, int) and 0 <= b < 256 for b in value):
            data = bytes(value)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return base64.b64encode(data).decode()
        return [_text(item) for item in value]
    return value


class Journal:
    """Where the journal is read from, the units kept, and the cursor checkpoint."""

    def __init__(
        self,
        checkpoint_file: Path,
        *,
        directory: Path | None = None,
        units: list[str] | None = None,
        read_from: Literal["beginning", "end"] = "beginning",
        journalctl: str = "journalctl",
    ) -> None:
        self.checkpoint_file = checkpoint_file
        self.directory = directory
        self.units = units or []
        self.read_from = read_from
        self.journalctl = journalctl
        saved = checkpoints.load(checkpoint_file) or {}
        self.cursor: str | None = saved.get("cursor")
        self.entries_read = 0

    def command(self) -> list[str]:
        """``journalctl`` following the journal from the checkpoint (or the configured start)."""
        command = [self.journalctl, "--output=json", "--follow", "--all", "--no-pager", "--quiet"]
        if self.directory is not None:
            command.append(f"--directory={self.directory}")
        command += [f"--unit={unit}" for unit in self.units]
        if self.cursor:  # --follow alone shows the last ten after the cursor, not all of them
            command += [f"--after-cursor={self.cursor}", "--no-tail"]
        elif self.read_from == "beginning":
            command.append("--no-tail")
        else:
            command.append("--lines=0")
        return command

    def records(self, lines: list[bytes]) -> tuple[list[bytes], str | None]:
        """The records of complete lines, and the last cursor among them."""
        records = []
        last = None
        for line in lines:
            record, cursor = entry_record(line)
            records.append(record)
            last = cursor or last
        return records, last

    def commit(self, count: int, cursor: str | None) -> None:
        """``count`` entries up to ``cursor`` are spooled: save the cursor (fsync'd)."""
        self.entries_read += count
        if cursor is not None:
            self.cursor = cursor
            checkpoints.save(self.checkpoint_file, {"cursor": cursor})
