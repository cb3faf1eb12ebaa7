"""shout: a record-level plugin (one Python call per record)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from bytefreezer.transforms import RecordTransform, TransformConfig


class ShoutConfig(TransformConfig):
    """The field to shout."""

    field: str = Field("message", description="Text field upper-cased.")
    repeat_field: str = Field("repeat", description="Emit the record this many times (fan out).")


class Shout(RecordTransform):
    """Upper-case a field; drop `quiet` records; fan out by `repeat`; reject empty text."""

    name: ClassVar[str] = "shout"
    Config: ClassVar[type[TransformConfig]] = ShoutConfig
    example: ClassVar[dict[str, Any]] = {"field": "message"}

    def process(self, record: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
        cfg = self.config
        assert isinstance(cfg, ShoutConfig)
        if record.get("quiet"):
            return None
        value = record.get(cfg.field)
        if value == "":
            raise ValueError(f"{cfg.field} is empty: nothing to shout")
        out = {**record, cfg.field: value.upper() if value else value}
        repeat = record.get(cfg.repeat_field)
        return [out] * int(repeat) if repeat else out
