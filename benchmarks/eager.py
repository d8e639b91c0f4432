"""The eager PyTorch baselines the benchmarks compare against: what a user writes
without fastnoise. ``tests/test_cpp_backend.py`` checks them against the reference
(with the same noise), so baseline and spec never drift apart.

Each takes an optional ``z`` (the noise); by default it draws ``torch.randn_like``,
which autograd then keeps alive for the backward pass. The two modules at the end are the
eager layers ``fastnoise.nn.PerturbationInjection`` and ``fastnoise.nn.PNIL`` replace.
"""

from __future__ import annotations

import torch
from torch import nn


def eager_inject_noise(
    x: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor | None = None
) -> torch.Tensor:
    """Learn2Perturb Eq. (4)-(5) eagerly: ``x + sigma * z``."""
    if z is None:
        z = torch.randn_like(x)
    return x + sigma * z


def eager_pnil(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor | None = None
) -> torch.Tensor:
    """PNIL Eq. (2)-(3) eagerly: ``x + z * exp((x * weight + bias) / 2)``."""
    if z is None:
        z = torch.randn_like(x)
    return x + z * torch.exp((x * weight + bias) / 2)


def eager_pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step_size: float,
    eps: float,
    clip: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """One L-inf PGD iterate eagerly: sign step, eps-ball projection, pixel box."""
    x = x_adv + step_size * grad.sign()
    x = torch.min(torch.max(x, x_orig - eps), x_orig + eps)
    return x.clamp(*clip)


def eager_random_start(
    x: torch.Tensor, eps: float, project: bool = True, clip: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """PGD/RFGSM/NFGSM start eagerly: ``x + U(-eps, eps)``, clipped to the pixel box."""
    x = x + torch.empty_like(x).uniform_(-eps, eps)
    return x.clamp(*clip) if project else x


class EagerPerturbationInjection(nn.Module):
    """Learn2Perturb's layer as its released code writes it: ``x + theta * randn_like(x)``."""

    def __init__(self, shape: tuple[int, ...], init: float = 0.25) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.full(shape, init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return eager_inject_noise(x, self.theta)


class EagerPNIL(nn.Module):
    """PNIL's layer eagerly: ``x + randn_like(x) * exp((x * weight + bias) / 2)``."""

    def __init__(
        self, shape: tuple[int, ...], weight_init: float = 0.0, bias_init: float = -2.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, weight_init))
        self.bias = nn.Parameter(torch.full(shape, bias_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return eager_pnil(x, self.weight, self.bias)
