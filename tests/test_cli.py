"""The `bytefreezer` command's management verbs against the embedded control database."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from bytefreezer.cli import main
from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetStatus
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.pipelines.runner import pipeline_options, should_spread
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> object:
    main([*args[:2], "--data-dir", str(data_dir), *args[2:]])
    out = capsys.readouterr().out
    return json.loads(out) if out.strip() else None


def test_manage_tenants_datasets_and_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    created_tenant = run(capsys, data, "tenants", "create", "acme")
    assert created_tenant == {"name": "acme", "active": True, "daily_ingest_mb": None}
    chain = '[{"type": "filter", "config": {"condition": "status >= 400"}}]'
    created = run(
        capsys,
        data,
        "datasets",
        "create",
        "acme",
        "web",
        "--transforms",
        chain,
        "--partitioning",
        "date",
        "--timestamp-field",
        "ts",
    )
    assert isinstance(created, dict)
    assert created["parquet"]["partitioning"] == "date" and created["timestamp_field"] == "ts"
    assert created["destination"]["url"].endswith("/destination/acme/web")
    updated = run(capsys, data, "datasets", "update", "acme", "web", "--compression", "snappy")
    assert isinstance(updated, dict) and updated["parquet"]["compression"] == "snappy"
    assert updated["parquet"]["partitioning"] == "date", "options not given are kept"
    buffered = run(capsys, data, "datasets", "update", "acme", "web", "--buffer-seconds", "0")
    assert isinstance(buffered, dict) and buffered["parquet"]["buffer_seconds"] == 0
    assert buffered["parquet"]["buffer_mb"] is None  # packer's setting
    assert buffered["parquet"]["compression"] == "snappy"
    assert updated["transforms"] == json.loads(chain)
    paused = run(capsys, data, "datasets", "deactivate", "acme", "web")
    assert isinstance(paused, dict) and paused["active"] is False
    assert paused["parquet"]["compression"] == "snappy", "the rest of the dataset kept"
    resumed = run(capsys, data, "datasets", "activate", "acme", "web")
    assert isinstance(resumed, dict) and resumed["active"] is True
    key = run(capsys, data, "keys", "create", "acme", "--dataset", "web")
    assert isinstance(key, dict) and key["key"].startswith("bfk_")
    listed = run(capsys, data, "keys", "list", "acme")
    assert isinstance(listed, list) and [k["dataset"] for k in listed] == ["web"]
    status = run(capsys, data, "datasets", "status", "acme", "web")
    assert isinstance(status, list)
    assert [(s["stage"], s["state"]) for s in status] == [
        ("piper", "unknown"),
        ("packer", "unknown"),
    ]
    control = ControlStore(data / "control.db")
    for stage in ("piper", "packer"):
        control.report_dataset_status(
            DatasetStatus(
                tenant="acme", dataset="web", stage=stage, state="failing", error=f"{stage} failed"
            )
        )
    control.close()
    failing = run(capsys, data, "datasets", "status", "--failing", "--stage", "packer")
    assert isinstance(failing, list)
    assert [(f["dataset"], f["error"]) for f in failing] == [("web", "packer failed")]
    assert run(capsys, data, "datasets", "retry", "acme", "web", "--stage", "piper") is None
    left = run(capsys, data, "datasets", "status", "acme")
    assert isinstance(left, list) and [s["stage"] for s in left] == ["packer"]
    assert run(capsys, data, "datasets", "retry", "acme", "web") is None
    assert run(capsys, data, "datasets", "status", "acme") == []
    checked = run(capsys, data, "datasets", "check", "acme", "web")
    assert isinstance(checked, dict) and checked["ok"] is True and checked["error"] == ""
    (tmp_path / "blocker").write_text("a file where a directory should be")
    run(
        capsys,
        data,
        "datasets",
        "update",
        "acme",
        "web",
        "--destination",
        f"file://{tmp_path}/blocker/x",
    )
    with pytest.raises(SystemExit) as failed:  # a script can tell
        main(["datasets", "check", "--data-dir", str(data), "acme", "web"])
    assert failed.value.code == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False and "blocker" in printed["error"]
    run(capsys, data, "tenants", "deactivate", "acme")
    listed = run(capsys, data, "tenants", "list")
    assert listed == [{"name": "acme", "active": False, "daily_ingest_mb": None}]


def test_errors_are_one_line_not_tracebacks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["datasets", "create", "nobody", "web", "--data-dir", str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: tenant 'nobody' not found"
    main(["tenants", "create", "acme", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(
            [
                "datasets",
                "create",
                "acme",
                "web",
                "--data-dir",
                str(tmp_path),
                "--transforms",
                '[{"type": "filter", "config": {}}]',
            ]
        )
    assert "step 0 (filter): condition: Field required" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a value pydantic refuses: one line, not a traceback
        main(
            [
                "datasets",
                "create",
                "acme",
                "web",
                "--compression",
                "rar",
                "--data-dir",
                str(tmp_path),
            ]
        )
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: compression: Input should be") and "\n" not in error


def test_a_csv_dataset_with_its_own_delimiter_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Semicolon CSV (many spreadsheet exports): the dataset's format and delimiter, set with
    the CLI, are what piper reads its bodies with; decimal commas stay text."""
    data = tmp_path / "data"
    run(capsys, data, "tenants", "create", "acme")
    flags = ["--format", "csv", "--csv-delimiter", ";"]
    created = run(capsys, data, "datasets", "create", "acme", "sales", *flags)
    assert isinstance(created, dict)
    assert (created["format"], created["csv_delimiter"]) == ("csv", ";")
    settings = fast_settings(data)
    storage = Storage(settings)
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    body = "timestamp;store;units;price\n2026-03-01T10:00:00Z;Lyon;3;2,50\n"
    IntakeWriter(storage).write("acme", "sales", "csv", gzip.compress(body.encode()), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    table = read_parquet_dir(data / "destination" / "acme" / "sales")
    assert table is not None
    row = table.select(["store", "units", "price"]).to_pylist()
    assert row == [{"store": "Lyon", "units": 3, "price": "2,50"}]
    with pytest.raises(SystemExit):
        main(
            ["datasets", "update", "acme", "sales", "--csv-delimiter", '"', "--data-dir", str(data)]
        )
    assert "a CSV delimiter cannot be a quote or a line break" in capsys.readouterr().err


def test_raw_copies_and_their_days_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    run(capsys, data, "tenants", "create", "acme")
    created = run(capsys, data, "datasets", "create", "acme", "web", "--keep-raw")
    assert isinstance(created, dict) and created["keep_raw"] and created["keep_raw_days"] is None
    updated = run(capsys, data, "datasets", "update", "acme", "web", "--keep-raw-days", "30")
    assert isinstance(updated, dict) and (updated["keep_raw"], updated["keep_raw_days"]) == (
        True,
        30,
    )
    with pytest.raises(SystemExit):
        main(["datasets", "update", "acme", "web", "--keep-raw-days", "0", "--data-dir", str(data)])
    assert "keep_raw_days" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "runner"),
    [
        ([], "FnApiRunner"),
        (["--runner=DirectRunner"], "FnApiRunner"),
        (["--runner=FlinkRunner", "--flink_master=flink:8081"], "FlinkRunner"),
        (["--runner", "PortableRunner", "--job_endpoint=localhost:8099"], "PortableRunner"),
    ],
)
def test_runner_options_pass_through_and_default_to_local(args: list[str], runner: str) -> None:
    options = pipeline_options(args).get_all_options()
    assert options["runner"] == runner
    for arg in args:
        if arg.startswith("--flink_master="):
            assert options["flink_master"] == "flink:8081"


