"""Debian's rsyslogd as a real client in tests (`make test` installs it with the modules the
tests load): started in the foreground with a test's own configuration, its output in a file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def modules_dir(*modules: str) -> Path | None:
    """The machine's rsyslog module directory (/usr/lib/<multiarch>/rsyslog), if it holds
    every one of ``modules``."""
    for found in sorted(Path("/usr/lib").glob("*/rsyslog")):
        if all((found / f"{name}.so").exists() for name in modules):
            return found
    return None


def needs(*modules: str) -> Any:
    """Skip a test where rsyslogd or one of ``modules`` is missing (outside `make test`)."""
    return pytest.mark.skipif(
        not Path(RSYSLOGD).exists() or modules_dir(*modules) is None,
        reason=f"Debian's rsyslog with {', '.join(modules)} comes with `make test` (system-deps)",
    )


def start(config: str, work: Path, *modules: str) -> subprocess.Popen[bytes]:
    """rsyslogd running ``config`` (its pid file, output and work files under ``work``)."""
    (work / "rsyslog.conf").write_text(config)
    with (work / "rsyslogd.log").open("wb") as out:
        return subprocess.Popen(
            [
                RSYSLOGD,
                "-n",
                "-f",
                str(work / "rsyslog.conf"),
                "-i",
                str(work / "rsyslogd.pid"),
                "-M",
                str(modules_dir(*modules)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def output(work: Path) -> str:
    return (work / "rsyslogd.log").read_text(errors="replace")
