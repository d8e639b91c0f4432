"""Argument checks shared by the functional API, layers and attacks.

Every error names the argument and what was expected: silent wrong output is worse
than a crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, value: object, *, floating: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float16, bfloat16, float32 or float64), "
            f"got {value.dtype}"
        )
    return value


def check_batched(name: str, x: torch.Tensor) -> None:
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension (at least 1-D), got a 0-d tensor")


def check_same_device(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.device != ref.device:
        raise ValueError(
            f"{name} is on {value.device} but {ref_name} is on {ref.device}; "
            "move them to the same device"
        )


def check_same_shape(name: str, value: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if value.shape != ref.shape:
        raise ValueError(
            f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(value.shape)}"
        )


def check_per_feature(name: str, param: torch.Tensor, x_name: str, x: torch.Tensor) -> None:
    """``param`` must broadcast against one sample ``x[0]`` without growing it."""
    sample = x.shape[1:]
    if param.dim() > len(sample):
        raise ValueError(
            f"{name} must broadcast to one sample of {x_name} (shape {tuple(sample)}); "
            f"got {tuple(param.shape)} with more dims than a sample"
        )
    for p, s in zip(reversed(param.shape), reversed(sample), strict=False):
        if p not in (1, s):
            raise ValueError(
                f"{name} of shape {tuple(param.shape)} does not broadcast to one sample of "
                f"{x_name} (shape {tuple(sample)})"
            )


def check_non_negative_tensor(name: str, value: torch.Tensor) -> None:
    """Reject negative entries. On the CPU this raises at once; on an accelerator it
    asserts asynchronously, so the forward never waits on the device."""
    if value.numel() == 0:
        return
    # One pass: NaN >= 0 is False, so this also rejects NaN.
    ok = (value.detach() >= 0).all()
    if value.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(ok):
            raise ValueError(f"{name} must be non-negative and not NaN (min {value.min().item()})")
    elif value.device.type != "meta":
        torch._assert_async(ok, f"{name} must be non-negative and not NaN")


def check_non_negative_number(name: str, value: object) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    # value != value is the NaN test that also traces when torch.compile makes value symbolic
    if value != value or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_clip(name: str, clip: Sequence[float] | None) -> tuple[float, float]:
    if clip is None:
        return (-math.inf, math.inf)
    if len(clip) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {clip!r}")
    lo, hi = float(clip[0]), float(clip[1])
    if not lo < hi:
        raise ValueError(f"{name} must satisfy min < max, got {clip!r}")
    return lo, hi