def test_proxy_config_errors_are_actionable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["proxy"])
    assert "needs --config" in capsys.readouterr().err
    bad = tmp_path / "proxy.yaml"
    bad.write_text(
        "receiver_url: http://r:8080\ninputs:\n  - {name: x, type: carrier-pigeon, port: 1}\n"
    )
    with pytest.raises(SystemExit):
        main(["proxy", "--config", str(bad)])
    err = capsys.readouterr().err
    assert "inputs.0.type" in err and "inputs.0.tenant: Field required" in err


def test_the_local_runner_is_one_in_process_worker_unless_the_arguments_choose() -> None:
    options = pipeline_options([]).get_all_options()
    assert options["runner"] == "FnApiRunner" and options["direct_num_workers"] in (None, 1)
    chosen = pipeline_options(
        ["--direct_num_workers=3", "--direct_running_mode=multi_threading"]
    ).get_all_options()
    assert chosen["direct_num_workers"] == 3 and chosen["direct_running_mode"] == "multi_threading"
    assert pipeline_options(["--runner=FlinkRunner"]).get_all_options()["runner"] == "FlinkRunner"


def test_work_is_spread_unless_one_local_worker_runs_it() -> None:
    assert not should_spread([])
    assert not should_spread(["--runner=DirectRunner"])
    assert should_spread(["--runner=FlinkRunner"])
    assert should_spread(["--direct_num_workers=4"])


