"""The CUDA kernels' thread bodies, built by the host compiler and run on the CPU.

No GPU runs here, but everything a kernel thread computes is in __host__ __device__ bodies
(``csrc/cuda/*_body.h``, ``channels_last.h``): which elements it
touches, where they are in memory, which Philox counter and parameter entry each reads,
and the arithmetic. ``tests/cuda_host/kernel_bodies.cpp`` emulates a launch by calling
those bodies for every thread of a grid-stride grid (forward) or every row lane of each
feature quad (backward). Checked here against the reference spec in every dtype, for
row-major tensors and for channels_last tensors read in place, and across thread counts.
What needs a GPU (the launch, the block reductions' shared memory) is left to
``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fastnoise._backends import reference as ref

from conftest import REPO_ROOT, SEED_OFFSETS
from tolerances import assert_close_ulps

SOURCE = REPO_ROOT / "tests" / "cuda_host" / "kernel_bodies.cpp"
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
# (N, C, H, W): H * W a multiple of 4 (the in-place channels_last path), C of 1, 3 and 8.
NHWC_SHAPES = [(3, 8, 4, 5), (2, 3, 2, 2), (5, 1, 4, 4), (2, 6, 6, 6)]
ROW_MAJOR_SHAPES = [(3, 7, 5, 3), (4, 8, 4, 4), (9, 2)]
THREADS = [1, 7, 64]  # grid-stride: cursors carry across channels, pixels and samples


def _cuda_include() -> Path | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (Path(home) / "include" / "cuda_runtime.h").is_file():
            return Path(home) / "include"
    return None


@pytest.fixture(scope="module")
def bodies(tmp_path_factory) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++")
    include = _cuda_include()
    if compiler is None or include is None or torch.version.cuda is None:
        pytest.skip(
            "needs a C++ compiler, the CUDA toolkit's headers (CUDA_HOME) and a CUDA build of "
            "torch (its ATen/cuda headers), as the extension's CUDA sources do"
        )
    from torch.utils.cpp_extension import include_paths

    library = tmp_path_factory.mktemp("cuda_host") / "kernel_bodies.so"
    cmd = [
        compiler, "-O1", "-std=c++17", "-shared", "-fPIC", f"-I{include}",
        f"-I{REPO_ROOT / 'csrc' / 'cuda'}", *(f"-I{p}" for p in include_paths()),
        str(SOURCE), "-o", str(library),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lib = ctypes.CDLL(str(library))
    i32, i64, u64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_uint64, ctypes.c_void_p
    geometry = [i64, i64, i64]  # features, channels, pixels
    lib.noise_forward.argtypes = [i32, ptr, ptr, ptr, i64, *geometry, u64, u64, i64]
    lib.noise_backward_sigma.argtypes = [i32, ptr, ptr, i64, *geometry, u64, u64, i64]
    lib.pnil_forward.argtypes = [i32, ptr, ptr, ptr, ptr, i64, *geometry, u64, u64, i64]
    lib.pnil_backward.argtypes = [i32, *[ptr] * 6, i64, *geometry, u64, u64, i64]
    box = [ctypes.c_double] * 3  # eps, lo, hi
    lib.random_start.argtypes = [i32, ptr, ptr, i64, i64, i64, *box, u64, u64, i64]
    lib.pgd_step.argtypes = [i32, *[ptr] * 4, i64, *[ctypes.c_double] * 4, i64]
    return lib


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _geometry(x: torch.Tensor) -> tuple[int, int, int]:
    """(features, channels, pixels) as register_cuda.cpp passes them: channels 0 unless
    x is channels_last (then read in place)."""
    features = x[0].numel()
    if x.dim() == 4 and not x.is_contiguous():
        assert x.is_contiguous(memory_format=torch.channels_last)
        return features, x.shape[1], x.shape[2] * x.shape[3]
    assert x.is_contiguous()
    return features, 0, 0


def _noise_forward(lib, x, sigma, seed, offset, threads) -> torch.Tensor:
    y = torch.empty_like(x)  # keeps x's memory format
    lib.noise_forward(DTYPE_CODES[x.dtype], x.data_ptr(), sigma.data_ptr(), y.data_ptr(),
                      x.numel(), *_geometry(x), seed, offset, threads)  # fmt: skip
    return y


def _noise_backward(lib, grad, seed, offset, row_lanes) -> torch.Tensor:
    features, channels, pixels = _geometry(grad)
    sums = torch.full((features,), float("nan"), dtype=_opmath(grad.dtype))
    lib.noise_backward_sigma(DTYPE_CODES[grad.dtype], grad.data_ptr(), sums.data_ptr(),
                             grad.shape[0], features, channels, pixels, seed, offset,
                             row_lanes)  # fmt: skip
    return sums.view(grad.shape[1:])


def _pnil_forward(lib, x, w, b, seed, offset, threads) -> torch.Tensor:
    y = torch.empty_like(x)
    lib.pnil_forward(DTYPE_CODES[x.dtype], x.data_ptr(), w.data_ptr(), b.data_ptr(),
                     y.data_ptr(), x.numel(), *_geometry(x), seed, offset, threads)  # fmt: skip
    return y


def _pnil_backward(lib, grad, x, w, b, seed, offset, row_lanes):
    features, channels, pixels = _geometry(x)
    grad_x = torch.empty_like(x)
    sums = torch.full((2, features), float("nan"), dtype=_opmath(x.dtype))
    lib.pnil_backward(DTYPE_CODES[x.dtype], grad.data_ptr(), x.data_ptr(), w.data_ptr(),
                      b.data_ptr(), grad_x.data_ptr(), sums.data_ptr(), x.shape[0], features,
                      channels, pixels, seed, offset, row_lanes)  # fmt: skip
    return grad_x, sums[0].view(x.shape[1:]), sums[1].view(x.shape[1:])


def _random_start(lib, x, eps, seed, offset, project, threads) -> torch.Tensor:
    out = torch.empty_like(x)
    _, channels, pixels = _geometry(x)
    lo, hi = (0.0, 1.0) if project else (-math.inf, math.inf)
    lib.random_start(DTYPE_CODES[x.dtype], x.data_ptr(), out.data_ptr(), x.numel(), channels,
                     pixels, eps, lo, hi, seed, offset, threads)  # fmt: skip
    return out


def _pgd_step(lib, x, grad, x_orig, step, eps, threads) -> torch.Tensor:
    out = torch.empty_like(x)
    lib.pgd_step(DTYPE_CODES[x.dtype], x.data_ptr(), grad.data_ptr(), x_orig.data_ptr(),
                 out.data_ptr(), x.numel(), step, eps, 0.0, 1.0, threads)  # fmt: skip
    return out


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    if want.dtype in (torch.float16, torch.bfloat16):
        assert_close_ulps(got, want, atol=1e-5)
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _sums_close(got: torch.Tensor, want: torch.Tensor, rows: int) -> None:
    """Batch sums in float32: the summation order differs from torch's."""
    scale = float(want.abs().max()) + 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=2e-6 * rows * scale)


