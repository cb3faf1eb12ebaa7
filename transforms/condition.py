"""Conditions: SQL boolean expressions over a batch's fields, evaluated vectorised by DuckDB.

A field the batch does not have reads as NULL, and NULL counts as false. When the expression
fails on some values (``'abc' > 5``), the batch is evaluated row by row so that only the rows
that fail are reported, each with DuckDB's reason.

The common shape, comparisons of fields with constants joined by AND, OR and NOT (``IN``,
``BETWEEN``, ``LIKE`` and ``IS [NOT] NULL`` too), is evaluated by Arrow's kernels when the batch's types
make the answer the same as DuckDB's: text against text, numbers against numbers, booleans
against booleans. DuckDB parses the expression (``json_serialize_sql``), so both read the same
tree. Handing a batch to DuckDB costs about 1 ms however small the batch; the kernels take a
few microseconds. Anything else (functions, casts, ILIKE, a text field compared with a number,
timestamps, NaN, which DuckDB orders above every number) goes to DuckDB.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

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
    return _validated(expression.strip())


# An expression's check and tree depend on its text alone: worked out once per process, not
# once per chain compiled (each worker thread compiles each dataset's chain; DuckDB's parser
# made that 0.4 ms a condition, most of a chain's compile).
@functools.lru_cache(maxsize=4096)
def _validated(expression: str) -> str:
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


_COMPARISONS = {
    "COMPARE_EQUAL": ("equal", "equal"),
    "COMPARE_NOTEQUAL": ("not_equal", "not_equal"),
    "COMPARE_LESSTHAN": ("less", "greater"),
    "COMPARE_GREATERTHAN": ("greater", "less"),
    "COMPARE_LESSTHANOREQUALTO": ("less_equal", "greater_equal"),
    "COMPARE_GREATERTHANOREQUALTO": ("greater_equal", "less_equal"),
}  # DuckDB's node type: (Arrow's function, the same with the operands swapped)
_INT64 = (-(1 << 63), (1 << 63) - 1)

# A compiled tree: ("and"|"or", [trees]), ("not", tree), ("null"|"valid", field),
# ("compare", function, field, constant), ("like", field, pattern), ("field", name).
_Tree = tuple[Any, ...]


class _Unsupported(Exception):
    """The expression or the batch's types are not for the kernels: DuckDB evaluates it."""


def _field(node: dict[str, Any]) -> str:
    if node.get("class") != "COLUMN_REF" or len(node.get("column_names", [])) != 1:
        raise _Unsupported("not a plain field")
    return str(node["column_names"][0])


def _constant(node: dict[str, Any]) -> bool | int | float | str:
    if node.get("class") != "CONSTANT":
        raise _Unsupported("not a constant")
    literal = node["literal"]
    kind, text = literal.get("kind"), str(literal.get("text", ""))
    if kind == "STRING":
        return text
    if kind == "BOOLEAN":
        return text == "true"
    if kind == "INTEGER" and _INT64[0] <= int(text) <= _INT64[1]:
        return int(text)
    if kind == "NUMERIC":
        return float(text)
    raise _Unsupported(f"constant of kind {kind}")


def _compare(kind: str, left: dict[str, Any], right: dict[str, Any]) -> _Tree:
    function, swapped = _COMPARISONS[kind]
    if left.get("class") == "CONSTANT":
        return ("compare", swapped, _field(right), _constant(left))
    return ("compare", function, _field(left), _constant(right))


def _alike(op: str, comparisons: list[_Tree]) -> _Tree:
    """``IN`` and ``BETWEEN`` as comparisons, when their constants are of one kind: DuckDB
    casts them to one type, which fails for ``'a'`` and ``1`` even when the field is NULL."""
    kinds = {
        "bool" if isinstance(c[3], bool) else "text" if isinstance(c[3], str) else "number"
        for c in comparisons
    }
    if len(kinds) > 1:
        raise _Unsupported("constants of different kinds")
    return (op, comparisons)


def _compile(node: dict[str, Any]) -> _Tree:
    kind = node.get("type")
    children = node.get("children", [])
    if kind in ("CONJUNCTION_AND", "CONJUNCTION_OR"):
        return (kind[12:].lower(), [_compile(child) for child in children])
    if kind == "OPERATOR_NOT" and len(children) == 1:
        return ("not", _compile(children[0]))
    if kind in ("OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL") and len(children) == 1:
        return ("null" if kind == "OPERATOR_IS_NULL" else "valid", _field(children[0]))
    if kind in _COMPARISONS:
        return _compare(kind, node["left"], node["right"])
    if kind == "COMPARE_IN" and len(children) >= 2:
        field = _field(children[0])
        return _alike("or", [("compare", "equal", field, _constant(c)) for c in children[1:]])
    if kind == "COMPARE_BETWEEN":
        lower = _compare("COMPARE_GREATERTHANOREQUALTO", node["input"], node["lower"])
        upper = _compare("COMPARE_LESSTHANOREQUALTO", node["input"], node["upper"])
        return _alike("and", [lower, upper])
    if kind == "COLUMN_REF":
        return ("field", _field(node))
    name = node.get("function_name")
    if kind == "FUNCTION" and name in ("~~", "!~~") and len(node.get("arguments", [])) == 2:
        field, pattern = (argument["expression"] for argument in node["arguments"])
        text = _constant(pattern)
        if not isinstance(text, str) or "\\" in text:
            raise _Unsupported("a LIKE pattern with a backslash (an escape in Arrow, not in SQL)")
        like = ("like", _field(field), text)
        return ("not", like) if name == "!~~" else like
    raise _Unsupported(f"{kind} is DuckDB's")


