"""SPSA, the gradient-free L-inf attack of Uesato et al. (2018), "Adversarial risk and
the dangers of evaluating against weak attacks".

The gradient is estimated from loss differences along random +-1 directions
(Spall's simultaneous perturbation): ``g ~= mean_j v_j (L(x + delta v_j) - L(x - delta v_j))
/ (2 delta)``. All images and all directions of a chunk go through the model in one
forward pass (``2 * B * chunk`` rows); the estimate drives Adam, followed by projection.
It needs no gradient of the model, so gradient masking cannot hide from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise import functional as fn
from fastnoise.attacks import _losses
from fastnoise.attacks.base import Attack
from fastnoise.attacks.eot import default_chunk

__all__ = ["SPSA", "spsa_gradient"]

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


@torch.no_grad()
def spsa_gradient(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    samples: int,
    delta: float,
    chunk: int | None = None,
) -> torch.Tensor:
    """SPSA estimate of the gradient of ``objective`` at each sample of ``x``.

    ``objective`` maps ``(B, M, *sample)`` points to ``(B, M)`` values (M points per
    image). ``chunk`` directions per image are evaluated per call, antithetic pairs
    ``x +- delta * v`` in the same call. Returns a float32 tensor of x's shape.
    """
    batch = x.shape[0]
    if chunk is None:
        chunk = max(1, default_chunk(x) // max(1, 2 * batch))
    estimate = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    xf = x.float().unsqueeze(1)
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        directions = torch.randint(0, 2, (batch, n, *x.shape[1:]), device=x.device) * 2.0 - 1.0
        points = torch.cat([xf + delta * directions, xf - delta * directions], dim=1)
        values = objective(points.to(x.dtype)).float()
        slope = (values[:, :n] - values[:, n:]) / (2 * delta)
        estimate += (slope.view(batch, n, *([1] * (x.dim() - 1))) * directions).sum(1)
        done += n
    return estimate / samples


class SPSA(Attack):
    """Gradient-free L-inf attack: SPSA gradient estimates, Adam ascent on the margin
    loss ``max_{i != y} z_i - z_y``, projection on the eps-ball and the box.

    Images that become misclassified stop early (``early_stop``) and keep that point.
    ``chunk`` directions per image per forward pass (None: :func:`.eot.default_chunk`).
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
        early_stop: bool = True,
        random_start: bool = True,
        clip: Sequence[float] = (0.0, 1.0),
        compile: bool | str = False,
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, eps, clip=clip, compile=compile, eval_mode=eval_mode)
        self.steps = v.check_positive_int("steps", steps)
        self.samples = v.check_positive_int("samples", samples)
        self.delta = v.check_non_negative_number("delta", delta)
        if self.delta == 0:
            raise ValueError("delta must be > 0 (the finite-difference step)")
        self.lr = v.check_non_negative_number("lr", lr)
        self.chunk = None if chunk is None else v.check_positive_int("chunk", chunk)
        self.early_stop = bool(early_stop)
        self.random_start = bool(random_start)

    def _margin(self, points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # (B, M, *sample) -> (B, M): one forward over all B * M points.
        batch, m = points.shape[:2]
        logits = self.forward(points.flatten(0, 1))
        return _losses.margin(logits, y.repeat_interleave(m)).view(batch, m)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = fn.random_start(x, self.eps, clip=self.clip) if self.random_start else x.clone()
        m = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        s = torch.zeros_like(m)
        active = torch.arange(x.shape[0], device=x.device)
        beta1, beta2 = _ADAM_BETAS
        for step in range(1, self.steps + 1):
            if self.early_stop:
                fooled = self._margin(x_adv[active].unsqueeze(1), y[active]).squeeze(1) > 0
                active = active[~fooled]
                if active.numel() == 0:
                    break
            xa, ya = x_adv[active], y[active]
            grad = spsa_gradient(
                partial(self._margin, y=ya), xa, self.samples, self.delta, self.chunk
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
