"""Behaviour beyond single tables: randomness, determinism, compile-once, several patterns."""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pytest

from bytefreezer.transforms import Context, Transform, TransformConfig, compile_chain
from bytefreezer.transforms.builtin.parse_json import ParseJson, ParseJsonConfig
from bytefreezer.transforms.registry import Registry
from bytefreezer.transforms.testing import run_transform


def test_sample_keyed_on_a_field_is_deterministic_across_runs_and_values() -> None:
    rows = [{"session": f"s{i % 50}", "i": i} for i in range(2000)]
    first = run_transform("sample", {"percentage": 30, "key_field": "session"}, rows).table
    second = run_transform("sample", {"percentage": 30, "key_field": "session"}, rows).table
    assert first.to_pylist() == second.to_pylist()
    kept = set(first.column("session").to_pylist())
    assert 5 < len(kept) < 30  # about 30% of 50 sessions
    for session in kept:  # a session is kept whole or not at all
        assert first.column("session").to_pylist().count(session) == 40


def test_drop_percentage_drops_a_share_of_selected_records() -> None:
    rows = [{"level": "debug" if i % 2 else "info", "i": i} for i in range(4000)]
    out = run_transform("drop", {"if": "level = 'debug'", "percentage": 50, "seed": 7}, rows).table
    levels = out.column("level").to_pylist()
    assert levels.count("info") == 2000
    assert 800 < levels.count("debug") < 1200


def test_grok_without_break_on_match_applies_every_pattern() -> None:
    rows = [{"message": "user=bob ip=1.2.3.4"}]
    config = {"patterns": ["user=%{WORD:user}", "ip=%{IP:ip}"], "break_on_match": False}
    out = run_transform("grok", config, rows).table.to_pylist()
    assert out[0]["user"] == "bob" and out[0]["ip"] == "1.2.3.4"
    first_only = run_transform("grok", {**config, "break_on_match": True}, rows).table.to_pylist()
    assert first_only[0]["user"] == "bob" and "ip" not in first_only[0]


def test_useragent_reports_mobile_devices() -> None:
    agent = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
    )
    ua = (
        run_transform("useragent", {"source_field": "a"}, [{"a": agent}])
        .table.column("ua")[0]
        .as_py()
    )
    assert (ua["browser"], ua["browser_major"], ua["os"], ua["os_version"]) == (
        "Mobile Safari",
        "17",
        "iOS",
        "17.1",
    )
    assert (ua["device"], ua["device_brand"]) == ("iPhone", "Apple")


class _Counted(Transform):
    """Counts how often it is built."""

    name: ClassVar[str] = "counted"
    built: ClassVar[int] = 0

    class Config(TransformConfig):
        """No options."""

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        type(self).built += 1

    def apply(self, table: pa.Table) -> pa.Table:
        return table


def test_regression_a_chain_is_built_once_not_per_line() -> None:
    _Counted.built = 0
    chain = compile_chain(
        [{"type": "counted"}], registry=Registry(transforms={"counted": _Counted})
    )
    for _ in range(3):
        chain.run(pa.table({"x": list(range(1000))}))
    assert _Counted.built == 1


def test_a_step_that_raises_dead_letters_its_rows_and_the_chain_goes_on() -> None:
    class Boom(Transform):
        """Always fails."""

        name: ClassVar[str] = "boom"

        class Config(TransformConfig):
            """No options."""

        def apply(self, table: pa.Table) -> pa.Table:
            raise RuntimeError("kaput")

    registry = Registry(transforms={"boom": Boom, "counted": _Counted})
    steps: list[dict[str, Any]] = [{"type": "boom", "when": "x > 1"}, {"type": "counted"}]
    result = compile_chain(steps, registry=registry).run(pa.table({"x": [1, 2, 3]}))
    assert result.table.column("x").to_pylist() == [1]
    assert result.rejected.column("error").to_pylist() == ["RuntimeError: kaput"] * 2
    assert result.rejected_by == {"boom": 2}


def test_parse_json_reads_single_line_texts_as_one_document_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Texts of one line each are joined by Arrow and read at once, across the column's chunks
    and in their order; the text-by-text path is only for the rest (a text over several lines
    here)."""
    step = ParseJson(ParseJsonConfig(field="j"))
    texts = pa.chunked_array([['{"n": 1}', '{"n": 2, "s": "a"}'], ['{"n": 3}']])
    table = pa.table({"id": [1, 2, 3], "j": texts})

    def text_by_text(self: ParseJson, values: list[str | None]) -> object:
        raise AssertionError("the text-by-text path was taken")

    with monkeypatch.context() as patch:
        patch.setattr(ParseJson, "_parse_each", text_by_text)
        out = step.apply(table)
    assert isinstance(out, pa.Table)
    assert out.select(["id", "n", "s"]).to_pylist() == [
        {"id": 1, "n": 1, "s": None},
        {"id": 2, "n": 2, "s": "a"},
        {"id": 3, "n": 3, "s": None},
    ]
    several = step.apply(pa.table({"j": ['{"n": 1}', '{"n":\n 2}']}))
    assert isinstance(several, pa.Table)
    assert several.column("n").to_pylist() == [1, 2]
