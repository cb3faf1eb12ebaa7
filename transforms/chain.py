"""The chain compiler: validate a dataset's steps once, build them once, run them per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.base import Context, Output, Transform
from bytefreezer.transforms.condition import Condition, validate_expression
from bytefreezer.transforms.registry import Registry, load_registry

REJECTED_SCHEMA = pa.schema(
    [("transform", pa.string()), ("error", pa.string()), ("record", pa.string())]
)


class StepSpec(BaseModel):
    """One step of a chain as stored on the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="The transform's name.")
    config: dict[str, Any] = Field(default_factory=dict, description="The transform's config.")
    when: str | None = Field(None, description="Run the step only on rows where this SQL holds.")
    enabled: bool = Field(True, description="Disabled steps are skipped.")


@dataclass
class ChainResult:
    """Rows that came through, rows rejected (with transform, error, record), rows dropped."""

    table: pa.Table
    rejected: pa.Table
    dropped: int = 0
    dropped_by: dict[str, int] = field(default_factory=dict)
    rejected_by: dict[str, int] = field(default_factory=dict)


@dataclass
class _Step:
    index: int
    name: str
    transform: Transform
    when: Condition | None


def _format_errors(index: int, name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{where}: {err['msg']}")
    return f"step {index} ({name}): " + "; ".join(parts)


def parse_steps(specs: list[dict[str, Any]], registry: Registry | None = None) -> list[StepSpec]:
    """Validate raw steps; ``ConfigError`` with the step index, field and reason."""
    registry = registry or load_registry()
    steps = []
    for index, raw in enumerate(specs):
        name = raw.get("type", "?") if isinstance(raw, dict) else "?"
        try:
            step = StepSpec.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_format_errors(index, str(name), exc)) from None
        try:
            cls = registry.get(step.type)
        except ConfigError as exc:
            raise ConfigError(f"step {index} (type): {exc}") from None
        try:
            cls.Config.model_validate(step.config)
        except ValidationError as exc:
            raise ConfigError(_format_errors(index, step.type, exc)) from None
        if step.when is not None:
            try:
                validate_expression(step.when)
            except ConfigError as exc:
                raise ConfigError(f"step {index} ({step.type}): when: {exc}") from None
        steps.append(step)
    return steps


def validate_chain(specs: list[dict[str, Any]]) -> None:
    """Raise ``ConfigError`` unless ``specs`` is a valid chain."""
    parse_steps(specs)


def _records_json(table: pa.Table) -> list[str]:
    return [orjson.dumps(row, default=str).decode() for row in table.to_pylist()]


class Chain:
    """A compiled chain; build it once per pipeline run and call ``run`` per batch."""

    def __init__(self, steps: list[_Step]) -> None:
        self.steps = steps

    def run(self, table: pa.Table) -> ChainResult:
        """Run every enabled step over ``table``."""
        rejected_parts: list[pa.Table] = []
        result = ChainResult(table=table, rejected=REJECTED_SCHEMA.empty_table())
        for step in self.steps:
            if table.num_rows == 0:
                break
            before = table.num_rows
            rejected_before = sum(part.num_rows for part in rejected_parts)
            if step.when is None:
                table = self._apply(step, table, rejected_parts)
            else:
                mask, failures = step.when.evaluate(table)
                if failures:
                    bad = pa.array([i in failures for i in range(table.num_rows)])
                    rejected_parts.append(
                        _rejected(step.name, list(failures.values()), table.filter(bad))
                    )
                    table, mask = table.filter(pc.invert(bad)), mask.filter(pc.invert(bad))
                selected = table.filter(mask)
                others = table.filter(pc.invert(mask))
                applied = self._apply(step, selected, rejected_parts)
                table = pa.concat_tables([applied, others], promote_options="permissive")
            rejected_now = sum(part.num_rows for part in rejected_parts) - rejected_before
            if rejected_now:
                result.rejected_by[step.name] = result.rejected_by.get(step.name, 0) + rejected_now
            dropped = before - table.num_rows - rejected_now
            if dropped > 0:
                result.dropped += dropped
                result.dropped_by[step.name] = result.dropped_by.get(step.name, 0) + dropped
        result.table = table
        if rejected_parts:
            result.rejected = pa.concat_tables(rejected_parts)
        return result

    @staticmethod
    def _apply(step: _Step, table: pa.Table, rejected_parts: list[pa.Table]) -> pa.Table:
        if table.num_rows == 0:
            return table
        try:
            out = step.transform.apply(table)
        except ConfigError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            rejected_parts.append(_rejected(step.name, [reason] * table.num_rows, table))
            return table.schema.empty_table()
        if isinstance(out, Output):
            if out.rejected is not None and out.rejected.num_rows:
                rejected_parts.append(_rejected(step.name, out.errors, out.rejected))
            return out.table
        return out


def _rejected(name: str, errors: list[str], rows: pa.Table) -> pa.Table:
    records = _records_json(rows)
    if len(errors) != len(records):
        errors = (errors + [errors[-1] if errors else "rejected"] * len(records))[: len(records)]
    return pa.table(
        {"transform": [name] * len(records), "error": errors, "record": records},
        schema=REJECTED_SCHEMA,
    )


def compile_chain(
    specs: list[dict[str, Any]], context: Context | None = None, registry: Registry | None = None
) -> Chain:
    """Validate and build a chain once; ``ConfigError`` names the bad step."""
    registry = registry or load_registry()
    steps = []
    for index, step in enumerate(parse_steps(specs, registry)):
        if not step.enabled:
            continue
        cls = registry.get(step.type)
        config = cls.Config.model_validate(step.config)
        try:
            transform = cls(config, context or Context())
        except ConfigError as exc:
            raise ConfigError(f"step {index} ({step.type}): {exc}") from None
        when = Condition(step.when) if step.when else None
        steps.append(_Step(index, step.type, transform, when))
    return Chain(steps)
