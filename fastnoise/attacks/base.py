"""The attack interface shared by every attack: ``x_adv = attack(x, y)``.

An attack is built once around a model and called on batches of ``[0, 1]`` images and
integer labels. It works on whatever device the inputs are on, runs the model in eval
mode (BatchNorm on running statistics; fastnoise's noise layers stay active, the
defense is meant to be random at test time) and restores every submodule's mode
afterwards. Gradients are taken with respect to the input only: parameters'
``requires_grad`` and ``.grad`` are left untouched. The result is detached.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.attacks.budget import fit_to_budget
from fastnoise.attacks.eot import EOTResult, eot_evaluate, eot_gradient, rows_share_noise

__all__ = ["Attack", "KINDS", "NORMS"]

KINDS = ("single-step", "iterative", "gradient-free", "transfer")
NORMS = ("linf", "l2", "l1", "l0")
_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _rows_share_noise(model: nn.Module, forward, x: torch.Tensor) -> bool:
    from fastnoise.nn.base import NoiseLayer

    layers = [m for m in model.modules() if isinstance(m, NoiseLayer) and m.enabled]
    if any(not layer.draws_per_row for layer in layers):
        return True
    # Switch off the per-row layers, whose differing rows would hide a shared draw elsewhere.
    for layer in layers:
        layer.enabled = False
    try:
        return rows_share_noise(forward, x)
    finally:
        for layer in layers:
            layer.enabled = True


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


class Attack:
    """Base class. Subclasses set ``name``, ``kind`` and ``norm`` and implement
    :meth:`perturb` on validated, detached inputs.

    Args:
        model: any ``nn.Module`` mapping ``(N, C, H, W)`` images in ``[0, 1]`` to logits.
        eps: perturbation budget in the attack's ``norm`` (``math.inf``: unbounded).
        eot: noise draws the loss gradient is averaged over (Expectation over
            Transformation), computed in one batched pass, see :mod:`.eot`.
        eot_chunk: most rows (samples x copies) per forward pass; None: about 2**24
            input elements per pass on an accelerator, 2**17 on the CPU.
        clip: the valid pixel box.
        compile: run the model forward through ``torch.compile`` (True, or a backend
            name such as ``"inductor"``); never required.
        eval_mode: run the model in eval mode during the attack (its modes are
            restored afterwards either way). False keeps the caller's mode.
    """

    name: str = "attack"
    kind: str = "iterative"
    norm: str = "linf"

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        eot: int = 1,
        eot_chunk: int | None = None,
        clip: Sequence[float] = (0.0, 1.0),
        compile: bool | str = False,
        eval_mode: bool = True,
    ) -> None:
        self.model = _check_model(model)
        self.eps = v.check_non_negative_number("eps", eps)
        self.eot = v.check_positive_int("eot", eot)
        self.eot_chunk = None if eot_chunk is None else v.check_positive_int("eot_chunk", eot_chunk)
        if clip is None:
            raise ValueError("clip must be a (min, max) pixel range, got None")
        self.clip = v.check_clip("clip", clip)
        if not isinstance(compile, (bool, str)):
            raise TypeError(f"compile must be a bool or a backend name, got {compile!r}")
        self.compile = compile
        self.eval_mode = bool(eval_mode)
        self._compiled: nn.Module | None = None
        self._separate_passes: bool | None = None  # decided at the first EOT call

    # -- what subclasses implement -------------------------------------------------

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement perturb(x, y)")

    # -- the public call -----------------------------------------------------------

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self._check_inputs(x, y)
        if x.shape[0] == 0:
            return x.detach().clone()
        modes = [(module, module.training) for module in self.model.modules()]
        if self.eval_mode:
            self.model.eval()
        try:
            with torch.enable_grad():
                x_adv = self.perturb(x.detach(), y)
        finally:
            for module, training in modes:
                module.training = training
        return fit_to_budget(x_adv.detach(), x, self.eps, self.norm)

    def __repr__(self) -> str:
        eot = f", eot={self.eot}" if self.eot > 1 else ""
        return (
            f"{type(self).__name__}(name={self.name!r}, eps={self.eps:.6g}, norm={self.norm}{eot})"
        )

    # -- helpers for subclasses ----------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward, compiled on first use when ``compile`` asks for it."""
        if not self.compile:
            return self.model(x)
        if self._compiled is None:
            backend = "inductor" if self.compile is True else self.compile
            self._compiled = torch.compile(self.model, backend=backend)
        return self._compiled(x)

    def gradient(self, loss_fn, x: torch.Tensor, y: torch.Tensor) -> EOTResult:
        """EOT-averaged loss gradient at ``x``: one batched pass over ``B * eot`` rows, or
        ``eot`` passes when the model's rows share a draw (see :meth:`separate_passes`)."""
        separate = self.eot > 1 and self.separate_passes(x)
        return eot_gradient(self.forward, loss_fn, x, y, self.eot, self.eot_chunk, separate)

    def evaluate(self, loss_fn, x: torch.Tensor, y: torch.Tensor) -> EOTResult:
        """EOT-averaged loss and logits at ``x`` without a backward pass."""
        separate = self.eot > 1 and self.separate_passes(x)
        return eot_evaluate(self.forward, loss_fn, x, y, self.eot, self.eot_chunk, separate)

    def separate_passes(self, x: torch.Tensor) -> bool:
        """Whether several draws for one sample (EOT copies, repeated checks) need separate
        forward passes, decided once per attack: yes when a fastnoise layer draws once per
        forward (``draws_per_row = False``, PNI-W), or when, with fastnoise's per-row layers
        switched off, two identical rows of one pass still come out equal while two passes
        differ (noise drawn once per pass by some other module). The probe leaves torch's
        random stream as it found it. Warns when it falls back to separate passes."""
        if self._separate_passes is None:
            self._separate_passes = _rows_share_noise(self.model, self.forward, x)
            if self._separate_passes:
                warnings.warn(
                    f"{type(self.model).__name__} draws noise once per forward pass (rows of "
                    f"one batch share it, e.g. PNI-W weight noise), so {self.name}'s EOT "
                    "copies run as separate passes, each with its own draw (slower than one "
                    "batched pass)",
                    stacklevel=3,
                )
        return self._separate_passes

    def _check_inputs(self, x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
        v.check_tensor("x", x)
        if x.dim() < 2:
            raise ValueError(
                f"x must be a batch (N, *sample) with N first, got shape {tuple(x.shape)}"
            )
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor of integer labels, got {type(y).__name__}")
        if y.dtype not in _INTEGER_DTYPES:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        if y.dim() != 1:
            raise ValueError(f"y must be 1-D (one label per sample), got shape {tuple(y.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"y has {y.shape[0]} labels but x has {x.shape[0]} samples; they must match"
            )
        v.check_same_device("y", y, "x", x)
        device = _model_device(self.model)
        if device is not None and device != x.device:
            raise ValueError(
                f"x is on {x.device} but the model's parameters are on {device}; "
                "move the inputs or the model"
            )
        lo, hi = self.clip
        if x.numel() and (math.isfinite(lo) or math.isfinite(hi)):
            x_min, x_max = float(x.min()), float(x.max())
            if x_min < lo - 1e-6 or x_max > hi + 1e-6:
                raise ValueError(
                    f"x must lie in the pixel range clip={self.clip} (attacks take unnormalized "
                    f"images; put normalization inside the model), got [{x_min:.4g}, {x_max:.4g}]"
                )
        return x, y.long()
