"""Run a chain over sample lines and report what comes out: the control service's preview."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

from bytefreezer.transforms.base import Context, ObjectSource
from bytefreezer.transforms.chain import compile_chain
from bytefreezer.transforms.tables import loads_exact, rows_to_table


def preview_chain(
    transforms: list[dict[str, Any]],
    lines: list[str],
    *,
    tenant: str = "",
    dataset: str = "",
    resources: ObjectSource | None = None,
) -> dict[str, Any]:
    """Output rows, rejected rows (with stage, transform, error, record) and dropped count."""
    chain = compile_chain(transforms, Context(tenant=tenant, dataset=dataset, resources=resources))
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            value = loads_exact(line)
        except orjson.JSONDecodeError as exc:
            rejected.append({"stage": "decode", "error": f"invalid JSON: {exc}", "record": line})
            continue
        if not isinstance(value, dict):
            rejected.append({"stage": "decode", "error": "not a JSON object", "record": line})
            continue
        rows.append(value)
    result = chain.run(rows_to_table(rows) if rows else pa.table({}))
    for row in result.rejected.to_pylist():
        rejected.append({"stage": "transform", **row})
    output = orjson.loads(orjson.dumps(result.table.to_pylist(), default=str))
    return {"output": output, "rejected": rejected, "dropped": result.dropped}
