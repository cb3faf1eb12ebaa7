"""The HTTP servers every component runs on (Hypercorn, set up by bytefreezer.servers)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from bytefreezer.control import ControlStore
from bytefreezer.control.app import create_app
from tests.helpers import serve_app


def test_a_request_the_http_layer_cannot_parse_gets_a_json_reason(tmp_path: Path) -> None:
    """Refused before any app sees it (here an empty Content-Length, which fuzzing sent), it
    still gets a 4xx with a JSON reason, as every other bad request does."""
    store = ControlStore(tmp_path / "c.db", destination_for=lambda t, d: "file:///tmp/x")
    with serve_app(create_app(store)) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"DELETE /api/v1/tenants/x HTTP/1.1\r\nHost: a\r\ncontent-length: \r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 400")
    assert "content-type: application/json" in lines
    assert "malformed HTTP request" in json.loads(body)["error"]
