"""Attacks for evaluating (randomized) defenses: ``x_adv = attack(x, y)``.

Every gradient attack takes ``eot=L`` and averages its gradient over L independent
noise draws in one batched pass (:mod:`fastnoise.attacks.eot`). ``build(name, model,
eps, **kw)`` makes an attack from its registry name.
"""

from __future__ import annotations

from torch import nn

from fastnoise.attacks.apgd import APGD, APGDT
from fastnoise.attacks.base import KINDS, Attack
from fastnoise.attacks.cw import CW
from fastnoise.attacks.eot import (
    EOTResult,
    eot_evaluate,
    eot_gradient,
    eot_per_copy,
    rows_share_noise,
    sequential_eot_gradient,
)
from fastnoise.attacks.few_pixel import FewPixel
from fastnoise.attacks.fgsm import FGSM
from fastnoise.attacks.pgd import PGD
from fastnoise.attacks.spsa import SPSA, spsa_gradient
from fastnoise.attacks.square import Square
from fastnoise.attacks.transfer import Transfer

__all__ = [
    "ATTACK_NAMES",
    "KINDS",
    "APGD",
    "APGDT",
    "Attack",
    "CW",
    "EOTResult",
    "FGSM",
    "FewPixel",
    "PGD",
    "SPSA",
    "Square",
    "Transfer",
    "build",
    "eot_evaluate",
    "eot_gradient",
    "eot_per_copy",
    "rows_share_noise",
    "sequential_eot_gradient",
    "spsa_gradient",
]

DEFAULT_EOT_PGD = 16  # copies for "eot-pgd" when the caller gives no eot
DEFAULT_APGD_EOT = 20  # AutoAttack's "rand" protocol

ATTACK_NAMES = (
    "fgsm", "pgd", "eot-pgd", "cw", "spsa", "square", "pixel", "apgd", "apgd-dlr", "apgd-t",
    "transfer",
)  # fmt: skip


def build(name: str, model: nn.Module, eps: float, **kw) -> Attack:
    """The attack called ``name`` (one of :data:`ATTACK_NAMES`) on ``model``.

    Keyword arguments go to the attack's class. "eot-pgd" is PGD with ``eot`` (default
    16); "apgd"/"apgd-dlr" are APGD-CE/APGD-DLR (default ``eot=20``); "transfer" needs
    ``source_model=`` and crafts PGD examples on it; "cw" and "pixel" are minimum-norm /
    L0 attacks, for which ``eps`` is a reporting bound (pass ``math.inf`` for none).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key == "fgsm":
        return FGSM(model, eps, **kw)
    if key == "pgd":
        return PGD(model, eps, **kw)
    if key == "eot-pgd":
        kw.setdefault("eot", DEFAULT_EOT_PGD)
        attack = PGD(model, eps, **kw)
        attack.name = "eot-pgd" + ("-targeted" if attack.targeted else "")
        return attack
    if key == "cw":
        return CW(model, eps, **kw)
    if key == "spsa":
        return SPSA(model, eps, **kw)
    if key == "square":
        return Square(model, eps, **kw)
    if key == "pixel":
        return FewPixel(model, eps=eps, **kw)
    if key in ("apgd", "apgd-dlr"):
        if "loss" in kw:
            raise TypeError(f"{key!r} fixes the loss; use 'apgd' (CE) or 'apgd-dlr' (DLR)")
        kw.setdefault("eot", DEFAULT_APGD_EOT)
        return APGD(model, eps, loss="ce" if key == "apgd" else "dlr", **kw)
    if key == "apgd-t":
        if "loss" in kw:
            raise TypeError("'apgd-t' fixes the loss (targeted DLR)")
        kw.setdefault("eot", DEFAULT_APGD_EOT)
        return APGDT(model, eps, **kw)
    if key == "transfer":
        source = kw.pop("source_model", None)
        if source is None:
            raise ValueError("the transfer attack needs source_model= (the surrogate model)")
        return Transfer(source, model, eps, **kw)
    raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACK_NAMES)}")
