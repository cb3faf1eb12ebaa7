"""The object-key layout and name rules."""

from __future__ import annotations

import pytest

from bytefreezer.errors import InvalidName
from bytefreezer.keys import IntakeKey, dataset_prefix, validate_name


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


@pytest.mark.parametrize("bad", ["acme/web/x.gz", "acme/web/acme--web--nan--x.gz", "a/b/c/d.gz"])
def test_foreign_keys_are_not_parsed(bad: str) -> None:
    with pytest.raises(InvalidName):
        IntakeKey.parse(bad)
