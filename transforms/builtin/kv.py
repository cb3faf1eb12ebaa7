"""kv: parse `key=value` pairs from a text field into fields."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from bytefreezer.transforms.base import Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


class KvConfig(TransformConfig):
    """Split ``field`` into pairs and pairs into keys and values."""

    field: str = Field("message", description="Text field holding the pairs.")
    field_split: str = Field(" ", min_length=1, description="Characters that separate pairs.")
    value_split: str = Field("=", min_length=1, description="Characters between key and value.")
    prefix: str = Field("", description="Prepended to every key.")
    include_keys: list[str] = Field(
        default_factory=list, description="Only these keys (default all)."
    )
    exclude_keys: list[str] = Field(default_factory=list, description="Never these keys.")
    trim_key: str = Field("", description="Characters stripped from both ends of keys.")
    trim_value: str = Field("\"'", description="Characters stripped from both ends of values.")
    defaults: dict[str, str] = Field(
        default_factory=dict, description="Values for keys a record does not have."
    )
    target_field: str | None = Field(None, description="Put the pairs under this object field.")


class Kv(Transform):
    """Key-value parsing, with quoted values kept whole."""

    name: ClassVar[str] = "kv"
    Config: ClassVar[type[TransformConfig]] = KvConfig
    example: ClassVar[dict[str, Any]] = {"field": "message", "field_split": " ", "value_split": "="}

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, KvConfig)
        column = get_column(table, cfg.field)
        if column is None:
            return table
        n = table.num_rows
        if n == 0:
            return set_column(table, cfg.target_field, pa.nulls(0)) if cfg.target_field else table
        rows, keys, values = _pairs(string_values(column), cfg)
        # Straight into columns: per key, the rows that have it and their values (a row's last
        # value of a key wins, as in a dict), keys in the order they first appear.
        columns = {name: pa.repeat(value, n) for name, value in cfg.defaults.items()}
        for key, at in _by_key(keys, cfg).items():
            name = cfg.prefix + key
            spread = _spread(rows[at], values.take(pa.array(at)), n)
            columns[name] = pc.coalesce(spread, columns[name]) if name in columns else spread
        if cfg.target_field:
            return set_column(table, cfg.target_field, _as_objects(columns, n))
        for name, column_values in columns.items():
            table = set_column(table, name, column_values)
        return table


# Around each pair the vectorised split writes these marks (ASCII, so never a byte inside a
# character); text that holds them already is split by the loop instead.
_START, _END = 0x01, 0x03
_BACKSLASH = 0x5C
_NO_TEXT = pa.array([], pa.string())


def _pairs(texts: pa.ChunkedArray, cfg: KvConfig) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """Every pair of ``texts`` as its row, key (as written) and value (trimmed, unquoted), in
    row order, each row's pairs as they appear: what ``pair_pattern(...).findall`` finds.

    Arrow's regex kernel marks every pair of a column in one pass (RE2 finds the same leftmost
    matches as Python's ``findall``); the marks and each pair's first value separator are
    then found in the marked text's bytes, and keys and values are cut out of it. Rows that
    hold a mark character already are split by the per-row loop, and so is every row when the
    value separator is not one ASCII character or the trimmed characters are not ASCII (the
    byte search needs both)."""
    vectorised = (
        len(cfg.value_split) == 1 and cfg.value_split.isascii() and cfg.trim_value.isascii()
    )
    pattern = _arrow_pair_pattern(cfg.field_split, cfg.value_split)
    rows: list[np.ndarray] = []
    keys: list[pa.Array] = []
    values: list[pa.Array] = []
    base = 0
    for chunk in texts.chunks:
        if vectorised:
            looped = _marked_rows(chunk)
            texts_looped = chunk.take(pa.array(looped)).to_pylist() if len(looped) else []
            if len(looped):
                mask = np.zeros(len(chunk), dtype=bool)
                mask[looped] = True
                chunk = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), chunk)
            at, key, value = _split(chunk, pattern, cfg)
        else:
            looped, texts_looped = np.arange(len(chunk)), chunk.to_pylist()
            at, key, value = np.empty(0, dtype=np.int64), _NO_TEXT, _NO_TEXT
        if len(looped):
            at, key, value = _with_looped(at, key, value, looped, texts_looped, cfg)
        rows.append(at + base)
        keys.append(key)
        values.append(value)
        base += len(chunk)
    return np.concatenate(rows), pa.concat_arrays(keys), pa.concat_arrays(values)


def _marked_rows(texts: pa.Array) -> np.ndarray:
    """The rows of ``texts`` that hold a mark character already."""
    data, offsets = _bytes(texts)
    low = np.flatnonzero(data <= _END)
    low = low[(data[low] == _START) | (data[low] == _END)]
    return np.unique(np.searchsorted(offsets, low, side="right") - 1)


def _split(texts: pa.Array, pattern: str, cfg: KvConfig) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """``_pairs`` of rows without marks, for a one-byte value separator and ASCII trim."""
    marked = pc.replace_substring_regex(pc.fill_null(texts, ""), pattern, "\x01\\0\x03")
    data, offsets = _bytes(marked)
    low = np.flatnonzero(data <= _END)
    starts = low[data[low] == _START] + 1
    ends = low[data[low] == _END]
    # Each row's pairs: the marks before its end (fewer rows than pairs to look up).
    rows = np.repeat(np.arange(len(texts)), np.diff(np.searchsorted(starts, offsets)))
    vs, trim = cfg.value_split, cfg.trim_value
    # A key holds no value separator: a pair's first one ends its key.
    separators = np.flatnonzero(data == ord(vs))
    cuts = separators[np.searchsorted(separators, starts)]
    first, last, quoted = _unquoted(data, cuts + 1, ends, trim)
    # The marked text cut into key, separator, value, and the rest up to the next key: keys
    # and values are every fourth piece.
    pieces = _pieces(data, [starts, cuts, first, last])
    key = pieces.take(pa.array(np.arange(0, 4 * len(starts), 4)))
    value = pieces.take(pa.array(np.arange(2, 4 * len(starts), 4)))
    backslashes = np.flatnonzero(data == _BACKSLASH)
    if len(backslashes):  # a quoted value's escaped quotes and backslashes
        inside = np.searchsorted(backslashes, last) - np.searchsorted(backslashes, first)
        escaped = quoted & (inside > 0)
        if escaped.any():
            at = pa.array(np.flatnonzero(escaped))
            unescaped = pc.replace_substring_regex(value.take(at), _ESCAPED.pattern, "\\1")
            value = pc.replace_with_mask(value, pa.array(escaped), unescaped)
    return rows, key, value


def _unquoted(
    data: np.ndarray, first: np.ndarray, last: np.ndarray, trim: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_value`` on the values ``data[first:last]`` (``trim`` ASCII): the bounds of what is
    kept, and which values were quoted (their escapes still to undo)."""
    first, last = first.copy(), last.copy()
    some = last > first
    head = np.where(some, data[np.minimum(first, len(data) - 1)], 0) if len(data) else first * 0
    tail = np.where(some, data[np.maximum(last - 1, 0)], 0) if len(data) else first * 0
    quoted = np.zeros(len(first), dtype=bool)
    for quote in _QUOTES:
        if quote in trim:
            quoted |= (last - first >= 2) & (head == ord(quote)) & (tail == ord(quote))
    first[quoted] += 1
    last[quoted] -= 1
    if trim:
        trimmed = np.zeros(256, dtype=bool)
        trimmed[list(trim.encode())] = True
        for bound, step in ((first, 1), (last, -1)):
            moving = np.flatnonzero(~quoted)
            while len(moving):
                at = bound[moving] if step == 1 else bound[moving] - 1
                moving = moving[(first[moving] < last[moving]) & trimmed[data[at]]]
                bound[moving] += step
    return first, last, quoted