def _inputs(shape, dtype, channels_last, generator):
    x = torch.randn(shape, generator=generator).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


CASES = [(s, True) for s in NHWC_SHAPES] + [(s, False) for s in ROW_MAJOR_SHAPES]
CASE_IDS = [f"{'nhwc' if cl else 'rows'}{list(s)}" for s, cl in CASES]


@pytest.mark.parametrize("dtype", list(DTYPE_CODES), ids=str)
@pytest.mark.parametrize(("shape", "channels_last"), CASES, ids=CASE_IDS)
def test_noise_bodies_match_the_spec(bodies, shape, channels_last, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    x = _inputs(shape, dtype, channels_last, g)
    sigma = torch.rand(shape[1:], generator=g, dtype=_opmath(dtype))
    grad = _inputs(shape, dtype, channels_last, g)
    for seed, offset in SEED_OFFSETS.values():
        want = ref.noise_forward(x, sigma, seed, offset)
        outputs = [_noise_forward(bodies, x, sigma, seed, offset, t) for t in THREADS]
        _close(outputs[0], want)
        for other in outputs[1:]:
            assert torch.equal(other, outputs[0])  # every element once, whatever the grid
        want_sums = ref.noise_backward_sigma(grad, sigma, seed, offset)
        for row_lanes in (1, 4):
            _sums_close(_noise_backward(bodies, grad, seed, offset, row_lanes), want_sums,
                        shape[0])  # fmt: skip


@pytest.mark.parametrize("dtype", list(DTYPE_CODES), ids=str)
@pytest.mark.parametrize(("shape", "channels_last"), CASES, ids=CASE_IDS)
def test_pnil_bodies_match_the_spec(bodies, shape, channels_last, dtype):
    g = torch.Generator().manual_seed(sum(shape) + 1)
    x = _inputs(shape, dtype, channels_last, g)
    w = 0.5 * torch.randn(shape[1:], generator=g, dtype=_opmath(dtype))
    b = torch.randn(shape[1:], generator=g, dtype=_opmath(dtype)) - 2.0
    grad = _inputs(shape, dtype, channels_last, g)
    for seed, offset in SEED_OFFSETS.values():
        want = ref.pnil_forward(x, w, b, seed, offset)
        outputs = [_pnil_forward(bodies, x, w, b, seed, offset, t) for t in THREADS]
        _close(outputs[0], want)
        for other in outputs[1:]:
            assert torch.equal(other, outputs[0])
        want_gx, want_gw, want_gb = ref.pnil_backward(grad, x, w, b, seed, offset)
        for row_lanes in (1, 4):
            gx, gw, gb = _pnil_backward(bodies, grad, x, w, b, seed, offset, row_lanes)
            _close(gx, want_gx)
            _sums_close(gw, want_gw, shape[0])
            _sums_close(gb, want_gb, shape[0])


@pytest.mark.parametrize("dtype", list(DTYPE_CODES), ids=str)
@pytest.mark.parametrize(("shape", "channels_last"), CASES, ids=CASE_IDS)
def test_random_start_bodies_match_the_spec(bodies, shape, channels_last, dtype):
    g = torch.Generator().manual_seed(sum(shape) + 2)
    x = _inputs(shape, dtype, channels_last, g).abs().clamp(max=1.0)  # pixels in [0, 1]
    for (seed, offset), project in zip(SEED_OFFSETS.values(), (True, False, True), strict=True):
        want = ref.random_start(x, 8 / 255, seed, offset, 0.0, 1.0, project)
        outputs = [_random_start(bodies, x, 8 / 255, seed, offset, project, t) for t in THREADS]
        _close(outputs[0], want)
        for other in outputs[1:]:
            assert torch.equal(other, outputs[0])


@pytest.mark.parametrize("dtype", list(DTYPE_CODES), ids=str)
@pytest.mark.parametrize(("shape", "channels_last"), CASES, ids=CASE_IDS)
def test_pgd_step_body_equals_the_spec_bit_for_bit(bodies, shape, channels_last, dtype):
    """The step draws no noise, so it runs flat over memory in either layout; sign(0) = 0,
    and a NaN iterate, gradient-free origin or pixel stays NaN (never a bound)."""
    g = torch.Generator().manual_seed(sum(shape) + 3)
    x = _inputs(shape, dtype, channels_last, g).abs().clamp(max=1.0)
    grad = torch.where(_inputs(shape, torch.float32, channels_last, g).abs() < 0.3, 0.0, 1.0)
    grad = (grad * _inputs(shape, torch.float32, channels_last, g)).to(dtype)
    x_orig = (x + 0.01 * _inputs(shape, torch.float32, channels_last, g)).to(dtype)
    x, x_orig = x.clone(), x_orig.clone()  # dense: clone keeps the layout

    def memory(t: torch.Tensor) -> torch.Tensor:  # the elements in memory order
        return t.as_strided((t.numel(),), (1,))

    picks = torch.randperm(x.numel(), generator=g)[:2]
    memory(x)[picks[0]] = float("nan")
    memory(x_orig)[picks[1]] = float("nan")
    want = ref.pgd_step(x, grad, x_orig, 0.01, 8 / 255, 0.0, 1.0)
    for threads in THREADS:
        got = _pgd_step(bodies, x, grad, x_orig, 0.01, 8 / 255, threads)
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert int(want.isnan().sum()) == 2  # both NaNs reach the result


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_channels_last_bodies_equal_row_major_bodies_bit_for_bit(bodies, dtype):
    """The same arithmetic per element and per feature sum, only the addressing differs:
    the in-place channels_last path gives exactly what the old copy-to-row-major path gave."""
    g = torch.Generator().manual_seed(5)
    x = _inputs((4, 12, 4, 6), dtype, True, g)
    grad = _inputs(x.shape, dtype, True, g)
    sigma = torch.rand(x.shape[1:], generator=g)
    w, b = 0.3 * torch.randn(x.shape[1:], generator=g), torch.randn(x.shape[1:], generator=g)
    seed, offset = SEED_OFFSETS["crossing"]
    rows_x, rows_grad = x.contiguous(), grad.contiguous()
    assert torch.equal(_noise_forward(bodies, x, sigma, seed, offset, 64),
                       _noise_forward(bodies, rows_x, sigma, seed, offset, 64))  # fmt: skip
    assert torch.equal(_noise_backward(bodies, grad, seed, offset, 4),
                       _noise_backward(bodies, rows_grad, seed, offset, 4))  # fmt: skip
    assert torch.equal(_pnil_forward(bodies, x, w, b, seed, offset, 64),
                       _pnil_forward(bodies, rows_x, w, b, seed, offset, 64))  # fmt: skip
    assert torch.equal(_random_start(bodies, x, 0.1, seed, offset, True, 64),
                       _random_start(bodies, rows_x, 0.1, seed, offset, True, 64))  # fmt: skip
    nhwc = _pnil_backward(bodies, grad, x, w, b, seed, offset, 4)
    rows = _pnil_backward(bodies, rows_grad, rows_x, w, b, seed, offset, 4)
    for got, want in zip(nhwc, rows, strict=True):
        assert torch.equal(got, want)
