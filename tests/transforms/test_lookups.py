"""Transforms that read lookup data or the network: geoip, enricher, dns."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from bytefreezer.errors import ConfigError
from bytefreezer.storage import BucketObjects, Storage
from bytefreezer.transforms import Context
from bytefreezer.transforms.builtin.dns import Dns, DnsConfig
from bytefreezer.transforms.resources import MemoryObjects
from bytefreezer.transforms.testing import assert_transform, run_transform
from tests.conftest import fast_settings


def city_database(city: str = "London") -> bytes:
    """A GeoLite2-City-shaped database written with mmdb-writer."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {
                "iso_code": "GB",
                "names": {"en": "United Kingdom", "de": "Vereinigtes Königreich"},
            },
            "city": {"names": {"en": city}},
            "continent": {"names": {"en": "Europe"}},
            "subdivisions": [{"names": {"en": "England"}}],
            "postal": {"code": "EC1A"},
            "location": {
                "latitude": 51.5142,
                "longitude": -0.0931,
                "time_zone": "Europe/London",
                "accuracy_radius": 10,
            },
        },
    )
    writer.insert_network(
        IPSet(["2001:db8::/32"]),
        {
            "country": {"iso_code": "US", "names": {"en": "United States"}},
            "location": {"latitude": 1.0, "longitude": 2.0},
        },
    )
    target = io.BytesIO()
    path = Path(f"/tmp/bf-test-{threading.get_ident()}-{time.time_ns()}.mmdb")
    writer.to_db_file(str(path))
    target.write(path.read_bytes())
    path.unlink()
    return target.getvalue()


LONDON = {
    "country_name": "United Kingdom",
    "country_code": "GB",
    "city_name": "London",
    "latitude": 51.5142,
    "longitude": -0.0931,
    "location": {"lat": 51.5142, "lon": -0.0931},
    "timezone": "Europe/London",
    "continent": "Europe",
    "region": "England",
    "postal_code": "EC1A",
    "accuracy_radius": 10,
}


def test_geoip_every_output_field_dotted_paths_and_misses() -> None:
    objects = MemoryObjects()
    objects.put("geoip", "GeoLite2-City.mmdb", city_database())
    context = Context(resources=objects)
    rows = [
        {"client": {"ip": "81.2.69.142"}},
        {"client": {"ip": "81.2.69.142"}},
        {"client": {"ip": "10.0.0.1"}},
        {"client": {"ip": "not an ip"}},
        {"client": {"ip": "2001:db8::1"}},
    ]
    result = run_transform(
        "geoip", {"source_field": "client.ip", "target_field": "geo"}, rows, context=context
    )
    geo = result.table.column("geo").to_pylist()
    assert geo[0] == LONDON and geo[1] == LONDON
    assert geo[2] is None and geo[3] is None
    assert geo[4]["country_code"] == "US" and geo[4]["city_name"] is None
    assert result.rejected.num_rows == 0


def test_geoip_chosen_fields_and_language() -> None:
    objects = MemoryObjects()
    objects.put("geoip", "GeoLite2-City.mmdb", city_database())
    assert_transform(
        "geoip",
        {"source_field": "ip", "fields": ["country_name", "country_code"], "language": "de"},
        [{"ip": "81.2.69.1"}],
        [
            {
                "ip": "81.2.69.1",
                "geo": {"country_name": "Vereinigtes Königreich", "country_code": "GB"},
            }
        ],
        context=Context(resources=objects),
    )


