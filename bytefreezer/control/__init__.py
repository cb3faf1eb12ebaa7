"""The control service: tenants, datasets, keys, leases and health."""

from __future__ import annotations

from bytefreezer.control.client import ControlClient, HttpControl
from bytefreezer.control.store import ChainValidator, ControlStore, DestinationChecker
from bytefreezer.settings import Settings

__all__ = ["ControlClient", "ControlStore", "HttpControl", "open_control"]


def open_control(
    settings: Settings,
    *,
    validate_chain: ChainValidator | None = None,
    check_destination: DestinationChecker | None = None,
) -> ControlClient:
    """The control client the settings describe: HTTP when a URL is set, else in-process."""
    if settings.control.url:
        return HttpControl(
            settings.control.url,
            settings.control.api_key.get_secret_value(),
            timeout=settings.control.timeout_seconds,
            ca_file=str(settings.control.ca_file) if settings.control.ca_file else None,
        )
    return ControlStore(
        settings.control_db_path(),
        destination_for=settings.destination_for,
        validate_chain=validate_chain,
        check_destination=check_destination,
    )