@functools.lru_cache(maxsize=4096)
def _compiled(expression: str) -> _Tree | None:
    """The tree of ``expression`` when all of it is for the kernels, else None."""
    try:
        parsed = json.loads(
            duckdb_connection()
            .execute("SELECT json_serialize_sql(?)", [f"SELECT ({expression})"])
            .fetchall()[0][0]  # all of it: the connection takes no query before that
        )
        statements = parsed["statements"]
        if parsed.get("error") or len(statements) != 1:
            return None
        select = statements[0]["node"]
        clauses = ("where_clause", "group_expressions", "having", "qualify", "modifiers")
        if (
            select.get("type") != "SELECT_NODE"
            or select.get("from_table", {}).get("type") != "EMPTY"
            or any(select.get(clause) for clause in clauses)
            or len(select["select_list"]) != 1
        ):
            return None  # the text closed the parenthesis: not one expression
        return _compile(select["select_list"][0])
    except (_Unsupported, duckdb.Error, KeyError, TypeError, ValueError, IndexError):
        return None


def _typed(column: pa.ChunkedArray, constant: bool | int | float | str) -> None:
    """Raise ``_Unsupported`` unless comparing ``column`` with ``constant`` in Arrow gives
    DuckDB's answer."""
    kind = column.type
    if isinstance(constant, bool):
        ok = pa.types.is_boolean(kind)
    elif isinstance(constant, str):
        ok = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    elif isinstance(constant, int):
        ok = pa.types.is_integer(kind) or pa.types.is_float64(kind)
    else:
        ok = pa.types.is_float64(kind)
    if not ok:
        raise _Unsupported(f"{kind} against {type(constant).__name__}")
    if pa.types.is_float64(kind) and pc.any(pc.is_nan(column)).as_py():
        raise _Unsupported("NaN")


class _Batch:
    """The fields of a batch as DuckDB would bind them: among the columns ``_query`` hands it
    (those whose names occur in the expression), case-insensitively; a field none of them is
    reads as NULL (None here)."""

    def __init__(self, table: pa.Table, expression: str) -> None:
        self.table = table
        self.rows = table.num_rows
        self._names = [name for name in table.column_names if name in expression]

    def column(self, field: str) -> pa.ChunkedArray | None:
        found = [name for name in self._names if name.lower() == field.lower()]
        if len(found) > 1:
            raise _Unsupported("ambiguous field")
        if not found or pa.types.is_null(self.table.schema.field(found[0]).type):
            return None
        return self.table.column(found[0])

    def evaluate(self, tree: _Tree) -> pa.ChunkedArray | pa.Array:
        """Three-valued, as SQL: NULL where the answer is unknown."""
        op = tree[0]
        if op in ("and", "or"):
            combine = pc.and_kleene if op == "and" else pc.or_kleene
            result = self.evaluate(tree[1][0])
            for child in tree[1][1:]:
                result = combine(result, self.evaluate(child))
            return result
        if op == "not":
            return pc.invert(self.evaluate(tree[1]))
        column = self.column(tree[2] if op == "compare" else tree[1])
        if op in ("null", "valid"):
            if column is None:
                return pa.repeat(op == "null", self.rows)
            return pc.is_null(column) if op == "null" else pc.is_valid(column)
        if column is None:
            return pa.nulls(self.rows, pa.bool_())
        if op == "field":
            if not pa.types.is_boolean(column.type):
                raise _Unsupported("a field that is not boolean")
            return column
        if op == "like":
            _typed(column, tree[2])
            return pc.match_like(column, tree[2])
        _typed(column, tree[3])
        return getattr(pc, tree[1])(column, tree[3])


class Condition:
    """A compiled condition such as ``status >= 500 AND path LIKE '/api/%'``."""

    def __init__(self, expression: str) -> None:
        self.expression = validate_expression(expression)
        self._sql = f"SELECT coalesce(({self.expression})::BOOLEAN, false) AS m FROM {_TABLE}"
        self._tree = _compiled(self.expression)

    def _kernels(self, table: pa.Table) -> pa.BooleanArray | None:
        """The mask by Arrow's kernels, or None where DuckDB must evaluate it."""
        if self._tree is None:
            return None
        try:
            mask = _Batch(table, self.expression).evaluate(self._tree)
        except (_Unsupported, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        if isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks()
        filled = mask.fill_null(False)
        assert isinstance(filled, pa.BooleanArray)
        return filled

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
        mask = self._kernels(table)
        if mask is not None:
            return mask, {}
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
