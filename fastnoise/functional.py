"""Functional API: noise injection, PNIL and the attack step.

Every stochastic call takes ``seed=None`` (a fresh seed from torch's default generator,
so ``torch.manual_seed`` makes runs reproducible) and ``offset=0`` (in Philox counters,
see :mod:`fastnoise.rng`). The backward passes regenerate the noise from (seed, offset):
nothing activation-sized is stored for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastnoise import _eager, _ops, rng
from fastnoise import _validation as v
from fastnoise._backends import reference
from fastnoise._dispatch import backend_for, front_door

__all__ = ["inject_noise", "inject_noise_abs", "pnil", "pgd_step", "random_start"]


def _check_seed_offset(seed: int | torch.Tensor | None, offset: int) -> None:
    """Python ints are checked here; inside torch.compile they may be symbolic, and a
    seed may be an int64 tensor (so a compiled graph takes new seeds without recompiling)."""
    if torch.compiler.is_compiling():
        return
    if isinstance(seed, torch.Tensor):
        if seed.numel() != 1 or seed.dtype != torch.int64 or seed.device.type != "cpu":
            raise ValueError(
                "seed tensor must be one int64 on the CPU, got "
                f"{seed.dtype} of shape {tuple(seed.shape)} on {seed.device}"
            )
        seed = int(seed)  # a CPU read: no device sync
    rng._check_seed_offset(0 if seed is None else seed, offset)


def _front_door(x: object, seed: object, offset: object):
    """The C++ front door (checks, seed, kernel and autograd in one call) when it can take
    this call: eager mode, a backend of the extension, a Python-int or None seed. Else
    None, and the custom ops of :mod:`fastnoise._ops` run it (torch.compile traces those;
    a tensor seed needs them). Not a tensor ``x``: the slow path names the error."""
    if type(x) is not torch.Tensor and not isinstance(x, torch.Tensor):
        return None
    if (seed is not None and type(seed) is not int) or type(offset) is not int:
        return None
    if torch.compiler.is_compiling():
        return None
    return front_door(x.device)


def _compiled_door(x: torch.Tensor):
    """Under torch.compile, the extension's ops (``torch.ops.fastnoise_C``) when its backend
    runs ``x``'s device: the compiled graph then calls C++ with no Python in between. Else
    None (the custom ops of :mod:`fastnoise._ops`, which pick the backend at run time). The
    choice is made when the graph is traced: a later set_backend does not change a graph.

    The ops it calls (the ``_compiled_*`` functions below). seed=None: the ``.fresh``
    overloads draw [seed, offset] inside the op, in C++, as eager seed=None does (one call;
    the state comes back beside y for the backward). On CUDA it is a device tensor from
    torch's CUDA generator, as in CUDA graph capture, so the graph holds no CPU tensor and
    mode="reduce-overhead" can capture it (the offset is then unused, as in capture). A
    given seed: the ``.state`` overloads, with [seed, offset] a graph input, so new seeds do
    not recompile."""
    if not torch.compiler.is_compiling() or not _extension_runs(x.device):
        return None
    return torch.ops.fastnoise_C


def _compiled_inject_noise(ops, x, sigma, seed, offset: int, absolute: bool) -> torch.Tensor:
    if seed is None:
        fresh = ops.inject_noise.abs_fresh if absolute else ops.inject_noise.fresh
        return fresh(x, sigma, offset)[0]
    op = ops.inject_noise.abs_state if absolute else ops.inject_noise.state
    return op(x, sigma, _ops.make_rng_state(seed, offset))


def _compiled_pnil(ops, x, weight, bias, seed, offset: int) -> torch.Tensor:
    if seed is None:
        return ops.pnil.fresh(x, weight, bias, offset)[0]
    return ops.pnil.state(x, weight, bias, _ops.make_rng_state(seed, offset))


def _compiled_random_start(ops, x, seed, offset: int, bounds, project: bool) -> torch.Tensor:
    if seed is None:
        return ops.random_start.fresh(x, offset, bounds, project)
    return ops.random_start.state(x, _ops.make_rng_state(seed, offset), bounds, project)


def _triton_compiles(x: torch.Tensor) -> bool:
    """Under torch.compile, whether the Triton backend runs ``x``'s CUDA device: the graph
    then takes the kernels as ``triton_op``s (:mod:`fastnoise._triton_ops`), which Inductor
    launches itself. Without the extension, that is what ``auto`` runs on a GPU."""
    return torch.compiler.is_compiling() and _triton_runs(x.device)


@torch.compiler.assume_constant_result
def _triton_runs(device: torch.device) -> bool:
    """Evaluated by dynamo at trace time, as _extension_runs: it imports the triton ops
    (registering them) the first time it says yes."""
    if device.type != "cuda" or backend_for(device).NAME != "triton":
        return False
    import fastnoise._triton_ops  # noqa: F401

    return True


@torch.compiler.assume_constant_result
def _extension_runs(device: torch.device) -> bool:
    """Whether the extension runs ``device`` under the current choice; evaluated by
    dynamo at trace time (the lookup may load the extension, which it cannot trace)."""
    return front_door(device) is not None


def _as_sigma(sigma: torch.Tensor | float, x: torch.Tensor, check_values=True) -> torch.Tensor:
    if not isinstance(sigma, torch.Tensor):
        v.check_non_negative_number("sigma", sigma)
        # A fill on the device, not torch.tensor(..., device=cuda): that is a host-to-device
        # copy per call, and an error inside CUDA graph capture (seen on an H100).
        return torch.full((), float(sigma), device=x.device, dtype=torch.float32)
    v.check_tensor("sigma", sigma)
    v.check_same_device("sigma", sigma, "x", x)
    v.check_per_feature("sigma", sigma, "x", x)
    if check_values:
        v.check_non_negative_tensor("sigma", sigma)
    return sigma


def inject_noise(
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """``x + sigma * z`` with one independent z ~ N(0, 1) per element of ``x``.

    Learn2Perturb Eq. (4)-(5). ``x`` is ``(N, *feature)``; ``sigma`` broadcasts to one
    sample (``(C, H, W)``, ``(C, 1, 1)``, a scalar tensor or a float). Differentiable in
    ``x`` and ``sigma``. The result has ``x``'s dtype.
    """
    door = _front_door(x, seed, offset)
    if door is not None:
        try:
            if isinstance(sigma, torch.Tensor):
                return door.inject_noise(x, sigma, seed, offset)
            if type(sigma) in (float, int):
                return door.inject_noise_scalar(x, sigma, seed, offset)
        except RuntimeError:  # e.g. a str sigma, an int64 overflow: name the argument
            _checked_inject_args(x, sigma, seed, offset)
            raise
    compiled = _compiled_door(x)  # the C++ op checks sigma >= 0 itself
    sigma = _checked_inject_args(x, sigma, seed, offset, check_values=compiled is None)
    if compiled is not None:
        return _compiled_inject_noise(compiled, x, sigma, seed, offset, absolute=False)
    if _triton_compiles(x):
        from fastnoise import _triton_ops

        return _triton_ops.inject_noise(x, sigma, seed, offset)
    if torch.compiler.is_compiling():
        return _ops.noise_injection(x, sigma, _ops.make_rng_state(seed, offset))
    backend = backend_for(x.device)
    return _eager.NoiseInjection.apply(x, sigma, backend, _ops.host_seed(seed), offset)


def inject_noise_abs(
    x: torch.Tensor, sigma: torch.Tensor, seed: int | None = None, offset: int = 0
) -> torch.Tensor:
    """``inject_noise(x, sigma.abs(), seed, offset)`` in one fused call where the C++
    extension runs ``x`` (gradient ``sign(sigma) * d/d|sigma|``): for layers whose
    learnable std may dip below 0 between an optimizer step and its clamp."""
    door = _front_door(x, seed, offset)
    if door is not None and isinstance(sigma, torch.Tensor):
        try:
            return door.inject_noise_abs(x, sigma, seed, offset)
        except RuntimeError:  # e.g. an int64 overflow: name the argument
            _checked_inject_args(x, sigma, seed, offset, check_values=False)
            raise
    compiled = _compiled_door(x) if isinstance(sigma, torch.Tensor) else None
    if compiled is not None:  # |sigma| inside the op: no abs kernel in the compiled graph
        sigma = _checked_inject_args(x, sigma, seed, offset, check_values=False)
        return _compiled_inject_noise(compiled, x, sigma, seed, offset, absolute=True)
    v.check_tensor("sigma", sigma)
    return inject_noise(x, sigma.abs(), seed, offset)


def _checked_inject_args(x, sigma, seed, offset, check_values=True) -> torch.Tensor:
    v.check_tensor("x", x)
    v.check_batched("x", x)
    sigma = _as_sigma(sigma, x, check_values)
    _check_seed_offset(seed, offset)
    return sigma


def pnil(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Pixelwise noise injection, PNIL Eq. (2)-(3): ``x + z * exp((x * weight + bias) / 2)``.

    ``weight`` and ``bias`` broadcast to one sample of ``x``; differentiable in all three.
    """
    door = _front_door(x, seed, offset)
    if door is not None:
        try:
            return door.pnil(x, weight, bias, seed, offset)
        except RuntimeError:  # e.g. a str bias, an int64 overflow: name the argument
            _check_pnil_args(x, weight, bias, seed, offset)
            raise
    _check_pnil_args(x, weight, bias, seed, offset)
    compiled = _compiled_door(x)
    if compiled is not None:
        return _compiled_pnil(compiled, x, weight, bias, seed, offset)
    if _triton_compiles(x):
        from fastnoise import _triton_ops

        return _triton_ops.pnil(x, weight, bias, seed, offset)
    if torch.compiler.is_compiling():
        return _ops.pnil(x, weight, bias, _ops.make_rng_state(seed, offset))
    backend = backend_for(x.device)
    return _eager.Pnil.apply(x, weight, bias, backend, _ops.host_seed(seed), offset)


