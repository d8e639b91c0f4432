"""The training forward over several batches (clean and adversarial) in one module call.

DDP allows one forward call per backward. Wrapping the model in :class:`TrainForward` and
DDP around that keeps it so while the clean and the adversarial batch go through the model
in two passes, each normalized by BatchNorm with its own statistics, as in the released
PNI and Learn2Perturb code. ``concatenate=True`` is one pass over ``cat(batches)`` instead,
where BatchNorm normalizes the mixed batch.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TrainForward"]


class TrainForward(nn.Module):
    """``forward(x)`` is ``model(x)``; ``forward(*batches)`` returns the model's logits
    for each batch, as a tuple."""

    def __init__(self, model: nn.Module, concatenate: bool = False) -> None:
        super().__init__()
        self.model = model
        self.concatenate = concatenate

    def forward(self, *batches: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(batches) == 1:
            return self.model(batches[0])
        if self.concatenate:
            logits = self.model(torch.cat(batches))
            return tuple(logits.split([len(b) for b in batches]))
        return tuple(self.model(b) for b in batches)

    def extra_repr(self) -> str:
        return f"concatenate={self.concatenate}"
