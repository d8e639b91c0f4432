"""fastnoise's primitives as ``torch.library`` custom ops: what torch.compile traces where
the C++ extension does not run the device (its own ops do, and on CUDA the Triton backend's
kernels are ``triton_op``s, :mod:`fastnoise._triton_ops`). Eager calls on these backends
skip the ops' dispatch (:mod:`fastnoise._eager`).

Each op picks its backend at run time (:mod:`fastnoise._dispatch`), so one graph runs
on whatever backend is in force. Random state and scalars travel as small CPU tensors,
not Python numbers: ``rng_state = [seed, offset]`` (int64) and ``bounds = [step_size,
eps, clip_min, clip_max]`` (float64). A compiled graph therefore treats them as inputs,
not constants, and new seeds or eps values do not force a recompile.

Autograd saves only ``rng_state`` and parameter-sized tensors for noise injection (the
noise is regenerated in the backward pass), and ``x`` plus the parameters for PNIL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastnoise import rng
from fastnoise._dispatch import backend_for

__all__ = [
    "make_rng_state",
    "make_bounds",
    "noise_injection",
    "noise_injection_backward",
    "pnil",
    "pnil_backward",
    "pgd_step",
    "random_start",
]


def make_rng_state(seed: int | Tensor | None, offset: int) -> Tensor:
    """``[seed, offset]`` as a CPU int64 tensor; a fresh seed from torch's default
    generator when ``seed`` is None (traced as a graph op inside torch.compile)."""
    if seed is None:
        if torch.compiler.is_compiling():
            seed = torch.randint(0, rng.SEED_LIMIT - 1, (1,), dtype=torch.int64)  # as draw_seed
        else:
            seed = host_seed(None)
    if isinstance(seed, Tensor):
        return torch.cat([seed.reshape(1).to(torch.int64), torch.tensor([offset])])
    return torch.tensor([seed, offset], dtype=torch.int64)


def host_seed(seed: int | Tensor | None) -> int:
    """An eager call's seed as a Python int: a fresh one from torch's default generator
    when None (refused inside CUDA graph capture), an int64 tensor's value (a CPU read)."""
    if seed is None:
        _refuse_host_seed_in_capture()
        return rng.draw_seed()
    return int(seed)


CAPTURE_NEEDS_DEVICE_SEEDS = (
    "seed=None inside CUDA graph capture: this backend takes its seed from the host, so "
    "the graph would replay one seed forever (the same noise every replay). The 'cuda' "
    "backend (fastnoise's C++/CUDA kernels, which 'auto' picks when they are built) draws "
    "a fresh seed on the device at every replay; use it, or pass seed= and offset= and "
    "vary them yourself"
)


def _refuse_host_seed_in_capture() -> None:
    """A host-drawn seed inside CUDA graph capture would be frozen into the graph: refuse
    it rather than replay the same noise. Free unless CUDA was initialized."""
    if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(CAPTURE_NEEDS_DEVICE_SEEDS)


def make_bounds(step_size: float, eps: float, clip_min: float, clip_max: float) -> Tensor:
    return torch.tensor([step_size, eps, clip_min, clip_max], dtype=torch.float64)


def _seed_offset(rng_state: Tensor) -> tuple[int, int]:
    seed, offset = rng_state.tolist()
    return seed, offset