def _pieces(data: np.ndarray, cuts: list[np.ndarray]) -> pa.Array:
    """``data`` cut at the interleaved ``cuts`` (each of them ascending and the interleaving
    too) into strings, without copying."""
    bounds = np.empty(len(cuts) * len(cuts[0]) + 1, dtype=np.int32)
    for i, cut in enumerate(cuts):
        bounds[i : -1 : len(cuts)] = cut
    bounds[-1] = bounds[-2] if len(bounds) > 1 else 0
    return pa.StringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds), pa.py_buffer(data))


def _bytes(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The text of ``strings`` as bytes, and where each row starts in them (n + 1 offsets)."""
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ].astype(np.int64)
    if data_buffer is None:
        return np.empty(0, dtype=np.uint8), offsets - offsets[0]
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


def _with_looped(
    at: np.ndarray,
    key: pa.Array,
    value: pa.Array,
    looped: np.ndarray,
    texts: list[str | None],
    cfg: KvConfig,
) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """The split pairs with those of the ``looped`` rows (``texts``), in row order."""
    findall = pair_pattern(cfg.field_split, cfg.value_split).findall
    trim = cfg.trim_value
    more = [
        (row, k, _value(v, trim) if v[:1] in _QUOTES else v.strip(trim))
        for row, text in zip(looped.tolist(), texts, strict=True)
        if text is not None
        for k, v in findall(text)
    ]
    if not more:
        return at, key, value
    rows = np.concatenate([at, np.array([row for row, _, _ in more], dtype=np.int64)])
    order = np.argsort(rows, kind="stable")  # a row's pairs all come from one side
    keys = pa.concat_arrays([key, pa.array([k for _, k, _ in more], pa.string())])
    values = pa.concat_arrays([value, pa.array([v for _, _, v in more], pa.string())])
    return rows[order], keys.take(pa.array(order)), values.take(pa.array(order))


def _by_key(keys: pa.Array, cfg: KvConfig) -> dict[str, np.ndarray]:
    """Per kept key (stripped, included, not excluded), the positions of its pairs in order;
    keys in the order they first appear. Keys are stripped and judged once per distinct key."""
    if not len(keys):
        return {}
    encoded = pc.dictionary_encode(keys)
    include, exclude = set(cfg.include_keys), set(cfg.exclude_keys)
    strip_key = cfg.trim_key or None  # None: whitespace
    kept: dict[str, int] = {}
    numbers = np.full(len(encoded.dictionary), -1, dtype=np.int64)
    for code, written in enumerate(encoded.dictionary.to_pylist()):
        key = written.strip(strip_key)
        if key and (not include or key in include) and key not in exclude:
            numbers[code] = kept.setdefault(key, len(kept))
    number = numbers[encoded.indices.to_numpy(zero_copy_only=False)]
    order = np.argsort(number, kind="stable")  # by key, each key's pairs in row order
    bounds = np.searchsorted(number[order], np.arange(len(kept) + 1))
    return {key: order[bounds[k] : bounds[k + 1]] for key, k in kept.items()}


def _arrow_chars(chars: str) -> str:
    """``chars`` for a character class of RE2 (Arrow's regex engine)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in chars)


def _arrow_pair_pattern(field_split: str, value_split: str) -> str:
    """``pair_pattern`` for RE2, without its groups (the whole match is marked, then split)."""
    fs, vs = _arrow_chars(field_split), _arrow_chars(value_split)
    return (
        rf"[^{fs}{vs}]+[{vs}]"
        rf"(?:\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^{fs}]*)"
    )


def pair_pattern(field_split: str, value_split: str) -> re.Pattern[str]:
    """A key and its value; a quoted value may hold its quote escaped with a backslash
    (logfmt: ``msg="say \\"hi\\""``)."""
    fs, vs = re.escape(field_split), re.escape(value_split)
    return re.compile(
        rf"([^{fs}{vs}]+)[{vs}](\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'|[^{fs}]*)"
    )


def _spread(rows: np.ndarray, values: pa.Array | pa.ChunkedArray, n: int) -> pa.Array:
    """``values`` at ``rows`` (ascending; of a row given twice, the last) of ``n``, null
    elsewhere."""
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = rows[1:] != rows[:-1]
    index = np.full(n, -1, dtype=np.int64)
    index[rows[last]] = np.flatnonzero(last)
    spread = values.take(pa.array(index, mask=index < 0))
    return spread.combine_chunks() if isinstance(spread, pa.ChunkedArray) else spread


def _as_objects(columns: dict[str, pa.Array], n: int) -> pa.Array:
    """The pairs of each record as an object (null for a record without any)."""
    if not columns:
        return pa.nulls(n)
    present = np.zeros(n, dtype=bool)
    for values in columns.values():
        present |= pc.is_valid(values).to_numpy(zero_copy_only=False)
    return pa.StructArray.from_arrays(
        list(columns.values()), list(columns), mask=pa.array(~present)
    )


_QUOTES = ('"', "'")
_ESCAPED = re.compile(r"\\([\\\"'])")


def _value(value: str, trim: str) -> str:
    """A value with ``trim`` stripped from its ends; a quoted one (when its quote is in
    ``trim``) loses exactly its quotes and has its escaped quotes and backslashes unescaped,
    other backslashes kept (``C:\\temp`` as written)."""
    quote = value[:1]
    if quote in _QUOTES and len(value) >= 2 and value[-1] == quote and quote in trim:
        inner = value[1:-1]
        return _ESCAPED.sub(r"\1", inner) if "\\" in inner else inner
    return value.strip(trim)
