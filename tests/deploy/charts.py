"""Rendering the charts with the real Helm SDK, and looking at what they make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

HELM = Path(__file__).parent.parent.parent / "deploy" / "helm"
BYTEFREEZER = HELM / "bytefreezer"
PROXY = HELM / "proxy"


def scenario(chart: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((chart / "ci" / name).read_text()) or {}
    return data


def render(
    chart: Path, values: dict[str, Any] | None = None, release: str = "bf"
) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES excluded)."""
    loaded = helm_python.Chart.load(str(chart))
    try:
        out = loaded.render(values or {}, name=release, namespace="bytefreezer", is_install=True)
    finally:
        loaded.close()
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(chart: Path, values: dict[str, Any] | None = None, release: str = "bf") -> str:
    loaded = helm_python.Chart.load(str(chart))
    try:
        out = loaded.render(values or {}, name=release, namespace="bytefreezer", is_install=True)
    finally:
        loaded.close()
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind} {name}: {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )


def env_of(deployment: dict[str, Any], container: int = 0) -> dict[str, Any]:
    """name → value, or name → {"secret": name, "key": key}, or name → {"field": path}."""
    out: dict[str, Any] = {}
    for item in deployment["spec"]["template"]["spec"]["containers"][container].get("env", []):
        if "value" in item:
            out[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            out[item["name"]] = {"secret": ref["name"], "key": ref["key"]}
        else:
            out[item["name"]] = {"field": item["valueFrom"]["fieldRef"]["fieldPath"]}
    return out
