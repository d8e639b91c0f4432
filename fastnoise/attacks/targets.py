"""Target classes for targeted attacks, and the success test that goes with them.

A targeted attack (``targeted=True``) moves each sample toward a chosen class ``t != y``
and succeeds only when the model predicts ``t``. The target is given as

* a tensor of labels, one per sample (on the inputs' device, in ``[0, K)``, never the
  true label);
* ``"random"``: uniform among the ``K - 1`` wrong classes, drawn from torch's CPU
  generator (so ``torch.manual_seed`` fixes it, and a CPU and a GPU run agree): the
  "average case" target of Carlini & Wagner (2017);
* ``"least-likely"``: the wrong class with the lowest clean logit (averaged over the
  attack's ``eot`` noise draws), the "iterative least-likely class" target of Kurakin,
  Goodfellow & Bengio (2017, "Adversarial examples in the physical world").

Inside the attacks, targeted losses receive the labels packed as ``(N, 2)`` rows
``[y, t]`` (:func:`pack`), so a loss can use both and the batched EOT pass, which indexes
labels by sample, carries them unchanged.
"""

from __future__ import annotations

import torch

__all__ = [
    "TARGET_MODES",
    "attack_labels",
    "check_target",
    "least_likely_targets",
    "pack",
    "random_targets",
    "ranked_other_classes",
    "resolve_targets",
    "succeeded",
]

TARGET_MODES = ("random", "least-likely")
_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_target(targeted: object, target: object) -> torch.Tensor | str | None:
    """Validate the ``targeted``/``target`` constructor arguments; returns the target
    (a detached long tensor, a mode string, or None when untargeted)."""
    if not isinstance(targeted, bool):
        raise TypeError(f"targeted must be a bool, got {type(targeted).__name__}")
    if not targeted:
        if target is not None:
            raise ValueError(
                "target is set but targeted=False; pass targeted=True to attack toward it"
            )
        return None
    if target is None:
        raise ValueError(
            "targeted=True needs target= (a tensor of labels, 'random' or 'least-likely')"
        )
    if isinstance(target, str):
        if target not in TARGET_MODES:
            modes = ", ".join(map(repr, TARGET_MODES))
            raise ValueError(f"target must be a tensor of labels or one of {modes}, got {target!r}")
        return target
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"target must be a torch.Tensor of labels or a str, got {type(target).__name__}"
        )
    if target.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"target must hold integer class labels, got dtype {target.dtype}")
    if target.dim() != 1:
        raise ValueError(
            f"target must be 1-D (one label per sample), got shape {tuple(target.shape)}"
        )
    return target.detach().long()


def random_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A class drawn uniformly among the ``num_classes - 1`` classes other than ``y``,
    per sample, from torch's CPU generator: ``(y + U{1, ..., K-1}) mod K``."""
    if num_classes < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes, the model has {num_classes}")
    shift = torch.randint(1, num_classes, (y.shape[0],))
    return (y + shift.to(y.device)) % num_classes


def least_likely_targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The class with the lowest logit other than ``y`` (the true class is skipped even
    when it is the least likely itself)."""
    if logits.shape[1] < 2:
        raise ValueError(
            f"a targeted attack needs at least 2 classes, the model has {logits.shape[1]}"
        )
    masked = logits.float().scatter(1, y[:, None], float("inf"))
    return masked.argmin(dim=1)


def ranked_other_classes(logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """``(N, n)``: the ``n`` classes other than ``y`` with the highest logits, most likely
    first (APGD-T's target classes)."""
    masked = logits.float().scatter(1, y[:, None], float("-inf"))
    return masked.topk(n, dim=1).indices


def resolve_targets(
    target: torch.Tensor | str, clean_logits: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The per-sample target labels for this batch: the given tensor (validated against
    the batch) or the labels a mode string names, from the clean logits."""
    num_classes = clean_logits.shape[1]
    if isinstance(target, str):
        if target == "random":
            return random_targets(y, num_classes)
        return least_likely_targets(clean_logits, y)
    if target.shape[0] != y.shape[0]:
        raise ValueError(
            f"target has {target.shape[0]} labels but x has {y.shape[0]} samples; they must match"
        )
    if target.device != y.device:
        raise ValueError(
            f"target is on {target.device} but x is on {y.device}; move them to the same device"
        )
    if target.numel():
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"target must hold class labels in [0, {num_classes}) (the model has "
                f"{num_classes} classes), got values in [{low}, {high}]"
            )
    same = (target == y).nonzero().flatten()
    if same.numel():
        raise ValueError(
            f"target equals the true label y for sample(s) {same[:5].tolist()}; a target "
            "must be a wrong class"
        )
    return target


def pack(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` label rows ``[y, t]`` for the targeted losses."""
    return torch.stack([y, target], dim=1)


def succeeded(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Whether each sample's attack succeeded: misclassified (``labels`` is ``y``), or
    classified as the target (``labels`` packed ``[y, t]`` by :func:`pack`)."""
    predicted = logits.argmax(dim=1)
    if labels.dim() == 2:
        return predicted == labels[:, 1]
    return predicted != labels


def attack_labels(attack, target: torch.Tensor | str | None, x: torch.Tensor, y: torch.Tensor):
    """The labels an attack's loss and success test take for this batch: ``y`` when
    untargeted, else ``[y, t]`` rows with ``t`` resolved on the clean logits (one
    EOT-averaged forward of ``x``, no backward)."""
    if target is None:
        return y
    from fastnoise.attacks._losses import cross_entropy

    clean = attack.evaluate(cross_entropy, x, y)
    return pack(y, resolve_targets(target, clean.logits, y))
