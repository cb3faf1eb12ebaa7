"""Helpers for transform authors: run a transform over rows, assert results, check conformance.

from bytefreezer.transforms.testing import assert_transform, check_conformance

def test_my_transform():
    check_conformance(MyTransform)
    assert_transform(MyTransform, {"field": "x"}, [{"x": 1}], expected=[{"x": 2}])
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from bytefreezer.transforms.base import Context, Output, Transform, TransformConfig
from bytefreezer.transforms.chain import ChainResult, compile_chain
from bytefreezer.transforms.registry import Registry, load_registry
from bytefreezer.transforms.tables import rows_to_table

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def _registry_with(transform: type[Transform] | str) -> tuple[Registry, str]:
    if isinstance(transform, str):
        return load_registry(), transform
    return Registry(transforms={transform.name: transform}), transform.name


def run_transform(
    transform: type[Transform] | str,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    when: str | None = None,
    context: Context | None = None,
) -> ChainResult:
    """Run one transform (a class, or a registered name) over ``rows`` as a one-step chain."""
    registry, name = _registry_with(transform)
    step: dict[str, Any] = {"type": name, "config": config}
    if when is not None:
        step["when"] = when
    chain = compile_chain([step], context or Context(tenant="test", dataset="test"), registry)
    return chain.run(rows_to_table(rows) if rows else pa.table({}))


def assert_transform(
    transform: type[Transform] | str,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    *,
    rejected: list[str] | None = None,
    when: str | None = None,
    context: Context | None = None,
) -> ChainResult:
    """Assert the rows a transform outputs and, optionally, the errors of rejected rows.

    ``rejected`` holds one substring per expected dead-letter record, in order.
    """
    result = run_transform(transform, config, rows, when=when, context=context)
    got = result.table.to_pylist()
    assert got == expected, f"output rows differ:\n  got      {got}\n  expected {expected}"
    errors = result.rejected.column("error").to_pylist()
    if rejected is None:
        assert not errors, f"unexpected dead letters: {errors}"
    else:
        assert len(errors) == len(rejected), f"dead letters {errors}, expected {rejected}"
        for error, fragment in zip(errors, rejected, strict=True):
            assert fragment in error, f"dead letter {error!r} does not mention {fragment!r}"
    return result


def check_conformance(cls: type[Transform], context: Context | None = None) -> None:
    """Check what every transform must do; raise ``AssertionError`` listing each problem."""
    problems: list[str] = []
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"name {name!r} must be a lowercase identifier like 'add_field'")
    if not issubclass(cls, Transform):
        problems.append("must subclass bytefreezer.transforms.Transform")
    if not (cls.__doc__ or "").strip():
        problems.append("the class needs a docstring")
    config_cls = cls.Config
    if not (isinstance(config_cls, type) and issubclass(config_cls, TransformConfig)):
        raise AssertionError(f"{name}: Config must subclass TransformConfig")
    if config_cls is TransformConfig:
        problems.append("declare a Config of its own, even without fields")
    if config_cls.model_config.get("extra") != "forbid":
        problems.append("Config must reject unknown keys (extra='forbid')")
    if not (config_cls.__doc__ or "").strip():
        problems.append("Config needs a docstring")
    for field_name, field in config_cls.model_fields.items():
        if not (field.description or "").strip():
            problems.append(f"Config field {field_name!r} needs a description")
    try:
        config = config_cls.model_validate(cls.example)
    except ValidationError as exc:
        problems.append(f"example {cls.example!r} is not a valid config: {exc}")
        config = None
    try:
        config_cls.model_validate({**cls.example, "__surely_unknown__": 1})
        problems.append("an unknown config key was accepted")
    except ValidationError:
        pass
    if config is not None:
        if pickle.loads(pickle.dumps(config)) != config:
            problems.append("config does not survive pickling")
        try:
            instance = cls(config, context or Context(tenant="t", dataset="d"))
            out = instance.apply(pa.table({}))
            if not isinstance(out, pa.Table | Output):
                problems.append(f"apply() returned {type(out).__name__}, not a Table or Output")
        except Exception as exc:
            problems.append(
                f"building it from its example or applying it to an empty batch failed: {exc!r}"
            )
    if problems:
        raise AssertionError(f"transform {name!r} does not conform:\n- " + "\n- ".join(problems))
