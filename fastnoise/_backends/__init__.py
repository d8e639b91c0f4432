"""Backend registry.

A backend is a module exposing the primitives of :mod:`fastnoise._backends.reference`
with the same signatures and semantics (the reference is the spec), plus:

* ``NAME``: its public name (``"triton"``, ``"cuda"``, ``"cpp"``, ``"torch"``);
* ``unavailable_reason() -> str | None``: None when usable here, else why not;
* ``supports(device: torch.device) -> bool``: whether it runs tensors on ``device``.

Primitives accept tensors of any strides (``x`` is ``(N, *feature)``; per-feature
parameters broadcast to ``x[0]``), compute in float32 and return ``x``'s dtype. Noise
element ``i`` is the row-major logical index of ``x``, whatever its memory format.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Fastest first: "auto" takes the first that is available and supports the device.
# On a GPU the extension's CUDA kernels come before Triton: a call reaches them through
# one C++ dispatcher call (the front door), where a Triton launch costs Python around it,
# and per-call cost decides the speed of the small activations of a ResNet-20.
BACKEND_MODULES: dict[str, str] = {
    "cuda": "fastnoise._backends.cuda",
    "triton": "fastnoise._backends.triton",
    "cpp": "fastnoise._backends.cpp",
    "torch": "fastnoise._backends.reference",
}


def load(name: str) -> ModuleType:
    """Import the module of backend ``name`` (it may still be unavailable)."""
    if name not in BACKEND_MODULES:
        raise ValueError(
            f"backend must be one of {sorted(BACKEND_MODULES)} or 'auto', got {name!r}"
        )
    return importlib.import_module(BACKEND_MODULES[name])
