"""SPSA, the gradient-free L-inf attack of Uesato et al. (2018), "Adversarial risk and
the dangers of evaluating against weak attacks".

The gradient is estimated from loss differences along random +-1 directions
(Spall's simultaneous perturbation): ``g ~= mean_j v_j (L(x + delta v_j) - L(x - delta v_j))
/ (2 delta)``; the estimate drives Adam, followed by projection. It needs no gradient of
the model, so gradient masking cannot hide from it: the PNIL paper (Sec. 4.3) tests its
models for gradient obfuscation with SPSA "adjusted to work with the EOT method".

On a randomized model (Learn2Perturb, PNIL) each loss is an expectation over the noise:

* ``eot``: every direction's two losses are means over ``eot`` noise draws (Expectation
  over Transformation, Athalye et al., 2018), copies batched as rows of one pass.
* common random numbers (``common_noise``): ``L(x + delta v)`` and ``L(x - delta v)`` see
  the same draws, so the difference measures the step, not two independent draws of
  noise (whose spread, divided by ``2 delta``, would swamp the estimate). Each pair gets
  fresh noise; different EOT copies of a pair get different draws.
* early stop (``stop_draws``): an image stops only once ``stop_draws`` independent draws
  all misclassify it, not on one lucky draw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise import functional as fn
from fastnoise import rng
from fastnoise.attacks import _losses
from fastnoise.attacks.base import Attack
from fastnoise.attacks.eot import default_chunk

__all__ = ["SPSA", "spsa_gradient"]

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8

Objective = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def _noise_from(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's default generators seeded with ``seed``, then put their
    states back. The CPU generator is the one fastnoise's layers draw their per-forward
    seed from (eager and C++ paths); for CUDA inputs the device's generator is seeded too
    (compiled/captured fastnoise ops and torch's own random ops draw from it)."""
    cpu_state = torch.get_rng_state()
    cuda = None
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        cuda = torch.cuda.default_generators[index]
        cuda_state = cuda.get_state()
        cuda.manual_seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda is not None:
            cuda.set_state(cuda_state)


def _pair_difference(
    objective: Objective, plus: torch.Tensor, minus: torch.Tensor, common_noise: bool
) -> torch.Tensor:
    """``objective(plus) - objective(minus)``, (B, M) float32.

    Common noise: the + and - points run as two passes of the same shape from the same
    fresh seed. Noise is drawn per element of a pass (fastnoise: Philox counters from one
    seed per forward), so row r of both passes sees the same draw, while the rows of one
    pass (the EOT copies) differ. One batched pass of both halves cannot share noise that
    way: its + and - rows sit at different elements. The pair's seed is one draw from
    torch's default generator, which so moves on by one draw per pair (the next pair gets
    fresh noise). Both passes run on generators seeded from it, and the global generators
    get their states back afterwards, so nothing outside the pair replays its noise. This
    beats saving the state before the + pass and restoring it before the - pass: that
    leaves the stream wherever the - pass stopped, a replay if the passes drew unequally.

    Independent noise: one pass over both halves, each row its own draw.
    """
    if not common_noise:
        values = objective(torch.cat([plus, minus], dim=1)).float()
        return values[:, : plus.shape[1]] - values[:, plus.shape[1] :]
    seed = rng.draw_seed()
    with _noise_from(seed, plus.device):
        up = objective(plus).float()
    with _noise_from(seed, plus.device):
        down = objective(minus).float()
    return up - down


