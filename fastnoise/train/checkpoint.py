"""Checkpoints: atomic writes, exact resume, and ``load_model`` for evaluation.

A checkpoint holds only tensors and plain containers, so it loads with
``torch.load(weights_only=True)``: opening one never runs code from the file.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "atomic_save",
    "interrupts_deferred",
    "load_checkpoint",
    "load_model",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_FORMAT = 1


@contextlib.contextmanager
def interrupts_deferred():
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it as usual.

    A write must be all or nothing: ``torch.save`` interrupted inside its zip writer
    raises ``RuntimeError: unexpected pos``, not ``KeyboardInterrupt``, and the run
    would end with a traceback instead of its resume command. Signals can only be
    handled on the main thread; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):  # Python's handler raises KeyboardInterrupt
            previous(signal.SIGINT, None)
        elif caught and previous == signal.SIG_DFL:
            raise KeyboardInterrupt


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file in the same directory, fsync, then ``os.replace``:
    a reader sees the old file or the complete new one, never a partial write. Ctrl-C
    during the write takes effect once it is done (see ``interrupts_deferred``)."""
    with interrupts_deferred():
        return _atomic_save(obj, Path(path))


def _atomic_save(obj: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a fastnoise checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise ValueError(
            f"{path} is not a fastnoise checkpoint (needs 'model' and 'model_config' keys)"
        )
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint was trained with and load its weights (eval mode)."""
    from fastnoise import models

    ckpt = load_checkpoint(path)
    config = dict(ckpt["model_config"])
    name = config.pop("name")
    model = models.build(name, **config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


# -- RNG state as tensors (weights_only-safe) ----------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training touches: torch CPU and CUDA, numpy, Python ``random``."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
