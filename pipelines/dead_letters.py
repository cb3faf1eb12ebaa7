"""Dead letters, as an operator reads and replays them.

Under ``_dead-letter/{tenant}/{dataset}/`` in the piper bucket, per intake object (its stem):

* ``{stem}.ndjson``: piper's letters, one JSON object a line with ``stage`` (``decode`` or
  ``transform``), ``error`` and the ``line`` as received (decode) or the ``record`` as the
  failing step saw it (transform);
* ``{stem}.raw.gz``: the intake object as it came, when piper could read no record of it;
* ``{stem}.staged.parquet`` and ``{stem}.packer.ndjson``: staged Parquet packer could not read,
  and why.

A replay gives piper (or packer) another go once the cause is fixed: a dataset's format or
delimiter corrected, a defect fixed by an upgrade. An object set aside whole goes back to the
intake as it came; decode letters of a format whose lines stand alone go back as an object of
those lines; staged Parquet set aside goes back to the staged objects. Transform letters stay:
their record is what the failing step saw, after the steps before it, and running the whole chain
over it again would apply those steps twice.

Exactly once: the object a replay writes has a key derived from the letters' own
(``IntakeKey.replayed``), written only if absent, and the letters go only after it is written. A
replay interrupted between the two and run again finds the object (or what piper made of it) and
only removes the letters, within packer's ledger retention (an hour by default).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from bytefreezer.control.models import Dataset
from bytefreezer.errors import InvalidName, StorageError
from bytefreezer.keys import DEAD_LETTER_PREFIX, IntakeKey, packed_prefix
from bytefreezer.pipelines.decode import LINE_FORMATS, choose_format
from bytefreezer.storage import ObjectStore, Storage

# What follows the stem in each dead-letter object's name, longest first.
_SUFFIXES = (".staged.parquet", ".packer.ndjson", ".raw.gz", ".ndjson")
# Formats whose rejected lines make an object of their own (a CSV line needs its header).
REPLAYABLE_LINE_FORMATS = (LINE_FORMATS | {"json"}) - {"csv", "tsv"}
# Characters of an error kept when letters are counted by reason.
_REASON_CHARS = 160


@dataclass
class LetterGroup:
    """The dead letters of one intake object."""

    stem: str
    received_at_ns: int
    letters: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    set_aside: list[str] = field(default_factory=list)  # raw.gz, staged.parquet
    bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = dict(self.reasons.most_common())
        return data


@dataclass
class ReplayReport:
    """What a replay did."""

    objects: list[str] = field(default_factory=list)  # intake or staged keys written
    replayed_letters: int = 0
    kept_letters: Counter[str] = field(default_factory=Counter)  # why letters stay, and how many
    already_replayed: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kept_letters"] = dict(self.kept_letters)
        return data


def dead_letter_prefix(tenant: str, dataset: str) -> str:
    return f"{DEAD_LETTER_PREFIX}/{tenant}/{dataset}/"


def _stem_of(name: str) -> tuple[str, str] | None:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def _intake_key(tenant: str, dataset: str, stem: str) -> IntakeKey | None:
    try:
        return IntakeKey.parse(f"{tenant}/{dataset}/{stem}.gz")
    except InvalidName:
        return None  # not one of ours: left alone


def _objects(piper: ObjectStore, tenant: str, dataset: str) -> dict[str, dict[str, int]]:
    """Each stem with dead letters, and its objects (suffix → size), oldest first."""
    found: dict[str, dict[str, int]] = {}
    for info in piper.iter(dead_letter_prefix(tenant, dataset)):
        parsed = _stem_of(info.key.rsplit("/", 1)[-1])
        if parsed is not None and _intake_key(tenant, dataset, parsed[0]) is not None:
            found.setdefault(parsed[0], {})[parsed[1]] = info.size
    return dict(
        sorted(found.items(), key=lambda item: (_time_of(tenant, dataset, item[0]), item[0]))
    )


def _time_of(tenant: str, dataset: str, stem: str) -> int:
    key = _intake_key(tenant, dataset, stem)
    return key.unixnano if key is not None else 0


def _letters(piper: ObjectStore, key: str) -> list[dict[str, Any]]:
    try:
        data = piper.get(key)
    except FileNotFoundError:
        return []
    letters = []
    for line in data.splitlines():
        if line.strip():
            try:
                letters.append(json.loads(line))
            except ValueError:
                letters.append(
                    {"stage": "unknown", "error": "unreadable dead letter", "line": None}
                )
    return letters


def _reason(letter: dict[str, Any]) -> str:
    stage = letter.get("stage") or "unknown"
    step = f" ({letter['transform']})" if letter.get("transform") else ""
    return f"{stage}{step}: {str(letter.get('error', ''))[:_REASON_CHARS]}"


def list_dead_letters(storage: Storage, tenant: str, dataset: str) -> list[LetterGroup]:
    """The dataset's dead letters by intake object, oldest first, counted by reason."""
    piper = storage.piper
    prefix = dead_letter_prefix(tenant, dataset)
    groups = []
    for stem, objects in _objects(piper, tenant, dataset).items():
        key = _intake_key(tenant, dataset, stem)
        assert key is not None
        group = LetterGroup(stem, key.unixnano, bytes=sum(objects.values()))
        group.set_aside = [s.lstrip(".") for s in (".raw.gz", ".staged.parquet") if s in objects]
        for suffix in (".ndjson", ".packer.ndjson"):
            if suffix in objects:
                letters = _letters(piper, f"{prefix}{stem}{suffix}")
                group.letters += len(letters)
                group.reasons.update(_reason(letter) for letter in letters)
        groups.append(group)
    return groups


