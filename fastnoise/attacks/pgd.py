"""Projected Gradient Descent (Madry et al., 2018), L-inf and L2, with EOT and restarts,
untargeted or targeted (see :mod:`fastnoise.attacks.targets`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise import functional as fn
from fastnoise.attacks import _losses
from fastnoise.attacks import targets as _targets
from fastnoise.attacks.base import Attack

__all__ = ["PGD", "check_norm", "l2_random_start", "project_l2", "per_sample_norm"]


def check_norm(norm: object, allowed: tuple[str, ...]) -> str:
    """``norm`` in lowercase ("Linf" and "linf" are one norm) when it is one of
    ``allowed``; otherwise an error naming the argument."""
    if not isinstance(norm, str):
        raise TypeError(f"norm must be a str, got {type(norm).__name__}")
    key = norm.lower()
    if key not in allowed:
        names = ", ".join(repr(a.capitalize() if a == "linf" else a.upper()) for a in allowed)
        raise ValueError(f"norm must be one of {names} (any case), got {norm!r}")
    return key


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).float().norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project_l2(
    x_adv: torch.Tensor, x: torch.Tensor, eps: float, clip: tuple[float, float]
) -> torch.Tensor:
    """Onto the L2 ball of radius eps around x, then the pixel box. Clipping only moves
    coordinates toward x (which is inside the box), so the result stays in the ball."""
    delta = x_adv.float() - x.float()
    scale = (eps / per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x.float() + delta * scale).clamp(*clip).to(x.dtype)


def l2_random_start(x: torch.Tensor, eps: float, clip: tuple[float, float]) -> torch.Tensor:
    """Uniform in the L2 ball around x (a Gaussian direction, radius eps * u^(1/d)), then
    clipped to the pixel box (which keeps it in the ball)."""
    direction = torch.randn(x.shape, device=x.device)
    direction = direction / per_sample_norm(direction).clamp_min(1e-12)
    dims = x[0].numel()
    radius = eps * torch.rand(x.shape[0], device=x.device) ** (1.0 / dims)
    x_start = x.float() + direction * radius.view(-1, *([1] * (x.dim() - 1)))
    return x_start.clamp(*clip).to(x.dtype)


class PGD(Attack):
    """``steps`` ascent steps on the loss, each projected onto the eps-ball and the box.

    L-inf steps use the fused ``fastnoise.functional.pgd_step`` (and ``random_start``);
    L2 steps move ``alpha`` along the per-sample normalized gradient. With ``restarts > 1``
    each sample keeps its worst case over restarts: misclassified first, else the highest
    loss (both EOT-averaged). ``eot > 1`` makes this EOT-PGD.

    ``targeted=True`` with ``target=`` (a tensor of labels, ``"random"`` or
    ``"least-likely"``, see :mod:`fastnoise.attacks.targets`) ascends the negated loss
    toward the target instead (for ``loss="ce"``, descends the cross-entropy of the target
    class), and success means predicting the target.
    """

    kind = "iterative"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float = 0.01,
        steps: int = 7,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        eot: int = 1,
        *,
        loss: str = "ce",
        targeted: bool = False,
        target: torch.Tensor | str | None = None,
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
        self.norm = check_norm(norm, ("linf", "l2"))
        self.alpha = v.check_non_negative_number("alpha", alpha)
        self.steps = v.check_positive_int("steps", steps)
        self.restarts = v.check_positive_int("restarts", restarts)
        self.random_start = bool(random_start)
        self.loss_fn = _losses.get_loss(loss)
        self.target = _targets.check_target(targeted, target)
        self.targeted = targeted
        self._targeted_loss_fn = _losses.get_loss(loss, targeted=True)
        self.name = ("pgd" if self.eot == 1 else "eot-pgd") + ("-targeted" if targeted else "")

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            return fn.random_start(x, self.eps, clip=self.clip)
        return l2_random_start(x, self.eps, self.clip)

    def _step(self, x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return fn.pgd_step(x_adv, grad, x, self.alpha, self.eps, self.clip)
        unit = grad.float() / per_sample_norm(grad).clamp_min(1e-12)
        return project_l2(x_adv.float() + self.alpha * unit, x, self.eps, self.clip)

    def _run_once(self, x: torch.Tensor, labels: torch.Tensor, loss_fn) -> torch.Tensor:
        x_adv = self._start(x)
        for _ in range(self.steps):
            grad = self.gradient(loss_fn, x_adv, labels).grad
            x_adv = self._step(x_adv, grad, x)
        return x_adv

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # labels: y, or [y, t] rows when targeted (the loss then pulls toward t).
        labels = _targets.attack_labels(self, self.target, x, y)
        loss_fn = self._targeted_loss_fn if self.targeted else self.loss_fn
        best = self._run_once(x, labels, loss_fn)
        if self.restarts == 1:
            return best
        score = self.evaluate(loss_fn, best, labels)
        best_fooled, best_loss = _targets.succeeded(score.logits, labels), score.loss
        for _ in range(self.restarts - 1):
            candidate = self._run_once(x, labels, loss_fn)
            score = self.evaluate(loss_fn, candidate, labels)
            fooled, loss = _targets.succeeded(score.logits, labels), score.loss
            # Worst case per sample: a successful point beats any loss value.
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), candidate, best)
            best_fooled = best_fooled | fooled
            best_loss = torch.where(better, loss, best_loss)
        return best