def test_geoip_reads_the_geoip_bucket_and_refreshes_when_the_object_changes(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data")
    storage = Storage(settings)
    storage.ensure_buckets()
    storage.bucket("geoip").put("GeoLite2-City.mmdb", city_database("London"))
    context = Context(resources=BucketObjects(storage))
    from bytefreezer.transforms.builtin.geoip import Geoip, GeoipConfig

    geoip = Geoip(GeoipConfig(source_field="ip", fields=["city_name"], refresh_seconds=0), context)
    table = pa.table({"ip": ["81.2.69.5"]})
    assert geoip.apply(table).column("geo").to_pylist() == [{"city_name": "London"}]
    time.sleep(0.01)
    storage.bucket("geoip").put("GeoLite2-City.mmdb", city_database("Londinium"))
    assert geoip.apply(table).column("geo").to_pylist() == [{"city_name": "Londinium"}]


def test_geoip_reads_with_libmaxminddb_and_leaves_no_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maxminddb
    import maxminddb.extension

    from bytefreezer.transforms.builtin.geoip import open_database

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    database = city_database()
    reader = open_database(database)
    assert isinstance(reader, maxminddb.extension.Reader)  # the C reader, not the Python one
    assert not list(tmp_path.iterdir())  # the copy is unlinked once mapped
    plain = maxminddb.open_database(io.BytesIO(database), maxminddb.MODE_FD)
    addresses = ["81.2.69.142", "81.2.69.1", "10.0.0.1", "2001:db8::1", "8.8.8.8"]
    assert [reader.get(a) for a in addresses] == [plain.get(a) for a in addresses]
    assert reader.get("81.2.69.142") is not None


def test_geoip_without_a_database_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"geoip/GeoLite2-City\.mmdb not found"):
        run_transform(
            "geoip", {}, [{"source_ip": "1.1.1.1"}], context=Context(resources=MemoryObjects())
        )


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson", "parquet"])
def test_enricher_joins_lookup_tables_of_every_format(fmt: str) -> None:
    users = pa.table(
        {"id": ["u1", "u2", "u2"], "dept": ["eng", "ops", "sales"], "level": [1, 2, 3]}
    )
    if fmt == "csv":
        data, key = b"id,dept,level\nu1,eng,1\nu2,ops,2\nu2,sales,3\n", "users.csv"
    elif fmt == "json":
        data, key = (
            b'[{"id":"u1","dept":"eng","level":1},{"id":"u2","dept":"ops","level":2},{"id":"u2","dept":"sales","level":3}]',
            "users.json",
        )
    elif fmt == "ndjson":
        data, key = (
            b'{"id":"u1","dept":"eng","level":1}\n{"id":"u2","dept":"ops","level":2}\n{"id":"u2","dept":"sales","level":3}\n',
            "users.ndjson",
        )
    else:
        sink = io.BytesIO()
        pq.write_table(users, sink)
        data, key = sink.getvalue(), "users.parquet"
    objects = MemoryObjects()
    objects.put("geoip", key, data)
    assert_transform(
        "enricher",
        {"source_field": "user", "object": key, "lookup_key": "id", "prefix": "u_"},
        [{"user": "u1"}, {"user": "u2"}, {"user": "nobody"}, {"user": None}],
        [
            {"user": "u1", "u_dept": "eng", "u_level": 1},
            {"user": "u2", "u_dept": "sales", "u_level": 3},  # the last row of a key wins
            {"user": "nobody", "u_dept": None, "u_level": None},
            {"user": None, "u_dept": None, "u_level": None},
        ],
        context=Context(resources=objects),
    )


def test_enricher_refreshes_when_the_table_changes() -> None:
    objects = MemoryObjects()
    objects.put("lookups", "hosts.csv", b"host,team\na,red\n")
    from bytefreezer.transforms.builtin.enricher import Enricher, EnricherConfig

    enricher = Enricher(
        EnricherConfig(
            source_field="h",
            object="hosts.csv",
            bucket="lookups",
            lookup_key="host",
            refresh_seconds=0,
        ),
        Context(resources=objects),
    )
    table = pa.table({"h": ["a"]})
    assert enricher.apply(table).column("team").to_pylist() == ["red"]
    objects.put("lookups", "hosts.csv", b"host,team\na,blue\n")
    assert enricher.apply(table).column("team").to_pylist() == ["blue"]


def test_enricher_names_a_missing_column() -> None:
    objects = MemoryObjects()
    objects.put("geoip", "t.csv", b"k,v\n1,2\n")
    with pytest.raises(ConfigError, match="no column 'id'"):
        run_transform(
            "enricher",
            {"source_field": "x", "object": "t.csv", "lookup_key": "id"},
            [{"x": "1"}],
            context=Context(resources=objects),
        )


def test_dns_forward_and_reverse_with_cache() -> None:
    assert_transform(
        "dns",
        {"source_field": "host", "action": "forward", "timeout_seconds": 5},
        [{"host": "localhost"}, {"host": "localhost"}],
        [{"host": "localhost", "host_dns": "127.0.0.1"}] * 2,
    )
    result = run_transform(
        "dns",
        {"source_field": "ip", "timeout_seconds": 5},
        [{"ip": "127.0.0.1"}, {"ip": "not-an-ip"}],
    )
    names = result.table.column("ip_dns").to_pylist()
    assert names[0] and names[1] is None


def test_dns_never_waits_past_its_timeout_and_answers_later_from_cache() -> None:
    release = threading.Event()
    calls: list[str] = []

    def slow(value: str) -> str:
        calls.append(value)
        release.wait(10)
        return f"host-of-{value}"

    dns = Dns(DnsConfig(source_field="ip", timeout_seconds=0.05))
    dns.resolver = slow  # type: ignore[method-assign]
    table = pa.table({"ip": ["10.9.9.9", "10.9.9.9"]})
    assert dns.apply(table).column("ip_dns").to_pylist() == [None, None]
    release.set()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and dns.apply(pa.table({"ip": ["10.9.9.9"]})).column("ip_dns")[0].as_py() is None
    ):
        time.sleep(0.01)
    assert dns.apply(table).column("ip_dns").to_pylist() == ["host-of-10.9.9.9"] * 2
    assert calls == ["10.9.9.9"]  # one lookup per distinct value, shared, then the cache
