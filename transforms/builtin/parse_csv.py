"""parse_csv: split a delimited text field into named fields."""

from __future__ import annotations

import csv
import io
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic import Field

from bytefreezer.transforms.base import Output, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, rows_to_table, set_column, string_values


class ParseCsvConfig(TransformConfig):
    """Parse ``field`` as one CSV row with the given column names."""

    field: str = Field("message", description="Text field holding one delimited row.")
    columns: list[str] = Field(min_length=1, description="Names of the values, in order.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Value separator.")
    quote: str = Field('"', min_length=1, max_length=1, description="Quote character.")
    infer_types: bool = Field(True, description="Numbers and booleans become typed values.")
    on_error: Literal["keep", "dead_letter"] = Field(
        "dead_letter", description="Rows with the wrong number of values: keep or dead-letter."
    )


class ParseCsv(Transform):
    """CSV text to fields, vectorised with Arrow's CSV reader."""

    name: ClassVar[str] = "parse_csv"
    Config: ClassVar[type[TransformConfig]] = ParseCsvConfig
    example: ClassVar[dict[str, Any]] = {"field": "line", "columns": ["time", "user", "action"]}

    def apply(self, table: pa.Table) -> pa.Table | Output:
        cfg = self.config
        assert isinstance(cfg, ParseCsvConfig)
        column = get_column(table, cfg.field)
        if column is None:
            return table
        texts = string_values(column).to_pylist()
        parsed, ok = self._parse(texts)
        for name in parsed.column_names:
            table = set_column(table, name, parsed.column(name))
        bad_mask = pa.array([not good for good in ok])
        if cfg.on_error == "keep" or not pc.any(bad_mask).as_py():
            return table
        bad = table.filter(bad_mask)
        reason = f"parse_csv: {cfg.field!r} does not hold {len(cfg.columns)} values"
        return Output(table.filter(pc.invert(bad_mask)), bad, [reason] * bad.num_rows)

    def _parse(self, texts: list[str | None]) -> tuple[pa.Table, list[bool]]:
        cfg = self.config
        assert isinstance(cfg, ParseCsvConfig)
        n = len(texts)
        if n and all(t is not None and "\n" not in t and "\r" not in t for t in texts):
            data = "\n".join(t or "" for t in texts).encode() + b"\n"
            try:
                read = pacsv.read_csv(
                    io.BytesIO(data),
                    read_options=pacsv.ReadOptions(column_names=cfg.columns),
                    parse_options=pacsv.ParseOptions(delimiter=cfg.delimiter, quote_char=cfg.quote),
                    convert_options=pacsv.ConvertOptions(
                        column_types=None
                        if cfg.infer_types
                        else {c: pa.string() for c in cfg.columns},
                        strings_can_be_null=False,
                    ),
                )
                if read.num_rows == n:
                    return read, [True] * n
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        rows: list[dict[str, Any]] = []
        ok = []
        for text in texts:
            values = (
                next(csv.reader([text], delimiter=cfg.delimiter, quotechar=cfg.quote), [])
                if text
                else []
            )
            good = len(values) == len(cfg.columns)
            ok.append(good)
            rows.append(
                dict(zip(cfg.columns, values, strict=False)) if good else dict.fromkeys(cfg.columns)
            )
        return rows_to_table(rows), ok
