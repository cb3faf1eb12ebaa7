"""rsyslog's omelasticsearch (Debian's rsyslog-elasticsearch, installed by `make test`) ships
syslog lines to the receiver's bulk API: its health probe, bulk mode and Basic auth, through
piper and packer to Parquet, every line once."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests import rsyslog
from tests.helpers import free_port, stop_process, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records

pytestmark = rsyslog.needs("omelasticsearch")

CONFIG = """
global(workDirectory="{work}")
module(load="imtcp")
module(load="omelasticsearch")
template(name="doc" type="string" string="{{\\"@timestamp\\":\\"%timereported:::date-rfc3339%\\",\
\\"host\\":\\"%hostname:::json%\\",\\"app\\":\\"%app-name:::json%\\",\\"message\\":\\"%msg:::json%\\"}}")
ruleset(name="ship") {{
  action(type="omelasticsearch" server="127.0.0.1" serverport="{port}" searchIndex="syslog"
         searchType="" bulkmode="on" uid="rsyslog" pwd="{key}" template="doc"
         errorFile="{work}/es-errors.json" queue.type="linkedList" queue.dequeueBatchSize="64"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
input(type="imtcp" port="{tcp}" ruleset="ship")
"""


def test_rsyslog_ships_to_the_bulk_api(receiver: Receiver, tmp_path: Path) -> None:
    key = receiver.control.create_key("acme", "web").key
    port = int(receiver.url.rsplit(":", 1)[1])
    tcp = free_port()
    process = rsyslog.start(
        CONFIG.format(work=tmp_path, port=port, key=key, tcp=tcp), tmp_path, "omelasticsearch"
    )
    try:
        wait_for_port(tcp)
        with socket.create_connection(("127.0.0.1", tcp)) as sender:
            for i in range(300):
                line = (
                    f"<134>1 2026-01-01T10:00:{i % 60:02d}Z web-1 checkout - - - order {i} paid\n"
                )
                sender.sendall(line.encode())
        deadline = time.monotonic() + 30
        while len(intake_records(receiver)) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop_process(process)
        output = rsyslog.output(tmp_path)
    assert not (tmp_path / "es-errors.json").exists(), (tmp_path / "es-errors.json").read_text()
    records = intake_records(receiver)
    assert len(records) == 300, output
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(str(r["message"]).split()[1]))
    assert [r["message"] for r in rows] == [f"order {i} paid" for i in range(300)]
    assert {(r["host"], r["app"]) for r in rows} == {("web-1", "checkout")}
