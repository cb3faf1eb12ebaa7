"""fingerprint: a hash of chosen fields (MD5, SHA1, SHA256, SHA512, optionally keyed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class FingerprintConfig(TransformConfig):
    """Hash ``fields`` into ``target_field``."""

    fields: list[str] = Field(min_length=1, description="Fields hashed, in this order.")
    target_field: str = Field("fingerprint", description="Field receiving the hash.")
    method: Literal["MD5", "SHA1", "SHA256", "SHA512"] = Field("SHA256", description="Hash.")
    key: str | None = Field(None, description="HMAC key; a plain hash when absent.")
    base64: bool = Field(False, description="Base64 instead of hex.")
    separator: str = Field("|", description="Joins the field values before hashing.")


class Fingerprint(Transform):
    """A stable fingerprint of a record's chosen fields."""

    name: ClassVar[str] = "fingerprint"
    Config: ClassVar[type[TransformConfig]] = FingerprintConfig
    example: ClassVar[dict[str, Any]] = {"fields": ["source_ip", "user"], "method": "SHA1"}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, FingerprintConfig)
        columns = []
        for name in cfg.fields:
            column = get_column(table, name)
            columns.append(
                [None] * table.num_rows if column is None else string_values(column).to_pylist()
            )
        algorithm = cfg.method.lower()
        key = cfg.key.encode() if cfg.key is not None else None
        cache: dict[str, str] = {}
        out = []
        for values in zip(*columns, strict=True):
            text = cfg.separator.join("" if v is None else v for v in values)
            digest = cache.get(text)
            if digest is None:
                raw = (
                    hmac.new(key, text.encode(), algorithm).digest()
                    if key is not None
                    else hashlib.new(algorithm, text.encode()).digest()
                )
                digest = base64.b64encode(raw).decode() if cfg.base64 else raw.hex()
                cache[text] = digest
            out.append(digest)
        return set_column(table, cfg.target_field, pa.array(out, pa.string()))
