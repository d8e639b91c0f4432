"""Which backend runs a primitive: ``set_backend``, ``use_backend``, ``backends``.

The choice is ``"auto"`` unless set by :func:`set_backend`, :func:`use_backend` or the
``FASTNOISE_BACKEND`` environment variable (read when nothing was set in code, at a
device's first call: the choice per device is cached until set_backend, use_backend or
refresh).
``"auto"`` takes, for each tensor's device, the first backend in registry order
(cuda, triton, cpp, torch) that is available and runs that device; the pure-torch
reference always does. A backend named explicitly must be available and must run the
tensor's device, or the call raises :class:`BackendUnavailableError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

from fastnoise._backend_report import BackendReport
from fastnoise._backends import BACKEND_MODULES, load

__all__ = [
    "AUTO",
    "BackendInfo",
    "BackendReport",
    "BackendUnavailableError",
    "ENV_VAR",
    "backend_for",
    "backends",
    "front_door",
    "get_backend",
    "refresh",
    "set_backend",
    "use_backend",
]

AUTO = "auto"
ENV_VAR = "FASTNOISE_BACKEND"
_DEVICE_TYPES = ("cpu", "cuda")


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here, or cannot run this device."""


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """One row of :func:`backends`: whether ``name`` can run here, and if not, why."""

    name: str
    available: bool
    reason: str | None
    devices: tuple[str, ...]  # device types it runs ("cpu", "cuda")


_selected: str | None = None  # None: FASTNOISE_BACKEND, else "auto"
_warned: set[tuple[str, str]] = set()
_status_cache: dict[tuple[str, str], tuple[ModuleType | None, str | None]] = {}
# Per-call lookups: device -> backend module, and device -> the extension's ops when they
# run it (else None). A call must not read the environment or walk the registry (the
# Python around a kernel decides the speed of small tensors), so both are resolved once
# and cleared when the choice changes (set_backend, use_backend, refresh).
_resolved: dict[torch.device, ModuleType] = {}
_front_doors: dict[torch.device, object] = {}


def _check_name(name: object, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a backend name (str), got {type(name).__name__}")
    if name != AUTO and name not in BACKEND_MODULES:
        choices = ", ".join(repr(n) for n in (AUTO, *BACKEND_MODULES))
        raise ValueError(f"{source} must be one of {choices}, got {name!r}")
    return name


def _status(name: str) -> tuple[ModuleType | None, str | None]:
    """(module or None, reason it is unavailable or None), cached per process.

    The cache key includes TRITON_INTERPRET because it changes what triton can run.
    """
    key = (name, os.environ.get("TRITON_INTERPRET", "0"))
    if key not in _status_cache:
        try:
            module = load(name)
        except Exception as exc:  # a backend that fails to import is unavailable, not fatal
            _status_cache[key] = (None, f"cannot import {BACKEND_MODULES[name]}: {exc}")
        else:
            _status_cache[key] = (module, module.unavailable_reason())
    return _status_cache[key]


def get_backend() -> str:
    """The backend choice in force: a backend name or ``"auto"``."""
    if _selected is not None:
        return _selected
    return _check_name(os.environ.get(ENV_VAR, AUTO) or AUTO, f"environment variable {ENV_VAR}")


def _require_available(name: str) -> ModuleType:
    module, reason = _status(name)
    if module is None or reason is not None:
        raise BackendUnavailableError(f"fastnoise backend {name!r} is not available: {reason}")
    return module


def refresh() -> None:
    """Forget the per-device choices, so the next call reads ``FASTNOISE_BACKEND`` and
    the backends' availability again (set_backend and use_backend do this themselves)."""
    _resolved.clear()
    _front_doors.clear()


def set_backend(name: str | None) -> None:
    """Use backend ``name`` (or ``"auto"``) from now on; None returns to the default
    (``FASTNOISE_BACKEND``, read again at the next call, or auto). Raises at once if
    ``name`` cannot run here."""
    global _selected
    if name is not None:
        _check_name(name, "backend")
        if name != AUTO:
            _require_available(name)
    _selected = name
    refresh()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the enclosed block with backend ``name``; the previous choice comes back after."""
    global _selected
    previous = _selected
    set_backend(name)
    try:
        yield
    finally:
        _selected = previous
        refresh()


def backends() -> BackendReport:
    """Every registered backend, fastest first, with its availability and devices: a list
    of :class:`BackendInfo` that prints as a table, with the backend ``auto`` picks for
    each device present here."""
    rows = []
    for name in BACKEND_MODULES:
        module, reason = _status(name)
        devices: tuple[str, ...] = ()
        if module is not None:
            devices = tuple(d for d in _DEVICE_TYPES if module.supports(torch.device(d)))
        rows.append(BackendInfo(name, module is not None and reason is None, reason, devices))
    present = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    picks = {d: _auto_pick(torch.device(d))[0] for d in present}  # what _auto would run
    try:
        choice = get_backend()
    except ValueError as error:  # a bad FASTNOISE_BACKEND: report it, the ops will raise it
        choice = f"invalid: {error}"
    return BackendReport(rows, picks, choice)


def _auto_pick(device: torch.device) -> tuple[str | None, ModuleType | None, list[str]]:
    """The first available backend that runs ``device`` (name and module, None if none
    does), and the faster ones that would have run it but are unavailable, with why."""
    skipped = []
    for name in BACKEND_MODULES:
        module, reason = _status(name)
        if module is None:
            continue  # not even importable: nothing was expected of it
        if reason is None:
            if module.supports(device):
                return name, module, skipped
        elif module.supports(device):
            skipped.append(f"{name} ({reason})")  # it would have run here: worth a warning
    return None, None, skipped


def _auto(device: torch.device) -> ModuleType:
    name, module, skipped = _auto_pick(device)
    if module is None:
        raise BackendUnavailableError(f"no fastnoise backend runs tensors on {device}")
    _warn_skipped(skipped, name, device)
    return module


def _warn_skipped(skipped: list[str], chosen: str, device: torch.device) -> None:
    if not skipped:
        return
    key = (device.type, chosen)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f"fastnoise: faster backend(s) for {device.type} tensors unavailable, using "
        f"{chosen!r}: {'; '.join(skipped)}",
        RuntimeWarning,
        stacklevel=4,
    )


def backend_for(device: torch.device) -> ModuleType:
    """The backend module that runs tensors on ``device`` under the current choice."""
    try:
        return _resolved[device]
    except KeyError:
        module = _resolved[device] = _resolve(device)
        return module


def front_door(device: torch.device) -> object | None:
    """``torch.ops.fastnoise_C`` when the C++/CUDA extension runs ``device`` under the
    current choice, else None. Its public ops (``inject_noise``, ``pnil``) check their
    arguments, draw the seed, run the kernel and record autograd in one dispatcher call."""
    try:
        return _front_doors[device]
    except KeyError:
        module = backend_for(device)
        door = _front_doors[device] = getattr(module, "front_door", lambda: None)()
        return door


def _resolve(device: torch.device) -> ModuleType:
    name = get_backend()
    if name == AUTO:
        return _auto(device)
    module = _require_available(name)
    if not module.supports(device):
        raise BackendUnavailableError(
            f"fastnoise backend {name!r} does not run tensors on {device.type}; "
            f"use set_backend('auto') or move the tensors"
        )
    return module
