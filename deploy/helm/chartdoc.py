"""Chart documentation from values.yaml comments: the README parameter table and
values.schema.json. Every value is documented by a `## @param path [enum: a, b] text` comment.

    python deploy/helm/chartdoc.py deploy/helm/bytefreezer   # rewrite README.md and the schema
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_PARAM = re.compile(r"^\s*##\s*@param\s+(\S+)\s+(?:\[enum:\s*([^\]]+)\]\s*)?(.*)$")
_SECTION = re.compile(r"^\s*##\s*@section\s+(.*)$")
BEGIN, END = "<!-- parameters:begin -->", "<!-- parameters:end -->"


def params(values_file: Path) -> list[dict[str, Any]]:
    """Every documented parameter in file order: path, section, enum, description."""
    found = []
    section = ""
    for line in values_file.read_text().splitlines():
        if match := _SECTION.match(line):
            section = match.group(1).strip()
        elif match := _PARAM.match(line):
            enum = [e.strip() for e in match.group(2).split(",")] if match.group(2) else None
            found.append(
                {
                    "path": match.group(1),
                    "section": section,
                    "enum": enum,
                    "description": match.group(3).strip(),
                }
            )
    return found


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Documentable values: scalars, lists, and mappings that are values themselves."""
    out: dict[str, Any] = {}
    if isinstance(data, dict) and data and not _is_value_map(prefix):
        for key, value in data.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    else:
        out[prefix] = data
    return out


_VALUE_MAPS = ("resources", "nodeSelector", "affinity", "annotations", "labels")


def _is_value_map(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in _VALUE_MAPS


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def _type(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    return {"type": "object"}


def schema(chart: Path) -> dict[str, Any]:
    """values.schema.json: types from the defaults, enums from the comments, no unknown keys."""
    values = yaml.safe_load((chart / "values.yaml").read_text())
    documented = {p["path"]: p for p in params(chart / "values.yaml")}

    def build(data: Any, prefix: str) -> dict[str, Any]:
        if isinstance(data, dict) and not _is_value_map(prefix) and (data or not prefix):
            node: dict[str, Any] = {
                "type": "object",
                "additionalProperties": False,
                "properties": {},
            }
            for key, value in data.items():
                node["properties"][key] = build(value, f"{prefix}.{key}" if prefix else key)
            return node
        node = _type(data)
        param = documented.get(prefix)
        if param:
            node["description"] = param["description"]
            if param["enum"]:
                node["enum"] = param["enum"]
        return node

    root = build(values, "")
    root["$schema"] = "http://json-schema.org/draft-07/schema#"
    root["additionalProperties"] = True  # `global` and subchart keys may be added by parents
    return root


def readme_table(chart: Path) -> str:
    """The Markdown parameter tables, one per section."""
    values = yaml.safe_load((chart / "values.yaml").read_text())
    lines: list[str] = []
    section = None
    for param in params(chart / "values.yaml"):
        if param["section"] != section:
            section = param["section"]
            lines += [
                "",
                f"### {section}",
                "",
                "| Name | Description | Value |",
                "| --- | --- | --- |",
            ]
        default = json.dumps(_lookup(values, param["path"]))
        choices = ", ".join(e or '""' for e in param["enum"] or [])
        enum = f" (one of: {choices})" if param["enum"] else ""
        lines.append(f"| `{param['path']}` | {param['description']}{enum} | `{default}` |")
    return "\n".join(lines).strip() + "\n"


def undocumented(chart: Path) -> list[str]:
    """Values without an @param comment, and @param comments naming no value."""
    values = yaml.safe_load((chart / "values.yaml").read_text())
    leaves = set(_leaves(values))
    documented = {p["path"] for p in params(chart / "values.yaml")}
    return sorted((leaves - documented) | (documented - leaves))


def render_readme(chart: Path) -> str:
    """README.md with its parameter tables regenerated."""
    text = (chart / "README.md").read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + readme_table(chart) + text[end:]


def main() -> None:
    for name in sys.argv[1:]:
        chart = Path(name)
        (chart / "README.md").write_text(render_readme(chart))
        (chart / "values.schema.json").write_text(json.dumps(schema(chart), indent=2) + "\n")
        missing = undocumented(chart)
        if missing:
            raise SystemExit(f"{chart}: undocumented or unknown values: {missing}")


if __name__ == "__main__":
    main()
