"""redact: mask emails, card numbers, IP addresses and custom patterns."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from bytefreezer.transforms.base import Context, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column

BUILTIN_PATTERNS = {
    "email": r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}",
    "credit_card": r"\b(?:\d[ \-]?){12,18}\d\b",
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    "ipv6": r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4})?",
}


class RedactConfig(TransformConfig):
    """What to find and what to put in its place."""

    fields: list[str] = Field(
        default_factory=list, description="Fields scanned (default every text field)."
    )
    patterns: list[Literal["email", "credit_card", "ipv4", "ipv6"]] = Field(
        default_factory=lambda: ["email", "credit_card"],  # type: ignore[arg-type]
        description="Built-in patterns used.",
    )
    custom_patterns: list[str] = Field(default_factory=list, description="Extra RE2 patterns.")
    replacement: str = Field("[REDACTED]", description="Fixed text put in place of a match.")
    hash_key: str | None = Field(
        None,
        description="Replace each match by `hmac-sha256(key, match)[:16]` instead of the fixed "
        "text, so equal values stay joinable without being readable.",
    )

    @model_validator(mode="after")
    def _some(self) -> RedactConfig:
        if not self.patterns and not self.custom_patterns:
            raise ValueError("give `patterns` or `custom_patterns`")
        for pattern in self.custom_patterns:
            try:
                pc.replace_substring_regex(pa.array([""]), pattern=pattern, replacement="")
            except pa.ArrowInvalid as exc:
                raise ValueError(f"invalid pattern {pattern!r}: {exc}") from None
        return self


class Redact(Transform):
    """Mask sensitive values in text fields."""

    name: ClassVar[str] = "redact"
    Config: ClassVar[type[TransformConfig]] = RedactConfig
    example: ClassVar[dict[str, Any]] = {"patterns": ["email", "ipv4"], "replacement": "***"}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, RedactConfig)
        self._patterns = [BUILTIN_PATTERNS[p] for p in config.patterns] + list(
            config.custom_patterns
        )
        self._combined = re.compile("|".join(f"(?:{p})" for p in self._patterns))

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, RedactConfig)
        names = cfg.fields or [
            f.name
            for f in table.schema
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]
        for name in names:
            column = get_column(table, name)
            if column is None or not (
                pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            ):
                continue
            if cfg.hash_key is None:
                for pattern in self._patterns:
                    column = pc.replace_substring_regex(
                        column, pattern=pattern, replacement=cfg.replacement
                    )
            else:
                column = self._hashed(column, cfg.hash_key.encode())
            table = set_column(table, name, column)
        return table

    def _hashed(self, column: pa.ChunkedArray, key: bytes) -> pa.Array:
        def mask(match: re.Match[str]) -> str:
            return hmac.new(key, match.group(0).encode(), hashlib.sha256).hexdigest()[:16]

        encoded = column.dictionary_encode().combine_chunks()
        masked = [
            None if v is None else self._combined.sub(mask, v)
            for v in encoded.dictionary.to_pylist()
        ]
        return pa.array(masked, pa.string()).take(encoded.indices)
