"""Auto-PGD with EOT: L-inf and L2 (Croce & Hein, 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks"), L1 (Croce &
Hein, 2021, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers"), untargeted, targeted, and APGD-T.

APGD-CE and APGD-DLR with ``eot=20`` are AutoAttack's "rand" protocol for randomized
defenses. L-inf and L2 follow Algorithm 1 of the 2020 paper: the step size starts at
2 * eps and is halved at checkpoints where progress stalled; iterates carry momentum 0.75.
L1 follows the 2021 paper: sparse steps along the top-k gradient coordinates with k
adapted to the sparsity of the best point, an exact projection onto the L1 ball
intersected with the pixel box, and its own step-size schedule (see :class:`APGD`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise import functional as fn
from fastnoise.attacks import _losses
from fastnoise.attacks import targets as _targets
from fastnoise.attacks.base import Attack
from fastnoise.attacks.pgd import check_norm, l2_random_start, per_sample_norm

__all__ = ["APGD", "APGDT", "apgd_checkpoints", "project_l1_box", "project_l2_box"]

MOMENTUM = 0.75  # alpha in Algorithm 1
APGD_NORMS = ("linf", "l2", "l1")

# l1-APGD's schedule (Croce & Hein, 2021, as their reference implementation sets it).
L1_TOPK_START = 0.2  # k(0) = 0.2 d: the first steps move the top 20% of coordinates
L1_TOPK_SHRINK = 1.5  # at a checkpoint k = ||x_max - x||_0 / 1.5
L1_SPARSER = 0.95  # x_max got sparser when its L0 norm fell below 0.95 x the last one
L1_STEP_DECAY = 1.5  # otherwise eta /= 1.5 ...
L1_STEP_FLOOR = 10.0  # ... down to eps / 10
L1_CHECK_EVERY = 0.04  # a checkpoint every 4% of the iterations


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein, Sec. 3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # Rounding first keeps float noise (0.57 * 100 = 57.00000000000001) out of ceil.
    points = sorted({math.ceil(round(q * steps, 9)) for q in p if q <= 1.0})
    return [w for w in points if 0 < w < steps]


def _room(w: torch.Tensor, x: torch.Tensor, clip: tuple[float, float]) -> torch.Tensor:
    # How far each coordinate of x may move in the direction of w before leaving the box.
    lo, hi = clip
    return torch.where(w > 0, hi - x, x - lo).clamp_min(0)


def _finish(
    xf: torch.Tensor, delta: torch.Tensor, eps: float, norm: torch.Tensor, clip, x: torch.Tensor
) -> torch.Tensor:
    # Guard against rounding: scale delta into the ball (toward x, so it stays in the box).
    scale = torch.where(norm > eps, eps / norm.clamp_min(1e-30), torch.ones_like(norm))
    out = (xf + delta * scale[:, None]).clamp(*clip)
    return out.view(x.shape).to(x.dtype)


def project_l1_box(
    x_adv: torch.Tensor, x: torch.Tensor, eps: float, clip: tuple[float, float]
) -> torch.Tensor:
    """Exact Euclidean projection of ``x_adv`` onto ``{x': ||x' - x||_1 <= eps, x' in box}``
    per sample (Croce & Hein, 2021, show the projection onto the L1 ball intersected with
    the box is cheap to compute exactly, and that ignoring the box hurts).

    With ``w = x_adv - x``, the problem splits per coordinate given the L1 constraint's
    multiplier lambda >= 0: ``delta_i = sign(w_i) * min(max(|w_i| - lambda, 0), r_i)``
    (soft-threshold, then clip to the room ``r_i`` the box leaves in w_i's direction).
    ``||delta(lambda)||_1`` is piecewise linear and non-increasing in lambda, with kinks at
    ``|w_i| - min(|w_i|, r_i)`` and ``|w_i|``; sorting the kinks gives the lambda where it
    equals eps exactly (lambda = 0 when the clipped w is already inside the ball).
    O(d log d) per sample; the result has x's dtype."""
    xf = x.float().flatten(1)
    w = x_adv.float().flatten(1) - xf
    size = w.abs()
    cap = torch.minimum(size, _room(w, xf, clip))  # |delta_i| at lambda = 0
    total = cap.sum(1)
    # Kinks: coordinate i shrinks for lambda in [size_i - cap_i, size_i], so the slope of
    # ||delta||_1 is minus the number of coordinates shrinking there.
    kinks, order = torch.cat([size - cap, size], 1).sort(dim=1)
    turns = torch.cat([torch.ones_like(size), -torch.ones_like(size)], 1).gather(1, order)
    shrinking = turns.cumsum(1)  # coordinates shrinking just after each kink
    drop = (shrinking[:, :-1] * kinks.diff(dim=1)).cumsum(1)
    at_kink = torch.cat([total[:, None], total[:, None] - drop], 1)  # ||delta||_1 at kinks
    # lambda lies between the last kink still outside the ball and the first inside.
    first_in = (at_kink <= eps).float().argmax(1).clamp_min(1)[:, None]
    before = first_in - 1
    lam = kinks.gather(1, before) + (at_kink.gather(1, before) - eps) / shrinking.gather(
        1, before
    ).clamp_min(1)
    lam = torch.where(total[:, None] > eps, lam, torch.zeros_like(lam))
    delta = w.sign() * torch.minimum((size - lam).clamp_min(0), cap)
    return _finish(xf, delta, eps, delta.abs().sum(1), clip, x)


def project_l2_box(
    x_adv: torch.Tensor, x: torch.Tensor, eps: float, clip: tuple[float, float]
) -> torch.Tensor:
    """Exact Euclidean projection of ``x_adv`` onto ``{x': ||x' - x||_2 <= eps, x' in box}``
    per sample.

    With ``w = x_adv - x`` and the ball's multiplier mu, ``delta = clip_box(t * w)`` with
    ``t = 1 / (1 + mu)`` in (0, 1]; ``||delta(t)||_2`` increases with t and is
    ``t^2 * sum_{unclipped} w_i^2 + sum_{clipped} r_i^2`` between the breakpoints
    ``t_i = r_i / |w_i|`` where coordinate i reaches the box, so sorting them gives the
    exact t. (The reference code scales into the ball and then clips, a point in the set
    but not the nearest one.) The result has x's dtype."""
    xf = x.float().flatten(1)
    w = x_adv.float().flatten(1) - xf
    size = w.abs()
    room = _room(w, xf, clip)
    inside = torch.minimum(size, room).pow(2).sum(1) <= eps**2
    moving = size > 0
    breaks, order = torch.where(moving, room / size.clamp_min(1e-30), math.inf).sort(dim=1)
    size2 = size.pow(2).gather(1, order)
    room2 = torch.where(moving, room, torch.zeros_like(room)).pow(2).gather(1, order)
    zero = torch.zeros_like(size2[:, :1])
    # Sums over the clipped coordinates (before j) and the free ones (j on), each summed
    # directly: a difference of totals would cancel catastrophically at large breakpoints.
    held_before = torch.cat([zero, room2.cumsum(1)], 1)
    free_from = torch.cat([size2.flip(1).cumsum(1).flip(1), zero], 1)
    at_break = breaks.pow(2) * free_from[:, :-1] + held_before[:, :-1]  # ||delta||^2 at t_j
    at_break = torch.where(breaks.isfinite(), at_break, math.inf)
    clipped = (at_break <= eps**2).sum(1, keepdim=True)  # a prefix: at_break is sorted
    held, free = held_before.gather(1, clipped), free_from.gather(1, clipped)
    t = ((eps**2 - held).clamp_min(0) / free.clamp_min(1e-30)).sqrt().clamp(max=1)
    t = torch.where(inside[:, None], torch.ones_like(t), t)
    delta = w.sign() * torch.minimum(t * size, room)
    return _finish(xf, delta, eps, delta.norm(dim=1), clip, x)


class _Run(NamedTuple):
    x_success: torch.Tensor  # last successful iterate, x where none was
    success: torch.Tensor  # (B,) bool: some iterate succeeded (EOT-averaged logits)
    x_max: torch.Tensor  # the highest-loss iterate
    f_max: torch.Tensor  # (B,) its loss


class APGD(Attack):
    """Auto-PGD, batched per sample, for ``norm`` "Linf", "L2" or "L1" (any case).

    L-inf and L2, Algorithm 1 of Croce & Hein (2020): each sample has its own step size
    eta (starting at 2 * eps), best loss ``f_max`` and best point ``x_max``. Steps follow
    ``sign(grad)`` (L-inf) or ``grad / ||grad||_2`` (L2), are projected exactly onto the
    ball intersected with the box, and carry momentum alpha = 0.75. At checkpoint w_j the
    step is halved and the iterate reset to ``x_max`` when Condition 1 (fewer than
    ``rho * (w_j - w_{j-1})`` loss increases since w_{j-1}) or Condition 2 (eta and f_max
    unchanged since w_{j-1}) holds.

    L1, l1-APGD of Croce & Hein (2021): a step moves eta in L1 norm, spread evenly
    over the k coordinates with the largest ``|grad|`` (signs of the gradient), then
    projects exactly onto the L1 ball intersected with the box (:func:`project_l1_box`);
    no momentum. eta starts at eps and k at 0.2 d; every 4% of the iterations, k becomes
    ``||x_max - x||_0 / 1.5``, and eta is reset to eps (with the iterate reset to
    ``x_max``) where that L0 norm fell below 0.95 x its last value, else divided by 1.5,
    never below eps / 10.

    The first point is random in the threat set (``random_start``). ``restarts > 1``
    runs again, from a fresh random start, the samples no run has fooled yet. Returns,
    per sample, the last successful iterate if one was seen (EOT-averaged logits), else
    the highest-loss point over all restarts.

    ``targeted=True`` with ``target=`` (a tensor of labels, ``"random"`` or
    ``"least-likely"``, see :mod:`fastnoise.attacks.targets`) maximizes the loss toward
    the target: minus the target's cross-entropy (``loss="ce"``) or the targeted DLR loss
    (``loss="dlr"``); success means predicting the target.
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
        norm: str = "linf",
        restarts: int = 1,
        targeted: bool = False,
        target: torch.Tensor | str | None = None,
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
        self.norm = check_norm(norm, APGD_NORMS)
        self.steps = v.check_positive_int("steps", steps)
        self.rho = v.check_non_negative_number("rho", rho)
        if self.rho > 1:
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        self.restarts = v.check_positive_int("restarts", restarts)
        self.random_start = bool(random_start)
        self.target = _targets.check_target(targeted, target)
        self.targeted = targeted
        if targeted:
            self.loss_fn = _losses.get_loss(loss, targeted=True)
        self.name = ("apgd" if loss == "ce" else "apgd-dlr") + ("-targeted" if targeted else "")

    # -- the threat set --------------------------------------------------------------

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """P_S: onto the eps-ball around x intersected with the pixel box."""
        if self.norm == "linf":
            # The L-inf ball, then the box, is exact here (zero-step pgd_step).
            x_adv = x_adv.to(x.dtype)
            return fn.pgd_step(x_adv, x_adv, x, 0.0, self.eps, self.clip)
        if self.norm == "l2":
            return project_l2_box(x_adv, x, self.eps, self.clip)
        return project_l1_box(x_adv, x, self.eps, self.clip)

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            return fn.random_start(x, self.eps, clip=self.clip)
        if self.norm == "l2":
            return l2_random_start(x, self.eps, self.clip)
        # A Gaussian point projected onto the L1 ball and the box (as l1-APGD starts).
        return self._project(x.float() + torch.randn(x.shape, device=x.device), x)

    # -- one run ---------------------------------------------------------------------

    def _run(self, x: torch.Tensor, labels: torch.Tensor, loss_fn, success_fn) -> _Run:
        if self.norm == "l1":
            return self._run_l1(x, labels, loss_fn, success_fn)
        return self._run_linf_l2(x, labels, loss_fn, success_fn)

    def _run_linf_l2(self, x, labels, loss_fn, success_fn) -> _Run:
        shape = (-1, *([1] * (x.dim() - 1)))
        batch = x.shape[0]
        keep = lambda mask, a, b: torch.where(mask.view(shape), a, b)

        def direction(grad: torch.Tensor) -> torch.Tensor:
            if self.norm == "linf":
                return grad.float().sign()
            return grad.float() / per_sample_norm(grad).clamp_min(1e-12)

        x_k = self._start(x)
        score = self.gradient(loss_fn, x_k, labels)
        fooled = success_fn(score.logits, labels)
        x_fooled = keep(fooled, x_k, x)
        f_max, x_max, grad_max = score.loss, x_k, score.grad
        f_k, grad_k, x_prev = score.loss, score.grad, x_k

        eta = torch.full((batch,), 2.0 * self.eps, device=x.device)
        checkpoints = set(apgd_checkpoints(self.steps))
        last_check, increases = 0, torch.zeros(batch, device=x.device)
        eta_at_check, f_max_at_check = eta.clone(), f_max.clone()

        for k in range(self.steps):
            step = eta.view(shape) * direction(grad_k)
            z = self._project(x_k.float() + step, x)
            if k == 0:
                x_next = z  # x(1) = P_S(x(0) + eta * step direction): no momentum yet
            else:
                moved = x_k.float() + MOMENTUM * (z.float() - x_k.float())
                moved = moved + (1 - MOMENTUM) * (x_k.float() - x_prev.float())
                x_next = self._project(moved.to(x.dtype), x)
            score = self.gradient(loss_fn, x_next, labels)
            increases += (score.loss > f_k).float()
            x_prev, x_k, f_k, grad_k = x_k, x_next, score.loss, score.grad

            now_fooled = success_fn(score.logits, labels)
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
        return _Run(x_fooled, fooled, x_max, f_max)

    def _sparse_direction(self, grad: torch.Tensor, topk: torch.Tensor) -> torch.Tensor:
        # sign(grad) on the ceil(topk * d) largest |grad| coordinates, unit L1 norm.
        flat = grad.float().flatten(1)
        size = flat.abs()
        dims = flat.shape[1]
        count = (topk * dims).ceil().clamp(1, dims).long()
        threshold = size.sort(dim=1, descending=True).values.gather(1, (count - 1)[:, None])
        signs = flat.sign() * (size >= threshold)
        return (signs / signs.abs().sum(1, keepdim=True).clamp_min(1e-12)).view_as(grad)

    def _run_l1(self, x, labels, loss_fn, success_fn) -> _Run:
        shape = (-1, *([1] * (x.dim() - 1)))
        batch, dims = x.shape[0], x[0].numel()
        keep = lambda mask, a, b: torch.where(mask.view(shape), a, b)

        x_k = self._start(x)
        score = self.gradient(loss_fn, x_k, labels)
        fooled = success_fn(score.logits, labels)
        x_fooled = keep(fooled, x_k, x)
        f_max, x_max, grad_max, grad_k = score.loss, x_k, score.grad, score.grad

        eta = torch.full((batch,), float(self.eps), device=x.device)
        topk = torch.full((batch,), L1_TOPK_START, device=x.device)
        support_at_check = torch.full((batch,), float(dims), device=x.device)
        every = max(int(L1_CHECK_EVERY * self.steps), 1)

        for k in range(self.steps):
            step = eta.view(shape) * self._sparse_direction(grad_k, topk)
            x_k = self._project(x_k.float() + step, x)
            score = self.gradient(loss_fn, x_k, labels)
            grad_k = score.grad

            now_fooled = success_fn(score.logits, labels)
            x_fooled = keep(now_fooled, x_k, x_fooled)
            fooled |= now_fooled
            improved = score.loss > f_max
            f_max = torch.where(improved, score.loss, f_max)
            x_max = keep(improved, x_k, x_max)
            grad_max = keep(improved, grad_k, grad_max)

            if (k + 1) % every == 0:
                support = (x_max != x).flatten(1).sum(1).float()  # ||x_max - x||_0
                sparser = support / support_at_check < L1_SPARSER
                topk = support / dims / L1_TOPK_SHRINK
                eta = torch.where(sparser, torch.full_like(eta, self.eps), eta / L1_STEP_DECAY)
                eta = eta.clamp(self.eps / L1_STEP_FLOOR, self.eps)
                support_at_check = support
                x_k = keep(sparser, x_max, x_k)
                grad_k = keep(sparser, grad_max, grad_k)
        return _Run(x_fooled, fooled, x_max, f_max)

    # -- restarts ----------------------------------------------------------------------

    def _restarts(self, x, labels, loss_fn, success_fn, best) -> tuple:
        """``restarts`` runs on the samples not yet fooled, folded into ``best`` =
        (points, success, loss): a success is final; otherwise the highest loss wins."""
        x_best, success, loss_best = best
        shape = (-1, *([1] * (x.dim() - 1)))
        for _ in range(self.restarts):
            todo = (~success).nonzero().flatten()
            if todo.numel() == 0:
                break
            run = self._run(x[todo], labels[todo], loss_fn, success_fn)
            higher = ~run.success & (run.f_max > loss_best[todo])
            points = torch.where(
                run.success.view(shape),
                run.x_success,
                torch.where(higher.view(shape), run.x_max, x_best[todo]),
            )
            x_best = x_best.index_copy(0, todo, points.to(x_best.dtype))
            loss_best = loss_best.index_copy(
                0, todo, torch.where(higher, run.f_max, loss_best[todo])
            )
            success = success.index_copy(0, todo, run.success)
        return x_best, success, loss_best

    def _fresh(self, x: torch.Tensor) -> tuple:
        batch = x.shape[0]
        return (
            x.clone(),
            torch.zeros(batch, dtype=torch.bool, device=x.device),
            torch.full((batch,), -math.inf, device=x.device),
        )

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # labels: y, or [y, t] rows when targeted (loss and success then use t).
        labels = _targets.attack_labels(self, self.target, x, y)
        best = self._restarts(x, labels, self.loss_fn, _targets.succeeded, self._fresh(x))
        return best[0]


def _misclassified(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1) != labels[:, 0]


class APGDT(APGD):
    """APGD-T (Croce & Hein, 2020, Sec. 4): APGD on the targeted DLR loss
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, run once per target class ``t``
    among the ``n_target_classes`` most likely wrong classes (ranked by the clean logits,
    averaged over the ``eot`` draws; at most K - 1), each with ``restarts`` runs.

    Its goal is untargeted: a sample counts as fooled when misclassified, and keeps its
    first success; the following targets only run on the samples still standing. A
    sample never fooled gets its highest targeted-DLR point over all targets and runs.
    Needs a model with at least 4 classes.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        eot: int = 20,
        rho: float = 0.75,
        *,
        norm: str = "linf",
        n_target_classes: int = 9,
        restarts: int = 1,
        random_start: bool = True,
        eot_chunk: int | None = None,
        clip: Sequence[float] = (0.0, 1.0),
        compile: bool | str = False,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(
            model,
            eps,
            loss="dlr",
            steps=steps,
            eot=eot,
            rho=rho,
            norm=norm,
            restarts=restarts,
            random_start=random_start,
            eot_chunk=eot_chunk,
            clip=clip,
            compile=compile,
            eval_mode=eval_mode,
        )
        self.n_target_classes = v.check_positive_int("n_target_classes", n_target_classes)
        self.loss_fn = _losses.get_loss("dlr", targeted=True)
        self.name = "apgd-t"

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clean = self.evaluate(_losses.cross_entropy, x, y)
        classes = clean.logits.shape[1]
        if classes < 4:
            raise ValueError(
                f"APGD-T's targeted DLR loss needs at least 4 classes, the model has {classes}"
            )
        ranked = _targets.ranked_other_classes(
            clean.logits, y, min(self.n_target_classes, classes - 1)
        )
        best = self._fresh(x)
        for rank in range(ranked.shape[1]):
            labels = _targets.pack(y, ranked[:, rank])
            best = self._restarts(x, labels, self.loss_fn, _misclassified, best)
        return best[0]
