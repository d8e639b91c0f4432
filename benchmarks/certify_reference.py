"""Cohen et al. 2019, Algorithm 1 (CERTIFY), written as their released code runs it: one
image at a time, each batch made with ``x.repeat`` plus ``torch.randn_like`` noise, the
batch's predicted classes counted on the host. The baseline of
``test_bench_certify.py``; ``tests/test_certify.py`` checks fastnoise's ``Smooth`` against
it, so baseline and fast path never drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fastnoise.certify import ABSTAIN, certified_radius, lower_confidence_bound


def reference_certify(
    model: nn.Module,
    x: torch.Tensor,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    sigma: float,
    num_classes: int,
) -> tuple[int, float]:
    """CERTIFY for one image ``(C, H, W)`` in eager PyTorch: (class, radius) or (-1, 0.0)."""
    selection = _counts(model, x, n0, batch_size, sigma, num_classes)
    top = int(selection.argmax())
    n_a = int(_counts(model, x, n, batch_size, sigma, num_classes)[top])
    p_a_lower = lower_confidence_bound(n_a, n, alpha)
    if p_a_lower < 0.5:
        return ABSTAIN, 0.0
    return top, certified_radius(p_a_lower, sigma)


def _counts(model, x, num, batch_size, sigma, num_classes) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=np.int64)
    with torch.no_grad():
        remaining = num
        while remaining > 0:
            rows = min(batch_size, remaining)
            remaining -= rows
            batch = x.repeat((rows, 1, 1, 1))
            noise = torch.randn_like(batch) * sigma
            predictions = model(batch + noise).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
    return counts
