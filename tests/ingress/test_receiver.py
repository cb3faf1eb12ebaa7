"""The receiver's contract, each status from a real HTTP request, and what it stores."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import zstandard

from bytefreezer.control import HttpControl
from bytefreezer.control.app import create_app as create_control_app
from bytefreezer.control.models import DatasetSpec
from bytefreezer.ingress import bodies
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir, serve_app
from tests.ingress.conftest import Receiver, seeded_control, start_receiver

LINES = b'{"id": 1}\n{"id": 2}\n'


def post(receiver: Receiver, path: str, body: bytes, **headers: str) -> httpx.Response:
    merged = {**receiver.auth(), **headers}
    return httpx.post(f"{receiver.url}{path}", content=body, headers=merged, timeout=30)


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("", lambda b: b),
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("deflate", zlib.compress),
    ],
)
def test_every_content_encoding_is_accepted(
    receiver: Receiver, encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    response = post(
        receiver, "/acme/web", encode(LINES), **({"Content-Encoding": encoding} if encoding else {})
    )
    assert response.status_code == 200, response.text
    assert response.json()["lines"] == 2 and response.json()["status"] == "stored"


def test_blank_lines_are_not_counted_as_records(receiver: Receiver) -> None:
    # They were: ingest counted 5 records where piper reads 2, a gap that looks like loss.
    body = b'{"a": 1}\n\n{"a": 2}\r\n\r\n   \n'
    response = post(receiver, "/acme/web", body)
    assert response.status_code == 200, response.text
    assert response.json()["lines"] == 2


def test_statuses(receiver: Receiver) -> None:
    other_key = receiver.control.create_key("other").key
    web_only = receiver.control.create_key("acme", "web").key
    receiver.control.create_dataset("acme", DatasetSpec(name="paused", active=False))
    bomb = gzip.compress(b"\0" * 5_000_000)
    cases = [
        ("no key", "/acme/web", LINES, {"Authorization": ""}, 401),
        ("unknown key", "/acme/web", LINES, {"Authorization": "Bearer bfk_aaaaaaaaaaaa_nope"}, 401),
        ("malformed key", "/acme/web", LINES, {"Authorization": "Bearer nonsense"}, 401),
        ("foreign tenant", "/acme/web", LINES, {"Authorization": f"Bearer {other_key}"}, 403),
        ("other dataset", "/acme/arr", b"[]", {"Authorization": f"Bearer {web_only}"}, 403),
        ("unknown dataset", "/acme/nope", LINES, {}, 404),
        ("unknown tenant", "/nobody/web", LINES, {}, 403),
        ("inactive dataset", "/acme/paused", LINES, {}, 410),
        ("bad name", "/Acme/web", LINES, {}, 400),
        ("traversal name", "/%2e%2e/web", LINES, {}, 400),
        ("unicode name", "/%EF%BC%A1/web", LINES, {}, 400),
        (
            "traversal in X-Proxy-Filename",
            "/acme/web",
            LINES,
            {"X-Proxy-Filename": "acme--web--../../x"},
            400,
        ),
        (
            "X-Proxy-Filename for another dataset",
            "/acme/web",
            LINES,
            {"X-Proxy-Filename": "acme--arr--1--ndjson.gz"},
            400,
        ),
        ("bad X-Proxy-Line-Count", "/acme/web", LINES, {"X-Proxy-Line-Count": "many"}, 400),
        ("oversize body", "/acme/web", b"x" * 100_001, {}, 413),
        ("decompression bomb", "/acme/web", bomb, {"Content-Encoding": "gzip"}, 413),
        ("invalid gzip", "/acme/web", b"not gzip", {"Content-Encoding": "gzip"}, 400),
        (
            "truncated gzip",
            "/acme/web",
            gzip.compress(LINES * 100)[:20],
            {"Content-Encoding": "gzip"},
            400,
        ),
        (
            "truncated zstd",
            "/acme/web",
            zstandard.ZstdCompressor().compress(LINES * 100)[:-3],
            {"Content-Encoding": "zstd"},
            400,
        ),
        ("unsupported encoding", "/acme/web", LINES, {"Content-Encoding": "br"}, 415),
        ("empty body", "/acme/web", b"", {}, 400),
        ("blank body", "/acme/web", b"  \n\n", {}, 400),
        ("not ndjson", "/acme/web", b"plain words", {}, 400),
        ("not a json array", "/acme/arr", b"plain words", {}, 400),
        ("json cut short", "/acme/arr", b'[{"id": 1}, {"id": 2', {}, 400),
        ("json not utf-8", "/acme/arr", b'{"id": 1} {"n": "\xff"}', {}, 400),
    ]
    for name, path, body, headers, status in cases:
        response = post(receiver, path, body, **headers)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        assert response.json()["error"], name
    # Only what was acknowledged is in storage.
    assert receiver.storage.intake.list() == []


def test_health_and_original_path(receiver: Receiver) -> None:
    assert httpx.get(f"{receiver.url}/health").json() == {"status": "ok"}
    assert post(receiver, "/webhook/acme/web", LINES).status_code == 200
    assert post(receiver, "/acme/web", LINES).status_code == 200


def test_original_proxy_protocol_headers_are_kept_as_metadata(receiver: Receiver) -> None:
    headers = {
        "Content-Encoding": "gzip",
        "X-Proxy-Filename": "acme--web--1700000000000000000--ndjson.gz",
        "X-Proxy-Line-Count": "2",
        "X-Proxy-Original-Bytes": str(len(LINES)),
        "X-Proxy-Created-At": "2026-01-01T00:00:00Z",
        "X-Proxy-Data-Hint": "ndjson",
        "X-Proxy-Batch-ID": "batch-42",
    }
    response = post(receiver, "/acme/web", gzip.compress(LINES), **headers)
    assert response.status_code == 200, response.text
    key = response.json()["key"]
    assert key.endswith("--ndjson.gz")
    metadata = receiver.storage.intake.metadata(key)
    assert metadata["proxy-filename"] == headers["X-Proxy-Filename"]
    assert metadata["proxy-batch-id"] == "batch-42"
    assert metadata["proxy-line-count"] == "2" and metadata["lines"] == "2"
    assert gzip.decompress(receiver.storage.intake.get(key)) == LINES


def test_a_proxy_batch_sent_again_is_stored_once(receiver: Receiver) -> None:
    """A batch the proxy sends again with the same batch id (its first answer lost) is answered
    200 and not stored again; another id, or none, is stored; a first try that failed leaves the
    id to its retry."""

    def send(body: bytes, batch: str | None) -> httpx.Response:
        headers = {"Content-Encoding": "gzip", "X-Proxy-Data-Hint": "ndjson"}
        if batch is not None:
            headers["X-Proxy-Batch-ID"] = batch
        return post(receiver, "/acme/web", gzip.compress(body), **headers)

    def stored() -> list[bytes]:
        intake = receiver.storage.intake
        return sorted(gzip.decompress(intake.get(o.key)) for o in intake.list("acme/web/"))

    first = send(LINES, "b-1")
    assert first.status_code == 200 and "repeat" not in first.json()
    again = send(LINES, "b-1")
    assert again.status_code == 200, again.text
    assert again.json() == {"status": "stored", "repeat": True}
    assert stored() == [LINES]
    assert send(LINES, "b-2").status_code == 200  # another batch with the same lines
    assert send(LINES, None).status_code == 200  # no batch id: stored each time
    assert stored() == [LINES] * 3
    refused = send(b"", "b-3")  # an empty body: refused, so its retry is stored
    assert refused.status_code == 400
    assert send(LINES, "b-3").status_code == 200
    assert stored() == [LINES] * 4
    assert receiver.state.delivered.repeats == 1


def test_group_commit_shares_objects_and_answers_after_the_write(
    make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver(
        receiver={"group_commit_max_age_ms": 200, "group_commit_max_bytes": 10_000_000}
    )

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(
                    f"{receiver.url}/acme/web",
                    content=json.dumps({"id": i}).encode(),
                    headers=receiver.auth(),
                )
                for i in range(40)
            ]
            return await asyncio.gather(*calls)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    keys = {r.json()["key"] for r in responses}
    objects = receiver.storage.intake.list("acme/web/")
    assert len(objects) == len(keys) < 40  # shared objects, and each answered key exists
    assert keys == {o.key for o in objects}
    found = sorted(
        json.loads(line)["id"]
        for o in objects
        for line in gzip.decompress(receiver.storage.intake.get(o.key)).splitlines()
    )
    assert found == list(range(40))
    counts = [int(receiver.storage.intake.metadata(o.key)["requests"]) for o in objects]
    assert sum(counts) == 40


def test_inflight_bound_answers_429_with_retry_after(
    make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver(receiver={"max_inflight_bytes": 1000})
    receiver.state.budget.used = 900  # as if other bodies were being received
    response = post(receiver, "/acme/web", LINES * 100)
    assert response.status_code == 429 and response.headers["retry-after"] == "5"
    receiver.state.budget.used = 0
    assert post(receiver, "/acme/web", LINES).status_code == 200
    assert receiver.state.budget.used == 0


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/acme/arr", b'[{"id": 1}, {"id": 2}]', [1, 2]),
        ("/acme/arr", b'{"id": 3}', [3]),
        ("/acme/arr", json.dumps([{"id": 7}, {"id": 8}, {"id": 9}], indent=2).encode(), [7, 8, 9]),
        ("/acme/arr", b'{"id": 10}\n{"id": 11} [{"id": 12}]', [10, 11, 12]),
        ("/acme/arr", b'\xef\xbb\xbf[{"id": 13}]', [13]),
        ("/acme/tab", b"id,name\n4,x\n5,y\n", [4, 5]),
        ("/acme/web?format=csv", b"id\n6\n", [6]),
    ],
)
def test_body_shapes_reach_parquet(
    receiver: Receiver, path: str, body: bytes, expected: list[int]
) -> None:
    response = post(receiver, path, body)
    assert response.status_code == 200
    if "csv" in path or path.startswith("/acme/tab"):  # a header is no record (it was counted)
        assert response.json()["records"] == len(expected) == response.json()["lines"] - 1
    stats = run_piper_cycle(receiver.settings, receiver.control, receiver.storage)
    # Ingest counts records as piper reads them (a JSON body by its values, not its lines).
    assert stats.counters["records_in"] == response.json()["records"] == len(expected)
    run_packer_cycle(receiver.settings, receiver.control, receiver.storage)
    dataset = path.split("?")[0].split("/")[2]
    table = read_parquet_dir(receiver.settings.data_dir / "destination" / "acme" / dataset)
    assert table is not None and sorted(table.column("id").to_pylist()) == expected


def test_raw_text_lines(receiver: Receiver) -> None:
    assert post(receiver, "/acme/text", b"first line\nsecond line\n").status_code == 200
    table = receiver.pack("text")
    assert table is not None and sorted(table.column("message").to_pylist()) == [
        "first line",
        "second line",
    ]


def test_api_port(receiver: Receiver) -> None:
    api = receiver.api
    assert httpx.get(f"{api}/api/v1/health").json() == {"status": "ok"}
    ready = httpx.get(f"{api}/api/v1/ready")
    assert ready.status_code == 200 and ready.json()["checks"] == {"storage": "ok", "control": "ok"}
    config = httpx.get(f"{api}/api/v1/config").json()
    assert config["receiver"]["max_body_bytes"] == 100_000
    assert config["storage"]["s3"]["secret_key"] in ("", "**********")
    spool = httpx.get(f"{api}/api/v1/spool").json()
    assert spool["objects"] == 0 and spool["max_bytes"] > 0
    spec = httpx.get(f"{api}/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/webhook/{tenant}/{dataset}" in spec["paths"]
    assert "/api/v1/spool" in spec["paths"]


def test_config_redacts_secrets(make_receiver: Callable[..., Receiver]) -> None:
    receiver = make_receiver(
        storage={"s3": {"access_key": "AKIASECRETACCESS", "secret_key": "very-secret-value"}},
        control={"api_key": "bfk_x_topsecret", "admin_key": "bfk_y_adminsecret"},
    )
    text = httpx.get(f"{receiver.api}/api/v1/config").text
    for secret in ("AKIASECRETACCESS", "very-secret-value", "topsecret", "adminsecret"):
        assert secret not in text


def test_cached_key_survives_a_control_outage_in_one_receiver(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data", receiver={"auth_cache_seconds": 0})
    store = seeded_control(settings)
    admin = store.create_key(None, role="admin").key
    key = store.create_key("acme").key
    headers = {"Authorization": f"Bearer {key}"}
    with ExitStack() as outer:
        control_stack = ExitStack()
        control_url = control_stack.enter_context(serve_app(create_control_app(store)))
        receiver = start_receiver(outer, settings, HttpControl(control_url, admin, timeout=2))  # type: ignore[arg-type]
        assert (
            httpx.post(f"{receiver.url}/acme/web", content=LINES, headers=headers).status_code
            == 200
        )
        control_stack.close()  # the control service goes away
        again = httpx.post(f"{receiver.url}/acme/web", content=LINES, headers=headers)
        assert again.status_code == 200, again.text
        other = httpx.post(
            f"{receiver.url}/acme/web",
            content=LINES,
            headers={"Authorization": "Bearer bfk_000000000000_x"},
        )
        assert other.status_code == 503  # unknown keys cannot be checked: retry later, not 401


def test_a_json_body_above_the_parse_size_is_counted_by_lines_not_parsed(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsed, a JSON body takes about five times its size in memory: above
    ``JSON_PARSE_MAX_BYTES`` it is stored unparsed, counted by its lines, for piper to read."""
    monkeypatch.setattr(bodies, "JSON_PARSE_MAX_BYTES", 16)
    body = json.dumps([{"id": 1}, {"id": 2}], indent=1).encode()  # 8 lines, 2 records
    response = post(receiver, "/acme/arr", body)
    assert response.status_code == 200
    assert response.json()["records"] == response.json()["lines"] == 8
    assert post(receiver, "/acme/arr", b'[{"id": 3}, {"id": ').status_code == 200
    stats = run_piper_cycle(receiver.settings, receiver.control, receiver.storage)
    # The array's two records; the cut-short body cannot be framed: one dead letter says why.
    assert (stats.counters["records_out"], stats.counters["records_dead_lettered"]) == (2, 1)
