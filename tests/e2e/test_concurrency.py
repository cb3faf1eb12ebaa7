"""Two piper and two packer processes on the same buckets: every record exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.e2e.test_recovery import ids_at_destination, post, setup_stack
from tests.helpers import free_port, wait_for


def test_two_pipers_and_two_packers(tmp_path: Path) -> None:
    settings, _control, storage = setup_stack(tmp_path, ttl=30)
    processes = []
    logs = []
    for component in ("piper", "piper", "packer", "packer"):
        env = {
            **os.environ,
            "BYTEFREEZER_DATA_DIR": str(settings.data_dir),
            "BYTEFREEZER_INSTANCE_ID": f"{component}-{len(processes)}",
            "BYTEFREEZER_PIPER__POLL_INTERVAL_SECONDS": "0.2",
            "BYTEFREEZER_PIPER__MAX_OBJECTS_PER_RUN": "3",
            "BYTEFREEZER_PACKER__POLL_INTERVAL_SECONDS": "0.2",
            "BYTEFREEZER_PACKER__BUFFER_SECONDS": "0",
            "BYTEFREEZER_PACKER__MAX_INPUT_MB_PER_RUN": "1",
            "BYTEFREEZER_PIPER__API_HOST": "127.0.0.1",
            "BYTEFREEZER_PIPER__API_PORT": str(free_port()),
            "BYTEFREEZER_PACKER__API_HOST": "127.0.0.1",
            "BYTEFREEZER_PACKER__API_PORT": str(free_port()),
        }
        log = open(tmp_path / f"{component}-{len(processes)}.log", "wb")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "bytefreezer.cli", component],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        total = 0
        for _ in range(12):
            post(storage, range(total, total + 40))
            total += 40
            time.sleep(0.25)
        wait_for(lambda: sum(ids_at_destination(settings).values()) >= total, timeout=120)
        time.sleep(1.0)  # a duplicate would show up after the last object
        assert ids_at_destination(settings) == Counter(range(total))
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            assert process.wait(timeout=30) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for log in logs:
            log.close()
    health = {(r.component, r.instance) for r in _control.list_components()}
    assert {("piper", "piper-0"), ("piper", "piper-1"), ("packer", "packer-2")} <= health
