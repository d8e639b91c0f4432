"""The pure-torch reference backend: the specification every fused kernel must match.

Each primitive works on tensors in logical (row-major) element order. Noise is drawn
from :mod:`fastnoise.rng` by (seed, offset) and regenerated in the backward pass, never
stored. Arithmetic is float32 for float16/bfloat16/float32 inputs (float64 inputs
compute in float64, so gradcheck can run); outputs are rounded once to the activation's
dtype. z itself is always the float32 spec value.

Shapes: ``x`` is ``(N, *feature)``; per-feature parameters (``sigma``, ``weight``,
``bias``) broadcast against one sample, ``x[0]``.
"""

from __future__ import annotations

import torch

from fastnoise import rng

NAME = "torch"


def unavailable_reason() -> str | None:
    return None


def supports(device: torch.device) -> bool:
    return True


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _noise_like(x: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    return rng.randn(x.shape, seed, offset, device=x.device).to(_compute_dtype(x))


def _sum_to_feature_shape(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a ``(N, *feature)`` tensor over the batch and over dims ``shape`` broadcasts."""
    return sum_sample_to(t.sum(dim=0), shape)


def sum_sample_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum one sample's ``(*feature)`` tensor over the dims ``shape`` broadcasts."""
    # Align trailing dims: a parameter of fewer dims broadcasts from the right.
    lead = t.dim() - len(shape)
    if lead > 0:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, size in enumerate(shape) if size == 1 and t.shape[i] != 1)
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t.reshape(shape)


def noise_forward(x: torch.Tensor, sigma: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """Learn2Perturb Eq. (4)-(5): y = x + sigma * z, z ~ N(0, 1) per element."""
    z = _noise_like(x, seed, offset)
    return (x + sigma.to(z.dtype) * z).to(x.dtype)


def noise_backward_sigma(
    grad_y: torch.Tensor, sigma: torch.Tensor, seed: int, offset: int
) -> torch.Tensor:
    """d loss / d sigma = sum over batch and broadcast dims of grad_y * z (z regenerated)."""
    z = _noise_like(grad_y, seed, offset)
    return _sum_to_feature_shape(grad_y * z, sigma.shape).to(sigma.dtype)


def pnil_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, seed: int, offset: int
) -> torch.Tensor:
    """PNIL Eq. (2)-(3): Sigma = x * W + B, y = x + z * exp(Sigma / 2)."""
    z = _noise_like(x, seed, offset)
    xf = x.to(z.dtype)
    scale = torch.exp((xf * weight.to(z.dtype) + bias.to(z.dtype)) * 0.5)
    return (xf + z * scale).to(x.dtype)


def pnil_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of PNIL for x, weight and bias, with z regenerated from (seed, offset)."""
    z = _noise_like(x, seed, offset)
    xf, g = x.to(z.dtype), grad_y.to(z.dtype)
    w = weight.to(z.dtype)
    half_noise = 0.5 * z * torch.exp((xf * w + bias.to(z.dtype)) * 0.5)  # d y / d Sigma
    g_sigma = g * half_noise
    grad_x = (g + g_sigma * w).to(x.dtype)
    grad_w = _sum_to_feature_shape(g_sigma * xf, weight.shape).to(weight.dtype)
    grad_b = _sum_to_feature_shape(g_sigma, bias.shape).to(bias.dtype)
    return grad_x, grad_w, grad_b


def pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step_size: float,
    eps: float,
    clip_min: float,
    clip_max: float,
) -> torch.Tensor:
    """One L-inf PGD iterate: ascend along sign(grad), project on the eps-ball, then the box."""
    dtype = _compute_dtype(x_adv)
    xf = x_adv.to(dtype) + step_size * torch.sign(grad.to(dtype))
    orig = x_orig.to(dtype)
    xf = torch.minimum(torch.maximum(xf, orig - eps), orig + eps)
    return xf.clamp(clip_min, clip_max).to(x_adv.dtype)


def random_start(
    x: torch.Tensor,
    eps: float,
    seed: int,
    offset: int,
    clip_min: float,
    clip_max: float,
    project: bool,
) -> torch.Tensor:
    """x + U(-eps, eps) per element, with u from the spec: eps * (2u - 1)."""
    u = rng.rand(x.shape, seed, offset, device=x.device).to(_compute_dtype(x))
    xf = x.to(u.dtype) + eps * (2.0 * u - 1.0)
    if project:
        xf = xf.clamp(clip_min, clip_max)
    return xf.to(x.dtype)