def read_dead_letters(storage: Storage, tenant: str, dataset: str) -> Iterator[dict[str, Any]]:
    """Every dead letter of the dataset, oldest object first, each with its object's stem."""
    piper = storage.piper
    prefix = dead_letter_prefix(tenant, dataset)
    for stem, objects in _objects(piper, tenant, dataset).items():
        for suffix in (".ndjson", ".packer.ndjson"):
            if suffix in objects:
                for letter in _letters(piper, f"{prefix}{stem}{suffix}"):
                    yield {"object": stem, **letter}


def _ledger_stems(piper: ObjectStore, tenant: str, dataset: str) -> set[str]:
    """The stems packer's ledger holds (read only; packer prunes and merges it)."""
    stems: set[str] = set()
    for info in piper.iter(packed_prefix(tenant, dataset)):
        try:
            entry = json.loads(piper.get(info.key, size=info.size))
        except FileNotFoundError:
            continue
        stems.update(entry.get("packed") or entry.get("stems") or [])
    return stems


class _Replayer:
    """Writes a dataset's replays, each once (module docstring)."""

    def __init__(self, storage: Storage, dataset: Dataset, report: ReplayReport) -> None:
        self._piper, self._intake = storage.piper, storage.intake
        self._dataset = dataset
        self._report = report
        self._ledger: set[str] | None = None

    def _taken_on(self, key: IntakeKey) -> bool:
        """Whether piper already processed an earlier write of this replay (then interrupted
        before its letters went): its staged object or letters are there, or packer packed it."""
        if self._piper.exists(key.staged_key) or self._piper.exists(key.dead_letter_key):
            return True
        if self._ledger is None:
            self._ledger = _ledger_stems(self._piper, key.tenant, key.dataset)
        return key.stem in self._ledger

    def write(self, store: ObjectStore, key: str, data: bytes, done: bool) -> None:
        """Write ``data`` at ``key`` unless it is there already or ``done``."""
        if done:
            self._report.already_replayed.append(key)
        elif store.put_if_absent(key, data):
            self._report.objects.append(key)
        else:
            try:
                same = store.get(key) == data
            except FileNotFoundError:
                same = True  # there a moment ago, and taken on since
            if not same:
                raise StorageError(f"{store.url}/{key} holds other data; replay it by hand")
            self._report.already_replayed.append(key)

    def intake(self, original: IntakeKey, data: bytes) -> None:
        target = original.replayed()
        self.write(self._intake, target.key, data, self._taken_on(target))

    def staged(self, original: IntakeKey, data: bytes) -> None:
        # Never packed (packer set it aside unread), so its own stem is new to the ledger.
        self.write(self._piper, original.staged_key, data, False)


def replay_dead_letters(storage: Storage, dataset: Dataset) -> ReplayReport:
    """Give the dataset's replayable dead letters another go (module docstring); the rest stay,
    counted by why in the report."""
    piper = storage.piper
    tenant, name = dataset.tenant, dataset.name
    prefix = dead_letter_prefix(tenant, name)
    report = ReplayReport()
    replayer = _Replayer(storage, dataset, report)
    for stem, objects in _objects(piper, tenant, name).items():
        original = _intake_key(tenant, name, stem)
        assert original is not None
        if ".staged.parquet" in objects:
            try:
                replayer.staged(original, piper.get(f"{prefix}{stem}.staged.parquet"))
            except FileNotFoundError:
                continue  # another replay took it
            report.replayed_letters += 1
            piper.delete_many([f"{prefix}{stem}.packer.ndjson", f"{prefix}{stem}.staged.parquet"])
        letters = _letters(piper, f"{prefix}{stem}.ndjson") if ".ndjson" in objects else []
        if ".raw.gz" in objects:
            try:
                replayer.intake(original, piper.get(f"{prefix}{stem}.raw.gz"))
            except FileNotFoundError:
                continue
            report.replayed_letters += len(letters)
            # The letters go only now that what replays them is written.
            piper.delete_many([f"{prefix}{stem}.ndjson", f"{prefix}{stem}.raw.gz"])
            continue
        fmt = choose_format(original.format_hint, dataset.format)
        lines: list[bytes] = []
        kept: list[dict[str, Any]] = []
        for letter in letters:
            if letter.get("stage") != "decode" or letter.get("line") is None:
                kept.append(letter)
                report.kept_letters[f"{letter.get('stage', 'unknown')} letters"] += 1
            elif fmt not in REPLAYABLE_LINE_FORMATS:
                kept.append(letter)
                report.kept_letters[f"{fmt} lines (a line needs its header)"] += 1
            else:
                lines.append(str(letter["line"]).encode())
        if not lines:
            continue
        replayer.intake(original, gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6))
        report.replayed_letters += len(lines)
        if kept:
            piper.put(f"{prefix}{stem}.ndjson", b"".join(_line(letter) for letter in kept))
        else:
            piper.delete(f"{prefix}{stem}.ndjson")
    return report


def _line(letter: dict[str, Any]) -> bytes:
    return json.dumps(letter, ensure_ascii=False).encode() + b"\n"
