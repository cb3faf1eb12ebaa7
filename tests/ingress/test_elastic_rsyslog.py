"""rsyslog's omelasticsearch (Debian's rsyslog-elasticsearch, installed by `make test`) ships
syslog lines to the receiver's bulk API: its health probe, bulk mode and Basic auth, through
piper and packer to Parquet, every line once."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, stop_process, wait_for_port
from tests.ingress.conftest import Receiver

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
# omelasticsearch.so under the machine's multiarch directory (/usr/lib/x86_64-linux-gnu/rsyslog)
FOUND = sorted(Path("/usr/lib").glob("*/rsyslog/omelasticsearch.so"))
MODULES = FOUND[0].parent if FOUND else Path("/usr/lib/rsyslog")

pytestmark = pytest.mark.skipif(
    not Path(RSYSLOGD).exists() or not FOUND,
    reason="Debian's rsyslog and rsyslog-elasticsearch come with `make test` (system-deps)",
)

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


def intake_lines(receiver: Receiver) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for obj in receiver.storage.intake.list("acme/web/")
        for line in gzip.decompress(receiver.storage.intake.get(obj.key)).splitlines()
        if line
    ]


def test_rsyslog_ships_to_the_bulk_api(receiver: Receiver, tmp_path: Path) -> None:
    key = receiver.control.create_key("acme", "web").key
    port = int(receiver.url.rsplit(":", 1)[1])
    tcp = free_port()
    config = tmp_path / "rsyslog.conf"
    config.write_text(CONFIG.format(work=tmp_path, port=port, key=key, tcp=tcp))
    log = tmp_path / "rsyslogd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                RSYSLOGD,
                "-n",
                "-f",
                str(config),
                "-i",
                str(tmp_path / "rsyslogd.pid"),
                "-M",
                str(MODULES),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
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
        while len(intake_lines(receiver)) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop_process(process)
        output = log.read_text(errors="replace")
    assert not (tmp_path / "es-errors.json").exists(), (tmp_path / "es-errors.json").read_text()
    records = intake_lines(receiver)
    assert len(records) == 300, output
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(str(r["message"]).split()[1]))
    assert [r["message"] for r in rows] == [f"order {i} paid" for i in range(300)]
    assert {(r["host"], r["app"]) for r in rows} == {("web-1", "checkout")}
