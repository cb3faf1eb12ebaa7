"""An ingest key as the clients of other products send it: Basic auth's password (what
Elasticsearch and Loki shippers are configured with), an API key (as given, or Elastic's base64
``id:key`` form), or a bearer token. Used by the receiver's bulk and Loki endpoints."""

from __future__ import annotations

import base64
import binascii

from bytefreezer.control.store import KEY_PREFIX


def key_of(authorization: str) -> str | None:
    """The ingest key an ``Authorization`` header carries: Basic auth's password, an API key
    (as given, or Elastic's base64 ``id:key`` form), or a bearer token."""
    scheme, _, value = authorization.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if not value:
        return None
    if scheme == "bearer":
        return value
    if scheme == "apikey":
        if value.startswith(f"{KEY_PREFIX}_"):
            return value
        decoded = _base64(value)
        if decoded is None or ":" not in decoded:
            return value  # not Elastic's encoded form: the key as given
        return decoded.partition(":")[2] or None
    if scheme == "basic":
        decoded = _base64(value)
        if decoded is None:
            return None
        return decoded.partition(":")[2] or None
    return None


def _base64(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
