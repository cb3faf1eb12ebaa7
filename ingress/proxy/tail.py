"""Files followed as they grow (the proxy's `file` input; what Fluent Bit's `tail`, Vector's
`file` source and Filebeat do): glob patterns are looked up each poll, each file is read from
its checkpoint to its last complete line, and a file's checkpoint moves only once its lines are
in the spool. A crash between the two reads the lines again (at least once); nothing that was not
spooled is skipped.

Files are known by device and inode, so a file renamed by rotation keeps being read to its end
under its new name while a new file at the old name is read from its start. A file shorter than
its checkpoint was truncated (copytruncate) and is read from its start. A checkpoint also keeps
a hash of the file's first bytes, so a new file that got a deleted file's inode is not read from
the old file's offset.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from bytefreezer.ingress.proxy import checkpoints
from bytefreezer.ingress.proxy.containers import ContainerFormat, Records, container_records
from bytefreezer.ingress.proxy.inotify import pattern_directory
from bytefreezer.ingress.proxy.records import split_lines
from bytefreezer.lines import longest_line, newline_positions

FINGERPRINT_BYTES = 256
READ_BYTES = 4 * 1024 * 1024  # read per file and poll at most
GONE_AFTER_SECONDS = 10.0  # a file no pattern names any more is let go this long after its end


@dataclass
class _Followed:
    path: str
    offset: int
    fingerprint: str  # sha256 of the first min(FINGERPRINT_BYTES, offset) bytes ("" for none)
    skipping: bool = False  # inside a line longer than the limit: drop bytes up to its end
    idle_since: float | None = None
    fd: int | None = None  # open while followed: read under any name, or none, it gets
    open_end: int = -1  # where the multiline group still open ended when last read
    open_since: float = 0.0  # when a line last joined it


@dataclass
class Read:
    """Complete lines of one file from its checkpoint, and where its checkpoint goes once they
    are spooled: the lines as cut or joined (``cut``), or, for the usual read, where no line is
    cut or joined, none (``raw`` holds them as read, each ending in a newline)."""

    key: str
    path: str
    raw: bytes
    cut: list[str] | None
    offset: int
    fingerprint: str
    skipping: bool = False
    records: list[bytes] | None = None  # made already (a container runtime's log lines)

    @functools.cached_property
    def lines(self) -> list[str]:
        """The lines, read as UTF-8 with errors replaced, a carriage return at the end of a
        line dropped."""
        if self.cut is not None:
            return self.cut
        return split_lines(self.raw.decode("utf-8", "replace"))

    @property
    def count(self) -> int:
        if self.records is not None:
            return len(self.records)
        return self.raw.count(b"\n") if self.cut is None else len(self.cut)


def _key(stat: os.stat_result) -> str:
    return f"{stat.st_dev}:{stat.st_ino}"


def _fingerprint(fd: int, length: int) -> str:
    if length <= 0:
        return ""
    return hashlib.sha256(os.pread(fd, min(length, FINGERPRINT_BYTES), 0)).hexdigest()


def _open_as(path: str, key: str) -> int | None:
    """``path`` opened for reading if it is still the file ``key`` names."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    if _key(os.fstat(fd)) != key:
        os.close(fd)
        return None
    return fd


