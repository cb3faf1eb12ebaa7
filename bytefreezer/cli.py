"""The ``bytefreezer`` command: run components, or manage tenants, datasets and keys."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bytefreezer import __version__
from bytefreezer.control import ControlClient, ControlStore, open_control
from bytefreezer.control.models import (
    DatasetSpec,
    Destination,
    NewApiKey,
    ParquetOptions,
    Tenant,
)
from bytefreezer.errors import BytefreezerError, ConfigError, validation_problems
from bytefreezer.memory import keep_freed_memory, prefer_arrow_pool
from bytefreezer.settings import Settings, load_settings, settings_reference

log = logging.getLogger("bytefreezer")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "config", None):
        overrides["config_file"] = args.config
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    settings = load_settings(**overrides)
    logging.getLogger().setLevel(settings.log_level.upper())
    return settings


def _validator() -> Any:
    from bytefreezer.transforms import validate_chain

    return validate_chain


def _preview(settings: Settings) -> Any:
    from bytefreezer.storage import BucketObjects, Storage
    from bytefreezer.transforms.preview import preview_chain

    resources = BucketObjects(Storage(settings))

    def preview(
        transforms: list[dict[str, Any]], lines: list[str], tenant: str, dataset: str
    ) -> Any:
        return preview_chain(transforms, lines, tenant=tenant, dataset=dataset, resources=resources)

    return preview


def _destination_checker(settings: Settings) -> Any:
    """The control service's destination check: a probe written and deleted through this
    process's storage settings (a dataset's `s3://` URL without options uses them)."""
    from bytefreezer.storage import Storage

    storage = Storage(settings)

    def check(destination: Destination) -> None:
        storage.check_destination(**destination.model_dump())

    return check


def _control(settings: Settings) -> ControlClient:
    return open_control(
        settings, validate_chain=_validator(), check_destination=_destination_checker(settings)
    )


def _print(value: Any) -> None:
    if isinstance(value, list):
        print(json.dumps([v.model_dump(mode="json") for v in value], indent=2))
    elif value is not None:
        print(json.dumps(value.model_dump(mode="json"), indent=2))


# Management commands ---------------------------------------------------------------------


def cmd_tenants(args: argparse.Namespace) -> None:
    control = _control(_settings(args))
    if args.action == "list":
        _print(control.list_tenants())
    elif args.action == "create":
        _print(control.create_tenant(Tenant(name=args.name, daily_ingest_mb=args.daily_ingest_mb)))
    elif args.action == "limit":
        _print(
            control.set_daily_ingest_limit(args.name, None if args.none else args.daily_ingest_mb)
        )
    elif args.action == "usage":
        _print(control.list_usage(args.name, args.days))
    elif args.action in ("activate", "deactivate"):
        _print(control.update_tenant(args.name, active=args.action == "activate"))
    elif args.action == "delete":
        control.delete_tenant(args.name)


def _load_json_arg(value: str) -> Any:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BytefreezerError(f"not valid JSON: {exc}") from None


def cmd_datasets(args: argparse.Namespace) -> None:
    control = _control(_settings(args))
    if args.action == "list":
        _print(control.list_datasets(args.tenant))
    elif args.action == "show":
        _print(control.get_dataset(args.tenant, args.name))
    elif args.action == "delete":
        control.delete_dataset(args.tenant, args.name)
    elif args.action == "status":
        if args.name is not None:
            found = control.get_dataset_status(args.tenant, args.name)
            _print([s for s in found if args.stage is None or s.stage == args.stage])
        else:
            state = "failing" if args.failing else None
            _print(control.list_dataset_statuses(args.tenant, state, args.stage))
    elif args.action == "retry":
        control.clear_dataset_status(args.tenant, args.name, args.stage)
    elif args.action == "check":
        checked = control.check_destination(args.tenant, args.name)
        _print(checked)
        if not checked.ok:
            raise SystemExit(1)
    elif args.action == "compact":
        from bytefreezer.pipelines.compaction import compact_dataset
        from bytefreezer.storage import Storage

        settings = _settings(args)
        report = compact_dataset(
            settings,
            control,
            Storage(settings),
            control.get_dataset(args.tenant, args.name),
            min_age_seconds=args.min_age_minutes * 60,
            dry_run=args.dry_run,
        )
        print(json.dumps(report.as_json(), indent=2))
    elif args.action in ("activate", "deactivate"):
        current = control.get_dataset(args.tenant, args.name).model_dump(exclude={"tenant"})
        current["active"] = args.action == "activate"
        _print(control.put_dataset(args.tenant, DatasetSpec.model_validate(current)))
    elif args.action in ("create", "update"):
        spec: dict[str, Any] = {"name": args.name}
        for name in ("format", "csv_delimiter", "keep_raw", "keep_raw_days"):
            if getattr(args, name, None) is not None:
                spec[name] = getattr(args, name)
        if args.transforms:
            spec["transforms"] = _load_json_arg(args.transforms)
        if args.timestamp_field:
            spec["timestamp_field"] = args.timestamp_field
        encryption: dict[str, Any] = {}
        if args.server_side_encryption is not None:
            sse = args.server_side_encryption
            encryption["server_side_encryption"] = "" if sse == "none" else sse
        if args.kms_key_id is not None:
            encryption["kms_key_id"] = args.kms_key_id
        if args.destination:
            options = _load_json_arg(args.destination_options) if args.destination_options else {}
            spec["destination"] = Destination(url=args.destination, options=options, **encryption)
        elif encryption and args.action == "create":
            raise ConfigError("--server-side-encryption and --kms-key-id go with --destination")
        elif encryption:  # the dataset's destination as it is, encrypted as asked
            current_destination = control.get_dataset(args.tenant, args.name).destination
            spec["destination"] = Destination.model_validate(
                {**current_destination.model_dump(), **encryption}
            )
        parquet: dict[str, Any] = {}
        for name in ParquetOptions.model_fields:
            if getattr(args, name, None) is not None:
                parquet[name] = getattr(args, name)
        if parquet.get("compact_after_minutes") == 0:  # --compact-after-minutes 0: never
            parquet["compact_after_minutes"] = None
        if args.action == "create":
            if parquet:
                spec["parquet"] = ParquetOptions(**parquet)
            _print(control.create_dataset(args.tenant, DatasetSpec(**spec)))
        else:
            current = control.get_dataset(args.tenant, args.name).model_dump(exclude={"tenant"})
            current.update({k: v for k, v in spec.items() if k != "name"})
            # Options not given are kept, not reset to their defaults.
            current["parquet"] = {**current["parquet"], **parquet}
            _print(control.put_dataset(args.tenant, DatasetSpec.model_validate(current)))


def cmd_keys(args: argparse.Namespace) -> None:
    control = _control(_settings(args))
    if args.action == "create":
        created = control.create_key(
            args.tenant,
            args.dataset,
            description=args.description,
            expires_in_days=args.expires_in_days,
        )
        _print(created)
        print("Store this key now: it is shown only once.", file=sys.stderr)
    elif args.action == "create-admin":
        admin = control.create_key(
            None, role="admin", description=args.description, expires_in_days=args.expires_in_days
        )
        _print(admin)
        print("Store this key now: it is shown only once.", file=sys.stderr)
    elif args.action == "list":
        _print(control.list_keys(args.tenant))
    elif args.action == "revoke":
        control.revoke_key(args.key_id)


def cmd_dead_letters(args: argparse.Namespace) -> None:
    """Read a dataset's dead letters in the piper bucket, or replay them (this process's storage
    settings reach the buckets)."""
    from bytefreezer.pipelines import dead_letters
    from bytefreezer.storage import Storage

    settings = _settings(args)
    dataset = _control(settings).get_dataset(args.tenant, args.dataset)  # NotFound: one line
    storage = Storage(settings)
    if args.action == "list":
        groups = dead_letters.list_dead_letters(storage, dataset.tenant, dataset.name)
        print(json.dumps([g.as_json() for g in groups[-args.limit :]], indent=2))
    elif args.action == "show":
        letters = dead_letters.read_dead_letters(storage, dataset.tenant, dataset.name)
        for number, letter in enumerate(letters):
            if number >= args.limit:
                break
            print(json.dumps(letter, ensure_ascii=False))
    else:
        report = dead_letters.replay_dead_letters(storage, dataset)
        print(json.dumps(report.as_json(), indent=2))


def cmd_transforms(args: argparse.Namespace) -> None:
    from bytefreezer.transforms.reference import describe, render_reference
    from bytefreezer.transforms.registry import load_registry

    registry = load_registry()
    if args.action == "list":
        for name in sorted(registry.transforms):
            cls = registry.transforms[name]
            summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            print(f"{name:20s} {summary}")
        for name, reason in sorted(registry.broken.items()):
            print(f"{name:20s} BROKEN: {reason}")
    elif args.action == "describe":
        cls = registry.get(args.name)
        print(describe(cls))
        print("Config schema:")
        print(json.dumps(cls.Config.model_json_schema(by_alias=True), indent=2))
    elif args.action == "reference":
        print(render_reference(registry), end="")


def cmd_config(args: argparse.Namespace) -> None:
    if args.action == "reference":
        print(settings_reference(), end="")
    else:
        settings = _settings(args)
        print(json.dumps(settings.model_dump(mode="json"), indent=2))


# Components ------------------------------------------------------------------------------


def _ensure_admin_key(store: ControlStore, settings: Settings) -> None:
    configured = settings.control.admin_key.get_secret_value()
    if configured:
        store.import_admin_key(configured)
    elif not store.has_admin_key():
        created = store.create_key(None, role="admin", description="first start")
        print(f"Admin key (shown once, keep it safe): {created.key}", flush=True)


METRICS_PORTS = {"receiver": 9091, "piper": 9092, "packer": 9093}


def _telemetry(settings: Settings, component: str) -> Any:
    """The component's telemetry; a set ``metrics_port`` is the receiver's, piper +1, packer +2."""
    from bytefreezer.telemetry import Telemetry

    base = settings.monitoring.metrics_port
    offset = METRICS_PORTS[component] - METRICS_PORTS["receiver"]
    port = base + offset if base else METRICS_PORTS[component]
    return Telemetry(settings, component, metrics_port=port)


def _worker(
    settings: Settings,
    control: ControlClient,
    kind: str,
    after_work: Callable[[], None] | None = None,
) -> tuple[Any, Any, Any]:
    """A piper or packer poller (calling ``after_work`` when a busy streak ends), its storage
    and its telemetry."""
    from bytefreezer.pipelines.packer import run_packer_cycle
    from bytefreezer.pipelines.piper import run_piper_cycle
    from bytefreezer.pipelines.poller import Poller
    from bytefreezer.storage import Storage

    storage = Storage(settings)
    telemetry = _telemetry(settings, kind)
    cycle = run_piper_cycle if kind == "piper" else run_packer_cycle
    interval = (settings.piper if kind == "piper" else settings.packer).poll_interval_seconds
    poller = Poller(
        kind,
        lambda: cycle(settings, control, storage, telemetry),
        interval,
        report=control.report_health,
        instance=settings.instance_id,
        after_work=after_work,
    )
    return poller, storage, telemetry


def _run_worker(args: argparse.Namespace, kind: str) -> None:
    from bytefreezer.pipelines.api import create_worker_api
    from bytefreezer.servers import run_services

    settings = _settings(args)
    control = open_control(settings)
    poller, storage, telemetry = _worker(settings, control, kind)
    try:
        if args.once:
            stats = poller.run_once()
            print(
                json.dumps({"claimed": stats.claimed if stats else 0, "error": poller.last_error})
            )
            if poller.last_error:
                raise SystemExit(1)
            return
        own = settings.piper if kind == "piper" else settings.packer
        api = create_worker_api(settings, storage, control, poller)
        run_services([(api, own.api_host, own.api_port)], [(poller.run, poller.stop)], settings.tls)
    finally:
        telemetry.shutdown()


def cmd_piper(args: argparse.Namespace) -> None:
    _run_worker(args, "piper")


def cmd_packer(args: argparse.Namespace) -> None:
    _run_worker(args, "packer")


def _receiver_apps(
    settings: Settings, control: ControlClient, on_intake: Callable[[], None] | None = None
) -> list[tuple[Any, str, int]]:
    from bytefreezer.ingress.api import create_api_app
    from bytefreezer.ingress.receiver import build_state, create_app
    from bytefreezer.storage import Storage

    storage = Storage(settings)
    state = build_state(
        settings, control, storage, _telemetry(settings, "receiver"), on_intake=on_intake
    )
    r = settings.receiver
    return [
        (create_app(settings, control, storage, state=state), r.host, r.port),
        (create_api_app(state), r.api_host, r.api_port),
    ]


def cmd_receiver(args: argparse.Namespace) -> None:
    from bytefreezer.servers import run_services

    settings = _settings(args)
    run_services(_receiver_apps(settings, open_control(settings)), tls=settings.tls)


def cmd_proxy(args: argparse.Namespace) -> None:
    import asyncio

    from bytefreezer.ingress.proxy.config import load_proxy_config
    from bytefreezer.ingress.proxy.service import run_proxy

    if not args.config:
        raise BytefreezerError("bytefreezer proxy needs --config proxy.yaml")
    config = load_proxy_config(args.config)
    keep_freed_memory()
    asyncio.run(run_proxy(config))


def cmd_control(args: argparse.Namespace) -> None:
    from bytefreezer.control.app import create_app
    from bytefreezer.servers import run_services

    settings = _settings(args)
    store = ControlStore(
        settings.control_db_path(),
        destination_for=settings.destination_for,
        validate_chain=_validator(),
        check_destination=_destination_checker(settings),
    )
    _ensure_admin_key(store, settings)
    app = create_app(store, preview=_preview(settings))
    run_services([(app, settings.control.host, settings.control.port)], tls=settings.tls)


def _first_run(settings: Settings, store: ControlStore) -> None:
    if store.list_tenants():
        note = settings.data_dir / "first-run.txt"
        if note.exists():
            print(note.read_text(), end="", flush=True)
        return
    store.create_tenant(Tenant(name="demo"))
    store.create_dataset("demo", DatasetSpec(name="events"))
    created: NewApiKey = store.create_key("demo", "events", description="first run")
    port = settings.receiver.port
    scheme = "https" if settings.tls.enabled else "http"
    text = (
        "bytefreezer is running with a demo tenant 'demo', dataset 'events'.\n"
        f"Ingest key (shown on every start from {settings.data_dir / 'first-run.txt'}):\n"
        f"  {created.key}\n"
        "Send a first record:\n"
        f"  curl -X POST {scheme}://127.0.0.1:{port}/demo/events \\\n"
        f"    -H 'Authorization: Bearer {created.key}' \\\n"
        '    -d \'{"timestamp": "2026-01-01T12:00:00Z", "message": "hello"}\'\n'
        f"Parquet appears under {(settings.data_dir / 'destination').resolve()}/demo/events/\n"
    )
    note = settings.data_dir / "first-run.txt"
    note.write_text(text)
    os.chmod(note, 0o600)
    print(text, end="", flush=True)


def cmd_up(args: argparse.Namespace) -> None:
    from bytefreezer.control.app import create_app as control_app
    from bytefreezer.servers import run_services
    from bytefreezer.storage import Storage

    settings = _settings(args)
    if settings.control.url:
        raise BytefreezerError("`up` runs its own control service: unset control.url")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Storage(settings).ensure_buckets()
    store = ControlStore(
        settings.control_db_path(),
        destination_for=settings.destination_for,
        validate_chain=_validator(),
        check_destination=_destination_checker(settings),
    )
    _ensure_admin_key(store, settings)
    _first_run(settings, store)
    packer_settings = settings.packer
    if packer_settings.buffer_seconds:
        print(
            "Packer writes a dataset's Parquet once its oldest record is "
            f"{packer_settings.buffer_seconds:g} s old or {packer_settings.buffer_mb} MB are "
            "staged (packer.buffer_seconds, packer.buffer_mb; "
            "BYTEFREEZER_PACKER__BUFFER_SECONDS=0 writes at once).",
            flush=True,
        )
    # In one process the stages wake each other: a stored body starts a piper cycle, and piper
    # having drained its backlog a packer cycle; poll intervals only bound a missed wake.
    packer, _, _ = _worker(settings, store, "packer")
    piper, _, _ = _worker(settings, store, "piper", after_work=packer.wake)
    apps = [
        *_receiver_apps(settings, store, on_intake=piper.wake),
        (
            control_app(store, preview=_preview(settings)),
            settings.control.host,
            settings.control.port,
        ),
    ]
    run_services(apps, [(piper.run, piper.stop), (packer.run, packer.stop)], settings.tls)


# Parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bytefreezer`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML settings file (or BYTEFREEZER_CONFIG_FILE)")
    common.add_argument("--data-dir", help="data directory of the embedded default")
    parser = argparse.ArgumentParser(prog="bytefreezer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bytefreezer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", parents=[common], help="run the whole stack on this machine").set_defaults(
        func=cmd_up
    )
    sub.add_parser("control", parents=[common], help="run the control service").set_defaults(
        func=cmd_control
    )
    sub.add_parser("receiver", parents=[common], help="run the HTTP receiver").set_defaults(
        func=cmd_receiver
    )
    sub.add_parser("proxy", parents=[common], help="run the edge proxy").set_defaults(
        func=cmd_proxy
    )
    for name, func in (("piper", cmd_piper), ("packer", cmd_packer)):
        p = sub.add_parser(name, parents=[common], help=f"run the {name} poller")
        p.add_argument("--once", action="store_true", help="run one cycle and exit")
        p.set_defaults(func=func)

    tenants = sub.add_parser("tenants", help="manage tenants")
    tsub = tenants.add_subparsers(dest="action", required=True)
    tsub.add_parser("list", parents=[common])
    for action in ("create", "delete", "activate", "deactivate"):
        p = tsub.add_parser(action, parents=[common])
        p.add_argument("name")
        if action == "create":
            p.add_argument("--daily-ingest-mb", type=int, help="daily ingest limit (default none)")
    p = tsub.add_parser("limit", parents=[common], help="set or remove the daily ingest limit")
    p.add_argument("name")
    limit = p.add_mutually_exclusive_group(required=True)
    limit.add_argument("--daily-ingest-mb", type=int, help="decompressed MB a UTC day")
    limit.add_argument("--none", action="store_true", help="remove the limit")
    p = tsub.add_parser(
        "usage", parents=[common], help="what the receivers accepted, per dataset and UTC day"
    )
    p.add_argument("name", nargs="?", help="one tenant (default every tenant)")
    p.add_argument("--days", type=int, default=7, help="the last N UTC days, today included")
    tenants.set_defaults(func=cmd_tenants)

    datasets = sub.add_parser("datasets", help="manage datasets")
    dsub = datasets.add_subparsers(dest="action", required=True)
    dsub.add_parser("list", parents=[common]).add_argument("tenant", nargs="?")
    p = dsub.add_parser(
        "status",
        parents=[common],
        help="how piper's and packer's latest runs went: one dataset's, or every reported one",
    )
    p.add_argument("tenant", nargs="?")
    p.add_argument("name", nargs="?")
    p.add_argument("--failing", action="store_true", help="only datasets whose last run failed")
    p.add_argument("--stage", choices=["piper", "packer"], help="one stage's status only")
    for action in (
        "show", "delete", "retry", "check", "create", "update", "activate", "deactivate",
    ):  # fmt: skip
        p = dsub.add_parser(action, parents=[common])
        p.add_argument("tenant")
        p.add_argument("name")
        if action == "retry":
            p.add_argument(
                "--stage",
                choices=["piper", "packer"],
                help="retry at one stage only (default both)",
            )
        if action in ("create", "update"):
            p.add_argument("--format", help="input format of posted bodies (default ndjson)")
            p.add_argument("--csv-delimiter", help="value separator of csv bodies (default ,)")
            p.add_argument(
                "--keep-raw",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="also keep intake objects as received at the destination under _raw/",
            )
            p.add_argument(
                "--keep-raw-days",
                type=int,
                help="delete a day's raw copies once the day ended more than this many days ago",
            )
            p.add_argument("--transforms", help="chain as JSON, or @file.json")
            p.add_argument("--timestamp-field")
            p.add_argument("--destination", help="fsspec URL of the Parquet destination")
            p.add_argument("--destination-options", help="fsspec options as JSON, or @file")
            p.add_argument(
                "--server-side-encryption",
                choices=["AES256", "aws:kms", "aws:kms:dsse", "none"],
                help="S3 encryption of the destination's objects (default: the stack's setting "
                "for a destination without options)",
            )
            p.add_argument("--kms-key-id", help="KMS key for aws:kms (id, ARN or alias)")
            p.add_argument("--compression")
            p.add_argument("--partitioning")
            p.add_argument("--partition-template")
            p.add_argument("--max-file-size-mb", type=int)
            p.add_argument(
                "--max-partitions",
                type=int,
                help="most partitions one packer run may write when the template names fields",
            )
            p.add_argument(
                "--buffer-seconds",
                type=float,
                help="longest a record waits staged before packing (default: packer's setting)",
            )
            p.add_argument(
                "--buffer-mb", type=int, help="staged MB that get the dataset packed sooner"
            )
            p.add_argument(
                "--compact-after-minutes",
                type=float,
                help="packer compacts a partition once none of its files changed for this long "
                "(0: only `datasets compact`, the default)",
            )
    p = dsub.add_parser(
        "compact",
        parents=[common],
        help="merge the small Parquet files of a dataset's closed partitions at its destination",
    )
    p.add_argument("tenant")
    p.add_argument("name")
    p.add_argument(
        "--min-age-minutes",
        type=float,
        default=60.0,
        help="compact a partition once none of its files changed for this long (default 60)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be merged, merge none")
    datasets.set_defaults(func=cmd_datasets)

    keys = sub.add_parser("keys", help="manage API keys")
    ksub = keys.add_subparsers(dest="action", required=True)
    p = ksub.add_parser("create", parents=[common])
    p.add_argument("tenant")
    p.add_argument("--dataset", help="limit the key to one dataset")
    p.add_argument("--description", default="")
    expiry = "the key stops working this many days from now (default: never)"
    p.add_argument("--expires-in-days", type=float, help=expiry)
    p = ksub.add_parser("create-admin", parents=[common])
    p.add_argument("--description", default="")
    p.add_argument("--expires-in-days", type=float, help=expiry)
    ksub.add_parser("list", parents=[common]).add_argument("tenant", nargs="?")
    ksub.add_parser("revoke", parents=[common]).add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    letters = sub.add_parser(
        "dead-letters", help="read a dataset's dead letters, or replay them once fixed"
    )
    lsub = letters.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "dead letters by intake object, counted by reason (the newest --limit)"),
        ("show", "the dead letters themselves, one JSON object a line (the oldest --limit)"),
        ("replay", "give objects set aside and rejected lines another go"),
    ):
        p = lsub.add_parser(action, parents=[common], help=text)
        p.add_argument("tenant")
        p.add_argument("dataset")
        if action != "replay":
            p.add_argument("--limit", type=int, default=100)
    letters.set_defaults(func=cmd_dead_letters)

    transforms = sub.add_parser("transforms", help="list and describe transforms")
    trsub = transforms.add_subparsers(dest="action", required=True)
    trsub.add_parser("list")
    trsub.add_parser("describe").add_argument("name")
    trsub.add_parser("reference")
    transforms.set_defaults(func=cmd_transforms)

    config = sub.add_parser("config", help="show settings")
    csub = config.add_subparsers(dest="action", required=True)
    csub.add_parser("show", parents=[common])
    csub.add_parser("reference", parents=[common])
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``bytefreezer`` command."""
    prefer_arrow_pool()  # before anything loads pyarrow
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except BytefreezerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:  # a value given on the command line
        print(f"error: {validation_problems(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
