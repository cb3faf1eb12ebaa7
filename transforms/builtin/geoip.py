"""geoip: location fields for IP addresses from MaxMind databases in the `geoip` bucket."""

from __future__ import annotations

import importlib.util
import io
import tempfile
from typing import Any, ClassVar

import maxminddb
import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Context, Transform, TransformConfig
from bytefreezer.transforms.resources import RefreshingObject
from bytefreezer.transforms.tables import get_column, set_column, string_values

_C_READER = importlib.util.find_spec("maxminddb.extension") is not None
OUTPUT_FIELDS = [
    "country_name", "country_code", "city_name", "latitude", "longitude", "location",
    "timezone", "continent", "region", "postal_code", "accuracy_radius",
]  # fmt: skip
_TYPES = {
    "latitude": pa.float64(),
    "longitude": pa.float64(),
    "accuracy_radius": pa.int64(),
    "location": pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
}


def open_database(data: bytes) -> maxminddb.Reader:
    """A MaxMind database from its bytes: libmaxminddb's reader (17x the lookups per second of
    the pure-Python one: 50,000 addresses in 7.6 ms instead of 133 ms) over a private temporary
    copy, unlinked as soon as it is mapped; the pure-Python reader where the C extension is
    missing."""
    if not _C_READER:
        return maxminddb.open_database(io.BytesIO(data), maxminddb.MODE_FD)
    with tempfile.NamedTemporaryFile(prefix="bytefreezer-geoip-", suffix=".mmdb") as copy:
        copy.write(data)
        copy.flush()
        return maxminddb.open_database(copy.name, maxminddb.MODE_MMAP_EXT)


class GeoipConfig(TransformConfig):
    """Look up ``source_field`` in a MaxMind database."""

    source_field: str = Field("source_ip", description="IP address field (dotted paths allowed).")
    target_field: str = Field("geo", description="Object field receiving the location.")
    database: str = Field(
        "GeoLite2-City.mmdb", description="Object in the bucket: GeoLite2-City or -Country."
    )
    bucket: str = Field("geoip", description="Bucket holding the database.")
    fields: list[str] = Field(
        default_factory=lambda: list(OUTPUT_FIELDS), description=f"Any of {OUTPUT_FIELDS}."
    )
    language: str = Field("en", description="Language of names.")
    refresh_seconds: float = Field(60.0, ge=0, description="How often to look for a new database.")


def _names(record: dict[str, Any], key: str, language: str) -> Any:
    names = (record.get(key) or {}).get("names") or {}
    return names.get(language) or names.get("en")


def _extract(record: dict[str, Any] | None, language: str) -> dict[str, Any]:
    if not record:
        return {}
    location = record.get("location") or {}
    subdivisions = record.get("subdivisions") or [{}]
    lat, lon = location.get("latitude"), location.get("longitude")
    return {
        "country_name": _names(record, "country", language),
        "country_code": (record.get("country") or {}).get("iso_code"),
        "city_name": _names(record, "city", language),
        "latitude": lat,
        "longitude": lon,
        "location": {"lat": lat, "lon": lon} if lat is not None and lon is not None else None,
        "timezone": location.get("time_zone"),
        "continent": _names(record, "continent", language),
        "region": ((subdivisions[0] or {}).get("names") or {}).get(language),
        "postal_code": (record.get("postal") or {}).get("code"),
        "accuracy_radius": location.get("accuracy_radius"),
    }


class Geoip(Transform):
    """GeoIP enrichment; each distinct address is looked up once per batch."""

    name: ClassVar[str] = "geoip"
    Config: ClassVar[type[TransformConfig]] = GeoipConfig
    example: ClassVar[dict[str, Any]] = {"source_field": "client.ip", "target_field": "client_geo"}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, GeoipConfig)
        unknown = set(config.fields) - set(OUTPUT_FIELDS)
        if unknown:
            raise ValueError(f"unknown geoip fields {sorted(unknown)}; choose from {OUTPUT_FIELDS}")
        self._db = RefreshingObject(
            self.context.resources,
            config.bucket,
            config.database,
            open_database,
            config.refresh_seconds,
        )

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, GeoipConfig)
        column = get_column(table, cfg.source_field)
        if column is None or table.num_rows == 0:
            return table
        reader = self._db.get()
        encoded = string_values(column).dictionary_encode().combine_chunks()
        found = []
        for address in encoded.dictionary.to_pylist():
            try:
                record = reader.get(address.strip())
            except ValueError:
                record = None
            found.append(_extract(record if isinstance(record, dict) else None, cfg.language))
        struct_type = pa.struct([(f, _TYPES.get(f, pa.string())) for f in cfg.fields])
        rows = [{f: r.get(f) for f in cfg.fields} if r else None for r in found]
        distinct = pa.array(rows, struct_type)
        return set_column(table, cfg.target_field, distinct.take(encoded.indices))
