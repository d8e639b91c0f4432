"""Carlini & Wagner L2 attack ("Towards evaluating the robustness of neural networks", 2017).

Minimizes ``||x' - x||_2^2 + c * f(x')`` with ``f(x') = max(z_y - max_{i != y} z_i, -kappa)``
(their f_6, Eq. (6) untargeted) over ``x' = lo + (hi - lo) * (tanh(w) + 1) / 2`` (the
change of variables of their Sec. V-A, which keeps x' in the box), by Adam on w. A
binary search over c per sample keeps the smallest-norm successful example.

Targeted (``targeted=True``, ``target=`` labels, ``"random"`` or ``"least-likely"``, see
:mod:`fastnoise.attacks.targets`), f is their f_6 toward the target t as the paper
defines it, ``f(x') = max(max_{i != t} z_i - z_t, -kappa)``, and success means
predicting t (by at least kappa).

CW is a minimum-norm attack: it has no budget. ``eps`` is only the reporting bound of
the L2 norm (``math.inf`` by default): samples whose best example is farther than eps,
or that were never fooled, are returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.attacks import _losses
from fastnoise.attacks import targets as _targets
from fastnoise.attacks.base import Attack

__all__ = ["CW"]

_ATANH_LIMIT = 1 - 1e-6  # keep atanh finite at the box edges
_ABORT_CHECKS = 10  # early abort checks per binary step, as in the reference code


class CW(Attack):
    """Carlini-Wagner L2 with tanh box constraint, Adam and a per-sample binary search.

    ``c_range`` bounds the search: c starts at ``initial_c``, grows tenfold while a sample
    is never fooled and bisects once it has been. With ``eot > 1`` the gradient of f is
    averaged over noise draws. Optimization stops early when the total objective has not
    dropped by 0.01% over a tenth of the steps.
    """

    name = "cw"
    kind = "iterative"
    norm = "l2"

    def __init__(
        self,
        model: nn.Module,
        eps: float = math.inf,
        c_range: tuple[float, float] = (1e-3, 1e10),
        initial_c: float = 1e-2,
        binary_steps: int = 9,
        steps: int = 1000,
        lr: float = 5e-4,
        kappa: float = 0.0,
        *,
        abort_early: bool = True,
        targeted: bool = False,
        target: torch.Tensor | str | None = None,
        eot: int = 1,
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
        if len(c_range) != 2:
            raise ValueError(f"c_range must be a (min, max) pair, got {c_range!r}")
        c_lo = v.check_non_negative_number("c_range[0]", c_range[0])
        c_hi = v.check_non_negative_number("c_range[1]", c_range[1])
        if not 0 < c_lo < c_hi:
            raise ValueError(f"c_range must satisfy 0 < min < max, got {c_range!r}")
        self.c_range = (c_lo, c_hi)
        self.initial_c = v.check_non_negative_number("initial_c", initial_c)
        if not c_lo <= self.initial_c <= c_hi:
            raise ValueError(f"initial_c must lie in c_range {c_range}, got {initial_c}")
        self.binary_steps = v.check_positive_int("binary_steps", binary_steps)
        self.steps = v.check_positive_int("steps", steps)
        self.lr = v.check_non_negative_number("lr", lr)
        self.kappa = v.check_non_negative_number("kappa", kappa)
        self.abort_early = bool(abort_early)
        self.target = _targets.check_target(targeted, target)
        self.targeted = targeted
        if targeted:
            self.name = "cw-targeted"

    @staticmethod
    def _gap(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # How far past the boundary: max_{i != y} z_i - z_y, or z_t - max_{i != t} z_i
        # toward a target (labels packed [y, t]).
        if labels.dim() == 2:
            return -_losses.margin(logits, labels[:, 1])
        return _losses.margin(logits, labels)

    def _objective(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # f_6 = max(z_y - max_{i != y} z_i, -kappa) untargeted, max(max_{i != t} z_i - z_t,
        # -kappa) targeted: zero gradient once kappa-confident.
        return (-self._gap(logits, labels)).clamp_min(-self.kappa)

    def _fooled(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        gap = self._gap(logits, labels)
        return (gap > 0) & (gap >= self.kappa)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        shape = (-1, *([1] * (x.dim() - 1)))
        batch = x.shape[0]
        xf = x.float()
        to_box = lambda w: lo + (hi - lo) * (torch.tanh(w) + 1) / 2
        w_clean = torch.atanh(((xf - lo) / (hi - lo) * 2 - 1).clamp(-_ATANH_LIMIT, _ATANH_LIMIT))

        c = torch.full((batch,), self.initial_c, device=x.device)
        c_lower = torch.full((batch,), self.c_range[0], device=x.device)
        c_upper = torch.full((batch,), self.c_range[1], device=x.device)
        best_norm = torch.full((batch,), math.inf, device=x.device)
        best_adv = x.clone()
        labels = _targets.attack_labels(self, self.target, x, y)  # y, or [y, t] rows

        for _ in range(self.binary_steps):
            w = w_clean.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            fooled_this_c = torch.zeros(batch, dtype=torch.bool, device=x.device)
            previous = math.inf
            for step in range(self.steps):
                x_adv = to_box(w.detach())
                score = self.gradient(self._objective, x_adv.to(x.dtype), labels)
                sq_norm = (x_adv - xf).flatten(1).pow(2).sum(1)
                # Record before the step: x_adv is the point these logits belong to.
                fooled = self._fooled(score.logits, labels)
                better = fooled & (sq_norm.sqrt() < best_norm)
                best_norm = torch.where(better, sq_norm.sqrt(), best_norm)
                best_adv = torch.where(better.view(shape), x_adv.to(x.dtype), best_adv)
                fooled_this_c |= fooled
                # d/dw of ||x' - x||^2 + c f(x') through x' = box(w): chain rule by hand,
                # since f's gradient comes from the batched EOT pass.
                grad_x = 2 * (x_adv - xf) + c.view(shape) * score.grad.float()
                dx_dw = (hi - lo) / 2 * (1 - torch.tanh(w.detach()) ** 2)
                w.grad = grad_x * dx_dw
                optimizer.step()
                if self.abort_early and step % max(1, self.steps // _ABORT_CHECKS) == 0:
                    total = float((sq_norm + c * score.loss).sum())
                    if total > previous * 0.9999:
                        break
                    previous = total
            # Binary search on c, per sample (Sec. VI-A).
            c_upper = torch.where(fooled_this_c, torch.minimum(c_upper, c), c_upper)
            c_lower = torch.where(fooled_this_c, c_lower, torch.maximum(c_lower, c))
            bounded = c_upper < self.c_range[1]
            c = torch.where(bounded, (c_lower + c_upper) / 2, (c * 10).clamp(max=self.c_range[1]))
        within = best_norm <= self.eps
        return torch.where(within.view(shape), best_adv, x)
