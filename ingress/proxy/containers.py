"""Container runtimes' log files, as a `file` input with `container_format` reads them (what
Fluent Bit's `cri` and `docker` parsers with its kubernetes filter's path metadata, and Vector's
`kubernetes_logs` source, do).

* ``cri`` (containerd, CRI-O: ``/var/log/pods/*/*/*.log``, ``/var/log/containers/*.log``): each
  line is ``<time> <stream> <tag> <message>``; a tag ``P`` marks a part of a longer line whose
  rest follows, ``F`` its last part.
* ``docker`` (Docker's `json-file` driver, ``/var/lib/docker/containers/*/*-json.log``): each
  line is ``{"log": "...\\n", "stream": "stdout", "time": "..."}``; a `log` not ending in a
  newline is a part whose rest follows.

A container's line becomes one record, its parts joined: ``{"timestamp": <the runtime's time of
its first part>, "stream": ..., "log": <the line, without its newline>, "file": <path>,
"kubernetes": {...}}``, with ``kubernetes`` holding what the file's path tells under
Kubernetes' log layouts (namespace, pod, its uid, container, container id). A line that is not
in the format is kept, as ``raw`` with the time it was read and the reason. The parts of a line
still being written wait in the file (the checkpoint stays before them) until its last part
comes, it reaches the input's line limit, or no part has come for its multiline timeout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bytefreezer.ingress.proxy.records import now_rfc3339
from bytefreezer.lines import is_blank

ContainerFormat = Literal["cri", "docker"]
FORMATS: tuple[ContainerFormat, ...] = ("cri", "docker")

# Kubernetes' two layouts, in the names Fluent Bit's kubernetes filter gives
_LAYOUTS = (
    # /var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restarts>.log
    re.compile(
        r"(?:^|/)(?P<namespace_name>[^/_]+)_(?P<pod_name>[^/_]+)_(?P<pod_id>[0-9a-fA-F-]{8,})"
        r"/(?P<container_name>[^/_]+)/\d+\.log$"
    ),
    # /var/log/containers/<pod>_<namespace>_<container>-<64 hex container id>.log
    re.compile(
        r"(?:^|/)(?P<pod_name>[^/_]+)_(?P<namespace_name>[^/_]+)_(?P<container_name>[^/_]+)"
        r"-(?P<docker_id>[0-9a-f]{64})\.log$"
    ),
)


def kubernetes_fields(path: str) -> dict[str, str]:
    """What a container log file's path says under Kubernetes' layouts; empty for any other
    path."""
    for layout in _LAYOUTS:
        found = layout.search(path)
        if found is not None:
            return found.groupdict()
    return {}


# A line of the log file as its format reads it: the runtime's time, the stream, the text, and
# whether it is the last part of its container's line; or why it is not one.
_Part = tuple[str, str, str, bool]
_NOT_CRI = "not a CRI log line (<time> <stream> <tag> <message>)"


def _cri(line: str) -> _Part | str:
    pieces = line.split(" ", 3)
    if len(pieces) < 3:
        return _NOT_CRI
    time, stream, tags = pieces[0], pieces[1], pieces[2]
    tag = tags if len(tags) == 1 else tags.split(":", 1)[0]
    if (tag != "F" and tag != "P") or "T" not in time:
        return _NOT_CRI
    return time, stream, pieces[3] if len(pieces) == 4 else "", tag == "F"


def _docker(line: str) -> _Part | str:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "not a Docker json-file log line (not JSON)"
    if not isinstance(entry, dict) or not isinstance(entry.get("log"), str):
        return 'not a Docker json-file log line (no "log" text)'
    text: str = entry["log"]
    last = text.endswith("\n")
    if last:
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    return str(entry.get("time") or ""), str(entry.get("stream") or ""), text, last


_PARSERS = {"cri": _cri, "docker": _docker}


@dataclass
class Records:
    """The records of a read's lines, and where in the read the lines they used end (the parts
    of a line still open after that are read again next time)."""

    records: list[bytes] = field(default_factory=list)
    used: int = 0  # bytes of the read the records account for
    open_end: int = 0  # where the open line's last part ends (0: none open)
    open_record: bytes = b""  # the open line's parts so far, as a partial record

    def close(self) -> None:
        """The open line waited long enough: its parts so far are a record."""
        if self.open_end:
            self.records.append(self.open_record)
            self.used, self.open_end, self.open_record = self.open_end, 0, b""


def container_records(
    fmt: ContainerFormat,
    lines: Sequence[str],
    ends: Sequence[int],
    path: str,
    max_line_bytes: int,
    *,
    close_open: bool = False,
) -> Records:
    """The records of ``lines`` (``ends``: where each ends in the read) of the file at
    ``path``; a line's parts still open at the end are left for the next read unless
    ``close_open`` (they waited long enough), or they reach ``max_line_bytes``."""
    parse = _PARSERS[fmt]
    kubernetes = kubernetes_fields(path)
    # where every record of the file ends: encoded once, not for each line
    tail = b',"file":' + orjson.dumps(path)
    if kubernetes:
        tail += b',"kubernetes":' + orjson.dumps(kubernetes)
    tail += b"}"
    out = Records()
    records = out.records
    dumps = orjson.dumps
    first: _Part | None = None
    texts: list[str] = []
    size = 0

    def record(part: _Part, text: str, partial: bool = False) -> bytes:
        value: dict[str, Any] = {"timestamp": part[0], "stream": part[1], "log": text}
        if partial:
            value["partial"] = True
        return dumps(value)[:-1] + tail

    for line, end in zip(lines, ends, strict=True):
        part = parse(line)
        if type(part) is tuple and part[3] and first is None and len(part[2]) < max_line_bytes:
            # the usual line: whole, nothing open before it
            records.append(
                dumps({"timestamp": part[0], "stream": part[1], "log": part[2]})[:-1] + tail
            )
            out.used = end
            continue
        if is_blank(line):  # no record, as in any other file
            if first is None:
                out.used = end
            continue
        if isinstance(part, str):
            if first is not None:  # a line's parts cut short by a line of something else
                records.append(record(first, "".join(texts), partial=True))
                first, texts, size = None, [], 0
            raw = {"timestamp": now_rfc3339(), "raw": line, "container_log_error": part}
            records.append(dumps(raw)[:-1] + tail)
            out.used = end
            continue
        if first is None:
            first = part
        texts.append(part[2])
        size += len(part[2])
        if part[3] or size >= max_line_bytes:
            text = "".join(texts)
            records.append(record(first, text[:max_line_bytes], partial=not part[3]))
            first, texts, size = None, [], 0
            out.used = end
        else:
            out.open_end = end
    if first is None:
        out.open_end = 0
    else:
        out.open_record = record(first, "".join(texts), partial=True)
        if close_open:
            out.close()
    return out
