"""A receiver (webhook and API ports) on 127.0.0.1 over file storage and an in-process control."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.api import create_api_app
from bytefreezer.ingress.receiver import ReceiverState, build_state, create_app
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from bytefreezer.transforms import validate_chain
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir, serve_app


@dataclass
class Receiver:
    """A running receiver and what a test needs around it."""

    url: str
    api: str
    settings: Settings
    control: ControlStore
    storage: Storage
    state: ReceiverState
    key: str  # ingest key for acme (any dataset)

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def pack(self, dataset: str) -> pa.Table | None:
        """Run piper and then packer over what was stored; acme's ``dataset`` as written to
        its destination (None when nothing was)."""
        run_piper_cycle(self.settings, self.control, self.storage)
        run_packer_cycle(self.settings, self.control, self.storage)
        return read_parquet_dir(self.settings.data_dir / "destination" / "acme" / dataset)


def start_receiver(stack: ExitStack, settings: Settings, control: ControlStore) -> Receiver:
    storage = Storage(settings)
    storage.ensure_buckets()
    state = build_state(settings, control, storage)
    url = stack.enter_context(serve_app(create_app(settings, control, storage, state=state)))
    api = stack.enter_context(serve_app(create_api_app(state)))
    key = control.create_key("acme").key if control.list_tenants() else ""  # type: ignore[attr-defined]
    return Receiver(url, api, settings, control, storage, state, key)


def seeded_control(settings: Settings) -> ControlStore:
    control = ControlStore(
        settings.control_db_path(),
        destination_for=settings.destination_for,
        validate_chain=validate_chain,
    )
    if not control.list_tenants():
        control.create_tenant(Tenant(name="acme"))
        control.create_tenant(Tenant(name="other"))
        for name, fmt in (("web", "ndjson"), ("arr", "json"), ("tab", "csv"), ("text", "raw")):
            control.create_dataset("acme", DatasetSpec(name=name, format=fmt))  # type: ignore[arg-type]
        control.create_dataset("other", DatasetSpec(name="web"))
    return control


@pytest.fixture
def make_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """Start receivers with setting overrides; all stop at the end of the test."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> Receiver:
            settings = fast_settings(tmp_path / "data", **overrides)
            return start_receiver(stack, settings, seeded_control(settings))

        yield make


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    """A receiver with small caps so limits are cheap to reach."""
    return make_receiver(receiver={"max_body_bytes": 100_000, "max_decompressed_bytes": 1_000_000})
