"""RELP, the Reliable Event Logging Protocol (rsyslog's omrelp, librelp clients): syslog messages
over TCP, each acknowledged by the server. The proxy's `relp` input answers a message's
transaction with `200 OK` only once the message is in its spool, fsync'd; a client resends what
was not acknowledged when its connection ends, so nothing acknowledged is lost and nothing is
lost unacknowledged.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``. The client opens a session (``open``,
with its offers), sends ``syslog`` frames, and ends with ``close``; the server answers each frame
with an ``rsp`` of the same transaction number. This module parses frames from a stream and
writes the answers; ``ProxyService`` runs the sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

SOFTWARE = b"bytefreezer-proxy"
_MAX_TXNR_DIGITS = 9  # RELP's transaction numbers go up to 999,999,999
_MAX_COMMAND = 32
_MAX_LENGTH_DIGITS = 9


class RelpError(Exception):
    """A stream that breaks the protocol: its session is ended."""


@dataclass(frozen=True, slots=True)
class Frame:
    txnr: int
    command: str
    data: bytes


class FrameReader:
    """Frames from a stream fed in chunks of any size; ``max_data`` bounds one frame's data."""

    def __init__(self, max_data: int) -> None:
        self._buffer = bytearray()
        self._max_data = max_data

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames completed by ``chunk``; ``RelpError`` for a stream that is no RELP."""
        self._buffer += chunk
        frames: list[Frame] = []
        at = 0
        while True:
            found = self._frame(at)
            if found is None:
                break
            frame, at = found
            frames.append(frame)
        if at:
            del self._buffer[:at]  # once per chunk, not once per frame
        return frames

    def _frame(self, at: int) -> tuple[Frame, int] | None:
        buffer = self._buffer
        txnr_end = buffer.find(b" ", at, at + _MAX_TXNR_DIGITS + 1)
        if txnr_end < 0:
            self._check_incomplete(at, _MAX_TXNR_DIGITS, "transaction number")
            return None
        command_end = buffer.find(b" ", txnr_end + 1, txnr_end + _MAX_COMMAND + 2)
        if command_end < 0:
            self._check_incomplete(txnr_end + 1, _MAX_COMMAND, "command")
            return None
        length_end = command_end + 1
        while length_end < len(buffer) and 0x30 <= buffer[length_end] <= 0x39:
            length_end += 1
        if length_end - command_end - 1 > _MAX_LENGTH_DIGITS:
            raise RelpError("data length has too many digits")
        if length_end == len(buffer):
            return None  # the length (or what follows it) has not arrived yet
        txnr = _number(buffer[at:txnr_end], "transaction number")
        command = bytes(buffer[txnr_end + 1 : command_end])
        if not command.isalpha() or not command.isascii():
            raise RelpError(f"command {command[:_MAX_COMMAND]!r} is not a RELP command")
        length = _number(buffer[command_end + 1 : length_end], "data length")
        if length > self._max_data:
            raise RelpError(f"frame of {length} bytes exceeds the limit of {self._max_data}")
        if length == 0:
            if buffer[length_end] != 0x0A:
                raise RelpError("a frame without data must end with LF after its length")
            return Frame(txnr, command.decode(), b""), length_end + 1
        if buffer[length_end] != 0x20:
            raise RelpError("the data length must be followed by a space")
        end = length_end + 1 + length
        if len(buffer) <= end:
            return None
        if buffer[end] != 0x0A:
            raise RelpError("frame does not end with LF after its data")
        return Frame(txnr, command.decode(), bytes(buffer[length_end + 1 : end])), end + 1

    def _check_incomplete(self, start: int, digits: int, what: str) -> None:
        """A field still without its space is either still arriving or too long."""
        if len(self._buffer) - start > digits + 1:
            raise RelpError(f"{what} is missing or too long")


def _number(digits: bytearray, what: str) -> int:
    if not digits or not digits.isdigit():
        raise RelpError(f"{what} {bytes(digits)!r} is not a number")
    return int(digits)


def response(txnr: int, data: bytes) -> bytes:
    """The ``rsp`` frame answering transaction ``txnr``."""
    if not data:
        return b"%d rsp 0\n" % txnr
    return b"%d rsp %d %s\n" % (txnr, len(data), data)


OK = b"200 OK"


def opened(frame: Frame) -> bytes:
    """The answer to ``open``: 200 with the server's offers (RELP version 0, ``syslog``), or 500
    when the client does not offer the ``syslog`` command."""
    offers = dict(line.partition(b"=")[::2] for line in frame.data.split(b"\n") if line.strip())
    commands = offers.get(b"commands", b"syslog").split(b",")
    if b"syslog" not in commands:
        return response(frame.txnr, b"500 required command syslog not offered by the client")
    return response(
        frame.txnr,
        OK + b"\nrelp_version=0\nrelp_software=" + SOFTWARE + b"\ncommands=syslog",
    )


SERVER_CLOSE = b"0 serverclose 0\n"
