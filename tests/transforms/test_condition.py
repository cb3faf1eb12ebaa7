"""Conditions evaluated by Arrow's kernels give DuckDB's answers, row for row.

DuckDB is the reference: every generated expression is evaluated twice on the same batch, once
as a condition does it (the kernels where the expression and the batch's types allow, DuckDB
otherwise) and once by DuckDB alone, and the masks and the rows reported as failing must be
the same."""

from __future__ import annotations

import random
from datetime import datetime

import pyarrow as pa
import pytest

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.condition import Condition

ROWS = 24
FIELDS = ["i", "f", "s", "b", "n", "t", "Level", "level", "missing", "u"]
LITERALS = [
    "0", "3", "-2", "7", "2.5", "-0.5", "1e3", "99999999999999999999",
    "'a'", "'Z'", "''", "'é'", "'3'", "'ab'", "true", "false", "NULL",
]  # fmt: skip


TEXTS = ["a", "Z", "", "é", "3", "ab", "b", "a\nb", "a_b", "a%b", "A", "x\\y", "abc"]
PATTERNS = [
    "'a%'",
    "'%b'",
    "'_'",
    "'a_b'",
    "'%'",
    "''",
    "'é%'",
    "'%a%b%'",
    "'A%'",
    "'a\\%'",
    "'%\n%'",
]


def _batch(rng: random.Random, nan: bool) -> pa.Table:
    def maybe(value: object) -> object:
        return None if rng.random() < 0.2 else value

    floats = [maybe(rng.choice([-0.5, 0.0, 2.5, 3.0, 1000.0, 7.25])) for _ in range(ROWS)]
    if nan:
        floats[rng.randrange(ROWS)] = float("nan")
    return pa.table(
        {
            "i": pa.array([maybe(rng.randrange(-3, 9)) for _ in range(ROWS)], pa.int64()),
            "f": pa.array(floats, pa.float64()),
            "s": pa.array([maybe(rng.choice(TEXTS)) for _ in range(ROWS)]),
            "b": pa.array([maybe(rng.random() < 0.5) for _ in range(ROWS)], pa.bool_()),
            "n": pa.nulls(ROWS),
            "t": pa.array([maybe(datetime(2026, 1, 1, rng.randrange(24))) for _ in range(ROWS)]),
            "Level": pa.array([maybe(rng.choice(["a", "b"])) for _ in range(ROWS)]),
            "u": pa.array([maybe(rng.randrange(0, 9)) for _ in range(ROWS)], pa.uint8()),
        }
    )  # fmt: skip


def _expression(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth < 3 and roll < 0.3:
        joiner = rng.choice([" AND ", " OR "])
        return (
            "(" + joiner.join(_expression(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"
        )
    if depth < 3 and roll < 0.38:
        return f"NOT ({_expression(rng, depth + 1)})"
    field = rng.choice(FIELDS)
    shape = rng.random()
    if shape < 0.5:
        op = rng.choice(["=", "<>", "!=", "<", ">", "<=", ">="])
        literal = rng.choice(LITERALS)
        return f"{literal} {op} {field}" if rng.random() < 0.2 else f"{field} {op} {literal}"
    if shape < 0.62:
        return f"{field} IS {rng.choice(['', 'NOT '])}NULL"
    if shape < 0.77:
        values = ", ".join(rng.choice(LITERALS) for _ in range(rng.randint(1, 3)))
        return f"{field} {rng.choice(['', 'NOT '])}IN ({values})"
    if shape < 0.87:
        return f"{field} BETWEEN {rng.choice(LITERALS)} AND {rng.choice(LITERALS)}"
    if shape < 0.95:
        return f"{field} {rng.choice(['', 'NOT '])}LIKE {rng.choice(PATTERNS + LITERALS)}"
    return rng.choice(["b", "NOT b", "s", "missing", f"{field} ILIKE 'a%'"])


def _duckdb_alone(expression: str, table: pa.Table) -> tuple[pa.BooleanArray, dict[int, str]]:
    condition = Condition(expression)
    condition._tree = None  # what a condition did before the kernels
    mask, failures = condition.evaluate(table)
    return mask, failures


def test_kernels_give_duckdbs_answers_on_generated_expressions() -> None:
    rng = random.Random(20261126)
    batches = [_batch(rng, nan=False), _batch(rng, nan=True)]
    by_kernels = 0
    checked = 0
    for _ in range(2000):
        expression = _expression(rng)
        condition = Condition(expression)
        for table in batches:
            checked += 1
            if condition._kernels(table) is None:
                continue  # DuckDB answers: the same path as the reference's
            by_kernels += 1
            mask, failures = condition.evaluate(table)
            expected_mask, expected_failures = _duckdb_alone(expression, table)
            assert mask.to_pylist() == expected_mask.to_pylist(), (expression, table.schema)
            assert failures == expected_failures, expression
    # The comparison means something only if the kernels answered a good share of them.
    assert by_kernels > checked * 0.25, (by_kernels, checked)


@pytest.mark.parametrize(
    "expression",
    [
        "status <> 'noise'",
        "code >= 500 AND NOT (path IS NULL)",
        "status IN ('ok', 'error') OR code BETWEEN 200 AND 299",
        "500 <= code",
        "ratio > 0.5",
        "flag",
        "nothing_here = 1",
        "path LIKE '/api/%' AND path NOT LIKE '%.png'",
    ],
)
def test_common_conditions_are_evaluated_by_the_kernels(expression: str) -> None:
    table = pa.table(
        {
            "status": ["ok", "noise", None],
            "code": [200, 503, None],
            "path": ["/a", None, "/b"],
            "ratio": [0.1, 0.9, None],
            "flag": [True, None, False],
        }
    )
    condition = Condition(expression)
    assert condition._kernels(table) is not None
    assert (
        condition.evaluate(table)[0].to_pylist() == _duckdb_alone(expression, table)[0].to_pylist()
    )


@pytest.mark.parametrize(
    ("expression", "table"),
    [
        ("path ILIKE '/API/%'", pa.table({"path": ["/api/x"]})),
        ("path LIKE '/api/\\_%'", pa.table({"path": ["/api/\\_x"]})),  # no escape in SQL
        ("lower(status) = 'ok'", pa.table({"status": ["OK"]})),
        ("code = '500'", pa.table({"code": [500]})),  # DuckDB casts the text
        ("code = 5.0", pa.table({"code": [5]})),  # an integer field, a decimal constant
        ("x > 1", pa.table({"x": [float("nan")]})),  # NaN sorts above numbers in DuckDB
        ("seen > '2026-01-01'", pa.table({"seen": [datetime(2026, 2, 1)]})),
        ("a = 1) OR (1 = 1", pa.table({"a": [2]})),
    ],
)
def test_other_conditions_stay_with_duckdb(expression: str, table: pa.Table) -> None:
    condition = Condition(expression)
    assert condition._kernels(table) is None
    mask, failures = condition.evaluate(table)
    assert (mask.to_pylist(), failures) == ([True], {})  # each holds, as DuckDB reads it


def test_an_expression_is_parsed_once_per_process() -> None:
    """Every worker thread compiles each dataset's chain; the expression's check and tree come
    from its text alone, so they are worked out once."""
    expression = "status >= 500 AND path LIKE '/api/%'"
    first, second = Condition(expression), Condition(f"  {expression} ")
    assert first._tree is not None and second._tree is first._tree
    with pytest.raises(ConfigError, match="not valid SQL"):
        Condition("status IN (1,")
    with pytest.raises(ConfigError, match="not valid SQL"):  # refused again, not remembered
        Condition("status IN (1,")
