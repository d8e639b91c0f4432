"""C++ backend: the ``fastnoise_C`` extension's CPU kernels behind the reference's
primitive signatures.

One fused pass per primitive: Philox noise is generated in registers tile by tile
(AVX2 where the CPU has it, portable C++ elsewhere), threads split the tiles
(``at::parallel_for``), and nothing activation-sized is stored for the backward.
Any strides are accepted: the kernels read the logical (row-major) order, so a
channels_last input costs one copy. The extension is built on first use (see
:mod:`fastnoise._extension`); if that fails, :func:`unavailable_reason` says why.

The primitives are device-agnostic (the ``fastnoise_C`` ops dispatch on the tensors'
device), so :mod:`fastnoise._backends.cuda` reuses them.
"""

from __future__ import annotations

import types

import torch

from fastnoise import _extension

NAME = "cpp"

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
    return _extension.unavailable_reason()


def supports(device: torch.device) -> bool:
    return torch.device(device).type == "cpu"


def _ops():
    return _extension.ops()


def front_door() -> types.SimpleNamespace:
    """The extension's public ops as bare callables (an ``OpOverload``'s ``_op``: one
    Python frame less per call). ``inject_noise``/``pnil`` check their arguments, draw
    the seed, run the kernel and record autograd; the attack steps record no graph."""
    ops = _extension.ops()

    def bare(overload):
        return getattr(overload, "_op", overload)

    return types.SimpleNamespace(
        inject_noise=bare(ops.inject_noise.default),
        inject_noise_scalar=bare(ops.inject_noise.scalar),
        inject_noise_abs=bare(ops.inject_noise.abs),
        pnil=bare(ops.pnil.default),
        pgd_step=bare(ops.pgd_step.default),
        random_start=bare(ops.random_start.draw),
    )


def noise_forward(x: torch.Tensor, sigma: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """Learn2Perturb Eq. (4)-(5): y = x + sigma * z, z ~ N(0, 1) per element."""
    return _ops().noise_forward(x, sigma, int(seed), int(offset))


def noise_backward_sigma(
    grad_y: torch.Tensor, sigma: torch.Tensor, seed: int, offset: int
) -> torch.Tensor:
    """d loss / d sigma = sum over batch and broadcast dims of grad_y * z (z regenerated)."""
    return _ops().noise_backward_sigma(grad_y, sigma, int(seed), int(offset))


def pnil_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, seed: int, offset: int
) -> torch.Tensor:
    """PNIL Eq. (2)-(3): y = x + z * exp((x * weight + bias) / 2)."""
    return _ops().pnil_forward(x, weight, bias, int(seed), int(offset))


def pnil_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of PNIL for x, weight and bias, with z regenerated from (seed, offset)."""
    grad_x, grad_w, grad_b = _ops().pnil_backward(grad_y, x, weight, bias, int(seed), int(offset))
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
    return _ops().pgd_step(
        x_adv, grad, x_orig, float(step_size), float(eps), float(clip_min), float(clip_max)
    )


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
    return _ops().random_start(
        x, float(eps), int(seed), int(offset), float(clip_min), float(clip_max), bool(project)
    )


def random_words(
    numel: int, seed: int, offset: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The extension's Philox words (uint32 in int64) of elements ``0 .. numel-1``, for
    checking against :func:`fastnoise.rng.random_words`."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    counters = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device) + int(offset)
    return _ops().philox_words(counters, int(seed)).reshape(-1)[:numel]
