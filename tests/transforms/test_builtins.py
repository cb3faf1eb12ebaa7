"""Table-driven tests of the built-in transforms and the chain compiler."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from bytefreezer.errors import ConfigError
from bytefreezer.transforms import Context, compile_chain, validate_chain

ROWS = [
    {"status": 200, "path": "/api/a", "src": "10.0.0.1"},
    {"status": 500, "path": "/api/b", "src": "10.0.0.2"},
    {"status": 503, "path": "/web", "src": "10.0.0.3"},
    {"status": 404, "path": "/api/c", "src": None},
]

CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        "filter gt and like",
        [{"type": "filter", "config": {"condition": "status >= 500 AND path LIKE '/api/%'"}}],
        ROWS,
        [ROWS[1]],
    ),
    (
        # The original evaluated gt/lt as always false; ours compares values.
        "filter lt",
        [{"type": "filter", "config": {"condition": "status < 300"}}],
        ROWS,
        [ROWS[0]],
    ),
    (
        "filter drop",
        [{"type": "filter", "config": {"condition": "status > 400", "action": "drop"}}],
        ROWS,
        [ROWS[0]],
    ),
    (
        "filter on a field the batch lacks keeps nothing",
        [{"type": "filter", "config": {"condition": "missing_field = 1"}}],
        ROWS[:1],
        [],
    ),
    (
        "add_field constant",
        [{"type": "add_field", "config": {"field": "env", "value": "prod"}}],
        ROWS[:1],
        [{**ROWS[0], "env": "prod"}],
    ),
    (
        "add_field template with tenant and field reference",
        [{"type": "add_field", "config": {"field": "who", "value": "${tenant_id}/${src}"}}],
        ROWS[:2],
        [{**ROWS[0], "who": "acme/10.0.0.1"}, {**ROWS[1], "who": "acme/10.0.0.2"}],
    ),
    (
        "add_field without overwrite keeps existing values",
        [{"type": "add_field", "config": {"field": "src", "value": "x", "overwrite": False}}],
        ROWS[2:],
        [ROWS[2], {**ROWS[3], "src": "x"}],
    ),
    (
        "remove_field field and fields",
        [{"type": "remove_field", "config": {"field": "src", "fields": ["path", "absent"]}}],
        ROWS[:1],
        [{"status": 200}],
    ),
    (
        "rename_field",
        [{"type": "rename_field", "config": {"from": "src", "to": "source_ip"}}],
        ROWS[:1],
        [{"status": 200, "path": "/api/a", "source_ip": "10.0.0.1"}],
    ),
    (
        "when runs a step only where it holds",
        [
            {
                "type": "add_field",
                "config": {"field": "alert", "value": True},
                "when": "status >= 500",
            }
        ],
        ROWS[:2],
        [{**ROWS[1], "alert": True}, {**ROWS[0], "alert": None}],
    ),
    (
        "disabled steps are skipped",
        [{"type": "remove_field", "config": {"field": "src"}, "enabled": False}],
        ROWS[:1],
        ROWS[:1],
    ),
]


@pytest.mark.parametrize(
    ("chain", "rows", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_chain(
    chain: list[dict[str, Any]], rows: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    result = compile_chain(chain, Context(tenant="acme", dataset="web")).run(
        pa.Table.from_pylist(rows)
    )
    assert result.table.to_pylist() == expected
    assert result.rejected.num_rows == 0


def test_rows_a_condition_fails_on_are_dead_lettered_with_reason() -> None:
    table = pa.Table.from_pylist([{"status": "200"}, {"status": "oops"}, {"status": "503"}])
    chain = compile_chain([{"type": "filter", "config": {"condition": "status::INTEGER >= 500"}}])
    result = chain.run(table)
    assert result.table.to_pylist() == [{"status": "503"}]
    rejected = result.rejected.to_pylist()
    assert len(rejected) == 1
    assert rejected[0]["transform"] == "filter"
    assert "oops" in rejected[0]["record"] and "oops" in rejected[0]["error"]
    assert result.dropped == 1


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ([{"type": "nope"}], "step 0 (type): unknown transform 'nope'"),
        ([{"type": "add_field", "config": {"field": "x"}}], "step 0 (add_field): value"),
        (
            [{"type": "rename_field", "config": {"from": "a", "to": "b", "bogus": 1}}],
            "bogus: Extra inputs are not permitted",
        ),
        ([{"type": "filter", "config": {"condition": "status >>> ("}}], "not valid SQL"),
        (
            [{"type": "remove_field", "config": {"field": "a"}}, {"type": "filter", "when": "x"}],
            "step 1 (filter): condition",
        ),
    ],
)
def test_invalid_chains_name_step_field_and_reason(
    chain: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        validate_chain(chain)
    assert message in str(info.value)
