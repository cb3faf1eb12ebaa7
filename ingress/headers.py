"""The original proxy's `X-Proxy-*` headers: validated, and kept as object metadata."""

from __future__ import annotations

import re

from bytefreezer.ingress.bodies import BodyError

PROXY_HEADERS = (
    "x-proxy-filename",
    "x-proxy-line-count",
    "x-proxy-original-bytes",
    "x-proxy-created-at",
    "x-proxy-data-hint",
    "x-proxy-batch-id",
)
_SAFE_VALUE = re.compile(r"\A[\x20-\x7e]{1,512}\Z")
_NUMERIC = ("x-proxy-line-count", "x-proxy-original-bytes")


def proxy_metadata(headers: dict[str, str], tenant: str, dataset: str) -> dict[str, str]:
    """Metadata from the `X-Proxy-*` headers present; ``BodyError`` 400 for a bad one."""
    metadata: dict[str, str] = {}
    for name in PROXY_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if not _SAFE_VALUE.match(value):
            raise BodyError(400, f"{name} must be 1-512 printable ASCII characters")
        if name in _NUMERIC and not value.isdigit():
            raise BodyError(400, f"{name} must be a non-negative integer, not {value!r}")
        metadata[name.removeprefix("x-")] = value
    filename = metadata.get("proxy-filename")
    if filename is not None:
        if ".." in filename or "/" in filename or "\\" in filename:
            raise BodyError(400, "X-Proxy-Filename must not contain '..' or path separators")
        if not filename.startswith(f"{tenant}--{dataset}--"):
            raise BodyError(
                400, f"X-Proxy-Filename must start with '{tenant}--{dataset}--' to match the path"
            )
    return metadata
