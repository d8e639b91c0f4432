"""Per-channel input normalization as a non-trainable first layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with ``mean`` and ``std`` stored as buffers.

    Inside the model, so attacks and eps-balls live in [0, 1] pixel space and the
    perturbation is added before normalization (Learn2Perturb Sec. 4.2).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = _as_channel_vector("mean", mean)
        std_t = _as_channel_vector("std", std)
        if mean_t.numel() != std_t.numel():
            raise ValueError(
                f"std must have one entry per channel like mean ({mean_t.numel()}), "
                f"got {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v.check_tensor("x", x)
        channels = self.mean.numel()
        if x.dim() < 2 or x.shape[1] != channels:
            raise ValueError(
                f"x must have shape (N, {channels}, ...) for this Normalize, got {tuple(x.shape)}"
            )
        view = (channels,) + (1,) * (x.dim() - 2)
        mean = self.mean.to(x.dtype).view(view)
        std = self.std.to(x.dtype).view(view)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def _as_channel_vector(name: str, values: Sequence[float]) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.flatten().tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of floats (one per channel), got {values!r}")
    if len(values) == 0:
        raise ValueError(f"{name} must have at least one entry")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} entries must be numbers, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} entries must be finite, got {value!r}")
    return torch.tensor([float(value) for value in values], dtype=torch.float32)
