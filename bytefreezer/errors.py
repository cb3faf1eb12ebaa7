"""The exception hierarchy: one root, a few specific subclasses, picklable messages."""

from __future__ import annotations

from typing import Any


class BytefreezerError(Exception):
    """Root of every error bytefreezer raises on purpose."""


class ConfigError(BytefreezerError):
    """Configuration (settings, dataset, transform chain) is invalid; the message says how."""


class NameError_(BytefreezerError):
    """A tenant or dataset name does not match the allowed pattern."""


class NotFound(BytefreezerError):
    """A tenant, dataset, key, lease or object does not exist."""


class Conflict(BytefreezerError):
    """The resource exists already, or a lease is held by someone else."""


class Gone(BytefreezerError):
    """The tenant or dataset exists but is inactive."""


class AuthError(BytefreezerError):
    """A key is missing or unknown (401)."""


class Forbidden(BytefreezerError):
    """A key is valid but not allowed to do this (403)."""


class StorageError(BytefreezerError):
    """Object storage failed or refused an operation."""


class LeaseLost(BytefreezerError):
    """A lease was taken over or expired before the holder committed."""


class ControlUnavailable(BytefreezerError):
    """The control service could not be reached."""


InvalidName = NameError_


def validation_problems(exc: Any, root: str = "") -> str:
    """A pydantic ``ValidationError`` as one line: each problem's field path and why,
    separated by semicolons (``root`` names a problem of the whole input)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or root}: {error['msg']}"
        for error in exc.errors()
    )
