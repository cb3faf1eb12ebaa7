"""Requests checked against the control service's own OpenAPI document before they run.

The document is the contract: a body or path parameter it would refuse is answered 400 with the
first violation named, so a malformed request never reaches the store (a list where a name
belongs would otherwise surface as a database error).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from bytefreezer import errors
from bytefreezer.keys import validate_name


@functools.cache
def _operations() -> dict[tuple[str, str], tuple[dict[str, re.Pattern[str]], Any]]:
    from bytefreezer.control.openapi import control_openapi

    document = control_openapi()
    components = document["components"]
    table: dict[tuple[str, str], tuple[dict[str, re.Pattern[str]], Any]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            params = {
                p["name"]: re.compile(p["schema"]["pattern"])
                for p in operation.get("parameters", [])
                if p.get("in") == "path" and "pattern" in p.get("schema", {})
            }
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            validator = None
            if body is not None:
                schema = {**body["schema"], "components": components}
                validator = Draft202012Validator(schema)
            table[(path, method.upper())] = (params, validator)
    return table


def check_request(path: str, method: str, params: dict[str, Any], body: Any) -> None:
    """Raise :class:`errors.ConfigError` naming what in the request breaks the document."""
    known = _operations().get((path, method))
    if known is None:
        return
    patterns, validator = known
    for name, pattern in patterns.items():
        value = params.get(name)
        if isinstance(value, str) and not pattern.search(value):
            validate_name(value, name)  # raises InvalidName with the naming rule
    if validator is None:
        return
    if body is None:
        raise errors.ConfigError("this request needs a JSON body")
    error = best_match(validator.iter_errors(body))
    if error is not None and error.validator == "pattern" and isinstance(error.instance, str):
        field = next((str(p) for p in reversed(error.absolute_path) if isinstance(p, str)), "")
        if field == "name":  # the resource the path creates: tenants -> tenant
            field = [s for s in path.split("/") if s and not s.startswith("{")][-1].rstrip("s")
        validate_name(error.instance, field)
    if error is not None:
        where = "body" + "".join(f"[{p!r}]" for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        raise errors.ConfigError(f"{where}: {message}")
