"""Shape arguments and input checks shared by the layers.

A layer with per-feature parameters owns one sample's shape; its input must be a batch
of exactly such samples. Errors name ``x`` and the expected shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastnoise import _validation as v


def as_sample_shape(name: str, shape: Sequence[int] | torch.Size | int) -> tuple[int, ...]:
    """Validate a one-sample shape argument such as ``(C, H, W)``."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (Sequence, torch.Size)) or isinstance(shape, str):
        raise TypeError(f"{name} must be a sequence of ints such as (C, H, W), got {shape!r}")
    for size in shape:
        v.check_positive_int(f"{name} entries", size)
    return tuple(int(size) for size in shape)


def check_sample_shape(x: object, sample_shape: Sequence[int], owner: str) -> torch.Tensor:
    """``x`` must be a floating tensor of shape ``(N, *sample_shape)``."""
    # The common case first, cheaply: layers run this on every forward.
    if (
        isinstance(x, torch.Tensor)
        and x.dtype in v.FLOAT_DTYPES
        and x.shape[1:] == sample_shape
        and x.dim() == len(sample_shape) + 1
    ):
        return x
    x = v.check_tensor("x", x)
    if tuple(x.shape[1:]) != tuple(sample_shape) or x.dim() != len(sample_shape) + 1:
        raise ValueError(
            f"x must have shape (N, {', '.join(map(str, sample_shape))}) for this {owner}, "
            f"got {tuple(x.shape)}"
        )
    return x
