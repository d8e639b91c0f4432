"""Triton backend: the fused kernels of ``fastnoise.kernels`` behind the reference's
primitive signatures.

Runs CUDA tensors. Under ``TRITON_INTERPRET=1`` (set before the kernels are imported)
it also runs CPU tensors through Triton's interpreter: that is how the kernels are
tested without a GPU, and it is the only case in which ``supports(cpu)`` is True.

Noise element ``i`` is always the logical (row-major) index. Contiguous and 4-D
channels_last tensors are read and written in place (outputs keep the input's memory
format); any other strides are first copied to contiguous.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from typing import NamedTuple

import torch

from fastnoise._backends.reference import sum_sample_to

NAME = "triton"


def unavailable_reason() -> str | None:
    try:
        importlib.import_module("triton")
    except Exception as exc:  # ImportError, or a broken install raising anything
        return f"triton does not import ({type(exc).__name__}: {exc})"
    if _interpreting():
        return None
    if not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on the CPU interpreter)"
    return None


def _interpreting() -> bool:
    from fastnoise.kernels.launch import interpreting

    return interpreting()


def supports(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _interpreting()


def _kernels():
    # Imported on first use: importing applies @triton.jit, which reads TRITON_INTERPRET.
    from fastnoise.kernels import attack_step, launch, noise_injection, pnil

    return launch, noise_injection, pnil, attack_step


def random_words(numel: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    """The kernels' Philox words (uint32 in int64), for checking against ``rng.random_words``."""
    from fastnoise.kernels import launch, philox

    out = torch.empty(numel, dtype=torch.int64, device=device)
    if numel == 0:
        return out
    block = launch.elementwise_block(numel)
    seed_lo, seed_hi = launch.split_seed(seed)
    _launch(
        philox.random_words_kernel, (math.ceil(numel / block),), out.device,
        out, numel, seed_lo, seed_hi, offset, BLOCK=block,
    )  # fmt: skip
    return out


def _device_guard(device: torch.device):
    """Triton launches on the current CUDA device: make it ``device`` for the launch.

    Entered only when it differs, so the common single-GPU call pays one cheap query.
    """
    if device.type != "cuda" or device.index is None:
        return contextlib.nullcontext()
    if device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device.index)


def _launch(kernel, grid, device: torch.device, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)`` on ``device`` (the tensors' device).

    Launches with the random state in device memory come from the triton ops
    (:mod:`fastnoise._triton_ops`), which torch.compile traces: they go through
    ``wrap_triton``, which hands back the kernel itself when the op runs eagerly.
    """
    launcher = kernel
    if kwargs.get("RNG_IN_MEMORY") and not _interpreting():
        launcher = torch.library.wrap_triton(kernel)
    if launcher is not kernel:  # traced: the graph's launch picks the device
        launcher[grid](*args, **kwargs)
        return
    with _device_guard(device):
        kernel[grid](*args, **kwargs)


class Rng(NamedTuple):
    """The noise kernels' random-state arguments: ``args`` = (seed_lo, seed_hi, offset,
    rng_state_ptr), and RNG_IN_MEMORY, which says the kernel reads the last one."""

    args: tuple
    in_memory: bool


def _scalar_rng(seed: int, offset: int) -> Rng:
    from fastnoise.kernels import launch

    seed_lo, seed_hi = launch.split_seed(seed)
    return Rng((seed_lo, seed_hi, offset, 0), False)  # the 0: rng_state_ptr, unread


def device_rng(rng_state: torch.Tensor) -> Rng:
    """The kernels read int64 ``[seed, offset]`` from ``rng_state`` on the tensors' device."""
    return Rng((0, 0, 0, rng_state), True)


