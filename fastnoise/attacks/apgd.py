"""Auto-PGD (Croce & Hein, 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), L-inf, with EOT.

APGD-CE and APGD-DLR with ``eot=20`` are AutoAttack's "rand" protocol for randomized
defenses. The step size starts at 2 * eps and is halved at checkpoints where progress
stalled; iterates carry momentum 0.75.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise import functional as fn
from fastnoise.attacks import _losses
from fastnoise.attacks.base import Attack

__all__ = ["APGD", "apgd_checkpoints"]

MOMENTUM = 0.75  # alpha in Algorithm 1


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein, Sec. 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # Rounding first keeps float noise (0.57 * 100 = 57.00000000000001) out of ceil.
    points = sorted({math.ceil(round(q * steps, 9)) for q in p if q <= 1.0})
    return [w for w in points if 0 < w < steps]


class APGD(Attack):
    """Auto-PGD, L-inf, Algorithm 1 of Croce & Hein (2020), batched per sample.

    Each sample has its own step size eta, best loss ``f_max`` and best point ``x_max``.
    At checkpoint w_j the step is halved and the iterate reset to ``x_max`` when
    Condition 1 (fewer than ``rho * (w_j - w_{j-1})`` loss increases since w_{j-1}) or
    Condition 2 (eta and f_max unchanged since w_{j-1}) holds. Returns, per sample, the
    last misclassified iterate if one was seen (EOT-averaged logits), else ``x_max``.
    """

    kind = "iterative"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        loss: str = "ce",
        steps: int = 100,
        eot: int = 20,
        rho: float = 0.75,
        *,
        random_start: bool = True,
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
        if loss not in ("ce", "dlr"):
            raise ValueError(f"loss must be 'ce' or 'dlr', got {loss!r}")
        self.loss = loss
        self.loss_fn = _losses.get_loss(loss)
        self.steps = v.check_positive_int("steps", steps)
        self.rho = v.check_non_negative_number("rho", rho)
        if self.rho > 1:
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        self.random_start = bool(random_start)
        self.name = "apgd" if loss == "ce" else "apgd-dlr"

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # P_S: the eps-ball around x, then the pixel box (zero-step pgd_step).
        return fn.pgd_step(x_adv, x_adv, x, 0.0, self.eps, self.clip)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        batch = x.shape[0]
        keep = lambda mask, a, b: torch.where(mask.view(shape), a, b)

        x_k = fn.random_start(x, self.eps, clip=self.clip) if self.random_start else x.clone()
        score = self.gradient(self.loss_fn, x_k, y)
        fooled = score.logits.argmax(1) != y
        x_fooled = keep(fooled, x_k, x)
        f_max, x_max, grad_max = score.loss, x_k, score.grad
        f_k, grad_k, x_prev = score.loss, score.grad, x_k

        eta = torch.full((batch,), 2.0 * self.eps, device=x.device)
        checkpoints = set(apgd_checkpoints(self.steps))
        last_check, increases = 0, torch.zeros(batch, device=x.device)
        eta_at_check, f_max_at_check = eta.clone(), f_max.clone()

        for k in range(self.steps):
            step = eta.view(shape) * grad_k.float().sign()
            z = self._project(x_k.float() + step, x)
            if k == 0:
                x_next = z  # x(1) = P_S(x(0) + eta * sign grad): no momentum yet
            else:
                moved = x_k.float() + MOMENTUM * (z.float() - x_k.float())
                moved = moved + (1 - MOMENTUM) * (x_k.float() - x_prev.float())
                x_next = self._project(moved.to(x.dtype), x)
            score = self.gradient(self.loss_fn, x_next, y)
            increases += (score.loss > f_k).float()
            x_prev, x_k, f_k, grad_k = x_k, x_next, score.loss, score.grad

            now_fooled = score.logits.argmax(1) != y
            x_fooled = keep(now_fooled, x_k, x_fooled)
            fooled |= now_fooled
            improved = f_k > f_max
            f_max = torch.where(improved, f_k, f_max)
            x_max = keep(improved, x_k, x_max)
            grad_max = keep(improved, grad_k, grad_max)

            if k + 1 in checkpoints:
                span = k + 1 - last_check
                condition_1 = increases < self.rho * span
                condition_2 = (eta == eta_at_check) & (f_max == f_max_at_check)
                halve = condition_1 | condition_2
                eta_at_check, f_max_at_check = eta.clone(), f_max.clone()
                eta = torch.where(halve, eta / 2, eta)
                # Restart halved samples from x_max, without momentum.
                x_k = keep(halve, x_max, x_k)
                x_prev = keep(halve, x_max, x_prev)
                grad_k = keep(halve, grad_max, grad_k)
                f_k = torch.where(halve, f_max, f_k)
                increases.zero_()
                last_check = k + 1
        return keep(fooled, x_fooled, x_max)
