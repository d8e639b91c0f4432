"""Per-call overhead: every public op and the two noise layers on a tiny tensor, where
the arithmetic costs nothing and what is left is dispatch, validation and autograd.

Each fastnoise row is timed against the eager PyTorch it replaces (``eager.py``) in the
same run, with the same settings, on one thread, both without and with ``torch.compile``.
pytest-benchmark groups each fastnoise row with its eager row; ``ratio_table.py`` turns
the saved JSON into a Markdown table of fastnoise / eager ratios:

    pytest benchmarks/test_bench_overhead.py --benchmark-only --benchmark-json=overhead.json
    python benchmarks/ratio_table.py overhead.json

On CUDA each round starts with the GPU idle (synchronized in the untimed setup) and times
the host side of ``CUDA_CALLS`` calls back to back: the launches, not the kernels, which is
the cost that adds up when a model calls the op at every layer. ``extra_info`` records the
calls per round, and ``ratio_table.py`` divides by it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import torch
from eager import (
    EagerPerturbationInjection,
    EagerPNIL,
    eager_inject_noise,
    eager_pgd_step,
    eager_pnil,
    eager_random_start,
)

import fastnoise
from fastnoise import nn as fnn
from fastnoise._dispatch import backend_for

from conftest import devices, fused_backends, per_call_info

SHAPE = (2, 4, 2, 2)  # 32 elements: one tile, one warp, nothing to compute
FEATURES = SHAPE[1:]
STEP, EPS = 2 / 255, 8 / 255
# CUDA: 8 calls per round (each round syncs first), the host side timed; 50 rounds keep the
# step near its old 420 calls per row. GPU runs 1-3 timed one call per round: two rows
# running the same code differed by up to 0.5 in ratio.
ROUNDS, CUDA_CALLS = 50, 8
WARMUP_ROUNDS = 5
# CPU: 25 calls per round, so one round spans ~0.1-10 ms and the median of 200 rounds
# holds still on a shared VM (one call per round moved single rows by 2x between runs).
CPU_ROUNDS, CPU_ITERATIONS = 200, 25


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Per-call cost is serial work; a second OpenMP thread only adds wake-up noise.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


WORKLOADS = [  # (op, passes): "fwd" runs under no_grad, "fwd+bwd" takes grads of all inputs
    ("inject_noise", "fwd"),
    ("inject_noise", "fwd+bwd"),
    ("pnil", "fwd"),
    ("pnil", "fwd+bwd"),
    ("pgd_step", "fwd"),  # no autograd: attack steps run under no_grad
    ("random_start", "fwd"),
    ("PerturbationInjection", "fwd"),
    ("PerturbationInjection", "fwd+bwd"),
    ("PNIL", "fwd"),
    ("PNIL", "fwd+bwd"),
]


def overhead_cases() -> list:
    """(device, op, passes, compiled, backend), each fastnoise row right after its eager
    row, so the rows compared run back to back (a shared machine drifts over minutes).
    Backends: the eager baseline, ``auto`` and every fused backend for the device."""
    cases = []
    for device in devices():
        for op, passes in WORKLOADS:
            for compiled in (False, True):
                for backend in ["eager", "auto", *fused_backends(device)]:
                    tag = "compiled" if compiled else "plain"
                    case = (device, op, passes, compiled, backend)
                    cases.append(pytest.param(*case, id=f"{device}-{op}-{passes}-{tag}-{backend}"))
    return cases


def _inputs(op: str, device: str) -> tuple[torch.Tensor, ...]:
    """The op's tensor arguments (layers: just x), the same for fastnoise and eager."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=g).to(device)
    if op == "inject_noise":
        return x, torch.full(FEATURES, 0.25, device=device)
    if op == "pnil":
        return x, torch.zeros(FEATURES, device=device), torch.full(FEATURES, -2.0, device=device)
    if op == "pgd_step":
        grad = torch.randn(SHAPE, generator=g).to(device)
        return (x + 0.01).clamp(0, 1), grad, x
    return (x,)


