"""Reading and replaying dead letters: counted by reason, shown as they are, and given another go
once the cause is fixed, each record once even when a replay is interrupted and run again."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bytefreezer.cli import main
from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.errors import StorageError
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines.dead_letters import (
    dead_letter_prefix,
    list_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import ObjectStore, Storage
from tests.e2e.test_recovery import setup_stack
from tests.e2e.test_s3 import s3_settings
from tests.helpers import read_parquet_dir

SYSLOG = [
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    "<13>Feb  5 17:32:18 10.0.0.99 sshd[4123]: Accepted publickey for alice",
]
CAST = [{"type": "cast", "config": {"fields": {"n": "int"}, "on_error": "dead_letter"}}]


def dataset(control: ControlStore, fmt: str) -> None:
    control.put_dataset("acme", DatasetSpec(name="app", format=fmt, transforms=CAST))  # type: ignore[arg-type]


def stack(tmp_path: Path) -> tuple[Settings, ControlStore, Storage]:
    """An `app` dataset read as NDJSON, posted syslog lines among its JSON (rejected as
    invalid JSON), a record its cast rejects, and an object that is not gzip (set aside)."""
    settings, control, storage = setup_stack(tmp_path)
    dataset(control, "ndjson")
    writer = IntakeWriter(storage)
    lines = [json.dumps({"id": 1, "n": "5"}), json.dumps({"id": 2, "n": "x"}), *SYSLOG]
    writer.write("acme", "app", "auto", gzip.compress("\n".join(lines).encode()), {})
    writer.write("acme", "app", "auto", b"\x1f\x8bnot gzip at all", {})
    run_piper_cycle(settings, control, storage)
    return settings, control, storage


def parquet_rows(settings: Settings) -> list[dict[str, Any]]:
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "app")
    return [] if table is None else table.to_pylist()


def test_dead_letters_are_listed_by_object_and_reason_and_shown(tmp_path: Path) -> None:
    _, _, storage = stack(tmp_path)
    groups = list_dead_letters(storage, "acme", "app")
    assert [g.letters for g in groups] == [3, 1]
    first, second = groups
    assert first.set_aside == [] and first.received_at_ns < second.received_at_ns
    decode = {r: n for r, n in first.reasons.items() if r.startswith("decode: invalid JSON")}
    assert sum(decode.values()) == 2
    assert first.reasons["transform (cast): cannot cast n to int"] == 1
    assert second.set_aside == ["raw.gz"]
    letters = list(read_dead_letters(storage, "acme", "app"))
    assert [letter["object"] for letter in letters] == [first.stem] * 3 + [second.stem]
    rejected = [r["line"] for r in letters if r["stage"] == "decode" and r["line"] is not None]
    assert rejected == SYSLOG
    assert json.loads(next(r for r in letters if r["stage"] == "transform")["record"])["n"] == "x"
    assert letters[-1]["line"] is None and letters[-1]["bytes"] > 0  # the object set aside


def test_replay_after_the_format_is_fixed_brings_the_lines_in_once(tmp_path: Path) -> None:
    settings, control, storage = stack(tmp_path)
    dataset(control, "syslog")  # the source was syslog all along
    first, second = (IntakeKey.parse(f"acme/app/{g}.gz") for g in _stems(storage))
    report = replay_dead_letters(storage, control.get_dataset("acme", "app"))
    assert sorted(report.objects) == sorted([first.replayed().key, second.replayed().key])
    assert report.replayed_letters == 3 and report.kept_letters == {"transform letters": 1}
    # The transform letter stays (its record is what the failing step saw); the rest went.
    left = list(read_dead_letters(storage, "acme", "app"))
    assert [letter["stage"] for letter in left] == ["transform"]
    again = replay_dead_letters(storage, control.get_dataset("acme", "app"))
    assert again.objects == [] and again.replayed_letters == 0

    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    rows = parquet_rows(settings)
    assert [r.get("id") for r in rows].count(1) == 1
    messages = sorted(r["message"] for r in rows if r.get("message"))
    assert messages == sorted(
        ["'su root' failed for lonvick on /dev/pts/8", "Accepted publickey for alice"]
    )
    # The object that is not gzip is set aside again, under the replay's name.
    again_left = list_dead_letters(storage, "acme", "app")
    assert [g.stem for g in again_left if g.set_aside] == [second.replayed().stem]
    replay = replay_dead_letters(storage, control.get_dataset("acme", "app"))
    assert replay.objects == [second.replayed().replayed().key]


def _stems(storage: Storage) -> list[str]:
    return [g.stem for g in list_dead_letters(storage, "acme", "app")]


@pytest.mark.parametrize("piper_runs_between", [False, True])
def test_an_interrupted_replay_run_again_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piper_runs_between: bool
) -> None:
    """The replay object is written, then the process dies before the letters go. Run again
    with the object still waiting, or after piper (and packer) took it on, nothing is written
    twice and every line is in Parquet once."""
    settings, control, storage = stack(tmp_path)
    dataset(control, "syslog")
    original_delete = ObjectStore.delete

    def dies(self: ObjectStore, key: str) -> None:
        if key.endswith(".ndjson") and "/_dead-letter/" in f"/{key}":
            raise StorageError("killed before the letters went")
        original_delete(self, key)

    monkeypatch.setattr(ObjectStore, "delete", dies)
    monkeypatch.setattr(ObjectStore, "delete_many", lambda self, keys: dies(self, keys[0]))
    with pytest.raises(StorageError):
        replay_dead_letters(storage, control.get_dataset("acme", "app"))
    monkeypatch.undo()
    # Both replays were written; the first object's letters were rewritten without the lines,
    # the second's (the object set aside) are still there.
    written = sorted(o.key for o in storage.intake.list("acme/app/"))
    assert len(written) == 2 and all(k.endswith(".replay1.gz") for k in written)
    if piper_runs_between:
        run_piper_cycle(settings, control, storage)
        run_packer_cycle(settings, control, storage)
    report = replay_dead_letters(storage, control.get_dataset("acme", "app"))
    assert report.already_replayed == [written[1]]
    # (piper set the replayed non-gzip object aside again: those are new letters, replayed anew)
    assert not [k for k in report.objects if k.endswith(".replay1.gz")]
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    messages = Counter(r["message"] for r in parquet_rows(settings) if r.get("message"))
    assert set(messages.values()) == {1} and len(messages) == 2


def test_staged_parquet_packer_set_aside_goes_back_to_be_packed(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    key = IntakeKey("acme", "web", 1_767_225_600_000_000_000, "ndjson")
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": [7, 8], "timestamp": ["2026-01-01T00:00:00Z"] * 2}), sink)
    prefix = dead_letter_prefix("acme", "web")
    storage.piper.put(f"{prefix}{key.stem}.staged.parquet", sink.getvalue())
    letter = {"stage": "packer", "error": "OSError: a read that failed then", "line": None}
    storage.piper.put(f"{prefix}{key.stem}.packer.ndjson", json.dumps(letter).encode() + b"\n")
    (group,) = list_dead_letters(storage, "acme", "web")
    assert group.set_aside == ["staged.parquet"] and group.letters == 1
    report = replay_dead_letters(storage, control.get_dataset("acme", "web"))
    assert report.objects == [key.staged_key] and report.replayed_letters == 1
    assert list_dead_letters(storage, "acme", "web") == []
    run_packer_cycle(settings, control, storage)
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    assert table is not None and sorted(table.column("id").to_pylist()) == [7, 8]


def test_a_csv_line_is_not_replayed_without_its_header(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    control.put_dataset("acme", DatasetSpec(name="web", format="csv"))
    body = b'a,b\n1,2\n"unclosed,3\n'
    IntakeWriter(storage).write("acme", "web", "auto", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    letters = list(read_dead_letters(storage, "acme", "web"))
    if not letters:
        pytest.skip("this CSV reader accepts the line")  # pragma: no cover
    report = replay_dead_letters(storage, control.get_dataset("acme", "web"))
    assert report.objects == [] and report.kept_letters == {
        "csv lines (a line needs its header)": len(letters)
    }
    assert len(list(read_dead_letters(storage, "acme", "web"))) == len(letters)


def test_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    settings, _, _ = stack(tmp_path)
    data = ["--data-dir", str(settings.data_dir)]
    main(["dead-letters", "list", "acme", "app", *data])
    listed = json.loads(capsys.readouterr().out)
    assert [g["letters"] for g in listed] == [3, 1]
    main(["dead-letters", "show", "acme", "app", "--limit", "2", *data])
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(shown) == 2 and shown[0]["object"] == listed[0]["stem"]
    main(["datasets", "update", "acme", "app", "--format", "syslog", *data])
    capsys.readouterr()
    main(["dead-letters", "replay", "acme", "app", *data])
    assert json.loads(capsys.readouterr().out)["replayed_letters"] == 3
    with pytest.raises(SystemExit):
        main(["dead-letters", "list", "acme", "nope", *data])
    error = capsys.readouterr().err.strip()
    assert "not found" in error and "\n" not in error


@pytest.mark.s3
def test_replay_on_s3(tmp_path: Path, s3_server: dict[str, str]) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = s3_settings(tmp_path, s3_server, suffix)
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="app"))
    writer = IntakeWriter(storage)
    writer.write("acme", "app", "auto", gzip.compress("\n".join(SYSLOG).encode()), {})
    run_piper_cycle(settings, control, storage)
    (group,) = list_dead_letters(storage, "acme", "app")
    assert group.letters == 2
    dataset(control, "syslog")
    report = replay_dead_letters(storage, control.get_dataset("acme", "app"))
    assert len(report.objects) == 1 and report.replayed_letters == 2
    assert replay_dead_letters(storage, control.get_dataset("acme", "app")).objects == []
    assert list_dead_letters(storage, "acme", "app") == []
    run_piper_cycle(settings, control, storage)
    staged = [o.key for o in storage.piper.list("acme/app/")]
    assert [IntakeKey.parse(k).hint for k in staged] == ["auto.replay1"]
    assert storage.intake.list("acme/app/") == []
