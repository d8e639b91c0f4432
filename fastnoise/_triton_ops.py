"""The Triton kernels as ``torch.library.triton_op``s: what torch.compile runs on CUDA
when the Triton backend runs the device (``auto`` without the C++/CUDA extension, or
``use_backend("triton")``).

A ``custom_op`` is opaque to Inductor: its graph calls back into Python, which reads the
CPU ``[seed, offset]`` tensor of :mod:`fastnoise._ops` and launches through Triton's own
launcher. A ``triton_op`` is decomposed by AOTAutograd into its torch ops and
``wrap_triton`` kernel launches, so Inductor launches the kernels itself (its own
launcher, no Python op in between) and the graph holds no CPU tensor, which lets
``mode="reduce-overhead"`` capture it in a CUDA graph.

The random state is int64 ``[seed, offset]`` on the tensors' device, read by the kernels
(``RNG_IN_MEMORY``). With ``seed=None`` the seed is drawn by ``torch.randint`` on the
device, inside the graph: torch's CUDA generator, so ``torch.manual_seed`` makes a run
reproducible and a captured CUDA graph draws a new seed at every replay. A given seed
gives the spec's noise, the same as every other backend.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import triton_op

from fastnoise import rng
from fastnoise._backends import triton as backend
from fastnoise._ops import register_noise_autograd, register_pnil_autograd

__all__ = ["device_rng_state", "inject_noise", "pnil", "random_start"]


def device_rng_state(seed: int | Tensor | None, offset: int, device: torch.device) -> Tensor:
    """int64 ``[seed, offset]`` on ``device``, made on the device (no host-to-device copy,
    except from a CPU seed tensor): a fresh seed from the device's generator when None."""
    if seed is None:
        seed = torch.randint(0, rng.SEED_LIMIT - 1, (1,), dtype=torch.int64, device=device)
    elif isinstance(seed, Tensor):
        seed = seed.reshape(1).to(device=device, dtype=torch.int64)
    else:
        seed = _filled([seed], torch.int64, device)
    return torch.cat([seed, _filled([offset], torch.int64, device)])


def _filled(values, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``values`` as a 1-d tensor made by fills on ``device``: traced, ``torch.tensor(values,
    device=...)`` is a CPU constant copied over, and a CPU tensor keeps CUDA graphs out."""
    fills = [torch.full((1,), v, dtype=dtype, device=device) for v in values]
    return fills[0] if len(fills) == 1 else torch.cat(fills)


def _declare_kernels(op, *kernel_names: str) -> None:
    """Name the op's kernels to AOTAutograd's cache key, which hashes their source (its
    own source scan cannot follow the launches into the backend module)."""
    kernels = getattr(torch._library.triton, "triton_ops_to_kernels", None)
    if kernels is None:  # a torch without the table: nothing to declare
        return
    modules = backend._kernels()
    kernels[op._name] = [
        getattr(module, name)
        for module in modules
        for name in kernel_names
        if hasattr(module, name)
    ]


# ---- noise injection: Learn2Perturb Eq. (4)-(5), y = x + sigma * z -------------------


@triton_op("fastnoise::triton_inject_noise", mutates_args=())
def inject_noise_op(x: Tensor, sigma: Tensor, rng_state: Tensor) -> Tensor:
    return backend.noise_forward_rng(x, sigma, backend.device_rng(rng_state))


@triton_op("fastnoise::triton_inject_noise_backward", mutates_args=())
def inject_noise_backward_op(grad_y: Tensor, sigma: Tensor, rng_state: Tensor) -> Tensor:
    return backend.noise_backward_sigma_rng(grad_y, sigma, backend.device_rng(rng_state))


register_noise_autograd(inject_noise_op, inject_noise_backward_op)  # as fastnoise._ops's


def inject_noise(x: Tensor, sigma: Tensor, seed, offset: int) -> Tensor:
    return inject_noise_op(x, sigma, device_rng_state(seed, offset, x.device))


# ---- PNIL: Eq. (2)-(3), y = x + z * exp((x * W + B) / 2) ------------------------------


@triton_op("fastnoise::triton_pnil", mutates_args=())
def pnil_op(x: Tensor, weight: Tensor, bias: Tensor, rng_state: Tensor) -> Tensor:
    return backend.pnil_forward_rng(x, weight, bias, backend.device_rng(rng_state))


@triton_op("fastnoise::triton_pnil_backward", mutates_args=())
def pnil_backward_op(
    grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, rng_state: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return backend.pnil_backward_rng(grad_y, x, weight, bias, backend.device_rng(rng_state))


register_pnil_autograd(pnil_op, pnil_backward_op)


def pnil(x: Tensor, weight: Tensor, bias: Tensor, seed, offset: int) -> Tensor:
    return pnil_op(x, weight, bias, device_rng_state(seed, offset, x.device))


# ---- the attack's random start (no autograd: it runs under no_grad) -------------------


@triton_op("fastnoise::triton_random_start", mutates_args=())
def random_start_op(x: Tensor, rng_state: Tensor, bounds: Tensor, project: bool) -> Tensor:
    """``bounds``: float32 ``[eps, clip_min, clip_max]`` on x's device, read by the kernel,
    so a graph takes a new (symbolic) eps as data."""
    rng_args, bounds_args = backend.device_rng(rng_state), backend.device_bounds(bounds)
    return backend.random_start_rng(x, bounds_args, project, rng_args)


def random_start(x: Tensor, eps: float, seed, offset: int, lo: float, hi: float, project: bool):
    state = device_rng_state(seed, offset, x.device)
    bounds = _filled([eps, lo, hi], torch.float32, x.device)
    with torch.no_grad():
        return random_start_op(x, state, bounds, project)


_declare_kernels(inject_noise_op, "noise_forward_kernel", "noise_forward_nhwc_kernel")
_declare_kernels(
    inject_noise_backward_op, "noise_backward_sigma_kernel", "noise_backward_sigma_nhwc_kernel"
)
_declare_kernels(pnil_op, "pnil_forward_kernel", "pnil_forward_nhwc_kernel")
_declare_kernels(pnil_backward_op, "pnil_backward_kernel", "pnil_backward_nhwc_kernel")
_declare_kernels(random_start_op, "random_start_kernel", "random_start_nhwc_kernel")
