"""Tolerances derived from a dtype's resolution at the compared values.

Two implementations that compute in float32 and round once to fp16/bf16 may land on
adjacent representable numbers, never further apart. So the fair tolerance is one unit
in the last place (ulp) at each element's magnitude, not a blanket atol: 1.6e-2 would
hide a random start that adds no noise at eps = 8/255 (bf16's ulp at 0.5 is 0.0039).
"""

from __future__ import annotations

import torch

__all__ = ["ulp", "assert_close_ulps"]


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One ulp of ``dtype`` at the magnitude of each element (float64)."""
    info = torch.finfo(dtype)
    magnitude = values.double().abs().clamp_min(info.tiny)
    return torch.exp2(torch.floor(torch.log2(magnitude))) * info.eps


def assert_close_ulps(
    got: torch.Tensor,
    want: torch.Tensor,
    ulps: float = 1.0,
    dtype: torch.dtype | None = None,
    atol: float = 0.0,
) -> None:
    """|got - want| <= ``ulps`` ulps of ``dtype`` (default: want's) at the larger of the
    two magnitudes, plus ``atol`` (the float32 error before rounding, which matters only
    where a result cancels to near zero), elementwise; the message names the worst one."""
    dtype = dtype or want.dtype
    assert got.shape == want.shape, (got.shape, want.shape)
    g, w = got.detach().cpu().double(), want.detach().cpu().double()
    allowed = ulps * ulp(torch.maximum(g.abs(), w.abs()), dtype) + atol
    excess = (g - w).abs() - allowed
    same_nan = g.isnan() & w.isnan()
    bad = (excess > 0) | (g.isnan() != w.isnan())
    bad &= ~same_nan
    if bad.any():
        worst = int(torch.where(bad, excess.nan_to_num(float("inf")), -1.0).flatten().argmax())
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), g.shape))
        raise AssertionError(
            f"{int(bad.sum())} of {g.numel()} elements differ by more than {ulps} ulp of "
            f"{dtype}; worst at {index}: got {g[index].item()!r}, want {w[index].item()!r}"
        )
