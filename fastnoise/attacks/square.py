"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"), L-inf and L2.

A score-based black-box attack: random search on the margin loss ``z_y - max_{k != y}
z_k`` (minimized; fastnoise's :func:`._losses.margin` is its negative, maximized here).
Each iteration (the paper's Algorithm 1) draws one random square-shaped update of the
current point, projects it onto the eps-ball and the pixel box, and keeps it only when
the loss improves. One iteration costs one query per image; the initial point costs one.

* Schedule: the fraction ``p`` of pixels an update changes starts at ``p_init`` and is
  halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10,000
  query budget, the breakpoints rescaled linearly to the budget ``queries``
  (:func:`p_schedule`). The square's side is the integer closest to ``sqrt(p H W)``.
* L-inf (Sec. 3.1, Algorithm 2): the start is vertical stripes, each column of each
  channel at ``x +- eps`` (random sign); an update adds ``+-2 eps`` (one random sign per
  channel) on an ``h x h`` window at a random position, so after the projection every
  pixel of the window sits on a vertex of the ball.
* L2 (Sec. 3.2, Algorithm 3): the update moves the perturbation mass of two random
  ``h x h`` windows W1, W2 (plus an equal share per channel of the budget left unused,
  ``eps**2 - ||delta||**2``) into W1, along ``rho * eta + delta_W1 / ||delta_W1||``
  (``rho`` a random sign per channel), and zeroes W2. ``eta`` is the meta pattern: two
  halves with opposite signs, each nested rectangles with weights ``sum_{k >= d} 1 /
  (k + 1)**2`` at Chebyshev distance ``d`` from the half's centre, randomly transposed.
  The start tiles the image with a 5 x 5 grid of such patterns (a random sign per tile
  and channel) scaled to norm ``eps``.

On a randomized model (Learn2Perturb, PNIL) each candidate's loss is the mean over
``eot`` noise draws (Expectation over Transformation), and an update is accepted only
when that mean improves. All candidates of all unfinished images, with all their copies,
go through one batched forward per iteration (:func:`.eot._copies_pass`; noise drawn once
per pass, PNI-W, runs the copies as separate passes). An image stops only when its
accepted point is misclassified on all ``eot`` draws and then on ``stop_draws`` fresh
independent draws, so one lucky draw does not end its attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.attacks import _losses
from fastnoise.attacks.base import Attack
from fastnoise.attacks.eot import _copies_pass

__all__ = ["Square", "p_schedule", "side_length", "meta_pattern", "SCHEDULE_BREAKPOINTS"]

# Iterations (of a 10,000-query budget) at which p is halved; other budgets rescale them.
SCHEDULE_BREAKPOINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SCHEDULE_BUDGET = 10_000
_L2_MIN_SIDE = 3  # smallest L2 window, so that the meta pattern has both signs
_TINY = 1e-12


def p_schedule(p_init: float, iteration: int, queries: int) -> float:
    """Fraction of pixels changed at ``iteration`` of a ``queries`` budget: ``p_init``
    halved once for every breakpoint of :data:`SCHEDULE_BREAKPOINTS` strictly below
    ``floor(iteration * 10000 / queries)`` (the schedule rescaled to the budget)."""
    scaled = (iteration * SCHEDULE_BUDGET) // max(1, queries)
    halvings = sum(1 for b in SCHEDULE_BREAKPOINTS if scaled > b)
    return p_init / 2**halvings


def side_length(p: float, height: int, width: int, minimum: int = 1) -> int:
    """Side of the square window changing a fraction ``p`` of the ``height x width``
    pixels: the integer closest to ``sqrt(p * height * width)``, within
    ``[minimum, min(height, width)]``."""
    side = math.floor(math.sqrt(p * height * width) + 0.5)
    return max(min(side, height, width), min(minimum, height, width), 1)


def _nested_rectangles(rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) nested rectangles around the centre: at Chebyshev distance ``d`` the
    weight ``sum_{k=d}^{n} 1 / (k + 1)**2``, ``n = max(rows // 2, cols // 2)``."""
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols, dtype=torch.float64)
    n = max(rows // 2, cols // 2)
    weights = 1.0 / torch.arange(1, n + 2, dtype=torch.float64) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    dr = (torch.arange(rows) - rows // 2).abs()
    dc = (torch.arange(cols) - cols // 2).abs()
    return tail[torch.maximum(dr[:, None], dc[None, :])]


def _unit(t: torch.Tensor) -> torch.Tensor:
    norm = t.norm()
    return t / norm if norm > 0 else t


def meta_pattern(side: int) -> torch.Tensor:
    """The L2 update's ``side x side`` meta pattern (float64, unit L2 norm): the top
    ``side // 2`` rows are nested rectangles, the bottom rows the same with a minus
    sign, each half scaled to unit norm before the whole is."""
    top = _unit(_nested_rectangles(side // 2, side))
    bottom = _unit(_nested_rectangles(side - side // 2, side))
    return _unit(torch.cat([top, -bottom], dim=0))


def _windows(
    corner_r: torch.Tensor, corner_c: torch.Tensor, side: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window mask (B, 1, H, W) of the ``side x side`` squares at the given corners, and
    each pixel's row and column inside its window (B, H, 1) / (B, 1, W), clamped."""
    device = corner_r.device
    local_r = torch.arange(height, device=device)[None, :] - corner_r[:, None]
    local_c = torch.arange(width, device=device)[None, :] - corner_c[:, None]
    in_r = (local_r >= 0) & (local_r < side)
    in_c = (local_c >= 0) & (local_c < side)
    mask = (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)
    return mask, local_r.clamp(0, side - 1)[:, :, None], local_c.clamp(0, side - 1)[:, None, :]


def _random_patterns(batch: int, side: int, device, dtype) -> torch.Tensor:
    """(B, side, side) meta patterns, each transposed with probability 1/2."""
    pattern = meta_pattern(side).to(device=device, dtype=dtype)
    flip = torch.rand(batch, device=device) < 0.5
    return torch.where(flip[:, None, None], pattern.t(), pattern)


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


class Square(Attack):
    """Square Attack, the score-based black-box random search of Andriushchenko et al.
    (2020), L-inf (``norm="linf"``) or L2 (``norm="l2"``; "Linf"/"L2" are accepted).

    Args:
        model: the classifier; only its logits are used (no gradients).
        eps: radius of the L-inf or L2 ball (finite).
        norm: "linf" or "l2" (case-insensitive).
        queries: the query budget N per image: the initial point plus ``N - 1`` square
            updates, one candidate each (each candidate costs ``eot`` forward rows). The
            p schedule is rescaled to it.
        p_init: the initial fraction of pixels an update changes, in (0, 1].
        eot: noise draws each candidate's loss is averaged over; an update is accepted
            when the averaged margin loss improves.
        stop_draws: fresh independent draws that must all misclassify an accepted point
            flagged as a hit (misclassified on all its ``eot`` draws) before the image
            counts as fooled (None: ``eot``).
        early_stop: a confirmed hit ends the image's search and is its result. False
            runs every iteration for every image (fixed work); the result is still the
            first confirmed hit, else the best point found.
        eot_chunk, clip, compile, eval_mode: as for :class:`.base.Attack`.

    After each call, :attr:`last_queries` holds the forward rows each image used (its
    candidates times ``eot`` plus its confirmation draws; the separate-passes probe is
    not counted) and :attr:`last_fooled` whether a hit was confirmed.
    """

    name = "square"
    kind = "gradient-free"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        norm: str = "linf",
        queries: int = 5000,
        p_init: float = 0.8,
        *,
        eot: int = 1,
        stop_draws: int | None = None,
        early_stop: bool = True,
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
        if not math.isfinite(self.eps):
            raise ValueError(f"eps must be finite for the Square attack, got {eps}")
        if not isinstance(norm, str) or norm.lower() not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2' ('Linf'/'L2' accepted), got {norm!r}")
        self.norm = norm.lower()
        self.queries = v.check_positive_int("queries", queries)
        self.p_init = v.check_non_negative_number("p_init", p_init)
        if not 0 < self.p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.stop_draws = (
            self.eot if stop_draws is None else v.check_positive_int("stop_draws", stop_draws)
        )
        if not isinstance(early_stop, bool):
            raise TypeError(f"early_stop must be a bool, got {type(early_stop).__name__}")
        self.early_stop = early_stop
        self.last_queries: torch.Tensor | None = None
        self.last_fooled: torch.Tensor | None = None

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", queries={self.queries})"

    # -- losses --------------------------------------------------------------------

    def _margins(
        self, points: torch.Tensor, y: torch.Tensor, draws: int, separate: bool
    ) -> torch.Tensor:
        """(B, draws) margins ``max_{k != y} z_k - z_y``, one per noise draw: the B * draws
        rows in one batched pass (chunked past ``eot_chunk`` rows), or ``draws`` passes
        when the model's rows share a draw."""
        result = _copies_pass(
            self.forward,
            _losses.margin,
            points,
            y,
            draws,
            self.eot_chunk,
            need_grad=False,
            keep_copies=True,
            separate=separate and draws > 1,
        )
        return result.loss

    # -- initializations -----------------------------------------------------------

    def _init_linf(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, _, width = x.shape
        signs = torch.randint(0, 2, (batch, channels, 1, width), device=x.device) * 2 - 1
        return (x + self.eps * signs.to(x.dtype)).clamp(*self.clip)

    def _init_l2(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        dtype = _work_dtype(x)
        tile = max(min(height, width) // 5, 1)
        rows, cols = min(5, height // tile), min(5, width // tile)
        top, left = (height - rows * tile) // 2, (width - cols * tile) // 2
        delta = torch.zeros(x.shape, dtype=dtype, device=x.device)
        for i in range(rows):
            for j in range(cols):
                pattern = _random_patterns(batch, tile, x.device, dtype)[:, None]
                sign = torch.randint(0, 2, (batch, channels, 1, 1), device=x.device) * 2 - 1
                r, c = top + i * tile, left + j * tile
                delta[:, :, r : r + tile, c : c + tile] += pattern * sign.to(dtype)
        norm = delta.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, 1, 1, 1)
        return (x.to(dtype) + delta * (self.eps / norm)).clamp(*self.clip).to(x.dtype)

    # -- updates -------------------------------------------------------------------

    def _candidate_linf(self, x_best: torch.Tensor, x: torch.Tensor, side: int) -> torch.Tensor:
        batch, channels, height, width = x.shape
        corner_r = torch.randint(0, height - side + 1, (batch,), device=x.device)
        corner_c = torch.randint(0, width - side + 1, (batch,), device=x.device)
        mask, _, _ = _windows(corner_r, corner_c, side, height, width)
        rho = torch.randint(0, 2, (batch, channels, 1, 1), device=x.device) * 2 - 1
        step = mask * (2 * self.eps) * rho
        moved = x_best + step.to(x.dtype)
        return torch.minimum(torch.maximum(moved, x - self.eps), x + self.eps).clamp(*self.clip)

    def _candidate_l2(self, x_best: torch.Tensor, x: torch.Tensor, side: int) -> torch.Tensor:
        batch, channels, height, width = x.shape
        dtype = _work_dtype(x)
        device = x.device
        corners = [
            torch.randint(0, limit - side + 1, (batch,), device=device)
            for limit in (height, width, height, width)
        ]
        mask1, local_r, local_c = _windows(corners[0], corners[1], side, height, width)
        mask2, _, _ = _windows(corners[2], corners[3], side, height, width)
        patterns = _random_patterns(batch, side, device, dtype)
        index = torch.arange(batch, device=device)[:, None, None]
        eta = (patterns[index, local_r, local_c].unsqueeze(1)) * mask1  # (B, 1, H, W), unit
        rho = (torch.randint(0, 2, (batch, channels, 1, 1), device=device) * 2 - 1).to(dtype)

        nu = x_best.to(dtype) - x.to(dtype)
        union = mask1 | mask2
        nu_w1 = nu * mask1
        n1 = nu_w1.flatten(2).norm(dim=2)[..., None, None]  # (B, C, 1, 1)
        own = torch.where(n1 > _TINY, nu_w1 / n1.clamp_min(_TINY), torch.zeros_like(nu_w1))
        direction = rho * eta + own
        direction = direction / direction.flatten(2).norm(dim=2).clamp_min(_TINY)[..., None, None]
        unused = (self.eps**2 - nu.flatten(1).pow(2).sum(1)).clamp_min(0.0)  # (B,)
        mass = (nu * union).flatten(2).pow(2).sum(2)  # (B, C)
        available = (mass + unused[:, None] / channels).sqrt()[..., None, None]
        new = nu * ~union + direction * available
        # ||new|| = eps exactly in exact arithmetic; the scale only absorbs rounding.
        norm = new.flatten(1).norm(dim=1).clamp_min(_TINY)
        new = new * (self.eps / norm).clamp(max=1.0).view(-1, 1, 1, 1)
        return (x.to(dtype) + new).clamp(*self.clip).to(x.dtype)

    # -- the search ----------------------------------------------------------------

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"x must be images (N, C, H, W) for the Square attack, got {tuple(x.shape)}"
            )
        batch, _, height, width = x.shape
        device = x.device
        separate = self.eot > 1 and self.separate_passes(x)
        queries = torch.zeros(batch, dtype=torch.long, device=device)
        found = torch.zeros(batch, dtype=torch.bool, device=device)
        x_adv = x.clone()

        x_best = self._init_linf(x) if self.norm == "linf" else self._init_l2(x)
        margins = self._margins(x_best, y, self.eot, separate)
        queries += self.eot
        best = margins.mean(1)
        flagged = (margins > 0).all(1)
        active = torch.arange(batch, device=device)
        minimum = 1 if self.norm == "linf" else _L2_MIN_SIDE
        candidate = self._candidate_linf if self.norm == "linf" else self._candidate_l2

        for iteration in range(1, self.queries + 1):
            # A flagged point (misclassified on all its eot draws) counts as a hit only
            # once stop_draws fresh draws confirm it; a failed confirmation drops the flag.
            check = active[flagged[active] & ~found[active]]
            if check.numel():
                fresh = self._margins(x_best[check], y[check], self.stop_draws, separate)
                queries[check] += self.stop_draws
                hit = check[(fresh > 0).all(1)]
                x_adv[hit] = x_best[hit]
                found[hit] = True
                flagged[check] = False
            if self.early_stop:
                active = active[~found[active]]
            if active.numel() == 0 or iteration == self.queries:
                break
            p = p_schedule(self.p_init, iteration, self.queries)
            side = side_length(p, height, width, minimum)
            xa = x[active]
            trial = candidate(x_best[active], xa, side)
            margins = self._margins(trial, y[active], self.eot, separate)
            queries[active] += self.eot
            mean = margins.mean(1)
            better = mean > best[active]  # Algorithm 1, line 7: strict improvement
            improved = active[better]
            x_best[improved] = trial[better]
            best[improved] = mean[better]
            flagged[improved] = (margins[better] > 0).all(1)

        x_adv[~found] = x_best[~found]
        self.last_queries = queries
        self.last_fooled = found
        return x_adv
