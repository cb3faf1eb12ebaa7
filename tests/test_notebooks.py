"""The notebooks run top to bottom against the test S3 server and end with assertions;
they are committed without outputs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: strip outputs"
            )
    assert book.cells[1].metadata.get("tags") == ["parameters"]


@pytest.mark.s3
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_against_s3(path: Path, tmp_path: Path, s3_server: dict[str, str]) -> None:
    book = nbformat.read(path, as_version=4)
    suffix = uuid.uuid4().hex[:8]
    overrides = {
        "S3_ENDPOINT": s3_server["endpoint"],
        "S3_ACCESS_KEY": s3_server["access_key"],
        "S3_SECRET_KEY": s3_server["secret_key"],
        "INTAKE_BUCKET": f"nb-intake-{suffix}",
        "PIPER_BUCKET": f"nb-piper-{suffix}",
        "GEOIP_BUCKET": f"nb-geoip-{suffix}",
        "DESTINATION": f"s3://nb-lake-{suffix}/{{tenant}}/{{dataset}}",
        "WORK_DIR": str(tmp_path / "work"),
    }
    injected = "\n".join(f"{name} = {value!r}" for name, value in overrides.items())
    book.cells.insert(2, nbformat.v4.new_code_cell("# injected by the test\n" + injected))
    client = NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    kernel_tmp = tmp_path / "kernel-tmp"
    kernel_tmp.mkdir()
    # raises CellExecutionError, with the cell and traceback, on any failure
    client.execute(env={**os.environ, "TMPDIR": str(kernel_tmp)})
    last = book.cells[-1].outputs
    assert any("OK" in "".join(o.get("text", "")) for o in last), last
    # Beam leaves each pipeline's temporary directory behind in IPython; the runner removes it
    left = sorted(p.name for p in kernel_tmp.glob("beam-pipeline-temp*"))
    assert left == [], f"{path.name} left Beam's temporary directories behind: {left}"
