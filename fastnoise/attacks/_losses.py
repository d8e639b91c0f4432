"""Per-sample attack losses on logits: each returns a ``(N,)`` float32 tensor to *maximize*."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def _true_and_best_other(
    logits: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    # Mask the true class with -inf so the max runs over the other classes only.
    others = z.scatter(1, y[:, None], float("-inf"))
    return true, others.amax(dim=1)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{i != y} z_i - z_y``: positive exactly when the sample is misclassified.

    The logit-difference loss of Carlini & Wagner (2017) f_6 and Uesato et al. (2018)."""
    true, best_other = _true_and_best_other(logits, y)
    return best_other - true


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio, Croce & Hein (2020) Eq. (5):
    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with z sorted in decreasing order.
    Shift- and scale-invariant in the logits, so it cannot be masked by rescaling."""
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    z_sorted = logits.float().sort(dim=1, descending=True).values
    return margin(logits, y) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name]
