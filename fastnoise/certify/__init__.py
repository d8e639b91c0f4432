"""Certified robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019).

``Smooth(model, num_classes, sigma).certify(x, n0, n, alpha, batch_size)`` gives each
image a class and an L2 radius within which the smoothed classifier provably keeps it
(with probability 1 - alpha); ``predict`` gives the class or abstains. The noise is
fastnoise's (seeded Philox, fused into the copy of the input), batched across images.
``fastnoise certify`` runs it on a checkpoint and writes the report.
"""

from fastnoise.certify.bounds import (
    abstain_p_value,
    certified_radius,
    lower_confidence_bound,
    max_radius,
)
from fastnoise.certify.report import (
    CertifiedImage,
    CertifyReport,
    certified_accuracy,
    radius_grid,
)
from fastnoise.certify.smooth import ABSTAIN, Smooth

__all__ = [
    "ABSTAIN",
    "CertifiedImage",
    "CertifyReport",
    "Smooth",
    "abstain_p_value",
    "certified_accuracy",
    "certified_radius",
    "lower_confidence_bound",
    "max_radius",
    "radius_grid",
]
