"""Expectation over Transformation (Athalye et al., 2018) in one batched pass.

A randomized model gives a different gradient every forward. EOT attacks the expected
loss: ``grad E_noise[L(f(x; noise), y)] ~= 1/L sum_l grad L(f(x; noise_l), y)``.

Instead of L forwards of the batch (a Python loop), every sample is repeated L times
(row ``b * L + l`` is copy ``l`` of sample ``b``) and the model sees the ``B * L`` rows in
one forward and one backward, split into chunks of at most ``chunk`` rows to bound
memory. Copies are independent when the model draws its noise per row: fastnoise's
activation layers draw per element with a fresh seed per forward, so rows of one batch
get different draws (the released Learn2Perturb EOT reused one draw for every copy,
which averages nothing).

Noise drawn once per forward pass (PNI-W weight noise, a third-party module that adds one
noise tensor to the whole batch) is shared by every row of a pass: there the copies run
as L separate passes of the batch instead (``separate_passes=True``), each with its own
draw. ``separate_passes=None`` (the default) decides by :func:`rows_share_noise`: once,
with a probe of two identical rows, and warns when it falls back.

Per-row gradients are only correct when rows do not interact (no BatchNorm in train
mode): attacks run the model in eval mode by default.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = [
    "EOTResult",
    "rows_share_noise",
    "eot_gradient",
    "eot_per_copy",
    "eot_evaluate",
    "sequential_eot_gradient",
    "default_chunk",
]

Forward = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Rows per pass default to ~2**24 input elements on an accelerator (64 MB of fp32 input;
# activations scale with it). On the CPU, cache-sized chunks of ~2**17 run faster.
_DEFAULT_INPUT_ELEMENTS = 2**24
_DEFAULT_INPUT_ELEMENTS_CPU = 2**17
_MIN_DEFAULT_ROWS = 32


class EOTResult(NamedTuple):
    grad: torch.Tensor  # d loss / d x, mean over the copies, x's shape and dtype
    loss: torch.Tensor  # (B,) float32 loss, mean over the copies
    logits: torch.Tensor  # (B, K) float32 logits, mean over the copies


def default_chunk(x: torch.Tensor) -> int:
    """Rows per forward pass when the caller gives no ``chunk``: about 2**24 input
    elements on an accelerator, 2**17 on the CPU (at least 32 rows)."""
    per_row = max(1, x[0].numel()) if x.shape[0] else 1
    budget = _DEFAULT_INPUT_ELEMENTS_CPU if x.device.type == "cpu" else _DEFAULT_INPUT_ELEMENTS
    return max(_MIN_DEFAULT_ROWS, budget // per_row)


def _chunks(total: int, chunk: int | None, x: torch.Tensor):
    step = chunk if chunk is not None else default_chunk(x)
    for start in range(0, total, step):
        yield start, min(start + step, total)


@torch.no_grad()
def rows_share_noise(forward: Forward, x: torch.Tensor) -> bool:
    """Whether the rows of one forward pass share their noise draw: two identical rows give
    identical outputs in one pass, yet two passes differ (noise drawn once per pass). A
    deterministic model, or one that draws per row, gives False. Costs two forwards of
    two rows; torch's random stream is restored afterwards, so probing changes no result."""
    if x.shape[0] == 0:
        return False
    rows = x[:1].detach().expand(2, *x.shape[1:]).contiguous()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        first = forward(rows)
        if not torch.equal(first[0], first[1]):
            return False  # rows draw their own noise
        return not torch.equal(first, forward(rows))


# Probe results per module, keyed by its structure (module types, training and enabled
# flags): a later call on the same, unchanged model skips the probe's two forwards.
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(module: torch.nn.Module) -> tuple:
    return tuple((type(m), m.training, getattr(m, "enabled", None)) for m in module.modules())


def _shares_noise(forward: Forward, x: torch.Tensor) -> bool:
    if not isinstance(forward, torch.nn.Module):
        return rows_share_noise(forward, x)
    structure = _structure(forward)
    cached = _PROBED.get(forward)
    if cached is None or cached[0] != structure:
        cached = _PROBED[forward] = (structure, rows_share_noise(forward, x))
    return cached[1]


def resolve_separate_passes(
    separate_passes: bool | None, forward: Forward, x: torch.Tensor, eot: int, owner: str = ""
) -> bool:
    """``separate_passes`` as given, or (None) probed with :func:`rows_share_noise` (once
    per module while its structure is unchanged), warning when the copies must run as
    separate passes."""
    if separate_passes is not None:
        return bool(separate_passes)
    if eot <= 1 or not _shares_noise(forward, x):
        return False
    warnings.warn(
        f"{owner or 'the model'} draws its noise once per forward pass (rows of one batch "
        f"share it, e.g. PNI-W weight noise), so the {eot} EOT copies run as {eot} separate "
        "passes, each with its own draw (slower than one batched pass)",
        stacklevel=3,
    )
    return True


