"""The plugin's own tests, using bytefreezer's testing kit."""

from __future__ import annotations

from bytefreezer_example_plugin.severity import SeverityLabel
from bytefreezer_example_plugin.shout import Shout

from bytefreezer.transforms.testing import assert_transform, check_conformance


def test_conformance() -> None:
    check_conformance(SeverityLabel)
    check_conformance(Shout)


def test_severity_label() -> None:
    assert_transform(
        SeverityLabel,
        {},
        [{"severity": 3}, {"severity": 9}],
        [{"severity": 3, "severity_label": "error"}, {"severity": 9, "severity_label": None}],
    )


def test_shout_drops_fans_out_and_rejects() -> None:
    assert_transform(
        Shout,
        {},
        [{"message": "hi", "repeat": 2}, {"message": "x", "quiet": True}, {"message": ""}],
        # A batch is a table: every record has every column, absent ones as None.
        [{"message": "HI", "repeat": 2, "quiet": None}] * 2,
        rejected=["ValueError: message is empty"],
    )
