"""The object-key layout and name rules."""

from __future__ import annotations

import re

import pytest

from bytefreezer.errors import ConfigError, InvalidName
from bytefreezer.keys import (
    MAX_PARTITION_VALUE_BYTES,
    NULL_PARTITION_VALUE,
    IntakeKey,
    check_partition_template,
    dataset_prefix,
    escape_partition_value,
    fill_partition_fields,
    partition_fields,
    partition_strftime,
    validate_name,
)


def test_intake_key_matches_the_original_layout_and_round_trips() -> None:
    key = IntakeKey("acme", "web-logs", 1700000000123456789, "ndjson")
    assert key.key == "acme/web-logs/acme--web-logs--1700000000123456789--ndjson.gz"
    assert IntakeKey.parse(key.key) == key
    assert IntakeKey.parse(key.staged_key) == key
    assert key.dead_letter_key.startswith("_dead-letter/acme/web-logs/")


@pytest.mark.parametrize(
    "name", ["", "..", "a/b", "A", "_x", "-x", "a" * 64, "t%2e%2e", "\uff41", "a\x00", "x y"]
)
def test_names_that_could_escape_a_prefix_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)
    with pytest.raises(InvalidName):
        dataset_prefix(name, "ok")


def test_names_with_separators_still_parse_by_path() -> None:
    key = IntakeKey("a--b", "c", 5, "ndjson")
    assert IntakeKey.parse(key.key) == key


@pytest.mark.parametrize(
    "bad",
    [
        "acme/web/x.gz",
        "acme/web/acme--web--nan--x.gz",
        "a/b/c/d.gz",
        "acme/web/acme--web--\u00b2--x.gz",  # a digit to str.isdigit, not to int()
    ],
)
def test_foreign_keys_are_not_parsed(bad: str) -> None:
    with pytest.raises(InvalidName):
        IntakeKey.parse(bad)


@pytest.mark.parametrize(
    ("template", "strftime"),
    [
        ("dt=%Y-%m-%d/hr=%H", "dt=%Y-%m-%d/hr=%H"),
        ("{tenant}/{dataset}/{year}/{month}/{day}/{hour}", "acme/web-logs/%Y/%m/%d/%H"),
        ("y={year}/%j", "y=%Y/%j"),
        ("100%%/{day}", "100%%/%d"),
        ("kind={field:event.kind}/{year}", "kind={field:0}/%Y"),
        ("{field:a%b}/{field:x}/{field:a%b}", "{field:0}/{field:1}/{field:0}"),
    ],
)
def test_custom_partition_templates_take_the_original_layouts_placeholders(
    template: str, strftime: str
) -> None:
    assert partition_strftime(template, "acme", "web-logs") == strftime
    check_partition_template(template, "acme", "web-logs")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("", "needs a partition_template"),
        ("   ", "needs a partition_template"),
        ("../other/%Y", "the segment '..'"),
        ("x/./%Y", "the segment '.'"),
        ("/abs/%Y", "empty segment"),
        ("%Y//%m", "empty segment"),
        ("%Y/", "empty segment"),
        ("%Y/%n", "%n is no strftime field"),
        ("%Q", "%Q is no strftime field"),
        ("%-d", "no strftime field"),
        ("dt=%Y%", "a lone %"),
        ("{yaer}/%m", "unknown placeholder {yaer}"),
        ("{}", "unknown placeholder {}"),
        ("{field:}/%Y", "{field:} names no field"),
        ("{field: }/%Y", "{field: } names no field"),
        ("{fields:x}", "unknown placeholder {fields:x}"),
        ("/".join(f"k{i}={{field:f{i}}}" for i in range(5)), "more than 512 bytes"),
        ("{field:x}/../%Y", "the segment '..'"),
        ("a\tb\x01/%Y", "control character"),
        ("a\x00b/%Y", "control character"),
        ("\ud800/%Y", "not valid UTF-8"),
        ("%Y/%E", "a lone %E at its end"),
        ("x" * 256 + "/%Y", "a segment of more than 255"),
        ("/".join(["%Y%m%d"] * 100), "more than 512 bytes"),
    ],
)
def test_custom_partition_templates_that_cannot_make_a_relative_path_are_refused(
    template: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        check_partition_template(template, "acme", "web")


def test_a_stored_template_with_unknown_braces_still_formats_them_as_written() -> None:
    """Saved before placeholders were read, such a template wrote its braces literally; packer
    goes on doing so (only saving one now is refused)."""
    assert partition_strftime("{env}/{year}", "acme", "web") == "{env}/%Y"


def test_an_error_quotes_a_long_template_cut_short() -> None:
    with pytest.raises(ConfigError) as refused:
        check_partition_template("x" * 100_000, "acme", "web")
    assert len(str(refused.value)) < 500


def test_partition_fields_are_named_once_in_order_and_filled_by_place() -> None:
    template = "b={field:b}/a={field:event.a}/again={field:b}/{year}"
    assert partition_fields(template) == ["b", "event.a"]
    assert partition_fields("{tenant}/%Y") == []
    formatted = partition_strftime(template, "acme", "web").replace("%Y", "2026")
    assert fill_partition_fields(formatted, ["x", "y%2F"]) == "b=x/a=y%2F/again=x/2026"
    # a field named like a slot is still filled from its own place
    assert fill_partition_fields(
        partition_strftime("{field:1}/{field:0}", "a", "b"), ["p", "q"]
    ) == ("p/q")


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, NULL_PARTITION_VALUE),
        ("", NULL_PARTITION_VALUE),
        ("login", "login"),
        ("a/b", "a%2Fb"),
        ("..", "%2E."),
        (".", "%2E"),
        ("_hidden", "%5Fhidden"),
        ("mid_dle.x", "mid_dle.x"),
        ("50%", "50%25"),
        ("k=v", "k%3Dv"),
        ("tab\there\n", "tab%09here%0A"),
        ("q\"#*?:\\{}[]^'", "q%22%23%2A%3F%3A%5C%7B%7D%5B%5D%5E%27"),
        ("über café", "über café"),
        ("a+b c", "a+b c"),
    ],
)
def test_partition_values_are_escaped_as_hive_escapes_them(value: str | None, name: str) -> None:
    assert escape_partition_value(value) == name


def test_long_partition_values_are_cut_and_stay_apart() -> None:
    first, second = "x" * 300 + "1", "x" * 300 + "2"
    cut = {escape_partition_value(first), escape_partition_value(second)}
    assert len(cut) == 2
    assert all(len(name.encode()) <= MAX_PARTITION_VALUE_BYTES for name in cut)
    # Neither a multi-byte character nor an escape is cut in two.
    for value in ("é" * 200, "/" * 200, "a" + "/" * 200):
        name = escape_partition_value(value)
        head = name.rsplit("~", 1)[0]
        assert len(name.encode()) <= MAX_PARTITION_VALUE_BYTES
        assert re.fullmatch(r"(é|%2F|a)*", head), name
