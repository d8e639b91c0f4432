"""BatchNorm modes during training: frozen while an attack runs, untouched by a second pass.

Only the BatchNorm layers change mode; noise layers keep theirs (the released Learn2Perturb
code switches the whole model to eval mode for PGD, and its noise stays on there too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["batchnorm_layers", "frozen_batchnorm", "batchnorm_stats_kept"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """BatchNorm in eval mode inside the block: it normalizes with the running statistics
    and updates none of them; each layer gets its own mode back afterwards."""
    layers = batchnorm_layers(model)
    modes = [m.training for m in layers]
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(layers, modes, strict=True):
            m.train(mode)


@contextlib.contextmanager
def batchnorm_stats_kept(model: nn.Module) -> Iterator[None]:
    """BatchNorm normalizes with batch statistics as usual, but its running statistics
    are restored afterwards: a second pass over the same batch must not count it twice."""
    layers = [m for m in batchnorm_layers(model) if m.track_running_stats]
    saved = [
        {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in layers
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(layers, saved, strict=True):
                for k, b in buffers.items():
                    getattr(m, k).copy_(b)
