"""The common base of fastnoise's stochastic layers."""

from __future__ import annotations

from torch import nn


class NoiseLayer(nn.Module):
    """A layer that samples fresh noise at every forward, in training AND in eval mode.

    Randomness at inference is the defense (Learn2Perturb Sec. 3, PNIL Sec. 6), so
    ``model.eval()`` does not switch it off. ``enabled = False`` does: the layer becomes
    the identity (used for the noise-free warm-up epochs).

    ``draws_per_row``: every row of a batch gets its own draw (True for the activation
    layers); False for noise drawn once per forward (PNI-W weights), whose rows share it,
    so EOT must run its copies as separate passes (fastnoise.attacks.eot).
    """

    draws_per_row: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    def _enabled_repr(self) -> str:
        return "" if self.enabled else ", enabled=False"
