"""Backends by name: each is a factory ``(config, window_size, **options) -> Device``.

Backends register themselves as entry points of the ``rmsmp.backends`` group (pyproject.toml):
``golden`` and ``rtl`` (sim/), ``pynq`` (the board driver) and ``pynq-sim`` (the same driver on
the Verilated model). The runtime looks a name up here and never imports a backend module, so
adding a backend (in this package or another one) never edits the runtime. ``register`` adds
one at run time (user code, tests).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from ..arch import AccelConfig
from .device import Device

GROUP = "rmsmp.backends"
"""The entry-point group backends register under."""

BackendFactory = Callable[..., Device]
"""Opens a device: ``factory(config, window_size, **options)``."""

_registered: dict[str, BackendFactory] = {}


def register(name: str, factory: BackendFactory) -> None:
    """Make ``factory`` the backend ``name`` in this process (it shadows an entry point)."""
    if not name or not callable(factory):
        raise ValueError(f"register({name!r}, {factory!r}): need a name and a callable factory")
    _registered[name] = factory


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def names() -> list[str]:
    """Every backend name: the installed entry points and those registered at run time."""
    return sorted({*_entry_points(), *_registered})


def factory(name: str) -> BackendFactory:
    """The factory of backend ``name``; ValueError naming the known ones otherwise."""
    if name in _registered:
        return _registered[name]
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(names()) or "none"
        raise ValueError(
            f"unknown backend {name!r}; registered: {known} (a backend missing from a fresh "
            "checkout needs `make setup` or `pip install -e .`, which installs the entry points)"
        )
    return eps[name].load()


def open_backend(name: str, config: AccelConfig, window_size: int, **options: Any) -> Device:
    """A fresh device of backend ``name`` for ``config`` with a window of ``window_size``
    bytes; ``options`` go to the backend (e.g. ``bitfile`` for ``pynq``)."""
    return factory(name)(config, window_size, **options)