def _check_pnil_args(x, weight, bias, seed, offset) -> None:
    v.check_tensor("x", x)
    v.check_batched("x", x)
    for name, param in (("weight", weight), ("bias", bias)):
        v.check_tensor(name, param)
        v.check_same_device(name, param, "x", x)
        v.check_per_feature(name, param, "x", x)
    _check_seed_offset(seed, offset)


def pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step_size: float,
    eps: float,
    clip: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Next L-inf PGD iterate: ``x_adv + step_size * sign(grad)``, projected onto the
    eps-ball around ``x_orig`` and then onto the pixel box ``clip`` (None: no box)."""
    for name, t in (("x_adv", x_adv), ("grad", grad), ("x_orig", x_orig)):
        v.check_tensor(name, t)
    v.check_same_shape("grad", grad, "x_adv", x_adv)
    v.check_same_shape("x_orig", x_orig, "x_adv", x_adv)
    v.check_same_device("grad", grad, "x_adv", x_adv)
    v.check_same_device("x_orig", x_orig, "x_adv", x_adv)
    step_size = v.check_non_negative_number("step_size", step_size)
    eps = v.check_non_negative_number("eps", eps)
    lo, hi = v.check_clip("clip", clip)
    # The extension's ops record no graph: no torch.no_grad() needed around them.
    if not torch.compiler.is_compiling():
        door = front_door(x_adv.device)
        if door is not None:
            return door.pgd_step(x_adv, grad, x_orig, step_size, eps, lo, hi)
    if torch.compiler.is_compiling():
        # The step draws no noise, so the spec's own arithmetic is exact: Inductor fuses it
        # (and the caller's neighbouring ops) into one kernel, where an opaque op call
        # costs more than the whole step on small tensors.
        with torch.no_grad():
            return reference.pgd_step(x_adv, grad, x_orig, step_size, eps, lo, hi)
    with torch.no_grad():  # the backend's primitive, called directly: no autograd to record
        out = backend_for(x_adv.device).pgd_step(x_adv, grad, x_orig, step_size, eps, lo, hi)
        return _ops.fresh_output(out, x_adv, grad, x_orig)


def random_start(
    x: torch.Tensor,
    eps: float,
    seed: int | torch.Tensor | None = None,
    project: bool = True,
    clip: Sequence[float] | None = (0.0, 1.0),
    offset: int = 0,
) -> torch.Tensor:
    """``x + U(-eps, eps)`` per element (``eps * (2u - 1)``, u from the spec), clipped to
    the pixel box when ``project``: PGD's random start, RFGSM and NFGSM."""
    v.check_tensor("x", x)
    eps = v.check_non_negative_number("eps", eps)
    lo, hi = v.check_clip("clip", clip)
    door = _front_door(x, seed, offset)
    if door is not None:
        try:  # the seed is drawn in C++ when None
            return door.random_start(x, eps, seed, offset, lo, hi, bool(project))
        except RuntimeError:  # an int64 overflow: name the argument
            _check_seed_offset(seed, offset)
            raise
    _check_seed_offset(seed, offset)
    if not torch.compiler.is_compiling():  # the backend's primitive, called directly
        backend, seed = backend_for(x.device), _ops.host_seed(seed)
        with torch.no_grad():
            out = backend.random_start(x, eps, seed, offset, lo, hi, bool(project))
        return _ops.fresh_output(out, x)
    if _triton_compiles(x):
        from fastnoise import _triton_ops

        return _triton_ops.random_start(x, eps, seed, offset, lo, hi, bool(project))
    bounds = _ops.make_bounds(0.0, eps, lo, hi)
    compiled = _compiled_door(x)
    if compiled is not None:
        return _compiled_random_start(compiled, x, seed, offset, bounds, bool(project))
    with torch.no_grad():
        return _ops.random_start(x, _ops.make_rng_state(seed, offset), bounds, bool(project))
