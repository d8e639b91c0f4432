"""The trainer's view of a model's noise: Learn2Perturb theta, PNI alpha, the PNIL layer.

Built on :mod:`fastnoise.nn`'s layer types, so any model made of its layers works.
"""

from __future__ import annotations

import torch
from torch import nn

from fastnoise.nn import PNIL, ParametricNoiseInjection, PerturbationInjection, noise_modules

__all__ = [
    "perturbation_modules",
    "theta_parameters",
    "pni_parameters",
    "pnil_layer",
    "set_noise_enabled",
    "theta_means",
    "regularizer_g",
]


def perturbation_modules(model: nn.Module) -> list[tuple[str, PerturbationInjection]]:
    """Learn2Perturb perturbation-injection modules, with their names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PerturbationInjection)]


def theta_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.theta for _, m in perturbation_modules(model)]


def pni_parameters(model: nn.Module) -> list[nn.Parameter]:
    """PNI noise scales alpha (He et al. 2019), on activations or on weights."""
    return [m.alpha for m in noise_modules(model) if isinstance(m, ParametricNoiseInjection)]


def pnil_layer(model: nn.Module) -> PNIL | None:
    """The PNIL (PNIL paper Eq. 2-3), which the models place first; None if absent."""
    return next((m for m in noise_modules(model) if isinstance(m, PNIL)), None)


def set_noise_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch Learn2Perturb / PNI noise on or off for warm-up epochs. Unlike
    :func:`fastnoise.nn.set_noise_enabled`, a PNIL stays on: it is part of the input
    pipeline the weights train with, not the noise being warmed up to."""
    for m in noise_modules(model):
        if not isinstance(m, PNIL):
            m.enabled = enabled


@torch.no_grad()
def theta_means(model: nn.Module) -> dict[str, float]:
    """Mean theta (Learn2Perturb) or alpha (PNI) per layer, for the metrics log."""
    out = {name: float(m.theta.float().mean()) for name, m in perturbation_modules(model)}
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "alpha":
            out[name.rsplit(".", 1)[0]] = float(p.float().mean())
    return out


def regularizer_g(thetas: list[torch.Tensor], tau: float) -> torch.Tensor:
    """Learn2Perturb Eq. (8): g(theta) = -sum(sqrt(theta)) / tau over every theta."""
    return -sum(t.float().sqrt().sum() for t in thetas) / tau
