"""Every object-key format bytefreezer reads or writes, and the name rules that keep keys safe.

Layout (bucket → key):

* intake:  ``{tenant}/{dataset}/{tenant}--{dataset}--{unixnano}--{hint}.gz`` (the original layout;
  a replay of dead letters: the hint with ``.replayN``, ``IntakeKey.replayed``)
* piper:   ``{tenant}/{dataset}/{tenant}--{dataset}--{unixnano}--{hint}.parquet`` (staged rows)
* piper:   ``_dead-letter/{tenant}/{dataset}/{stem}.ndjson`` (rejected records with reasons)
* piper:   ``_manifests/{tenant}/{dataset}/{run_id}.json`` (packer's commit manifests)
* piper:   ``_packed/{tenant}/{dataset}/{run_id}.json`` (stems packed recently: the ledger)
* destination: ``{partition path}/part-{run_id}-{n:05d}.parquet``, the partition path from the
  dataset's partitioning (a custom template: ``partition_strftime``, its record fields'
  values escaped by ``escape_partition_value``)

Tenant and dataset names can never start with ``_``, so the underscore prefixes cannot collide
with a tenant's prefix.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from bytefreezer.errors import ConfigError, InvalidName

NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")
_HINT_RE = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,62}\Z")

DEAD_LETTER_PREFIX = "_dead-letter"
_REPLAY_RE = re.compile(r"\.replay(\d+)\Z")
RAW_PREFIX = "_raw"  # at a destination: intake objects kept as received (keep_raw)
MANIFEST_PREFIX = "_manifests"
PACKED_PREFIX = "_packed"
COMPACTION_PREFIX = "_compactions"


def validate_name(value: str, kind: str = "name") -> str:
    """Return ``value`` if it is a valid tenant or dataset name, else raise ``InvalidName``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidName(
            f"invalid {kind} {value!r}: use 1-63 characters from a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def validate_hint(value: str) -> str:
    """Return ``value`` if it is a safe data hint (the last part of an intake key)."""
    if not _HINT_RE.match(value) or ".." in value or "--" in value:
        raise InvalidName(
            f"invalid data hint {value!r}: use 1-63 characters from a-z, 0-9, '_', '-' and '.'"
        )
    return value


def format_hint(hint: str) -> str:
    """A data hint as the format it may name: without the ``.replayN`` a replay adds."""
    return _REPLAY_RE.sub("", hint)


@dataclass(frozen=True, slots=True)
class IntakeKey:
    """The key of one raw object in the intake bucket."""

    tenant: str
    dataset: str
    unixnano: int
    hint: str = "ndjson"

    def __post_init__(self) -> None:
        validate_name(self.tenant, "tenant")
        validate_name(self.dataset, "dataset")
        validate_hint(self.hint)

    @property
    def format_hint(self) -> str:
        """The hint as the format it may name: without the ``.replayN`` a replay adds."""
        return format_hint(self.hint)

    def replayed(self) -> IntakeKey:
        """The key a replay of this object's dead letters is written under: the same tenant,
        dataset and time (records without a time keep their ingest time), the hint marked
        ``.replay1`` (``.replay2`` for a replay of a replay), so the stem is new to piper and
        packer's ledger and the same every time this object is replayed."""
        found = _REPLAY_RE.search(self.hint)
        generation = int(found.group(1)) + 1 if found else 1
        suffix = f".replay{generation}"
        base = self.format_hint[: 63 - len(suffix)].rstrip("._-")  # a long hint names no format
        return IntakeKey(self.tenant, self.dataset, self.unixnano, f"{base}{suffix}")

    @property
    def stem(self) -> str:
        """The file name without extension, shared by every object derived from this one."""
        return f"{self.tenant}--{self.dataset}--{self.unixnano}--{self.hint}"

    @property
    def key(self) -> str:
        """The object key in the intake bucket."""
        return f"{self.tenant}/{self.dataset}/{self.stem}.gz"

    @property
    def staged_key(self) -> str:
        """Where piper writes this object's staged Parquet in the piper bucket."""
        return f"{self.tenant}/{self.dataset}/{self.stem}.parquet"

    @property
    def dead_letter_key(self) -> str:
        """Where piper writes this object's rejected records in the piper bucket."""
        return self._beside_dead_letters("ndjson")

    @property
    def set_aside_intake_key(self) -> str:
        """Where piper keeps this intake object as it came when it cannot read it."""
        return self._beside_dead_letters("raw.gz")

    @property
    def set_aside_staged_key(self) -> str:
        """Where packer keeps this object's staged Parquet when it cannot read it."""
        return self._beside_dead_letters("staged.parquet")

    @property
    def raw_copy_key(self) -> str:
        """Where piper keeps this object as received, at a destination of a dataset with
        ``keep_raw``: under ``_raw/`` (which table readers skip), by the UTC day the receiver
        stored it, named as in the intake."""
        day = time.strftime("%Y-%m-%d", time.gmtime(self.unixnano // 1_000_000_000))
        return f"{RAW_PREFIX}/date={day}/{self.stem}.gz"

    @property
    def packer_dead_letter_key(self) -> str:
        """Where packer says why it set this object's staged Parquet aside."""
        return self._beside_dead_letters("packer.ndjson")

    def _beside_dead_letters(self, suffix: str) -> str:
        """This object's name with ``suffix`` among its dataset's dead letters (piper bucket)."""
        return f"{DEAD_LETTER_PREFIX}/{self.tenant}/{self.dataset}/{self.stem}.{suffix}"

    @classmethod
    def parse(cls, key: str) -> IntakeKey:
        """Parse an intake key (or a staged key); raise ``InvalidName`` if it is not one."""
        parts = key.split("/")
        if len(parts) != 3:
            raise InvalidName(f"not an intake key: {key!r}")
        tenant, dataset, filename = parts
        for ext in (".gz", ".parquet"):
            if filename.endswith(ext):
                filename = filename[: -len(ext)]
                break
        else:
            raise InvalidName(f"not an intake key: {key!r}")
        prefix = f"{tenant}--{dataset}--"
        if not filename.startswith(prefix):
            raise InvalidName(f"not an intake key: {key!r}")
        nano, sep, hint = filename[len(prefix) :].partition("--")
        if not sep or not (nano.isascii() and nano.isdigit()):
            raise InvalidName(f"not an intake key: {key!r}")
        return cls(tenant, dataset, int(nano), hint)


def dataset_prefix(tenant: str, dataset: str) -> str:
    """The prefix under which a dataset's intake or staged objects live (with trailing slash)."""
    return f"{validate_name(tenant, 'tenant')}/{validate_name(dataset, 'dataset')}/"


def manifest_prefix(tenant: str, dataset: str) -> str:
    """The prefix of a dataset's packer manifests in the piper bucket."""
    return f"{MANIFEST_PREFIX}/{dataset_prefix(tenant, dataset)}"


def manifest_key(tenant: str, dataset: str, run_id: str) -> str:
    """The key of one packer manifest."""
    return f"{manifest_prefix(tenant, dataset)}{run_id}.json"


def packed_prefix(tenant: str, dataset: str) -> str:
    """The prefix of a dataset's ledger of packed stems in the piper bucket."""
    return f"{PACKED_PREFIX}/{dataset_prefix(tenant, dataset)}"


def packed_key(tenant: str, dataset: str, run_id: str) -> str:
    """The ledger entry of one finished packer run: the stems it packed."""
    return f"{packed_prefix(tenant, dataset)}{run_id}.json"


def compaction_prefix(tenant: str, dataset: str) -> str:
    """The prefix of a dataset's unfinished compactions in the piper bucket."""
    return f"{COMPACTION_PREFIX}/{dataset_prefix(tenant, dataset)}"


def compaction_key(tenant: str, dataset: str, run_id: str) -> str:
    """The manifest of one compaction: the files it merges and the file it writes."""
    return f"{compaction_prefix(tenant, dataset)}{run_id}.json"


def output_file_name(run_id: str, index: int) -> str:
    """The file name of one packer output within its partition directory."""
    return f"part-{run_id}-{index:05d}.parquet"


def piper_lease_name(intake_key: str) -> str:
    """The lease that guards processing of one intake object."""
    return f"piper:{intake_key}"


def packer_lease_name(tenant: str, dataset: str) -> str:
    """The lease that guards packing of one dataset."""
    return f"packer:{tenant}/{dataset}"


# A custom partition template is strftime text. The original ByteFreezer's custom layouts name
# their fields in braces instead; those placeholders are read too, so its dataset configurations
# carry over (``{tenant}/{dataset}/{year}/{month}/{day}``).
_TIME_PLACEHOLDERS = {"year": "%Y", "month": "%m", "day": "%d", "hour": "%H"}
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
# ``{field:NAME}`` partitions by a record's value of field NAME (a dotted path names a field
# inside an object), as Firehose's dynamic partitioning and Vector's key templates do. In the
# strftime format a field stands as ``{field:N}``, N its place in ``partition_fields``.
_FIELD_PREFIX = "field:"
_FIELD_SLOT_RE = re.compile(r"\{field:(\d+)\}")
# The directory name of a missing, null or empty value: what Hive, Spark, DuckDB and pyarrow read
# back as null.
NULL_PARTITION_VALUE = "__HIVE_DEFAULT_PARTITION__"
# A value longer than this once escaped is cut, with a hash of the whole value kept distinct.
MAX_PARTITION_VALUE_BYTES = 100
# Characters a value holds escaped as %XX, as Hive and Spark escape partition values (readers
# URI-decode them back), and braces; control characters too.
_ESCAPED = frozenset("\"#%'*/:=?\\{}[]^") | {chr(c) for c in range(32)} | {"\x7f"}
# strftime fields a partition path may use (Arrow's strftime leaves others as they are, or
# prints something else: `%-d` stays `%-d`, `%Q` prints a number): dates, times, zones, `%%`.
_STRFTIME_FIELDS = set("aAbBcCdDeFgGhHIjmMpRrSTuUVwWxXyYzZ%")
_STRFTIME_RE = re.compile(r"%([EO]?)(.?)")
# A partition path's bounds: a directory name on common filesystems, and room in an S3 key (1,024
# bytes) for the destination's prefix and the file name.
MAX_PARTITION_SEGMENT_BYTES = 255
MAX_PARTITION_PATH_BYTES = 512
# Times a template is tried on before it is accepted: one- and two-digit fields, before 2000.
_SAMPLE_MICROS = (1_704_164_645_678_901, 946_684_799_000_000, 0)


def _quoted(template: str) -> str:
    """A template as an error message quotes it (a long one cut short)."""
    return repr(template if len(template) <= 120 else template[:120] + "...")


def partition_fields(template: str) -> list[str]:
    """The record fields a custom partition template names (``{field:NAME}``), each once, in
    the order they first appear."""
    names: list[str] = []
    for inner in _PLACEHOLDER_RE.findall(template):
        if inner.startswith(_FIELD_PREFIX) and inner[len(_FIELD_PREFIX) :] not in names:
            names.append(inner[len(_FIELD_PREFIX) :])
    return names


def partition_strftime(template: str, tenant: str, dataset: str) -> str:
    """A custom partition template as an strftime format: the placeholders ``{year}``,
    ``{month}``, ``{day}``, ``{hour}`` become their fields and ``{tenant}``, ``{dataset}`` the
    names (which hold no ``%``); ``{field:NAME}`` becomes ``{field:N}``, N the field's place in
    ``partition_fields`` (``fill_partition_fields`` puts the values in after formatting). Other
    text in braces stays as written, as it did before placeholders were read
    (``check_partition_template`` refuses it in a template saved now)."""
    fields = partition_fields(template)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _TIME_PLACEHOLDERS:
            return _TIME_PLACEHOLDERS[name]
        if name.startswith(_FIELD_PREFIX):
            return f"{{field:{fields.index(name[len(_FIELD_PREFIX) :])}}}"
        return {"tenant": tenant, "dataset": dataset}.get(name, match.group(0))

    return _PLACEHOLDER_RE.sub(replace, template)


def fill_partition_fields(path: str, values: list[str]) -> str:
    """A formatted partition path with each ``{field:N}`` replaced by ``values[N]`` (escaped
    values, ``escape_partition_value``)."""
    return _FIELD_SLOT_RE.sub(lambda match: values[int(match.group(1))], path)


def escape_partition_value(value: str | None) -> str:
    """A record's value as a partition directory name, the way Hive and Spark write one:
    missing, null or empty is ``NULL_PARTITION_VALUE``; ``/``, ``=``, ``%``, quotes, control
    characters and the like are ``%XX``, as is a leading ``.`` or ``_`` (readers skip
    directories that start with one, and ``..`` must not climb). Readers with Hive
    partitioning URI-decode the name back to the value. A name that would pass
    ``MAX_PARTITION_VALUE_BYTES`` is cut, with a hash of the whole value so that values with a
    common start stay apart."""
    if not value:
        return NULL_PARTITION_VALUE
    escaped = "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in value)
    if escaped[0] in "._":
        escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
    if len(escaped.encode()) <= MAX_PARTITION_VALUE_BYTES:
        return escaped
    digest = hashlib.blake2b(value.encode(errors="surrogatepass"), digest_size=8).hexdigest()
    room = MAX_PARTITION_VALUE_BYTES - len(digest) - 1
    kept = escaped.encode()[:room].decode(errors="ignore")  # no character cut in two
    cut = kept.rfind("%", len(kept) - 2)  # nor an escape
    return f"{kept[:cut] if cut >= 0 else kept}~{digest}"


def check_partition_template(template: str, tenant: str, dataset: str) -> None:
    """``ConfigError`` unless ``template`` (partitioning ``custom``) makes partition paths a
    destination can hold: only known strftime fields and placeholders, and, for sample times
    and the longest field values, paths of non-empty segments other than ``.`` and ``..``
    without control characters, within ``MAX_PARTITION_PATH_BYTES``.
    Packer would otherwise fail on the dataset every run."""
    if not template.strip():
        raise ConfigError(
            "partitioning 'custom' needs a partition_template, e.g. 'dt=%Y-%m-%d/hr=%H' or "
            "'{year}/{month}/{day}'"
        )
    try:
        template.encode()
    except UnicodeEncodeError:
        raise ConfigError(
            f"partition_template {_quoted(template)} is not valid UTF-8 text"
        ) from None
    for name in _PLACEHOLDER_RE.findall(template):
        if name.startswith(_FIELD_PREFIX):
            if not name[len(_FIELD_PREFIX) :].strip():
                raise ConfigError(
                    f"partition_template {_quoted(template)}: {{{name}}} names no field; write "
                    "{field:NAME}, e.g. {field:event_type} or {field:event.kind}"
                )
        elif name not in _TIME_PLACEHOLDERS and name not in ("tenant", "dataset"):
            raise ConfigError(
                f"partition_template {_quoted(template)}: unknown placeholder {{{name}}}; use "
                "strftime fields (%Y, %m, %d, %H, ...) or {year}, {month}, {day}, {hour}, "
                "{tenant}, {dataset}, {field:NAME}"
            )
    fmt = partition_strftime(template, tenant, dataset)
    for modifier, field in _STRFTIME_RE.findall(fmt):
        if field not in _STRFTIME_FIELDS or (modifier and field == "%"):
            shown = f"%{modifier}{field}" if field else f"a lone %{modifier} at its end"
            raise ConfigError(
                f"partition_template {_quoted(template)}: {shown} is no strftime field a partition "
                "path can use (write %% for a percent sign)"
            )
    import pyarrow as pa
    import pyarrow.compute as pc

    samples = pa.array(_SAMPLE_MICROS, pa.timestamp("us", tz="UTC"))
    longest = ["x" * MAX_PARTITION_VALUE_BYTES] * len(partition_fields(template))
    for formatted in [fmt, *pc.strftime(samples, format=fmt, locale="C").to_pylist()]:
        path = fill_partition_fields(formatted, longest)
        segments = path.split("/")
        bad = next((s for s in segments if s in ("", ".", "..")), None)
        if bad is not None:
            why = (
                "an empty segment (a leading, trailing or double '/')"
                if bad == ""
                else f"the segment {bad!r}"
            )
        elif any(ord(c) < 32 or ord(c) == 127 for c in path):
            why = "a control character"
        elif len(path.encode()) > MAX_PARTITION_PATH_BYTES or any(
            len(s.encode()) > MAX_PARTITION_SEGMENT_BYTES for s in segments
        ):
            why = (
                f"more than {MAX_PARTITION_PATH_BYTES} bytes, or a segment of more than "
                f"{MAX_PARTITION_SEGMENT_BYTES}"
            )
        else:
            continue
        raise ConfigError(
            f"partition_template {_quoted(template)} makes paths such as {_quoted(path)} with {why}: "
            "partition paths are relative, '/'-separated directory names"
        )