def _per_feature(param: torch.Tensor, sample_shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """A per-feature parameter as F contiguous values of ``dtype`` (one sample, tiny).

    A parameter that is already that (the common per-feature layer parameter) is passed
    as it is; a broadcast one (per channel, scalar) is expanded to F values.
    """
    if param.dtype == dtype and param.shape == sample_shape and param.is_contiguous():
        return param.view(-1)
    return param.to(dtype).broadcast_to(sample_shape).contiguous().view(-1)


def _compute_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _is_channels_last(x: torch.Tensor) -> bool:
    return (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def _in_layout(x: torch.Tensor, *others: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    """``x`` and ``others`` in one layout the kernels read in place, and its kernel args.

    channels_last when ``x`` is (the others follow it), else contiguous.
    """
    if _is_channels_last(x):
        tensors = [t.contiguous(memory_format=torch.channels_last) for t in (x, *others)]
        _, channels, height, width = x.shape
        return tensors, dict(hw=height * width, channels=channels, CHANNELS_LAST=True)
    return [t.contiguous() for t in (x, *others)], dict(hw=1, channels=1, CHANNELS_LAST=False)


def _nhwc_tiles(x: torch.Tensor, layout: dict, launch) -> dict | None:
    """Tile sizes and grid of the ``*_nhwc_kernel``s for a channels_last ``x``, or None.

    They need H*W % 4 == 0 (each Philox counter's 4 lanes are 4 pixels of one channel)
    and C % 4 == 0 (16-byte aligned pixels); BLOCK_C divides C, so only the last block of
    pixels of a sample is masked, and along hw: the channel vectors stay unmasked.
    """
    if not layout["CHANNELS_LAST"]:
        return None
    batch, channels, height, width = x.shape
    hw = height * width
    if hw % 4 or channels % 4:
        return None
    block_hw, block_c, warps = _nhwc_block(hw, channels, launch.elementwise_block(x.numel()))
    return dict(
        grid=(batch * math.ceil(hw / block_hw), channels // block_c),
        args=(hw // 4, channels // 4),
        kwargs=dict(BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=warps),
    )


def _nhwc_block(hw: int, channels: int, budget: int) -> tuple[int, int, int]:
    """(BLOCK_HW, BLOCK_C, warps) of a channels_last tile of at most ``budget`` elements."""
    from fastnoise.kernels import launch

    block_c = min(launch.NHWC_MAX_BLOCK_C, channels & -channels)  # a power of 2 dividing C
    block_hw = max(4, min(1 << (hw - 1).bit_length(), budget // block_c))  # powers of 2
    return block_hw, block_c, max(1, min(launch.num_warps(), block_hw * block_c // 256))


def _nhwc_reduction(x: torch.Tensor, layout: dict, launch) -> dict | None:
    """Tiles, grid (hw blocks, channel blocks, row chunks) and row chunks of the
    ``*_backward*_nhwc_kernel``s for a channels_last ``x``, or None, as ``_nhwc_tiles``."""
    if not layout["CHANNELS_LAST"]:
        return None
    rows, channels, height, width = x.shape
    hw = height * width
    if hw % 4 or channels % 4:
        return None
    budget = launch.INTERPRETER_MAX_BLOCK if launch.interpreting() else launch.GPU_BLOCK_F
    block_hw, block_c, warps = _nhwc_block(hw, channels, budget)
    feature_grid = (math.ceil(hw / block_hw), channels // block_c)
    chunks, rows_per_chunk = launch.row_chunks(rows, feature_grid[0] * feature_grid[1], x.device)
    return dict(
        grid=(*feature_grid, chunks),
        chunks=chunks,
        args=(hw // 4, channels // 4),
        kwargs=dict(
            ROWS_PER_PROGRAM=rows_per_chunk, BLOCK_HW=block_hw, BLOCK_C=block_c, num_warps=warps
        ),
    )


def _rows_features(x: torch.Tensor, name: str = "x") -> tuple[int, int]:
    from fastnoise.kernels.launch import MAX_FEATURES

    rows, features = x.shape[0], math.prod(x.shape[1:])
    if features > MAX_FEATURES:  # kernels index within a sample in int32, up to F + BLOCK - 1
        raise ValueError(
            f"{name} must have at most 2**31 - {2**31 - MAX_FEATURES} = {MAX_FEATURES} elements "
            f"per sample (the product of all but the first dimension) for the triton "
            f"backend, got {features} for shape {tuple(x.shape)}"
        )
    return rows, features


def noise_forward(x: torch.Tensor, sigma: torch.Tensor, seed: int, offset: int) -> torch.Tensor:
    """Learn2Perturb Eq. (4)-(5): y = x + sigma * z in one pass."""
    return noise_forward_rng(x, sigma, _scalar_rng(seed, offset))


def noise_forward_rng(x: torch.Tensor, sigma: torch.Tensor, rng: Rng) -> torch.Tensor:
    launch, noise_injection, _, _ = _kernels()
    (x,), layout = _in_layout(x)
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    sigma_f = _per_feature(sigma, x.shape[1:], _compute_torch_dtype(x.dtype))
    kernels = (noise_injection.noise_forward_kernel, noise_injection.noise_forward_nhwc_kernel)
    _launch_elementwise(launch, kernels, x, (sigma_f,), y, layout, rng)
    return y


def _launch_elementwise(launch, kernels, x, params, y, layout, rng: Rng) -> None:
    """One noise pass over ``x`` into ``y``: ``kernels`` = (flat, channels_last tiles),
    each called as ``kernel(x, *params, y, <shape>, *rng.args, ...)``.
    The tiles when ``x``'s layout allows them (see _nhwc_tiles), else flat blocks."""
    flat_kernel, nhwc_kernel = kernels
    _, features = _rows_features(x)
    compute = launch.compute_dtype(x.dtype)
    tiles = _nhwc_tiles(x, layout, launch)
    if tiles is not None:
        _launch(
            nhwc_kernel, tiles["grid"], x.device,
            x, *params, y, *tiles["args"], *rng.args, RNG_IN_MEMORY=rng.in_memory,
            COMPUTE_DTYPE=compute, **tiles["kwargs"],
        )  # fmt: skip
        return
    block = launch.elementwise_block(x.numel())
    _launch(
        flat_kernel, (math.ceil(x.numel() / block),), x.device,
        x, *params, y, x.numel(), features, layout["hw"], layout["channels"],
        *rng.args, RNG_IN_MEMORY=rng.in_memory, TAIL=x.numel() % block != 0,
        CHANNELS_LAST=layout["CHANNELS_LAST"], COMPUTE_DTYPE=compute,
        BLOCK=block, num_warps=launch.num_warps(),
    )  # fmt: skip


def noise_backward_sigma(
    grad_y: torch.Tensor, sigma: torch.Tensor, seed: int, offset: int
) -> torch.Tensor:
    """d loss / d sigma = sum_n grad_y * z, z regenerated in-kernel (Eq. (4)-(5))."""
    return noise_backward_sigma_rng(grad_y, sigma, _scalar_rng(seed, offset))


def noise_backward_sigma_rng(grad_y: torch.Tensor, sigma: torch.Tensor, rng: Rng) -> torch.Tensor:
    launch, noise_injection, _, _ = _kernels()
    (grad_y,), layout = _in_layout(grad_y)
    rows, features = _rows_features(grad_y, "grad_y")
    acc_dtype = _compute_torch_dtype(grad_y.dtype)
    if grad_y.numel() == 0:
        return torch.zeros_like(sigma)
    nhwc = _nhwc_reduction(grad_y, layout, launch)
    if nhwc is not None:
        partial = torch.empty((nhwc["chunks"], features), dtype=acc_dtype, device=grad_y.device)
        _launch(
            noise_injection.noise_backward_sigma_nhwc_kernel, nhwc["grid"], grad_y.device,
            grad_y, partial, rows, *nhwc["args"], *rng.args, RNG_IN_MEMORY=rng.in_memory,
            COMPUTE_DTYPE=launch.compute_dtype(grad_y.dtype), **nhwc["kwargs"],
        )  # fmt: skip
        return _summed_partials(partial, grad_y.shape[1:], sigma)
    reduction = launch.reduction_grid(rows, features, grad_y.device)
    partial = torch.empty((reduction.partial_rows, features), dtype=acc_dtype, device=grad_y.device)
    _launch(
        noise_injection.noise_backward_sigma_kernel, reduction.grid, grad_y.device,
        grad_y, partial, rows, features, layout["hw"], layout["channels"],
        *rng.args, RNG_IN_MEMORY=rng.in_memory, ROWS_PER_PROGRAM=reduction.rows_per_chunk,
        CLASSES=reduction.classes, CHANNELS_LAST=layout["CHANNELS_LAST"],
        COMPUTE_DTYPE=launch.compute_dtype(grad_y.dtype), BLOCK_F=reduction.block_f,
        num_warps=reduction.num_warps,
    )  # fmt: skip
    return _summed_partials(partial, grad_y.shape[1:], sigma)


def _summed_partials(partial: torch.Tensor, sample: torch.Size, param: torch.Tensor):
    """The kernels' partial rows (chunks, F), summed in a fixed order to ``param``'s shape.
    One row (a small batch) is the sum already: no kernel for it on a GPU."""
    full = partial[0] if partial.shape[0] == 1 else partial.sum(dim=0)
    return sum_sample_to(full.view(sample), param.shape).to(param.dtype)


def pnil_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, seed: int, offset: int
) -> torch.Tensor:
    """PNIL Eq. (2)-(3): y = x + z * exp((x * W + B) / 2) in one pass."""
    return pnil_forward_rng(x, weight, bias, _scalar_rng(seed, offset))


def pnil_forward_rng(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rng: Rng):
    launch, _, pnil, _ = _kernels()
    (x,), layout = _in_layout(x)
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    compute = _compute_torch_dtype(x.dtype)
    params = (_per_feature(weight, x.shape[1:], compute), _per_feature(bias, x.shape[1:], compute))
    kernels = (pnil.pnil_forward_kernel, pnil.pnil_forward_nhwc_kernel)
    _launch_elementwise(launch, kernels, x, params, y, layout, rng)
    return y


def pnil_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seed: int,
    offset: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of PNIL for x, W and B in one pass over (grad_y, x), z regenerated."""
    return pnil_backward_rng(grad_y, x, weight, bias, _scalar_rng(seed, offset))


def pnil_backward_rng(grad_y, x, weight, bias, rng: Rng):
    launch, _, pnil, _ = _kernels()
    (x, grad_y), layout = _in_layout(x, grad_y.to(x.dtype))
    grad_x = torch.empty_like(x)
    if x.numel() == 0:
        return grad_x, torch.zeros_like(weight), torch.zeros_like(bias)
    rows, features = _rows_features(x)
    compute = _compute_torch_dtype(x.dtype)
    weight_f = _per_feature(weight, x.shape[1:], compute)
    bias_f = _per_feature(bias, x.shape[1:], compute)
    nhwc = _nhwc_reduction(x, layout, launch)
    if nhwc is None:
        reduction = launch.reduction_grid(rows, features, x.device)
    partial_rows = nhwc["chunks"] if nhwc is not None else reduction.partial_rows
    partial_w = torch.empty((partial_rows, features), dtype=compute, device=x.device)
    partial_b = torch.empty_like(partial_w)
    if nhwc is not None:
        _launch(
            pnil.pnil_backward_nhwc_kernel, nhwc["grid"], x.device,
            grad_y, x, weight_f, bias_f, grad_x, partial_w, partial_b, rows, *nhwc["args"],
            *rng.args, RNG_IN_MEMORY=rng.in_memory, COMPUTE_DTYPE=launch.compute_dtype(x.dtype),
            **nhwc["kwargs"],
        )  # fmt: skip
    else:
        _launch(
            pnil.pnil_backward_kernel, reduction.grid,
            x.device, grad_y, x, weight_f, bias_f, grad_x, partial_w, partial_b,
            rows, features, layout["hw"], layout["channels"],
            *rng.args, RNG_IN_MEMORY=rng.in_memory, ROWS_PER_PROGRAM=reduction.rows_per_chunk,
            CLASSES=reduction.classes, CHANNELS_LAST=layout["CHANNELS_LAST"],
            COMPUTE_DTYPE=launch.compute_dtype(x.dtype), BLOCK_F=reduction.block_f,
            num_warps=reduction.num_warps,
        )  # fmt: skip
    sample = x.shape[1:]
    grad_w = _summed_partials(partial_w, sample, weight)
    return grad_x, grad_w, _summed_partials(partial_b, sample, bias)


def pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step_size: float,
    eps: float,
    clip_min: float,
    clip_max: float,
) -> torch.Tensor:
    """One L-inf PGD iterate (sign, step, eps-ball, box) in one pass."""
    launch, _, _, attack_step = _kernels()
    (x_adv, grad, x_orig), _ = _in_layout(x_adv, grad, x_orig)  # no noise: runs flat
    out = torch.empty_like(x_adv)
    if x_adv.numel() == 0:
        return out
    block = launch.elementwise_block(x_adv.numel())
    grid = (math.ceil(x_adv.numel() / block),)
    _launch(
        attack_step.pgd_step_kernel, grid, x_adv.device, x_adv, grad, x_orig, out, x_adv.numel(),
        float(step_size), float(eps), float(clip_min), float(clip_max),
        TAIL=x_adv.numel() % block != 0, COMPUTE_DTYPE=launch.compute_dtype(x_adv.dtype),
        BLOCK=block, num_warps=launch.num_warps(),
    )  # fmt: skip
    return out


def random_start(
    x: torch.Tensor,
    eps: float,
    seed: int,
    offset: int,
    clip_min: float,
    clip_max: float,
    project: bool,
) -> torch.Tensor:
    """x + eps * (2u - 1), optionally clipped to the box, in one pass."""
    bounds = (float(eps), float(clip_min), float(clip_max), 0)  # the 0: bounds_ptr, unread
    return random_start_rng(x, bounds, project, _scalar_rng(seed, offset))


def device_bounds(bounds: torch.Tensor) -> tuple:
    """The random start reads float32 ``[eps, clip_min, clip_max]`` from ``bounds`` on the
    tensors' device (with a device rng: both are in memory, or neither)."""
    return (0.0, 0.0, 0.0, bounds)


def random_start_rng(x, bounds: tuple, project: bool, rng: Rng):
    """``bounds``: (eps, clip_min, clip_max, bounds_ptr), as random_start or device_bounds
    make them."""
    launch, _, _, attack_step = _kernels()
    (x,), layout = _in_layout(x)
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    _, features = _rows_features(x)
    tiles = _nhwc_tiles(x, layout, launch)
    if tiles is not None:
        _launch(
            attack_step.random_start_nhwc_kernel, tiles["grid"], x.device,
            x, out, *tiles["args"], *bounds, *rng.args, RNG_IN_MEMORY=rng.in_memory,
            PROJECT=bool(project), COMPUTE_DTYPE=launch.compute_dtype(x.dtype),
            **tiles["kwargs"],
        )  # fmt: skip
        return out
    block = launch.elementwise_block(x.numel())
    grid = (math.ceil(x.numel() / block),)
    _launch(
        attack_step.random_start_kernel, grid, x.device,
        x, out, x.numel(), features, layout["hw"], layout["channels"],
        *bounds, *rng.args, RNG_IN_MEMORY=rng.in_memory,
        PROJECT=bool(project), TAIL=x.numel() % block != 0,
        CHANNELS_LAST=layout["CHANNELS_LAST"], COMPUTE_DTYPE=launch.compute_dtype(x.dtype),
        BLOCK=block, num_warps=launch.num_warps(),
    )  # fmt: skip
    return out
