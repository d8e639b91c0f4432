"""The eager PyTorch baselines the benchmarks compare against: what a user writes
without fastnoise. ``tests/test_cpp_backend.py`` checks them against the reference
(with the same noise), so baseline and spec never drift apart.

Each takes an optional ``z`` (the noise); by default it draws ``torch.randn_like``,
which autograd then keeps alive for the backward pass.
"""

from __future__ import annotations

import torch


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
