"""Gaussian data augmentation (Cohen, Rosenfeld & Kolter 2019, Sec. 3 "Training the base
classifier"): the base classifier of a smoothed classifier is trained on x + eps,
eps ~ N(0, sigma^2 I), with the sigma it will be certified at.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastnoise.functional import inject_noise
from fastnoise.train.methods import TrainingMethod

__all__ = ["GaussianAugmentation"]


class GaussianAugmentation(TrainingMethod):
    """Cross-entropy on noisy copies of the batch, noise in pixel units (the models
    normalize inside, so sigma means what ``fastnoise certify --sigma`` means). The noise
    comes from torch's generator: seeded by the trainer and restored on resume."""

    def train_step(self, x, y, epoch):
        noisy = inject_noise(x, self.config.sigma)
        self._zero_grad()
        logits = self._forward(self.train_forward, noisy).float()
        loss = F.cross_entropy(logits, y)
        self._backward(loss)
        self._step(self.optimizers["weights"])
        self._finish()
        return {
            "loss": loss.detach(),
            "clean_correct": self._clean_correct(x, y),  # eval mode, no noise
            "n": torch.tensor(y.numel(), device=y.device),
        }
