"""Finding a model's noise parameters: Learn2Perturb theta, PNI alpha, the PNIL layer.

Modules are recognised by what they provide (``theta`` + ``clamp_()``, ``alpha``,
``weight`` + ``bias`` on a ``PNIL``), so any model built from ``fastnoise.nn`` works.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "perturbation_modules",
    "theta_parameters",
    "pni_parameters",
    "pnil_layer",
    "set_noise_enabled",
    "init_theta_",
    "theta_means",
    "regularizer_g",
]


def perturbation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Learn2Perturb perturbation-injection modules (they own ``theta`` and ``clamp_``)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "theta", None), torch.Tensor)
        and callable(getattr(m, "clamp_", None))
    ]


def theta_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [m.theta for _, m in perturbation_modules(model)]


def pni_parameters(model: nn.Module) -> list[nn.Parameter]:
    """PNI noise scales (He et al. 2019): parameters named ``alpha``."""
    return [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "alpha"]


def pnil_layer(model: nn.Module) -> nn.Module | None:
    """The PNIL (PNIL paper Eq. 2-3), which the models place first; None if absent."""
    try:
        from fastnoise.nn import PNIL
    except ImportError:  # fastnoise.nn not importable: fall back to the class name
        PNIL = None
    for m in model.modules():
        if (PNIL is not None and isinstance(m, PNIL)) or type(m).__name__ == "PNIL":
            return m
    return None


def set_noise_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch Learn2Perturb / PNI noise on or off (modules with an ``enabled`` flag)."""
    for m in model.modules():
        if (
            m is not model
            and hasattr(m, "enabled")
            and (hasattr(m, "theta") or hasattr(m, "alpha"))
        ):
            m.enabled = enabled


@torch.no_grad()
def init_theta_(model: nn.Module, init: float, theta_min: float) -> None:
    for _, m in perturbation_modules(model):
        m.theta.fill_(init)
        if hasattr(m, "theta_min"):
            m.theta_min = theta_min


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
