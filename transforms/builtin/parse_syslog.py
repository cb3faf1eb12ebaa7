"""parse_syslog: RFC 3164 and RFC 5424 syslog lines into fields."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.syslog_format import FIELDS, RFC3164, RFC5424
from bytefreezer.transforms.base import Output, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class ParseSyslogConfig(TransformConfig):
    """Parse ``field`` as a syslog line."""

    field: str = Field("message", description="Text field holding the syslog line.")
    mode: Literal["auto", "rfc3164", "rfc5424"] = Field("auto", description="Which RFC to expect.")
    on_error: Literal["keep", "dead_letter"] = Field(
        "dead_letter", description="Lines that are not syslog: keep or dead-letter."
    )


class ParseSyslog(Transform):
    """Syslog to fields: rfc, priority, facility, severity, version, timestamp, hostname,
    app_name, proc_id, msg_id, structured_data, message."""

    name: ClassVar[str] = "parse_syslog"
    Config: ClassVar[type[TransformConfig]] = ParseSyslogConfig
    example: ClassVar[dict[str, Any]] = {"field": "message", "mode": "auto"}

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, ParseSyslogConfig)
        n = table.num_rows
        column = get_column(table, cfg.field)
        texts = (
            string_values(column)
            if column is not None
            else pa.chunked_array([pa.nulls(n, pa.string())])
        )
        out: dict[str, Any] = {}
        matched = pa.chunked_array([pa.repeat(False, n)])
        for rfc, pattern in (("5424", RFC5424), ("3164", RFC3164)):
            if cfg.mode != "auto" and cfg.mode != f"rfc{rfc}":
                continue
            extracted = pc.extract_regex(texts, pattern=pattern)
            hit = pc.and_(pc.is_valid(extracted), pc.invert(matched))
            for index in range(extracted.type.num_fields):
                name = extracted.type.field(index).name
                values = pc.if_else(
                    hit, pc.struct_field(extracted, index), pa.scalar(None, pa.string())
                )
                out[name] = values if name not in out else pc.coalesce(out[name], values)
            rfc_values = pc.if_else(hit, pa.scalar(f"rfc{rfc}"), pa.scalar(None, pa.string()))
            out["rfc"] = rfc_values if "rfc" not in out else pc.coalesce(out["rfc"], rfc_values)
            matched = pc.or_(matched, hit)
        priority = pc.cast(out.get("priority", pa.nulls(n, pa.string())), pa.int64())
        out["priority"] = priority
        out["facility"] = pc.divide(priority, 8)
        out["severity"] = pc.subtract(priority, pc.multiply(pc.divide(priority, 8), 8))
        if "version" in out:
            out["version"] = pc.cast(out["version"], pa.int64())
        for name in ("proc_id", "msg_id", "structured_data", "app_name", "hostname"):
            if name in out:  # "-" is syslog's nil value; "" an optional part that was absent
                nil = pc.is_in(out[name], pa.array(["-", ""]))
                out[name] = pc.if_else(nil, pa.scalar(None, pa.string()), out[name])
        if cfg.field in table.column_names and "message" in out:
            out["message"] = pc.if_else(matched, out["message"], texts)
        for name in FIELDS:
            if name in out:
                table = set_column(table, name, out[name])
        if cfg.on_error == "keep" or pc.all(matched).as_py():
            return table
        missed = pc.invert(matched)
        bad = table.filter(missed)
        return Output(
            table.filter(matched), bad, ["parse_syslog: not an RFC 3164/5424 line"] * bad.num_rows
        )
