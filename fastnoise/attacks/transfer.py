"""Transfer (black-box) attack: adversarial examples crafted on a source model and
evaluated on the target (Papernot et al., 2017). A defense that only masks its own
gradients still falls to examples made on an undefended surrogate."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastnoise.attacks.base import Attack
from fastnoise.attacks.pgd import PGD

__all__ = ["Transfer"]


class Transfer(Attack):
    """Runs ``source`` (an :class:`Attack` on the source model, or a source ``nn.Module``
    that gets ``PGD(source, eps, **pgd_kwargs)``) and returns its examples for the
    target model. The target model is never queried; ``eps`` and ``norm`` are the
    source attack's."""

    name = "transfer"
    kind = "transfer"

    def __init__(
        self,
        source: Attack | nn.Module,
        target_model: nn.Module,
        eps: float | None = None,
        *,
        clip: Sequence[float] = (0.0, 1.0),
        **pgd_kwargs,
    ) -> None:
        if isinstance(source, Attack):
            if eps is not None and abs(eps - source.eps) > 1e-12:
                raise ValueError(
                    f"eps={eps} disagrees with the source attack's eps={source.eps}; "
                    "leave eps out when passing an attack"
                )
            if pgd_kwargs:
                raise TypeError(
                    f"unexpected arguments {sorted(pgd_kwargs)}: they configure the default "
                    "PGD, which is not used when source is an Attack"
                )
            source_attack = source
        elif isinstance(source, nn.Module):
            source_attack = PGD(source, 8 / 255 if eps is None else eps, clip=clip, **pgd_kwargs)
        else:
            raise TypeError(
                f"source must be an Attack or a torch.nn.Module, got {type(source).__name__}"
            )
        if source_attack.model is target_model:
            raise ValueError("source and target are the same model: that is a white-box attack")
        super().__init__(target_model, source_attack.eps, clip=source_attack.clip)
        self.source_attack = source_attack
        self.norm = source_attack.norm

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.source_attack(x, y)

    def __repr__(self) -> str:
        return f"Transfer(source={self.source_attack!r})"
