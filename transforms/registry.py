"""Discovery of transforms through the entry-point group ``bytefreezer.transforms``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.base import Transform, TransformConfig

ENTRY_POINT_GROUP = "bytefreezer.transforms"
log = logging.getLogger(__name__)


@dataclass
class Registry:
    """Transforms by name, plus the plugins that failed to load and why."""

    transforms: dict[str, type[Transform]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> type[Transform]:
        """The transform called ``name``; ``ConfigError`` naming what exists otherwise."""
        if name in self.transforms:
            return self.transforms[name]
        if name in self.broken:
            raise ConfigError(f"transform {name!r} failed to load: {self.broken[name]}")
        known = ", ".join(sorted(self.transforms))
        raise ConfigError(f"unknown transform {name!r}; known transforms: {known}")


def check_transform_class(name: str, cls: object) -> type[Transform]:
    """Validate a loaded plugin object; raise ``ConfigError`` naming the plugin."""
    if not isinstance(cls, type) or not issubclass(cls, Transform):
        raise ConfigError(f"plugin {name!r} is not a bytefreezer Transform subclass")
    if cls.name != name:
        raise ConfigError(f"plugin {name!r} declares name {cls.name!r}; they must match")
    if not isinstance(cls.Config, type) or not issubclass(cls.Config, TransformConfig):
        raise ConfigError(f"plugin {name!r}: Config must subclass TransformConfig")
    return cls


_cached: Registry | None = None
_registered: dict[str, type[Transform]] = {}
_version = 0


def registry_version() -> int:
    """Changes whenever a transform is registered or the registry reloaded: what a chain
    compiled earlier in this process was compiled against."""
    return _version


def register_transform(cls: type[Transform]) -> type[Transform]:
    """Register a transform defined at run time (a notebook, a test) in this process.

    Plugins that other processes must see are registered through the entry-point group
    instead; this is for code that runs its pipelines in the same process. Usable as a
    class decorator.
    """
    global _version
    checked = check_transform_class(getattr(cls, "name", ""), cls)
    _registered[checked.name] = checked
    _version += 1
    if _cached is not None:
        _cached.transforms[checked.name] = checked
    return checked


def load_registry(*, refresh: bool = False) -> Registry:
    """Load every registered transform once per process; skip broken plugins with a warning."""
    global _cached, _version
    if _cached is not None and not refresh:
        return _cached
    _version += 1
    registry = Registry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            registry.transforms[ep.name] = check_transform_class(ep.name, ep.load())
        except Exception as exc:
            registry.broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("skipping transform plugin %r (%s): %s", ep.name, ep.value, exc)
    registry.transforms.update(_registered)
    _cached = registry
    return registry
