"""parse_json: turn a JSON text field into fields."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Context, Output, Transform, TransformConfig
from bytefreezer.transforms.tables import (
    JsonFields,
    drop_column,
    get_column,
    loads_exact,
    read_ndjson,
    rows_to_table,
    set_column,
    string_values,
)


class ParseJsonConfig(TransformConfig):
    """Parse ``field`` as a JSON object."""

    field: str = Field("message", description="Text field holding a JSON object.")
    target_field: str | None = Field(
        None,
        description="Put the object under this field; default: merge its keys into the record.",
    )
    remove_source: bool = Field(False, description="Remove `field` after a successful parse.")
    on_error: Literal["keep", "dead_letter"] = Field(
        "dead_letter", description="Records whose field is not a JSON object: keep or dead-letter."
    )


class ParseJson(Transform):
    """JSON text to fields, vectorised with Arrow's JSON reader."""

    name: ClassVar[str] = "parse_json"
    Config: ClassVar[type[TransformConfig]] = ParseJsonConfig
    example: ClassVar[dict[str, Any]] = {"field": "payload", "remove_source": True}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        self._learned = JsonFields()  # the field's JSON objects, batch after batch

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, ParseJsonConfig)
        column = get_column(table, cfg.field)
        if column is None:
            return table
        texts = string_values(column)
        valid = pc.fill_null(pc.invert(pc.match_substring_regex(texts, r"[\n\r]")), False)
        parsed, ok = self._parse(texts.to_pylist(), pc.and_(valid, pc.is_valid(texts)).to_pylist())
        bad_mask = pa.array(
            [not o and t is not None for o, t in zip(ok, texts.to_pylist(), strict=True)]
        )
        if cfg.target_field:
            table = set_column(
                table,
                cfg.target_field,
                parsed.to_struct_array() if parsed.num_columns else pa.nulls(table.num_rows),
            )
        else:
            for name in parsed.column_names:
                table = set_column(table, name, parsed.column(name))
        if (
            cfg.remove_source
            and cfg.field != cfg.target_field
            and cfg.field not in parsed.column_names
        ):
            table = drop_column(table, cfg.field)
        if cfg.on_error == "keep" or not pc.any(bad_mask).as_py():
            return table
        bad = table.filter(bad_mask)
        reason = f"parse_json: {cfg.field!r} is not a JSON object"
        return Output(table.filter(pc.invert(bad_mask)), bad, [reason] * bad.num_rows)

    def _parse(
        self, texts: list[str | None], single_line: list[bool]
    ) -> tuple[pa.Table, list[bool]]:
        """Rows of objects (empty where a text does not parse) and which parsed."""
        n = len(texts)
        if n and all(single_line):
            data = "\n".join(t or "" for t in texts).encode()
            try:
                table = read_ndjson(data, max(len(data) + 1, 1 << 20), self._learned)
                if table.num_rows == n:
                    return table, [True] * n
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        rows: list[dict[str, Any]] = []
        ok: list[bool] = []
        for text in texts:
            value: Any = None
            if text is not None:
                try:
                    value = loads_exact(text)
                except orjson.JSONDecodeError:
                    value = None
            good = isinstance(value, dict)
            ok.append(good)
            rows.append(value if good else {})
        if not any(ok):
            return pa.table({}), ok
        table = rows_to_table(rows)
        return table, ok
