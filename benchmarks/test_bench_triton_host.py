"""The Triton backend's host path, per eager call, on the CPU: what a GPU without the
C++/CUDA extension pays in Python before each kernel starts.

An eager call on the ``triton`` backend checks its arguments, draws a seed, sizes the grid,
records autograd and hands the launch to Triton. On a GPU that host time decides the speed of
small activations (GPU run 3: 0.1-0.5 ms per eager Triton call). Here, with no GPU, the
kernels' launches are recorded instead of run (``tests/triton_launches.recording``): each
row times all of fastnoise's host path except Triton's own launcher. The eager PyTorch code
each call replaces is timed in the same run (``eager.py``, one thread, tiny tensors):

    pytest benchmarks/test_bench_triton_host.py --benchmark-only --benchmark-json=host.json
    python benchmarks/ratio_table.py host.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from eager import eager_inject_noise, eager_pgd_step, eager_pnil, eager_random_start

import fastnoise
from fastnoise import _dispatch

from conftest import per_call_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import triton_launches  # noqa: E402  (the recorder of tests/test_triton_aot.py)

SHAPE = (2, 4, 2, 2)  # as test_bench_overhead.py: nothing to compute
FEATURES = SHAPE[1:]
STEP, EPS = 2 / 255, 8 / 255
ROUNDS, ITERATIONS = 200, 25

pytest.importorskip("triton")


@pytest.fixture(scope="module", autouse=True)
def triton_on_cpu_without_launches():
    """One thread; the Triton backend resolved for CPU tensors, its launches recorded."""
    from fastnoise._backends import triton as triton_backend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    with triton_launches.compiled_kernels(), triton_launches.recording() as launches:
        _dispatch._resolved[cpu], _dispatch._front_doors[cpu] = triton_backend, None
        try:
            yield launches
        finally:
            _dispatch.refresh()
            torch.set_num_threads(threads)


def _call(op: str, passes: str, fused: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(SHAPE, generator=g)
    if op == "pgd_step":
        grad = torch.randn(SHAPE, generator=g)
        fn = fastnoise.pgd_step if fused else eager_pgd_step
        return lambda: fn((x + 0.01).clamp(0, 1), grad, x, STEP, EPS)
    if op == "random_start":
        fn = fastnoise.random_start if fused else eager_random_start
        return lambda: fn(x, EPS)
    if op == "inject_noise":
        params = (torch.full(FEATURES, 0.25),)
        fn = fastnoise.inject_noise if fused else eager_inject_noise
    else:
        params = (torch.zeros(FEATURES), torch.full(FEATURES, -2.0))
        fn = fastnoise.pnil if fused else eager_pnil
    if passes == "fwd":
        return lambda: fn(x, *params)
    wrt = [t.requires_grad_() for t in (x, *params)]
    grad_y = torch.ones(SHAPE)
    return lambda: torch.autograd.grad(fn(*wrt), wrt, grad_y)


WORKLOADS = [
    ("inject_noise", "fwd"),
    ("inject_noise", "fwd+bwd"),
    ("pnil", "fwd"),
    ("pnil", "fwd+bwd"),
    ("pgd_step", "fwd"),
    ("random_start", "fwd"),
]


@pytest.mark.parametrize("backend", ["eager", "triton"])
@pytest.mark.parametrize("op,passes", WORKLOADS)
def test_triton_host_path(benchmark, triton_on_cpu_without_launches, op, passes, backend):
    call = _call(op, passes, fused=backend != "eager")
    launches = triton_on_cpu_without_launches
    before = len(launches)
    with torch.no_grad() if passes == "fwd" else torch.enable_grad():
        call()
        assert (len(launches) > before) == (backend == "triton")  # launches recorded only
        benchmark.group = f"cpu {op} {passes}, triton host path"
        benchmark.extra_info.update(per_call_info("cpu", backend, op, passes, SHAPE))
        benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=2, iterations=ITERATIONS)
