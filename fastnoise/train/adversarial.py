"""Adversarial examples for training, built on the fused ``fastnoise.functional`` ops.

Gradients are taken with respect to the input only (``torch.autograd.grad``), so no
parameter gradient is accumulated while an attack runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.functional import pgd_step, random_start

__all__ = ["input_gradient", "pgd_examples", "fgsm_rs_examples", "nfgsm_examples"]

PIXEL_BOX = (0.0, 1.0)
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _plain_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    forward: Forward = _plain_forward,
    samples: int = 1,
) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. ``x``, summed over ``samples`` noise
    draws (EOT; PNIL Algorithm 1 with L = samples)."""
    x = x.detach().requires_grad_(True)
    total = None
    for _ in range(samples):
        loss = F.cross_entropy(forward(model, x).float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        total = g if total is None else total + g
    return total


def pgd_examples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    forward: Forward = _plain_forward,
) -> torch.Tensor:
    """Madry et al. L-inf PGD: uniform random start in the eps-ball, ``steps`` signed
    steps, each projected onto the eps-ball and the pixel box."""
    x_adv = random_start(x, eps, project=True, clip=PIXEL_BOX)
    for _ in range(steps):
        grad = input_gradient(model, x_adv, y, forward)
        x_adv = pgd_step(x_adv, grad, x, step_size, eps, clip=PIXEL_BOX)
    return x_adv.detach()


def fgsm_rs_examples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    forward: Forward = _plain_forward,
) -> torch.Tensor:
    """Wong et al. 2020 "FGSM with random start": uniform start in the eps-ball, one step
    of ``step_size`` (1.25 eps), projected back onto the eps-ball and the pixel box."""
    x0 = random_start(x, eps, project=True, clip=PIXEL_BOX)
    grad = input_gradient(model, x0, y, forward)
    return pgd_step(x0, grad, x, step_size, eps, clip=PIXEL_BOX).detach()


def nfgsm_examples(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    forward: Forward = _plain_forward,
    samples: int = 1,
) -> torch.Tensor:
    """PNIL paper Algorithm 1: X_n = X + U(-eps, eps); r = eps * sign(sum_l grad L(X_n));
    train on X_n + r. As printed there is no projection back into the eps-ball around X
    and no clipping to the pixel box: the perturbation reaches 2 eps by design."""
    x_noisy = random_start(x, eps, project=False)
    grad = input_gradient(model, x_noisy, y, forward, samples)
    # centre = x_noisy and no box: the projections are no-ops, leaving x_noisy + eps*sign
    return pgd_step(x_noisy, grad, x_noisy, eps, eps, clip=None).detach()
