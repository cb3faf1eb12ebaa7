"""Conditions: SQL boolean expressions over a batch's fields, evaluated vectorised by DuckDB.

A field the batch does not have reads as NULL, and NULL counts as false. When the expression
fails on some values (``'abc' > 5``), the batch is evaluated row by row so that only the rows
that fail are reported, each with DuckDB's reason.
"""

from __future__ import annotations

import re
import threading

import duckdb
import pyarrow as pa

from bytefreezer.errors import ConfigError

_local = threading.local()
_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')
_TABLE = "__bf_batch"


def duckdb_connection(timezone: str = "UTC") -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB connection for ``timezone`` (made once, then reused)."""
    cons: dict[str, duckdb.DuckDBPyConnection] | None = getattr(_local, "cons", None)
    if cons is None:
        cons = _local.cons = {}
    con = cons.get(timezone)
    if con is None:
        con = duckdb.connect(":memory:", config={"threads": 1})
        con.execute(f"SET TimeZone='{timezone.replace(chr(39), '')}'")
        cons[timezone] = con
    return con


def validate_expression(expression: str) -> str:
    """Return a stripped expression, or raise ``ConfigError`` if it cannot be one."""
    expression = expression.strip()
    if not expression:
        raise ConfigError("a condition must not be empty")
    if ";" in expression:
        raise ConfigError(f"condition {expression!r}: ';' is not allowed")
    try:
        duckdb.sql(f"SELECT ({expression}) FROM (SELECT 1) AS t(__bf_probe) LIMIT 0")
    except duckdb.ParserException as exc:
        raise ConfigError(f"condition {expression!r} is not valid SQL: {exc}") from None
    except duckdb.Error:
        pass  # unknown columns and types are only known per batch
    return expression


class Condition:
    """A compiled condition such as ``status >= 500 AND path LIKE '/api/%'``."""

    def __init__(self, expression: str) -> None:
        self.expression = validate_expression(expression)
        self._sql = f"SELECT coalesce(({self.expression})::BOOLEAN, false) AS m FROM {_TABLE}"

    def _query(self, table: pa.Table) -> pa.BooleanArray:
        # Hand DuckDB only the columns the expression can mention (a superset by name), so
        # wide or nested records cost nothing to register.
        used = [name for name in table.column_names if name in self.expression]
        table = table.select(used) if used else table.select(table.column_names[:1])
        con = duckdb_connection()
        for _ in range(64):
            con.register(_TABLE, table)
            try:
                result = con.sql(self._sql).to_arrow_table()
            except duckdb.BinderException as exc:
                missing = _MISSING_COLUMN.search(str(exc))
                if missing is None or missing.group(1) in table.column_names:
                    raise
                table = table.append_column(missing.group(1), pa.nulls(table.num_rows))
                continue
            finally:
                con.unregister(_TABLE)
            column = result.column(0).combine_chunks()
            assert isinstance(column, pa.BooleanArray)
            return column
        raise ConfigError(f"condition {self.expression!r} references too many missing fields")

    def evaluate(self, table: pa.Table) -> tuple[pa.BooleanArray, dict[int, str]]:
        """A mask (true where the condition holds) and the rows it failed on, with reasons."""
        if table.num_rows == 0:
            return pa.array([], pa.bool_()), {}
        try:
            return self._query(table), {}
        except duckdb.Error as exc:
            if table.num_rows == 1:
                return pa.array([False]), {0: f"condition {self.expression!r}: {exc}"}
        values: list[bool] = []
        failures: dict[int, str] = {}
        for i in range(table.num_rows):
            mask, errors = self.evaluate(table.slice(i, 1))
            values.append(bool(mask[0].as_py()))
            if errors:
                failures[i] = errors[0]
        return pa.array(values, pa.bool_()), failures

    def mask(self, table: pa.Table) -> pa.BooleanArray:
        """The mask alone; raise ``ConfigError`` if any row fails."""
        mask, failures = self.evaluate(table)
        if failures:
            raise ConfigError(next(iter(failures.values())))
        return mask
