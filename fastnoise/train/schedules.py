"""Schedules as pure functions of the training position: nothing to save but the step.

A function of (epoch, step) resumes exactly by construction, which a stateful scheduler
object only does if its state is saved and restored in the right order.
"""

from __future__ import annotations

import math

from fastnoise.train.config import TrainConfig

__all__ = ["harmonic_tau", "learning_rate", "noise_enabled"]


def learning_rate(config: TrainConfig, base_lr: float, epoch: int, step: int, steps: int) -> float:
    """Learning rate for batch ``step`` (of ``steps``) in 0-based ``epoch``."""
    t = epoch + step / max(steps, 1)  # fractional epoch
    if config.lr_schedule == "constant":
        return base_lr
    if config.lr_schedule == "multistep":
        # Learn2Perturb A.4: 0.1 -> 0.01 at epoch 150 -> 0.001 at epoch 250 (per epoch)
        drops = sum(1 for m in config.milestones if epoch >= m)
        return base_lr * config.lr_gamma**drops
    low = config.lr_min * base_lr / config.lr if config.lr > 0 else 0.0
    if config.lr_schedule == "cyclic":
        # Smith's triangular cyclical lr (PNIL Sec. 4.4): lr_min -> lr -> lr_min, repeating
        half = max(config.cycle_epochs, 1e-12)
        phase = (t / half) % 2.0
        frac = phase if phase <= 1.0 else 2.0 - phase
        return low + (base_lr - low) * frac
    # "triangle": Wong et al. 2020, one cycle 0 -> lr at 2/5 of training -> 0
    peak = 0.4 * config.epochs
    if t <= peak:
        return low + (base_lr - low) * t / peak
    return low + (base_lr - low) * max(0.0, (config.epochs - t) / (config.epochs - peak))


def noise_enabled(config: TrainConfig, epoch: int) -> bool:
    """Learn2Perturb keeps the perturbation-injection modules off while W warms up."""
    return epoch >= config.noise_off_epochs


def harmonic_tau(epoch: int, noise_start: int) -> float:
    """Eq. (9) as intended: tau = H(t - s + 1) = sum_{k=1}^{t-s+1} 1/k for 0-based epoch t
    and first noise epoch s, so the first noise epoch has tau = H(1) = 1.

    Eq. (9) as printed, sum_{i=s}^{t} 1/(i - s - 1), gives -1 at i = s and divides by zero
    at i = s + 1 (the released code has the same zero division); the text ("the output of
    a harmonic series given the epoch") and Eq. (8)'s annealing need the positive series.
    """
    if epoch < noise_start:
        raise ValueError(
            f"tau is undefined before noise starts (epoch {epoch} < noise_start {noise_start})"
        )
    n = epoch - noise_start + 1
    return math.fsum(1.0 / k for k in range(1, n + 1))
