"""Fast Gradient Sign Method (Goodfellow et al., 2015), with EOT for randomized models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import functional as fn
from fastnoise.attacks import _losses
from fastnoise.attacks.base import Attack

__all__ = ["FGSM"]


class FGSM(Attack):
    """One step ``x + eps * sign(grad_x L)`` clipped to the pixel box (L-inf).

    With ``eot > 1`` the gradient is averaged over that many noise draws first."""

    name = "fgsm"
    kind = "single-step"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        eot: int = 1,
        *,
        loss: str = "ce",
        eot_chunk: int | None = None,
        clip: Sequence[float] = (0.0, 1.0),
        compile: bool | str = False,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(
            model,
            eps,
            eot=eot,
            eot_chunk=eot_chunk,
            clip=clip,
            compile=compile,
            eval_mode=eval_mode,
        )
        self.loss_fn = _losses.get_loss(loss)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grad = self.gradient(self.loss_fn, x, y).grad
        # The fused L-inf step with x as its own anchor: step eps, ball eps, then the box.
        return fn.pgd_step(x, grad, x, self.eps, self.eps, self.clip)