def test_proxy_config_takes_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bytefreezer.errors import ConfigError
    from bytefreezer.ingress.proxy.config import load_proxy_config

    config = tmp_path / "proxy.yaml"
    config.write_text(
        "receiver_url: http://r:8080\n"
        "inputs:\n  - {name: s, type: syslog, port: 514, tenant: acme, dataset: logs, api_key: '${SYSLOG_KEY}'}\n"
    )
    with pytest.raises(ConfigError, match=r"\$\{SYSLOG_KEY\}"):
        load_proxy_config(config)
    monkeypatch.setenv("SYSLOG_KEY", "bfk_abc_def")
    assert load_proxy_config(config).inputs[0].api_key.get_secret_value() == "bfk_abc_def"


def test_a_destinations_encryption_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Set with the destination, or later on the destination as it is; refused, in one line,
    where it cannot apply."""
    data = tmp_path / "data"
    run(capsys, data, "tenants", "create", "acme")
    flags = ["--destination", "s3://acme-lake/events", "--server-side-encryption", "AES256"]
    created = run(capsys, data, "datasets", "create", "acme", "events", *flags)
    assert isinstance(created, dict)
    assert created["destination"]["server_side_encryption"] == "AES256"
    kms = ["--server-side-encryption", "aws:kms", "--kms-key-id", "alias/acme"]
    updated = run(capsys, data, "datasets", "update", "acme", "events", *kms)
    assert isinstance(updated, dict)
    assert updated["destination"] == {
        "url": "s3://acme-lake/events",
        "options": {},
        "server_side_encryption": "aws:kms",
        "kms_key_id": "alias/acme",
    }
    cleared = run(
        capsys,
        data,
        "datasets",
        "update",
        "acme",
        "events",
        "--server-side-encryption",
        "none",
        "--kms-key-id",
        "",
    )
    assert isinstance(cleared, dict)
    assert cleared["destination"]["server_side_encryption"] == ""
    refused = [
        (["create", "acme", "other", "--kms-key-id", "k"], "go with --destination"),
        (
            [
                "create",
                "acme",
                "local",
                "--destination",
                "file:///tmp/x",
                "--server-side-encryption",
                "AES256",
            ],
            "applies to s3:// destinations",
        ),
        (["update", "acme", "events", "--kms-key-id", "k"], "KMS key id is used with"),
    ]
    for args, reason in refused:
        with pytest.raises(SystemExit):
            main(["datasets", *args, "--data-dir", str(data)])
        error = capsys.readouterr().err.strip()
        assert reason in error and "\n" not in error, error


def test_tenant_limits_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    created = run(capsys, data, "tenants", "create", "acme", "--daily-ingest-mb", "200")
    assert created == {"name": "acme", "active": True, "daily_ingest_mb": 200}
    limited = run(capsys, data, "tenants", "limit", "acme", "--daily-ingest-mb", "50")
    assert isinstance(limited, dict) and limited["daily_ingest_mb"] == 50
    removed = run(capsys, data, "tenants", "limit", "acme", "--none")
    assert isinstance(removed, dict) and removed["daily_ingest_mb"] is None
    assert run(capsys, data, "tenants", "usage") == []
    with pytest.raises(SystemExit):
        main(["tenants", "limit", "acme", "--daily-ingest-mb", "0", "--data-dir", str(data)])
    error = capsys.readouterr().err.strip()
    assert "daily_ingest_mb" in error and "\n" not in error


def test_keys_with_an_expiry_from_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    run(capsys, data, "tenants", "create", "acme")
    created = run(capsys, data, "keys", "create", "acme", "--expires-in-days", "90")
    assert isinstance(created, dict)
    assert created["info"]["expires_at"] == pytest.approx(time.time() + 90 * 86400, abs=60)
    (listed,) = run(capsys, data, "keys", "list", "acme")  # type: ignore[misc]
    assert listed["expires_at"] == created["info"]["expires_at"]