class Tailer:
    """The files ``patterns`` match, followed from the checkpoints in ``checkpoint_file``."""

    def __init__(
        self,
        patterns: list[str],
        checkpoint_file: Path,
        *,
        read_from: Literal["beginning", "end"] = "beginning",
        max_line_bytes: int = 1024 * 1024,
        multiline_start: str | None = None,
        multiline_timeout: float = 1.0,
        container_format: ContainerFormat | None = None,
    ) -> None:
        self.patterns = patterns
        self.container_format = container_format
        self.multiline_start = re.compile(multiline_start) if multiline_start else None
        self.multiline_timeout = multiline_timeout
        self.checkpoint_file = checkpoint_file
        self.read_from = read_from
        self.max_line_bytes = max_line_bytes
        self.lines_read = 0
        self._files: dict[str, _Followed] = {}
        self._first_look = True
        saved = checkpoints.load(checkpoint_file)
        if saved is not None:
            self._files = {key: _Followed(**value) for key, value in saved.items()}
            self._first_look = False
            for key, followed in list(self._files.items()):
                followed.fd = _open_as(followed.path, key)
                if followed.fd is None:
                    del self._files[key]  # renamed away or deleted while the proxy was down

    @property
    def followed(self) -> int:
        return len(self._files)

    def directories(self) -> set[str]:
        """Where lines and files this tailer follows appear: the directories of the files it
        follows, and of its patterns, down to their first wildcard."""
        found = {pattern_directory(pattern) for pattern in self.patterns}
        return found | {os.path.dirname(f.path) or "." for f in list(self._files.values())}

    def poll(self) -> list[Read]:
        """What each followed file has past its checkpoint (not moving the checkpoint)."""
        found: dict[str, str] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                if os.path.isfile(path):
                    found.setdefault(_key(stat), path)
        for key, path in found.items():
            followed = self._files.get(key)
            if followed is None or followed.fd is None:
                fd = _open_as(path, key)
                if fd is None:
                    continue
                if followed is None:
                    size = os.fstat(fd).st_size
                    start = size if self._first_look and self.read_from == "end" else 0
                    followed = self._files[key] = _Followed(path, start, _fingerprint(fd, start))
                followed.fd = fd
            followed.path = path
        self._first_look = False
        reads = []
        now = time.monotonic()
        for key, followed in list(self._files.items()):
            read = self._read(key, followed)
            if read is not None:
                followed.idle_since = None
                reads.append(read)
            elif key in found:
                followed.idle_since = None
            elif followed.idle_since is None:
                followed.idle_since = now
            elif now - followed.idle_since > GONE_AFTER_SECONDS:
                # renamed away (rotation) or deleted, and read to its end: let go of it
                if followed.fd is not None:
                    os.close(followed.fd)
                del self._files[key]
        return reads

    def _read(self, key: str, followed: _Followed) -> Read | None:
        fd = followed.fd
        if fd is None:
            return None
        try:
            size = os.fstat(fd).st_size
            offset = followed.offset
            if size < offset or (offset and _fingerprint(fd, offset) != followed.fingerprint):
                offset = 0  # truncated, or another file under a reused inode
                followed.skipping = False
            if size == offset:
                return None
            data = os.pread(fd, READ_BYTES, offset)
        except OSError:
            return None
        usual = (
            self.multiline_start is None and self.container_format is None and not followed.skipping
        )
        raw = self._whole_lines(data) if usual else None
        if raw is not None:
            return (
                self._done(key, followed, fd, raw, None, offset, len(raw), False) if raw else None
            )
        lines, ends, used, skipping = self._lines(data, followed.skipping)
        records: list[bytes] | None = None
        closed = used
        if self.container_format is not None:
            made = self._containers(followed, lines, ends, offset)
            records, closed = made.records, made.used
        elif self.multiline_start is not None:
            lines, closed = self._grouped(followed, lines, ends, offset)
        if closed != used:  # the last group (a line's parts) waits in the file, read again
            skipping = followed.skipping if closed == 0 else False
            used = closed
        if not used:
            return None
        cut = None if records is not None else lines
        return self._done(key, followed, fd, b"", cut, offset, used, skipping, records)

    def _done(
        self,
        key: str,
        followed: _Followed,
        fd: int,
        raw: bytes,
        cut: list[str] | None,
        offset: int,
        used: int,
        skipping: bool,
        records: list[bytes] | None = None,
    ) -> Read:
        end = offset + used
        fingerprint = followed.fingerprint
        if offset < FINGERPRINT_BYTES or not fingerprint:
            fingerprint = _fingerprint(fd, end)
        return Read(key, followed.path, raw, cut, end, fingerprint, skipping, records)

    def _containers(
        self, followed: _Followed, lines: list[str], ends: list[int], offset: int
    ) -> Records:
        """The records of a container runtime's log lines (see ``containers``). A line whose
        last part has not come is read again at each poll until it comes, or until no part has
        joined it for ``multiline_timeout`` seconds."""
        assert self.container_format is not None
        made = container_records(
            self.container_format, lines, ends, followed.path, self.max_line_bytes
        )
        if made.open_end and self._waited(followed, offset + made.open_end):
            made.close()
        return made

    def _waited(self, followed: _Followed, open_end: int) -> bool:
        """Whether the group still open at the end of a read (ending at ``open_end`` in the
        file) has had nothing join it for ``multiline_timeout`` seconds: it is complete."""
        now = time.monotonic()
        if followed.open_end != open_end:
            followed.open_end, followed.open_since = open_end, now
            return False
        return now - followed.open_since >= self.multiline_timeout

    def _whole_lines(self, data: bytes) -> bytes | None:
        """The complete lines at the start of ``data`` as they are, when none is to be cut and
        the read does not end inside a line to be cut (else None: ``_lines`` cuts them)."""
        end = data.rfind(b"\n") + 1
        if len(data) - end > self.max_line_bytes:
            return None
        complete = data[:end]
        if end > self.max_line_bytes and longest_line(complete) > self.max_line_bytes:
            return None
        return complete

    def _lines(self, data: bytes, skipping: bool) -> tuple[list[str], list[int], int, bool]:
        """The complete lines at the start of ``data`` (each cut to ``max_line_bytes``), where
        each ends in ``data``, the bytes read past, and whether the read ends inside a line
        over the limit, whose start became a line and whose rest up to its newline is
        dropped."""
        end = data.rfind(b"\n") + 1
        lines: list[str] = []
        ends: list[int] = []
        complete = data[:end]
        raws: list[bytes] = []
        if complete and not skipping and longest_line(complete) <= self.max_line_bytes:
            # the usual read: no line to cut, decoded at once (a newline is never inside a
            # UTF-8 sequence, so this is what decoding line by line gives), and where each
            # line ends found by numpy
            lines = complete.decode("utf-8", "replace").split("\n")[:-1]
            if b"\r" in complete:
                lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            ends = (newline_positions(np.frombuffer(complete, np.uint8)) + 1).tolist()
        elif complete:
            raws = complete.split(b"\n")[:-1]
        if raws:
            at = 0
            for raw in raws:
                at += len(raw) + 1
                if skipping:  # the rest of a line already cut
                    skipping = False
                    continue
                text = raw[: self.max_line_bytes + 1].decode("utf-8", "replace")
                text = text[:-1] if text.endswith("\r") else text
                lines.append(text[: self.max_line_bytes])
                ends.append(at)
        rest = len(data) - end
        if skipping and rest:  # still inside the cut line: no newline came (end == 0)
            return lines, ends, len(data), True
        if rest > self.max_line_bytes:
            lines.append(data[end : end + self.max_line_bytes].decode("utf-8", "replace"))
            ends.append(len(data))
            return lines, ends, len(data), True
        return lines, ends, end, skipping

    def _grouped(
        self, followed: _Followed, lines: list[str], ends: list[int], offset: int
    ) -> tuple[list[str], int]:
        """``lines`` joined into multiline records, each begun by a line ``multiline_start``
        matches, and where the last complete one ends. The last group is complete once no line
        has joined it for ``multiline_timeout`` seconds (until then it is read again from the
        file at each poll), or when it reaches ``max_line_bytes``."""
        assert self.multiline_start is not None
        records: list[str] = []
        group: list[str] = []
        size = group_end = closed_end = 0
        for line, end in zip(lines, ends, strict=True):
            if group and (
                self.multiline_start.match(line) or size + len(line) > self.max_line_bytes
            ):
                records.append("\n".join(group))
                closed_end, group, size = group_end, [], 0
            group.append(line)
            size += len(line) + 1
            group_end = end
        if group and self._waited(followed, offset + group_end):
            records.append("\n".join(group))
            closed_end = group_end
        return records, closed_end

    def commit(self, read: Read) -> None:
        """``read``'s lines are spooled: move its file's checkpoint past them (``save`` writes
        the checkpoints)."""
        followed = self._files.get(read.key)
        if followed is not None:
            followed.offset = read.offset
            followed.fingerprint = read.fingerprint
            followed.skipping = read.skipping
        self.lines_read += read.count

    def close(self) -> None:
        """Close the files' descriptors."""
        for followed in self._files.values():
            if followed.fd is not None:
                os.close(followed.fd)
                followed.fd = None

    def save(self) -> None:
        """Write the checkpoints (see ``checkpoints.save``)."""
        state = {
            key: {
                "path": f.path,
                "offset": f.offset,
                "fingerprint": f.fingerprint,
                "skipping": f.skipping,
            }
            for key, f in self._files.items()
        }
        checkpoints.save(self.checkpoint_file, state)
