"""The plugin API: conformance, discovery, broken plugins, the record adapter, the example
plugin installed and run inside piper, the reference page and the preview endpoint."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.app import create_app
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.errors import ConfigError
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.storage import Storage
from bytefreezer.transforms import RecordTransform, TransformConfig, compile_chain, validate_chain
from bytefreezer.transforms import registry as registry_module
from bytefreezer.transforms.preview import preview_chain
from bytefreezer.transforms.reference import render_reference
from bytefreezer.transforms.registry import load_registry
from bytefreezer.transforms.testing import assert_transform, check_conformance
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir, serve_app

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = ROOT / "examples" / "bytefreezer-example-plugin"


@pytest.mark.parametrize("name", sorted(load_registry().transforms))
def test_every_builtin_conforms(name: str) -> None:
    check_conformance(load_registry().transforms[name])


def test_reference_page_matches_the_code() -> None:
    page = (ROOT / "docs" / "transforms.md").read_text()
    assert page == render_reference(), (
        "regenerate: bytefreezer transforms reference > docs/transforms.md"
    )
    for name in load_registry().transforms:
        assert f"## `{name}`" in page


class _Explode(RecordTransform):
    """Test adapter: fan out by `n`, drop n == 0, fail on n < 0."""

    name: ClassVar[str] = "explode"

    class Config(TransformConfig):
        """No options."""

    def process(self, record: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
        if record["n"] < 0:
            raise ValueError("negative n")
        if record["n"] == 0:
            return None
        return [{"n": record["n"], "i": i} for i in range(record["n"])]


def test_record_adapter_drops_fans_out_and_dead_letters() -> None:
    result = assert_transform(
        _Explode,
        {},
        [{"n": 2}, {"n": 0}, {"n": -1}],
        [{"n": 2, "i": 0}, {"n": 2, "i": 1}],
        rejected=["ValueError: negative n"],
    )
    (dead,) = result.rejected.to_pylist()
    assert dead["transform"] == "explode" and json.loads(dead["record"]) == {"n": -1}
    assert result.dropped == 0  # the fan-out outweighs the dropped record


def test_broken_plugin_is_skipped_unless_used(monkeypatch: pytest.MonkeyPatch) -> None:
    good = EntryPoint("add_field", "bytefreezer.transforms.builtin.add_field:AddField", "g")
    broken = EntryPoint("broken", "no_such_module_anywhere:Thing", "g")
    wrong = EntryPoint("wrong", "bytefreezer.transforms.builtin.add_field:AddField", "g")
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [good, broken, wrong])
    registry = load_registry(refresh=True)
    try:
        assert set(registry.transforms) == {"add_field"}
        assert "ModuleNotFoundError" in registry.broken["broken"]
        assert "declares name 'add_field'" in registry.broken["wrong"]
        compile_chain(
            [{"type": "add_field", "config": {"field": "a", "value": 1}}], registry=registry
        )
        with pytest.raises(ConfigError, match="transform 'broken' failed to load: ModuleNotFound"):
            compile_chain([{"type": "broken"}], registry=registry)
    finally:
        monkeypatch.undo()
        load_registry(refresh=True)


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed into a directory of its own (put on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("plugin")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def _env(plugin_path: Path, **extra: str) -> dict[str, str]:
    paths = [str(plugin_path), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **extra}


def test_example_plugin_passes_its_own_tests(plugin_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=_env(plugin_path),
        capture_output=True,
        timeout=300,
        cwd=EXAMPLE,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_example_plugin_is_discovered_and_runs_inside_piper(
    plugin_path: Path, tmp_path: Path
) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "bytefreezer.cli", "transforms", "list"],
        env=_env(plugin_path),
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout.decode()
    assert "severity_label" in listed and "shout" in listed

    settings = fast_settings(tmp_path / "data")
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    chain = [
        {"type": "severity_label", "config": {"field": "sev"}},
        {"type": "shout", "config": {"field": "msg"}, "when": "sev < 4"},
    ]
    control.create_dataset("acme", DatasetSpec(name="logs", transforms=chain))
    lines = [
        {"sev": 3, "msg": "disk failing"},
        {"sev": 6, "msg": "all good"},
        {"sev": 2, "msg": ""},
    ]
    body = gzip.compress("\n".join(json.dumps(x) for x in lines).encode())
    IntakeWriter(storage).write("acme", "logs", "ndjson", body, {})
    env = _env(
        plugin_path,
        BYTEFREEZER_DATA_DIR=str(settings.data_dir),
        BYTEFREEZER_PACKER__BUFFER_SECONDS="0",
    )
    for component in ("piper", "packer"):
        done = subprocess.run(
            [sys.executable, "-m", "bytefreezer.cli", component, "--once"],
            env=env,
            capture_output=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "logs")
    assert table is not None
    rows = sorted(
        table.select(["sev", "msg", "severity_label"]).to_pylist(), key=lambda r: r["sev"]
    )
    assert rows == [
        {"sev": 3, "msg": "DISK FAILING", "severity_label": "error"},
        {"sev": 6, "msg": "all good", "severity_label": "info"},
    ]
    (dead_file,) = (settings.data_dir / "buckets" / "piper" / "_dead-letter").rglob("*.ndjson")
    dead = json.loads(dead_file.read_text())
    assert dead["transform"] == "shout" and "msg is empty" in dead["error"]


def test_preview_endpoint_runs_a_chain_over_sample_lines(tmp_path: Path) -> None:
    store = ControlStore(tmp_path / "c.db", validate_chain=validate_chain)
    store.create_tenant(Tenant(name="acme"))
    chain = [
        {"type": "cast", "config": {"fields": {"n": "int"}, "on_error": "dead_letter"}},
        {"type": "filter", "config": {"condition": "n > 1"}},
    ]
    store.create_dataset("acme", DatasetSpec(name="web", transforms=chain))
    admin = store.create_key(None, role="admin").key

    def preview(
        transforms: list[dict[str, Any]], lines: list[str], tenant: str, dataset: str
    ) -> Any:
        return preview_chain(transforms, lines, tenant=tenant, dataset=dataset)

    with serve_app(create_app(store, preview=preview)) as url:
        endpoint = f"{url}/api/v1/tenants/acme/datasets/web/transformations/test"
        headers = {"Authorization": f"Bearer {admin}"}
        lines = ['{"n": "1"}', '{"n": "5"}', '{"n": "x"}', "not json"]
        answer = httpx.post(endpoint, json={"lines": lines}, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["output"] == [{"n": 5}]
        assert body["dropped"] == 1
        stages = [(r["stage"], r.get("transform")) for r in body["rejected"]]
        assert stages == [("decode", None), ("transform", "cast")]
        override = {
            "lines": ['{"a": 1}'],
            "transforms": [{"type": "add_field", "config": {"field": "b", "value": 2}}],
        }
        assert httpx.post(endpoint, json=override, headers=headers).json()["output"] == [
            {"a": 1, "b": 2}
        ]
        bad = httpx.post(
            endpoint, json={"lines": ["{}"], "transforms": [{"type": "nope"}]}, headers=headers
        )
        assert bad.status_code == 400 and "unknown transform 'nope'" in bad.json()["error"]
        assert httpx.post(endpoint, json={"lines": "x"}, headers=headers).status_code == 400


def test_cli_lists_and_describes_transforms(capsys: pytest.CaptureFixture[str]) -> None:
    from bytefreezer.cli import main

    main(["transforms", "list"])
    listed = capsys.readouterr().out
    assert len([line for line in listed.splitlines() if line.strip()]) >= len(
        load_registry().transforms
    )
    main(["transforms", "describe", "grok"])
    described = capsys.readouterr().out
    assert "## `grok`" in described and '"break_on_match"' in described
    with pytest.raises(SystemExit):
        main(["transforms", "describe", "nope"])
    assert "unknown transform 'nope'" in capsys.readouterr().err


def test_preview_keeps_integers_beyond_64_bits_exact() -> None:
    lines = ['{"id": 18446744073709551617, "n": 1}', '{"id": 2, "n": 2}']
    result = preview_chain([{"type": "filter", "config": {"condition": "n > 0"}}], lines)
    # Exact, as text: JSON output cannot carry an integer of more than 64 bits through orjson.
    assert [row["id"] for row in result["output"]] == ["18446744073709551617", "2"]
