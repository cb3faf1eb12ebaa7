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
        single = pc.fill_null(pc.invert(pc.match_substring_regex(texts, r"[\n\r]")), False)
        lines = pc.all(pc.and_(single, pc.is_valid(texts))).as_py() and len(texts) > 0
        parsed = self._parse_lines(texts) if lines else None
        bad_mask = None  # every text parsed as an object
        if parsed is None:
            values = texts.to_pylist()
            parsed, ok = self._parse_each(values)
            bad_mask = pa.array(
                [not o and t is not None for o, t in zip(ok, values, strict=True)], pa.bool_()
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
        if cfg.on_error == "keep" or bad_mask is None or not pc.any(bad_mask).as_py():
            return table
        bad = table.filter(bad_mask)
        reason = f"parse_json: {cfg.field!r} is not a JSON object"
        return Output(table.filter(pc.invert(bad_mask)), bad, [reason] * bad.num_rows)

    def _parse_lines(self, texts: pa.ChunkedArray) -> pa.Table | None:
        """Texts of one line each, every one non-null, as one NDJSON document through Arrow's
        reader (joined by Arrow, without a Python string per record); None when they are not
        all objects."""
        text = pc.cast(texts, pa.large_string()).combine_chunks()
        joined = pc.binary_join(
            pa.LargeListArray.from_arrays(pa.array([0, len(text)], pa.int64()), text),
            pa.scalar("\n", pa.large_string()),
        )[0]
        data = joined.as_buffer().to_pybytes()
        try:
            table = read_ndjson(data, max(len(data) + 1, 1 << 20), self._learned)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        return table if table.num_rows == len(texts) else None

    def _parse_each(self, texts: list[str | None]) -> tuple[pa.Table, list[bool]]:
        """Rows of objects (empty where a text does not parse) and which parsed, text by text."""
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
