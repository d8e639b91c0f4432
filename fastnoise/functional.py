"""Functional API: noise injection, PNIL and the attack step.

Every stochastic call takes ``seed=None`` (a fresh seed from torch's default generator,
so ``torch.manual_seed`` makes runs reproducible) and ``offset=0`` (in Philox counters,
see :mod:`fastnoise.rng`). The backward passes regenerate the noise from (seed, offset):
nothing activation-sized is stored for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastnoise import _validation as v
from fastnoise import rng
from fastnoise._backends import reference as _ref

__all__ = ["inject_noise", "pnil", "pgd_step", "random_start"]


def _backend_for(x: torch.Tensor):
    return _ref


class _InjectNoise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sigma, seed, offset):
        ctx.seed, ctx.offset = seed, offset
        ctx.save_for_backward(sigma)  # parameter-sized, not activation-sized
        return _backend_for(x).noise_forward(x, sigma, seed, offset)

    @staticmethod
    def backward(ctx, grad_y):
        (sigma,) = ctx.saved_tensors
        grad_sigma = None
        if ctx.needs_input_grad[1]:
            grad_sigma = _backend_for(grad_y).noise_backward_sigma(
                grad_y.contiguous(), sigma, ctx.seed, ctx.offset
            )
        return grad_y, grad_sigma, None, None


class _PNIL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, seed, offset):
        ctx.seed, ctx.offset = seed, offset
        ctx.save_for_backward(x, weight, bias)
        return _backend_for(x).pnil_forward(x, weight, bias, seed, offset)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias = ctx.saved_tensors
        gx, gw, gb = _backend_for(x).pnil_backward(
            grad_y.contiguous(), x, weight, bias, ctx.seed, ctx.offset
        )
        return gx, gw, gb, None, None


def _as_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(sigma, torch.Tensor):
        v.check_non_negative_number("sigma", sigma)
        return torch.tensor(float(sigma), device=x.device, dtype=torch.float32)
    v.check_tensor("sigma", sigma)
    v.check_same_device("sigma", sigma, "x", x)
    v.check_per_feature("sigma", sigma, "x", x)
    v.check_non_negative_tensor("sigma", sigma)
    return sigma


def inject_noise(
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """``x + sigma * z`` with one independent z ~ N(0, 1) per element of ``x``.

    Learn2Perturb Eq. (4)-(5). ``x`` is ``(N, *feature)``; ``sigma`` broadcasts to one
    sample (``(C, H, W)``, ``(C, 1, 1)``, a scalar tensor or a float). Differentiable in
    ``x`` and ``sigma``. The result has ``x``'s dtype.
    """
    v.check_tensor("x", x)
    v.check_batched("x", x)
    sigma = _as_sigma(sigma, x)
    seed = rng.draw_seed(seed)
    rng._check_seed_offset(seed, offset)
    return _InjectNoise.apply(x, sigma, seed, offset)


def pnil(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Pixelwise noise injection, PNIL Eq. (2)-(3): ``x + z * exp((x * weight + bias) / 2)``.

    ``weight`` and ``bias`` broadcast to one sample of ``x``; differentiable in all three.
    """
    v.check_tensor("x", x)
    v.check_batched("x", x)
    for name, param in (("weight", weight), ("bias", bias)):
        v.check_tensor(name, param)
        v.check_same_device(name, param, "x", x)
        v.check_per_feature(name, param, "x", x)
    seed = rng.draw_seed(seed)
    rng._check_seed_offset(seed, offset)
    return _PNIL.apply(x, weight, bias, seed, offset)


def pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step_size: float,
    eps: float,
    clip: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Next L-inf PGD iterate: ``x_adv + step_size * sign(grad)``, projected onto the
    eps-ball around ``x_orig`` and then onto the pixel box ``clip`` (None: no box)."""
    for name, t in (("x_adv", x_adv), ("grad", grad), ("x_orig", x_orig)):
        v.check_tensor(name, t)
    v.check_same_shape("grad", grad, "x_adv", x_adv)
    v.check_same_shape("x_orig", x_orig, "x_adv", x_adv)
    v.check_same_device("grad", grad, "x_adv", x_adv)
    v.check_same_device("x_orig", x_orig, "x_adv", x_adv)
    step_size = v.check_non_negative_number("step_size", step_size)
    eps = v.check_non_negative_number("eps", eps)
    lo, hi = v.check_clip("clip", clip)
    with torch.no_grad():
        return _backend_for(x_adv).pgd_step(x_adv, grad, x_orig, step_size, eps, lo, hi)


def random_start(
    x: torch.Tensor,
    eps: float,
    seed: int | None = None,
    project: bool = True,
    clip: Sequence[float] | None = (0.0, 1.0),
    offset: int = 0,
) -> torch.Tensor:
    """``x + U(-eps, eps)`` per element (``eps * (2u - 1)``, u from the spec), clipped to
    the pixel box when ``project``: PGD's random start, RFGSM and NFGSM."""
    v.check_tensor("x", x)
    eps = v.check_non_negative_number("eps", eps)
    lo, hi = v.check_clip("clip", clip)
    seed = rng.draw_seed(seed)
    rng._check_seed_offset(seed, offset)
    with torch.no_grad():
        return _backend_for(x).random_start(x, eps, seed, offset, lo, hi, project)