def _forward(op: str, fused: bool, device: str) -> Callable[..., torch.Tensor]:
    if op == "inject_noise":
        return (lambda x, s: fastnoise.inject_noise(x, s)) if fused else eager_inject_noise
    if op == "pnil":
        return (lambda x, w, b: fastnoise.pnil(x, w, b)) if fused else eager_pnil
    if op == "pgd_step":
        if fused:
            return lambda a, g, o: fastnoise.pgd_step(a, g, o, STEP, EPS)
        return lambda a, g, o: eager_pgd_step(a, g, o, STEP, EPS)
    if op == "random_start":
        if fused:
            return lambda x: fastnoise.random_start(x, EPS)
        return lambda x: eager_random_start(x, EPS)
    if op == "PerturbationInjection":
        layer = (
            fnn.PerturbationInjection(FEATURES) if fused else EagerPerturbationInjection(FEATURES)
        )
        return layer.to(device)
    if op == "PNIL":
        return (fnn.PNIL(FEATURES) if fused else EagerPNIL(FEATURES)).to(device)
    raise ValueError(f"unknown op {op!r}")


# One forward per (device, op, compiled, backend that runs it): a compiled graph takes its
# backend when it is traced (the extension's ops, the Triton ops or the custom ops), so
# each backend's rows get their own graph; "auto" shares the one of the backend it picks.
_FORWARDS: dict[tuple[str, str, bool, str], Callable[..., torch.Tensor]] = {}


def _cached_forward(op: str, backend: str, device: str, compiled: bool):
    fused = backend != "eager"
    runs = "eager"
    if fused:
        with fastnoise.use_backend(backend):
            runs = backend_for(torch.device(device)).NAME
    key = (device, op, compiled, runs)
    if key not in _FORWARDS:
        forward = _forward(op, fused, device)
        if compiled:
            # dynamo's cache lives on the code object, and the backend choice is not a
            # guard: without a reset, a graph traced for one backend would serve another.
            torch._dynamo.reset()
            forward = torch.compile(forward, fullgraph=True)
        _FORWARDS[key] = forward
    return _FORWARDS[key]


def _timed_call(passes: str, forward, inputs) -> Callable[[], object]:
    if passes == "fwd":
        return lambda: forward(*inputs)
    params = tuple(forward.parameters()) if isinstance(forward, torch.nn.Module) else ()
    wrt = (*inputs, *params)
    grad_y = torch.ones(SHAPE, device=inputs[0].device)
    return lambda: torch.autograd.grad(forward(*inputs), wrt, grad_y)


@pytest.mark.parametrize("device,op,passes,compiled,backend", overhead_cases())
def test_overhead(benchmark, device, op, passes, compiled, backend):
    fused = backend != "eager"
    forward = _cached_forward(op, backend, device, compiled)
    inputs = _inputs(op, device)
    needs_grad = passes == "fwd+bwd"
    for t in inputs:
        t.requires_grad_(needs_grad)
    call = _timed_call(passes, forward, inputs)
    grad_mode = contextlib.nullcontext() if needs_grad else torch.no_grad()
    backend_mode = fastnoise.use_backend(backend) if fused else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device == "cuda" else None

    compile_tag = "torch.compile" if compiled else "no compile"
    benchmark.group = f"{device} {op} {passes}, {compile_tag}"
    benchmark.extra_info.update(per_call_info(device, backend, op, passes, SHAPE))
    benchmark.extra_info["compiled"] = compiled
    with grad_mode, backend_mode:
        for _ in range(3):  # compiles here, not in the timed rounds
            call()
        if sync is None:
            benchmark.pedantic(call, rounds=CPU_ROUNDS, warmup_rounds=2, iterations=CPU_ITERATIONS)
        else:  # pytest-benchmark takes no setup with iterations > 1: loop inside a round
            benchmark.extra_info["calls_per_round"] = CUDA_CALLS

            def calls():
                for _ in range(CUDA_CALLS):
                    call()

            benchmark.pedantic(
                calls, setup=sync, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1
            )
