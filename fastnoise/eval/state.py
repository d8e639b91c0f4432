"""Resumable evaluation and saved adversarial examples.

:func:`~fastnoise.eval.evaluate` and :func:`~fastnoise.eval.autoattack.autoattack` take
``state_file``: after every finished batch they write (atomically, Ctrl-C deferred) a
small state holding a fingerprint of the run, what is done, the counts and per-sample
outcomes so far and torch's RNG state(s), so that a rerun with the same arguments skips
the done work and continues the same random stream: its report equals an uninterrupted
run's. The file holds only tensors, numbers, strings, lists and dicts and is loaded with
``torch.load(weights_only=True)``; it is deleted when the run finishes. A resumed run
must see the same batches in the same order (an ``(x, y)`` pair, or a loader without
shuffling). Sharded runs (``torchrun``) refuse ``state_file`` and ``save_adv``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from fastnoise.train.checkpoint import atomic_save, interrupts_deferred

__all__ = ["STATE_FORMAT", "load_state", "save_state", "rng_state", "restore_rng", "AdvParts"]

STATE_FORMAT = 1


def _canonical(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True, default=repr)


def load_state(path: str | os.PathLike, fingerprint: dict[str, Any], what: str) -> dict | None:
    """The saved state of an interrupted run with this ``fingerprint``; None when there is
    no file. A file of another run (or not a state file) is refused, naming the path."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"state_file {str(path)!r} is not a readable fastnoise {what} state "
            f"({type(error).__name__}); delete it to start afresh"
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("format") != STATE_FORMAT
        or state.get("what") != what
    ):
        raise ValueError(
            f"state_file {str(path)!r} is not a fastnoise {what} state; delete it to start afresh"
        )
    if state["fingerprint"] != _canonical(fingerprint):
        old = json.loads(state["fingerprint"])
        new = json.loads(_canonical(fingerprint))
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(
            f"state_file {str(path)!r} belongs to a different {what} run (it differs in "
            f"{differ}); delete it (fastnoise eval --fresh) or rerun with the same settings"
        )
    return state


def save_state(path: str | os.PathLike, fingerprint: dict[str, Any], what: str, **fields) -> None:
    """Write the state atomically; Ctrl-C waits until the file is whole."""
    with interrupts_deferred():
        state = {"format": STATE_FORMAT, "what": what, "fingerprint": _canonical(fingerprint)}
        atomic_save({**state, **fields}, path)


def rng_state(device: torch.device) -> list[torch.Tensor]:
    """torch's CPU generator state, and the device's when it is a GPU."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def restore_rng(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


class AdvParts:
    """Adversarial examples written batch by batch into ``folder`` (hidden part files, so
    a resumed run keeps the done batches'), merged into ``<name>.pt`` by :meth:`finish`:
    a dict of ``x_adv`` (the input's dtype), ``y`` and ``index`` (sample positions)."""

    def __init__(self, folder: str | os.PathLike, names: list[str], resumed: bool) -> None:
        self.folder, self.names = Path(folder), list(names)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not resumed:  # parts of an earlier, abandoned run
            for name in self.names:
                for part in self._parts(name):
                    part.unlink(missing_ok=True)

    def _parts(self, name: str) -> list[Path]:
        return sorted(self.folder.glob(f".{_file_name(name)}.part*.pt"))

    def add(self, name: str, batch: int, x_adv: torch.Tensor, y: torch.Tensor, index) -> None:
        part = {"x_adv": x_adv.detach().cpu(), "y": y.detach().cpu(), "index": index.cpu()}
        atomic_save(part, self.folder / f".{_file_name(name)}.part{batch:08d}.pt")

    def finish(self) -> dict[str, Path]:
        written = {}
        for name in self.names:
            parts = [torch.load(p, weights_only=True) for p in self._parts(name)]
            merged = {k: torch.cat([p[k] for p in parts]) for k in ("x_adv", "y", "index")}
            written[name] = atomic_save(merged, self.folder / f"{_file_name(name)}.pt")
            for part in self._parts(name):
                part.unlink(missing_ok=True)
        return written


def describe(path: str | os.PathLike) -> str | None:
    """Where a saved run stands, in words (for the resume line); None without a file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("what") == "evaluate":
            return f"repeat {int(state['repeat']) + 1}, after {int(state['batch'])} batch(es)"
        stage = len(state["stages"]) + 1
        done = int(state["partial"].get("next", 0)) if state["partial"] else 0
        return f"stage {stage}, after {done} attacked point(s)"
    except Exception:  # the run itself names what is wrong with the file
        return "an unreadable state"
