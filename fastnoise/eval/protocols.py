"""The two papers' evaluation protocols, so a number can be compared with theirs.

``pnil``: Rapid and robust one-step adversarial training (PNIL), Sec. 4.3 and 5.1. FGSM,
PGD with 50 steps of 2 * eps / 50 ("we could reach every point in the eps-ball"), both
with gradients averaged over 100 noise draws (Sec. 5.1: "100 Monte Carlo simulations are
more than sufficient"; Sec. 4.3: every attack "adjusted to work with the EOT method"),
SPSA with 100 steps of 2048 samples on 1000 randomly selected test images. eps = 8/255
on MNIST, 4/255 on Fashion-MNIST, 0.03 on CIFAR-10. The paper does not give SPSA's
number of draws: here each +/- pair shares its draw (common random numbers) and one draw
per direction is taken, the 2048 directions doing the averaging.

``l2p``: Learn2Perturb, Sec. 4.1 and 4.5. FGSM and PGD with 7 steps of 0.01 at
eps = 8/255, EOT-PGD with 80 Monte Carlo draws, and C&W-L2 with Adam (lr 5e-4, 1000
iterations, c in [1e-3, 1e10] by 9 binary-search steps, kappa = 0). The paper evaluates
CIFAR-10/100; on other data sets its eps is used as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["AttackSpec", "Protocol", "PROTOCOLS", "get_protocol"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a protocol: a :func:`fastnoise.attacks.build` name, its settings,
    and (``limit``) the number of random test images it runs on, when not all."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    pgd_steps_per_ball: bool = False  # step size 2 * eps / steps
    limit: int | None = None


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str
    eps: Mapping[str, float]  # per data set; "*" for any other
    attacks: tuple[AttackSpec, ...]

    def eps_for(self, dataset: str | None) -> float:
        key = (dataset or "").lower().replace("_", "-")
        if key in self.eps:
            return self.eps[key]
        if "*" in self.eps:
            return self.eps["*"]
        raise ValueError(
            f"the {self.name} protocol gives eps for {', '.join(self.eps)}, not {dataset!r}; "
            "pass --eps"
        )

    def build(self, model: nn.Module, eps: float) -> list[tuple[Any, int | None]]:
        """``(attack, limit)`` pairs, the attacks built on ``model`` at ``eps``."""
        from fastnoise.attacks import build

        built = []
        for spec in self.attacks:
            settings = dict(spec.settings)
            if spec.pgd_steps_per_ball:
                settings["alpha"] = 2 * eps / settings["steps"]
            budget = math.inf if spec.name == "cw" else eps  # C&W-L2 is minimum-norm
            built.append((build(spec.name, model, budget, **settings), spec.limit))
        return built


PROTOCOLS: dict[str, Protocol] = {
    "pnil": Protocol(
        name="pnil",
        source="Rapid and robust one-step adversarial training (PNIL), Sec. 4.3 and 5.1",
        eps={"mnist": 8 / 255, "fashion-mnist": 4 / 255, "cifar10": 0.03, "cifar100": 0.03},
        attacks=(
            AttackSpec("fgsm", {"eot": 100}),  # "all attacks ... adjusted to work with EOT"
            AttackSpec("pgd", {"steps": 50, "eot": 100}, pgd_steps_per_ball=True),
            AttackSpec("spsa", {"steps": 100, "samples": 2048}, limit=1000),
        ),
    ),
    "l2p": Protocol(
        name="l2p",
        source="Learn2Perturb, Sec. 4.1 and 4.5",
        eps={"*": 8 / 255},
        attacks=(
            AttackSpec("fgsm"),
            AttackSpec("pgd", {"steps": 7, "alpha": 0.01}),
            AttackSpec("eot-pgd", {"steps": 7, "alpha": 0.01, "eot": 80}),
            AttackSpec("cw", {"lr": 5e-4, "steps": 1000, "binary_steps": 9, "kappa": 0.0}),
        ),
    ),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}"
        ) from None