@torch.no_grad()
def spsa_gradient(
    objective: Objective,
    x: torch.Tensor,
    samples: int,
    delta: float,
    chunk: int | None = None,
    *,
    eot: int = 1,
    common_noise: bool = True,
    separate_passes: bool = False,
) -> torch.Tensor:
    """SPSA estimate of the gradient of ``objective`` at each sample of ``x``.

    ``objective`` maps ``(B, M, *sample)`` points to ``(B, M)`` values (M points per
    image). ``chunk`` directions per image are evaluated per call (None:
    :func:`.eot.default_chunk` rows over ``2 * eot`` evaluations per direction).

    ``eot``: each direction's value at ``x + delta v`` and at ``x - delta v`` is the mean
    over ``eot`` noise draws (copies repeated along M, copy ``l`` of direction ``j`` at
    ``j * eot + l``; ``separate_passes=True`` runs each copy as its own call instead, for
    noise drawn once per call). ``common_noise``: the + and - evaluations of a pair share
    their draws (common random numbers, see :func:`_pair_difference`); False draws them
    independently. Returns a float32 tensor of x's shape.
    """
    samples = v.check_positive_int("samples", samples)
    eot = v.check_positive_int("eot", eot)
    batch = x.shape[0]
    if chunk is None:
        chunk = max(1, default_chunk(x) // max(1, 2 * batch * eot))
    estimate = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    xf = x.float().unsqueeze(1)
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        directions = torch.randint(0, 2, (batch, n, *x.shape[1:]), device=x.device) * 2.0 - 1.0
        plus = (xf + delta * directions).to(x.dtype)
        minus = (xf - delta * directions).to(x.dtype)
        if separate_passes:
            diff = sum(_pair_difference(objective, plus, minus, common_noise) for _ in range(eot))
            diff = diff / eot
        elif eot > 1:
            plus, minus = plus.repeat_interleave(eot, 1), minus.repeat_interleave(eot, 1)
            diff = _pair_difference(objective, plus, minus, common_noise)
            diff = diff.view(batch, n, eot).mean(2)
        else:
            diff = _pair_difference(objective, plus, minus, common_noise)
        slope = diff / (2 * delta)
        estimate += (slope.view(batch, n, *([1] * (x.dim() - 1))) * directions).sum(1)
        done += n
    return estimate / samples


class SPSA(Attack):
    """Gradient-free L-inf attack: SPSA gradient estimates, Adam ascent on the margin
    loss ``max_{i != y} z_i - z_y``, projection on the eps-ball and the box.

    ``chunk`` directions per image per forward pass, each ``eot`` rows (None:
    :func:`.eot.default_chunk`). ``eot``: noise draws each direction's loss is averaged
    over (Athalye et al., 2018; the PNIL paper's SPSA with EOT). ``common_noise``: the +
    and - evaluations of each direction share their draws (common random numbers), so the
    finite difference is not dominated by noise; every pair gets fresh noise. Both only
    matter for randomized models.

    Early stop (``early_stop``): before each step, every unfinished image is evaluated on
    ``stop_draws`` independent noise draws (None: ``eot``) and stops, keeping that point,
    only when all of them misclassify it, so one lucky draw of a randomized model does not
    end its attack. A deterministic model needs ``stop_draws=1``.
    """

    name = "spsa"
    kind = "gradient-free"
    norm = "linf"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        samples: int = 2048,
        delta: float = 0.01,
        lr: float = 0.01,
        chunk: int | None = None,
        *,
        eot: int = 1,
        common_noise: bool = True,
        stop_draws: int | None = None,
        early_stop: bool = True,
        random_start: bool = True,
        clip: Sequence[float] = (0.0, 1.0),
        compile: bool | str = False,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, eps, eot=eot, clip=clip, compile=compile, eval_mode=eval_mode)
        self.steps = v.check_positive_int("steps", steps)
        self.samples = v.check_positive_int("samples", samples)
        self.delta = v.check_non_negative_number("delta", delta)
        if self.delta == 0:
            raise ValueError("delta must be > 0 (the finite-difference step)")
        self.lr = v.check_non_negative_number("lr", lr)
        self.chunk = None if chunk is None else v.check_positive_int("chunk", chunk)
        if not isinstance(common_noise, bool):
            raise TypeError(f"common_noise must be a bool, got {type(common_noise).__name__}")
        self.common_noise = common_noise
        self.stop_draws = (
            self.eot if stop_draws is None else v.check_positive_int("stop_draws", stop_draws)
        )
        self.early_stop = bool(early_stop)
        self.random_start = bool(random_start)

    def _margin(self, points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # (B, M, *sample) -> (B, M): one forward over all B * M points.
        batch, m = points.shape[:2]
        logits = self.forward(points.flatten(0, 1))
        return _losses.margin(logits, y.repeat_interleave(m)).view(batch, m)

    def _separate(self, x: torch.Tensor) -> bool:
        # Noise drawn once per forward (PNI-W) makes the rows of a pass share a draw: the
        # copies then need passes of their own. Attack.separate_passes decides, if present.
        decide = getattr(super(), "separate_passes", None)
        return bool(decide(x)) if decide is not None else False

    def _fooled(self, x: torch.Tensor, y: torch.Tensor, separate: bool) -> torch.Tensor:
        """(B,) bool: misclassified (margin > 0) on each of ``stop_draws`` independent draws."""
        k = self.stop_draws
        if separate:
            margins = torch.cat([self._margin(x.unsqueeze(1), y) for _ in range(k)], dim=1)
        else:
            margins = self._margin(x.unsqueeze(1).expand(-1, k, *x.shape[1:]), y)
        return (margins > 0).all(1)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = fn.random_start(x, self.eps, clip=self.clip) if self.random_start else x.clone()
        m = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        s = torch.zeros_like(m)
        active = torch.arange(x.shape[0], device=x.device)
        separate = self._separate(x)
        beta1, beta2 = _ADAM_BETAS
        for step in range(1, self.steps + 1):
            if self.early_stop:
                fooled = self._fooled(x_adv[active], y[active], separate)
                active = active[~fooled]
                if active.numel() == 0:
                    break
            xa, ya = x_adv[active], y[active]
            grad = spsa_gradient(
                partial(self._margin, y=ya),
                xa,
                self.samples,
                self.delta,
                self.chunk,
                eot=self.eot,
                common_noise=self.common_noise,
                separate_passes=separate,
            )
            # Adam ascent (Kingma & Ba, Algorithm 1), state kept per image.
            m[active] = beta1 * m[active] + (1 - beta1) * grad
            s[active] = beta2 * s[active] + (1 - beta2) * grad * grad
            m_hat = m[active] / (1 - beta1**step)
            s_hat = s[active] / (1 - beta2**step)
            moved = xa.float() + self.lr * m_hat / (s_hat.sqrt() + _ADAM_EPS)
            # Zero step: only the projection on the eps-ball around x and the box.
            x_adv[active] = fn.pgd_step(
                moved.to(x.dtype), moved, x[active], 0.0, self.eps, self.clip
            )
        return x_adv
