"""Settings: defaults, environment over YAML, clear errors, and the documented reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from bytefreezer.errors import ConfigError
from bytefreezer.settings import load_settings, settings_reference


def test_environment_overrides_yaml_which_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "bf.yaml"
    config.write_text("receiver:\n  port: 9000\n  max_body_bytes: 10\nstorage:\n  backend: s3\n")
    monkeypatch.setenv("BYTEFREEZER_RECEIVER__PORT", "9100")
    settings = load_settings(config_file=config)
    assert settings.receiver.port == 9100
    assert settings.receiver.max_body_bytes == 10
    assert settings.storage.backend == "s3"
    assert settings.piper.max_objects_per_run == 64


def test_bad_settings_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BYTEFREEZER_STORAGE__BACKEND", "ftp")
    with pytest.raises(ConfigError, match=r"storage\.backend"):
        load_settings()
    monkeypatch.delenv("BYTEFREEZER_STORAGE__BACKEND")
    bad = tmp_path / "bad.yaml"
    bad.write_text("receiver: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_file=bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config_file=tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("BYTEFREEZER_PIPER__POLL_INTERVAL_SECONDS", "-1", r"piper\.poll_interval_seconds"),
        ("BYTEFREEZER_PACKER__LEASE_TTL_SECONDS", "0", r"packer\.lease_ttl_seconds"),
        ("BYTEFREEZER_PACKER__MAX_INPUT_MB_PER_RUN", "0", r"packer\.max_input_mb_per_run"),
        ("BYTEFREEZER_PIPER__MAX_OBJECTS_PER_RUN", "0", r"piper\.max_objects_per_run"),
        ("BYTEFREEZER_RECEIVER__PORT", "70000", r"receiver\.port"),
        ("BYTEFREEZER_RECEIVER__MAX_BODY_BYTES", "0", r"receiver\.max_body_bytes"),
        ("BYTEFREEZER_CONTROL__TIMEOUT_SECONDS", "0", r"control\.timeout_seconds"),
        ("BYTEFREEZER_MONITORING__EXPORT_INTERVAL_SECONDS", "0", r"export_interval_seconds"),
    ],
)
def test_numbers_out_of_range_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    """A negative poll interval (a busy loop), a zero lease TTL (every lease lost at once) or a
    zero run budget is refused at start, naming the setting, not met at run time."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert settings_reference() in readme, "regenerate with: bytefreezer config reference"
