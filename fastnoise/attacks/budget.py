"""The last step of every attack: what it returns lies inside its budget, exactly.

Attacks compute in float32 and return x's dtype. Rounding the projected point to
bfloat16 can move an entry half a unit in the last place past x +/- eps: at eps = 8/255
that is 1.8e-3 (6% of eps), on every pixel the attack pushed to the ball's edge (float16:
1.2e-4; float32: 2e-9, since 8/255 itself rounds). A reported robust accuracy is then
measured on a slightly larger ball than the one named. :func:`fit_to_budget` moves only
the entries (L-inf) or rows (L2, L1) that rounding left outside, to the nearest values of
the dtype that are inside, measured in float64.
"""

from __future__ import annotations

import math

import torch

__all__ = ["fit_to_budget"]

_MAX_ROUNDS = 16  # L2/L1 shrink rounds: each shrinks by twice as much; past 16, a bug


def fit_to_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``x_adv`` with every sample inside the ``norm`` ball of radius ``eps`` around ``x``
    (exact arithmetic on the stored values). Entries move toward ``x``, so a point in the
    pixel box stays in it. ``l0`` budgets and an infinite ``eps`` are returned unchanged."""
    if not math.isfinite(eps) or norm not in ("linf", "l2", "l1") or x_adv.numel() == 0:
        return x_adv
    if norm == "linf":
        return _fit_linf(x_adv, x, eps)
    return _fit_lp(x_adv, x, eps, 2.0 if norm == "l2" else 1.0)


def _fit_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.to(x_adv.dtype)
    lo, hi = x.double() - eps, x.double() + eps
    outside = (x_adv.double() < lo) | (x_adv.double() > hi)
    if not bool(outside.any()):  # one sync, once per attack call
        return x_adv
    # The ball's faces rounded inward: the values of the dtype nearest to x +/- eps on
    # x's side (the nearest value, or the next one toward x where that one is outside).
    lo_in, hi_in = lo.to(x_adv.dtype), hi.to(x_adv.dtype)
    lo_in = torch.where(lo_in.double() < lo, torch.nextafter(lo_in, x), lo_in)
    hi_in = torch.where(hi_in.double() > hi, torch.nextafter(hi_in, x), hi_in)
    fitted = torch.minimum(torch.maximum(x_adv, lo_in), hi_in)
    return torch.where(outside, fitted, x_adv)


def _row_norms(delta: torch.Tensor, p: float) -> torch.Tensor:
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def _fit_lp(x_adv: torch.Tensor, x: torch.Tensor, eps: float, p: float) -> torch.Tensor:
    x = x.to(x_adv.dtype)
    base = x.double()
    delta = x_adv.double() - base
    first = _row_norms(delta, p)
    norms = first
    shape = (-1,) + (1,) * (x.dim() - 1)
    unit = torch.finfo(x_adv.dtype).eps
    for k in range(_MAX_ROUNDS):
        over = norms > eps
        if not bool(over.any()):
            return x_adv
        # Rows still outside: the original delta scaled onto the sphere, a little inside it
        # (more each round), then rounded to the dtype again.
        scale = (eps / first.clamp_min(1e-300)) * (1.0 - unit * 2.0**k)
        candidate = (base + delta * scale.view(shape)).to(x_adv.dtype)
        x_adv = torch.where(over.view(shape), candidate, x_adv)
        norms = _row_norms(x_adv.double() - base, p)
    raise RuntimeError(f"could not fit x_adv into the {p:g}-norm ball of radius {eps}")