def _memory_format(x: Tensor) -> torch.memory_format:
    """Outputs are channels_last when the input is, else contiguous, on every backend."""
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def _empty_like(x: Tensor) -> Tensor:
    """What the fake kernels return: x's shape, dtype, device and _memory_format."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))


def _storage(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def fresh_output(out: Tensor, like: Tensor, *inputs: Tensor) -> Tensor:
    """``out`` in ``like``'s memory format, sharing memory with no input (a backend may
    hand back views, e.g. two gradients of one buffer)."""
    out = out.contiguous(memory_format=_memory_format(like))
    if out.numel() and any(_storage(out) == _storage(t) for t in (like, *inputs) if t.numel()):
        out = out.clone(memory_format=_memory_format(like))
    return out


# ---- noise injection: Learn2Perturb Eq. (4)-(5), y = x + sigma * z -------------------


@torch.library.custom_op("fastnoise::noise_injection", mutates_args=())
def noise_injection(x: Tensor, sigma: Tensor, rng_state: Tensor) -> Tensor:
    seed, offset = _seed_offset(rng_state)
    return fresh_output(backend_for(x.device).noise_forward(x, sigma, seed, offset), x, sigma)


@noise_injection.register_fake
def _(x: Tensor, sigma: Tensor, rng_state: Tensor) -> Tensor:
    return _empty_like(x)


@torch.library.custom_op("fastnoise::noise_injection_backward", mutates_args=())
def noise_injection_backward(grad_y: Tensor, sigma: Tensor, rng_state: Tensor) -> Tensor:
    seed, offset = _seed_offset(rng_state)
    grad_sigma = backend_for(grad_y.device).noise_backward_sigma(grad_y, sigma, seed, offset)
    return fresh_output(grad_sigma, sigma, grad_y)


@noise_injection_backward.register_fake
def _(grad_y: Tensor, sigma: Tensor, rng_state: Tensor) -> Tensor:
    return _empty_like(sigma)


def register_noise_autograd(op, backward_op) -> None:
    """The autograd of a noise op ``op(x, sigma, rng_state)`` whose sigma gradient is
    ``backward_op(grad_y, sigma, rng_state)`` (here, and the triton ops')."""

    def setup_context(ctx, inputs, output) -> None:
        _, sigma, rng_state = inputs
        ctx.save_for_backward(sigma, rng_state)  # parameter-sized and 2 ints: no activation

    def backward(ctx, grad_y: Tensor):
        sigma, rng_state = ctx.saved_tensors
        grad_sigma = None
        if ctx.needs_input_grad[1]:
            grad_sigma = backward_op(grad_y, sigma, rng_state)
        return grad_y, grad_sigma, None  # dy/dx = 1

    op.register_autograd(backward, setup_context=setup_context)


register_noise_autograd(noise_injection, noise_injection_backward)


# ---- PNIL: Eq. (2)-(3), y = x + z * exp((x * W + B) / 2) ------------------------------


@torch.library.custom_op("fastnoise::pnil", mutates_args=())
def pnil(x: Tensor, weight: Tensor, bias: Tensor, rng_state: Tensor) -> Tensor:
    seed, offset = _seed_offset(rng_state)
    return fresh_output(
        backend_for(x.device).pnil_forward(x, weight, bias, seed, offset), x, weight, bias
    )


@pnil.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor, rng_state: Tensor) -> Tensor:
    return _empty_like(x)


@torch.library.custom_op("fastnoise::pnil_backward", mutates_args=())
def pnil_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rng_state: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    seed, offset = _seed_offset(rng_state)
    grads = backend_for(x.device).pnil_backward(grad_y, x, weight, bias, seed, offset)
    return fresh_pnil_grads(grads, grad_y, x, weight, bias)


def fresh_pnil_grads(grads, grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor):
    """A backend's (grad_x, grad_W, grad_B), each ``fresh_output``: no view of an input or of
    another gradient (a backend may return two gradients of one buffer)."""
    gx, gw, gb = grads
    gx = fresh_output(gx, x, grad_y, weight, bias)
    gw = fresh_output(gw, weight, grad_y, x, bias, gx)
    return gx, gw, fresh_output(gb, bias, grad_y, x, weight, gx, gw)


@pnil_backward.register_fake
def _(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rng_state: Tensor):
    return _empty_like(x), _empty_like(weight), _empty_like(bias)


def register_pnil_autograd(op, backward_op) -> None:
    """The autograd of a PNIL op ``op(x, weight, bias, rng_state)`` whose gradients are
    ``backward_op(grad_y, x, weight, bias, rng_state)`` (here, and the triton ops')."""

    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, rng_state = inputs
        ctx.save_for_backward(x, weight, bias, rng_state)  # x, not z: z is regenerated

    def backward(ctx, grad_y: Tensor):
        x, weight, bias, rng_state = ctx.saved_tensors
        return (*backward_op(grad_y, x, weight, bias, rng_state), None)

    op.register_autograd(backward, setup_context=setup_context)


register_pnil_autograd(pnil, pnil_backward)


# ---- attack steps (no autograd: they run under no_grad) -------------------------------


@torch.library.custom_op("fastnoise::pgd_step", mutates_args=())
def pgd_step(x_adv: Tensor, grad: Tensor, x_orig: Tensor, bounds: Tensor) -> Tensor:
    step_size, eps, clip_min, clip_max = bounds.tolist()
    out = backend_for(x_adv.device).pgd_step(
        x_adv, grad, x_orig, step_size, eps, clip_min, clip_max
    )
    return fresh_output(out, x_adv, grad, x_orig)


@pgd_step.register_fake
def _(x_adv: Tensor, grad: Tensor, x_orig: Tensor, bounds: Tensor) -> Tensor:
    return _empty_like(x_adv)


@torch.library.custom_op("fastnoise::random_start", mutates_args=())
def random_start(x: Tensor, rng_state: Tensor, bounds: Tensor, project: bool) -> Tensor:
    seed, offset = _seed_offset(rng_state)
    _, eps, clip_min, clip_max = bounds.tolist()
    out = backend_for(x.device).random_start(x, eps, seed, offset, clip_min, clip_max, project)
    return fresh_output(out, x)


@random_start.register_fake
def _(x: Tensor, rng_state: Tensor, bounds: Tensor, project: bool) -> Tensor:
    return _empty_like(x)
