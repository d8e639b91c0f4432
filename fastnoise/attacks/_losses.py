"""Per-sample attack losses on logits: each returns a ``(N,)`` float32 tensor to *maximize*.

Untargeted losses take the true labels ``y``; targeted ones (:func:`get_loss` with
``targeted=True``) take ``(N, 2)`` rows ``[y, t]`` (:func:`fastnoise.attacks.targets.pack`)
and grow as the logits move toward the target class ``t``."""

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


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR, Croce & Hein (2020, Sec. 4, the targeted version of Eq. (5)):
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` with z sorted in decreasing order.
    Maximizing it raises the target's logit above the true one; like DLR it is invariant
    to shifting and scaling the logits."""
    if logits.shape[1] < 4:
        raise ValueError(
            f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}"
        )
    z = logits.float()
    z_sorted = z.sort(dim=1, descending=True).values
    gap = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, target[:, None]).squeeze(1)
    scale = z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3])
    return -gap / (scale + 1e-12)


def _targeted_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Minimizing the cross-entropy toward t is maximizing its negative.
    return -cross_entropy(logits, labels[:, 1])


def _targeted_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # z_t - max_{i != t} z_i: positive exactly when the model predicts the target.
    return -margin(logits, labels[:, 1])


def _targeted_dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return dlr_targeted(logits, labels[:, 0], labels[:, 1])


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}
TARGETED_LOSSES = {"ce": _targeted_ce, "margin": _targeted_margin, "dlr": _targeted_dlr}


def get_loss(name: str, targeted: bool = False):
    """The loss called ``name``; with ``targeted`` its version toward a target class,
    taking packed ``[y, t]`` labels."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return TARGETED_LOSSES[name] if targeted else LOSSES[name]
