"""useragent: browser, version, OS and device from a User-Agent string."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values

_TYPE = pa.struct(
    [
        ("browser", pa.string()),
        ("browser_major", pa.string()),
        ("browser_minor", pa.string()),
        ("browser_patch", pa.string()),
        ("browser_version", pa.string()),
        ("os", pa.string()),
        ("os_major", pa.string()),
        ("os_minor", pa.string()),
        ("os_version", pa.string()),
        ("device", pa.string()),
        ("device_brand", pa.string()),
        ("device_model", pa.string()),
    ]
)


@lru_cache(maxsize=65536)
def parse_user_agent(text: str) -> dict[str, Any]:
    """The parts of one User-Agent string (cached: the same agents repeat a lot)."""
    from ua_parser import parse

    result = parse(text)
    ua, os_, device = result.user_agent, result.os, result.device

    def version(*parts: str | None) -> str | None:
        present = [p for p in parts if p]
        return ".".join(present) or None

    return {
        "browser": ua.family if ua else "Other",
        "browser_major": ua.major if ua else None,
        "browser_minor": ua.minor if ua else None,
        "browser_patch": ua.patch if ua else None,
        "browser_version": version(ua.major, ua.minor, ua.patch) if ua else None,
        "os": os_.family if os_ else "Other",
        "os_major": os_.major if os_ else None,
        "os_minor": os_.minor if os_ else None,
        "os_version": version(os_.major, os_.minor, os_.patch) if os_ else None,
        "device": device.family if device else "Other",
        "device_brand": device.brand if device else None,
        "device_model": device.model if device else None,
    }


class UseragentConfig(TransformConfig):
    """Parse ``source_field``."""

    source_field: str = Field("user_agent", description="Field holding the User-Agent string.")
    target_field: str = Field("ua", description="Object field receiving the parts.")


class Useragent(Transform):
    """User-Agent parsing (ua-parser), each distinct string parsed once."""

    name: ClassVar[str] = "useragent"
    Config: ClassVar[type[TransformConfig]] = UseragentConfig
    example: ClassVar[dict[str, Any]] = {"source_field": "agent"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, UseragentConfig)
        column = get_column(table, cfg.source_field)
        if column is None:
            return table
        encoded = string_values(column).dictionary_encode().combine_chunks()
        parsed = [parse_user_agent(v) for v in encoded.dictionary.to_pylist()]
        return set_column(table, cfg.target_field, pa.array(parsed, _TYPE).take(encoded.indices))
