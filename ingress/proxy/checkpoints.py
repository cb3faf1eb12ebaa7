"""Checkpoints of the proxy's inputs that read on their own (`file`, `kinesis`): where each source
was read up to, kept beside the spool and replaced whole, so a crash leaves the old or the new."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    """The checkpoints saved at ``path``; None when there are none yet."""
    return json.loads(path.read_text()) if path.exists() else None


def save(path: Path, state: Any) -> None:
    """Write ``state`` as JSON aside, fsync it, rename it over ``path`` and fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_suffix(".tmp")
    with open(aside, "w") as file:
        json.dump(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(aside, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