def _copy_chunks(batch: int, eot: int, separate: bool, chunk: int | None, x: torch.Tensor):
    """(sample, copy) index tensors of each forward pass: batched, row r of the B*L rows
    is copy r % L of sample r // L; separate, copy l runs the batch in its own passes."""
    device = x.device
    if not separate:
        for start, end in _chunks(batch * eot, chunk, x):
            rows = torch.arange(start, end, device=device)
            yield rows // eot, rows % eot
        return
    for copy in range(eot):
        for start, end in _chunks(batch, chunk, x):
            sample = torch.arange(start, end, device=device)
            yield sample, torch.full_like(sample, copy)


def _copies_pass(
    forward: Forward,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int,
    chunk: int | None,
    need_grad: bool,
    keep_copies: bool,
    separate: bool = False,
) -> EOTResult:
    """Forward (and backward) over the ``B * eot`` copies, chunk by chunk."""
    batch = x.shape[0]
    x = x.detach()
    grad_sum = torch.zeros(x.shape, dtype=torch.float32, device=x.device) if need_grad else None
    loss_sum = torch.zeros(batch, dtype=torch.float32, device=x.device)
    logits_sum = None
    copy_grads, copy_losses, copy_logits, copy_index = [], [], [], []
    for sample, copy in _copy_chunks(batch, eot, separate, chunk, x):
        x_rows = x.index_select(0, sample).requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            logits = forward(x_rows)
            loss = loss_fn(logits, y.index_select(0, sample))
        if need_grad:
            (grad,) = torch.autograd.grad(loss.sum(), x_rows)
            grad_sum.index_add_(0, sample, grad.float())
        logits = logits.detach().float()
        loss = loss.detach().float()
        if logits_sum is None:
            logits_sum = torch.zeros(batch, logits.shape[1], device=x.device)
        loss_sum.index_add_(0, sample, loss)
        logits_sum.index_add_(0, sample, logits)
        if keep_copies:
            copy_index.append(sample * eot + copy)
            copy_losses.append(loss)
            copy_logits.append(logits)
            if need_grad:
                copy_grads.append(grad)
    if keep_copies:
        order = torch.cat(copy_index).argsort()  # rows back to (sample, copy) order

        def per_copy(parts):
            return torch.cat(parts)[order].view(batch, eot, *parts[0].shape[1:])

        grads = per_copy(copy_grads) if need_grad else None
        return EOTResult(grads, per_copy(copy_losses), per_copy(copy_logits))
    grad = (grad_sum / eot).to(x.dtype) if need_grad else None
    return EOTResult(grad, loss_sum / eot, logits_sum / eot)


def eot_gradient(
    forward: Forward,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int = 1,
    chunk: int | None = None,
    separate_passes: bool | None = None,
) -> EOTResult:
    """Mean over ``eot`` noise draws of the loss gradient, loss and logits, batched.

    ``forward`` maps ``(N, *sample)`` inputs to ``(N, K)`` logits; ``loss_fn(logits, y)``
    returns one loss per row. ``chunk`` bounds the rows per forward pass (None:
    :func:`default_chunk`). ``separate_passes``: run the copies as separate passes (for
    noise drawn once per pass); None probes the model (see the module docstring). No
    parameter gradients are accumulated.
    """
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample")
    separate = resolve_separate_passes(separate_passes, forward, x, eot)
    return _copies_pass(forward, loss_fn, x, y, eot, chunk, True, False, separate)


def eot_per_copy(
    forward: Forward,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int,
    chunk: int | None = None,
    separate_passes: bool | None = None,
) -> EOTResult:
    """Like :func:`eot_gradient` but unreduced: grad ``(B, L, *sample)``, loss ``(B, L)``,
    logits ``(B, L, K)``. Shows whether the copies really got independent noise."""
    separate = resolve_separate_passes(separate_passes, forward, x, eot)
    return _copies_pass(forward, loss_fn, x, y, eot, chunk, True, True, separate)


@torch.no_grad()
def eot_evaluate(
    forward: Forward,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int = 1,
    chunk: int | None = None,
    separate_passes: bool | None = None,
) -> EOTResult:
    """Mean loss and logits over ``eot`` draws without a backward pass (grad is None)."""
    separate = resolve_separate_passes(separate_passes, forward, x, eot)
    return _copies_pass(forward, loss_fn, x, y, eot, chunk, False, False, separate)


def sequential_eot_gradient(
    forward: Forward,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    eot: int = 1,
) -> EOTResult:
    """The reference EOT: a Python loop of ``eot`` forward/backward passes of the batch.

    Kept for tests and the benchmark; :func:`eot_gradient` must agree with it."""
    x = x.detach()
    grad_sum = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    loss_sum = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    logits_sum = 0.0
    for _ in range(eot):
        x_req = x.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = forward(x_req)
            loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_req)
        grad_sum += grad.float()
        loss_sum += loss.detach().float()
        logits_sum = logits_sum + logits.detach().float()
    return EOTResult((grad_sum / eot).to(x.dtype), loss_sum / eot, logits_sum / eot)
