"""The smoothed classifier g(x) = argmax_c P(f(x + eps) = c), eps ~ N(0, sigma^2 I), with
PREDICT and CERTIFY from Cohen, Rosenfeld & Kolter 2019 ("Certified Adversarial
Robustness via Randomized Smoothing"), Algorithm 1.

Both take one image ``(C, H, W)`` (and return Python numbers) or a batch
``(B, C, H, W)`` (and return CPU tensors, one entry per image). All counting stays on
the device; each call waits for it once, at the end, to run the tests on the host.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise import rng
from fastnoise.certify.bounds import (
    abstain_p_value,
    certified_radius,
    lower_confidence_bound,
)
from fastnoise.certify.sampling import NoiseStream, count_predictions

__all__ = ["ABSTAIN", "Smooth", "check_certify_arguments", "check_sigma"]

ABSTAIN = -1
AMP_MODES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Smooth:
    """Randomized smoothing of ``model`` (a base classifier returning logits for
    ``num_classes`` classes) with Gaussian noise of std ``sigma`` in pixel units.

    ``compile=True`` runs the base classifier through ``torch.compile``; ``amp="bf16"``
    (or ``"fp16"``, CUDA only) runs it under autocast. Both are opt-in: they change the
    base classifier's arithmetic, so a certificate is for the classifier as run.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        sigma: float,
        *,
        compile: bool = False,
        amp: str | None = None,
    ):
        check_sigma(sigma)
        v.check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if amp is not None and amp not in AMP_MODES:
            raise ValueError(f"amp must be None or one of {sorted(AMP_MODES)}, got {amp!r}")
        self.model = model
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.amp = amp
        self._classify = torch.compile(model) if compile else model
        self._output_checked = False

    # -- Algorithm 1 ----------------------------------------------------------------------
    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        seed: int | None = None,
    ) -> int | torch.Tensor:
        """PREDICT: the top class of n noisy samples, or ABSTAIN (-1) unless a two-sided
        binomial test of the top two counts rejects p = 1/2 at level ``alpha``. It returns
        a class other than g(x) with probability at most alpha (Proposition 1)."""
        images, single = _as_batch(x)
        v.check_positive_int("n", n)
        _check_alpha(alpha)
        v.check_positive_int("batch_size", batch_size)
        noise = NoiseStream(rng.draw_seed(seed))
        counts = self._counts(images, n, batch_size, noise)
        top = counts.topk(2, dim=1)
        top_counts, top_classes = top.values.cpu(), top.indices.cpu()  # the one wait
        predictions = torch.full((len(images),), ABSTAIN, dtype=torch.int64)
        for i, ((count_a, count_b), class_a) in enumerate(
            zip(top_counts.tolist(), top_classes[:, 0].tolist(), strict=True)
        ):
            if abstain_p_value(count_a, count_b) <= alpha:
                predictions[i] = class_a
        return int(predictions[0]) if single else predictions

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        seed: int | None = None,
    ) -> tuple[int, float] | tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY: guess the top class c_A from n0 samples, count it in n fresh samples,
        and return (c_A, sigma * Phi^-1(p_A_lower)) with p_A_lower the one-sided (1 - alpha)
        Clopper-Pearson bound, or (ABSTAIN, 0.0) when p_A_lower < 1/2. With probability at
        least 1 - alpha the smoothed classifier is constant within that L2 radius
        (Proposition 2; the radius is Theorem 1's with p_B = 1 - p_A)."""
        images, single = _as_batch(x)
        check_certify_arguments(n0, n, alpha, batch_size)
        noise = NoiseStream(rng.draw_seed(seed))
        guess = self._counts(images, n0, batch_size, noise).argmax(1)  # ties: lowest class
        estimate = self._counts(images, n, batch_size, noise)  # fresh draws: offsets advanced
        count_a = estimate.gather(1, guess[:, None])[:, 0]
        guess, count_a = guess.cpu(), count_a.cpu()  # the one wait
        predictions = torch.full((len(images),), ABSTAIN, dtype=torch.int64)
        radii = torch.zeros(len(images), dtype=torch.float64)
        for i, (class_a, n_a) in enumerate(zip(guess.tolist(), count_a.tolist(), strict=True)):
            p_a_lower = lower_confidence_bound(n_a, n, alpha)
            if p_a_lower >= 0.5:
                predictions[i] = class_a
                radii[i] = certified_radius(p_a_lower, self.sigma)
        if single:
            return int(predictions[0]), float(radii[0])
        return predictions, radii

    # -- sampling -------------------------------------------------------------------------
    def _counts(
        self, images: torch.Tensor, num: int, batch_size: int, noise: NoiseStream
    ) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return count_predictions(
                self._forward, images, num, self.num_classes, self.sigma, batch_size, noise
            )

    def _forward(self, noisy: torch.Tensor) -> torch.Tensor:
        with self._autocast(noisy.device):
            logits = self._classify(noisy)
        if not self._output_checked:  # once per Smooth: a check that waits on the device
            _check_output(logits, len(noisy), self.num_classes)
            self._output_checked = True
        return logits

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        if self.amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        return torch.autocast(device.type, dtype=AMP_MODES[self.amp])


def _as_batch(x: object) -> tuple[torch.Tensor, bool]:
    """``(B, C, H, W)`` images and whether the caller gave a single ``(C, H, W)`` one."""
    v.check_tensor("x", x)
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() == 4:
        return x, False
    raise ValueError(f"x must be one image (C, H, W) or a batch (B, C, H, W), got {tuple(x.shape)}")


def check_certify_arguments(n0: int, n: int, alpha: float, batch_size: int) -> None:
    """CERTIFY's arguments, each error naming the one at fault."""
    v.check_positive_int("n0", n0)
    v.check_positive_int("n", n)
    if n0 > n:
        raise ValueError(
            f"n0 ({n0}) must be <= n ({n}): n0 samples only pick the class, the n "
            "samples estimate its probability (Cohen et al. use n0 = 100, n = 100000)"
        )
    _check_alpha(alpha)
    v.check_positive_int("batch_size", batch_size)


def check_sigma(sigma: object) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a number, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be > 0 (the noise std in pixel units), got {sigma}")


def _check_alpha(alpha: object) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (the failure probability), got {alpha}")


# Rows that are all >= 0 and sum to 1 within this: a softmax, not logits.
_PROBABILITY_SUM_TOLERANCE = 1e-3


def _check_output(logits: torch.Tensor, rows: int, num_classes: int) -> None:
    if logits.dim() != 2 or tuple(logits.shape) != (rows, num_classes):
        raise ValueError(
            f"the model must return logits of shape (batch, num_classes) = ({rows}, "
            f"{num_classes}), got {tuple(logits.shape)}"
        )
    scores = logits.detach().float()
    sums = scores.sum(1)
    if bool((scores >= 0).all()) and bool(((sums - 1).abs() <= _PROBABILITY_SUM_TOLERANCE).all()):
        warnings.warn(
            "the model returns probabilities (every row is non-negative and sums to 1), not "
            "logits; smoothing only counts the argmax, so the certificate still holds, but "
            "ties between saturated probabilities (e.g. under amp) go to the lowest class. "
            "Pass the model without its final softmax.",
            stacklevel=4,
        )
