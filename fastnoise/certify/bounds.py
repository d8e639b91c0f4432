"""The statistics of Cohen, Rosenfeld & Kolter 2019 (randomized smoothing), from scipy.

All three take plain counts (already on the host) and return floats.
"""

from __future__ import annotations

from scipy.stats import binomtest, norm

__all__ = ["abstain_p_value", "lower_confidence_bound", "certified_radius", "max_radius"]


def abstain_p_value(top_count: int, runner_up_count: int) -> float:
    """PREDICT's test (Cohen et al. Algorithm 1, BinomPValue): two-sided p-value of
    ``top_count`` successes in ``top_count + runner_up_count`` trials at p = 1/2."""
    trials = top_count + runner_up_count
    if trials == 0:  # no sample landed in either class: nothing tells them apart
        return 1.0
    return float(binomtest(top_count, trials, 0.5, alternative="two-sided").pvalue)


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """CERTIFY's LowerConfBound (Algorithm 1): the one-sided (1 - alpha) Clopper-Pearson
    lower bound on p_A, i.e. the lower end of the two-sided (1 - 2 alpha) exact interval."""
    interval = binomtest(successes, trials).proportion_ci(1 - 2 * alpha, method="exact")
    return float(interval.low)


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """Theorem 1 with p_B = 1 - p_A: R = sigma * Phi^-1(p_A_lower) (L2, pixel units)."""
    return float(sigma * norm.ppf(p_a_lower))


def max_radius(n: int, alpha: float, sigma: float) -> float:
    """The largest radius CERTIFY can return with n samples: every sample votes for the
    class, so p_A_lower = alpha ** (1 / n) (the Clopper-Pearson bound at n of n)."""
    return certified_radius(lower_confidence_bound(n, n, alpha), sigma)
