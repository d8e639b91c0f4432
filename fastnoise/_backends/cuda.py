"""CUDA backend: the ``fastnoise_C`` extension's CUDA kernels (one thread per Philox
counter, grid-stride, int64 indexing; parameter gradients as per-block partial sums
added in a fixed order, so bitwise reproducible, with no atomics).

The primitives are those of :mod:`fastnoise._backends.cpp`: the extension's ops
dispatch on the tensors' device, so the same Python functions run either kernel set.
Available when a GPU is visible and the extension was built with its CUDA sources.
"""

from __future__ import annotations

import torch

from fastnoise import _extension
from fastnoise._backends.cpp import (
    front_door,
    noise_backward_sigma,
    noise_forward,
    pgd_step,
    pnil_backward,
    pnil_forward,
    random_start,
    random_words,
)

NAME = "cuda"

__all__ = [
    "NAME",
    "unavailable_reason",
    "supports",
    "front_door",
    "noise_forward",
    "noise_backward_sigma",
    "pnil_forward",
    "pnil_backward",
    "pgd_step",
    "random_start",
    "random_words",
]


def unavailable_reason() -> str | None:
    # Cheap checks first: on a machine without a GPU, never start a build for this.
    if not torch.cuda.is_available():
        return "no CUDA device"
    reason = _extension.unavailable_reason()
    if reason is not None:
        return reason
    if not _extension.has_cuda_kernels():
        return (
            "the fastnoise extension was built without its CUDA sources (no nvcc found, "
            "or FASTNOISE_BUILD_CUDA=0)"
        )
    return None


def supports(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"
