"""Triton kernels against the pure-torch reference (the spec).

On a machine with CUDA the kernels run on the GPU. Without one they run in Triton's
CPU interpreter (the ``device`` and ``tb`` fixtures of conftest.py).
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

from fastnoise import rng  # noqa: E402
from fastnoise._backends import reference as ref  # noqa: E402
from fastnoise._dispatch import use_backend  # noqa: E402

from tolerances import assert_close_ulps  # noqa: E402

# Both sides round once from float32 math to the output dtype; they may differ by the
# float32 error of z (~1e-6 relative) and, in fp16/bf16, one ulp of the output dtype
# at each element's magnitude (tests/tolerances.py).
TOLERANCES = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float64: dict(atol=1e-6, rtol=1e-6),  # z itself is float32 in both
}
LOW_PRECISION = (torch.float16, torch.bfloat16)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(2, 3, 5, 7), (4, 16, 8, 8), (3, 10), (1, 1), (5, 2, 3)]
SEED_OFFSETS = [(1234, 0), (2**62 + 99, 2**32 - 3), (7, 2**40 + 1)]


def _close(actual, expected, dtype=None):
    dtype = dtype or expected.dtype
    if dtype in LOW_PRECISION:
        assert_close_ulps(actual, expected, dtype=dtype, atol=TOLERANCES[torch.float32]["atol"])
    else:
        torch.testing.assert_close(actual.cpu(), expected.cpu(), **TOLERANCES[dtype])


def _make(shape, dtype, device, layout="contiguous"):
    x = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same shape, odd strides
    return x


# ---- the RNG spec ---------------------------------------------------------------------


@pytest.mark.parametrize("seed,offset", SEED_OFFSETS + [(0, 0), (2**63 - 1, 2**62)])
@pytest.mark.parametrize("numel", [1, 7, 64, 1001])
def test_words_are_bit_exact(tb, device, seed, offset, numel):
    words = tb.random_words(numel, seed, offset, torch.device(device))
    assert torch.equal(words.cpu(), rng.random_words(numel, seed, offset))


@pytest.mark.parametrize("seed,offset", SEED_OFFSETS)
def test_normals_match_spec(tb, device, seed, offset):
    # z = y for x = 0, sigma = 1; odd numel checks a trailing Box-Muller pair.
    x = torch.zeros(3, 1001, device=device)
    z = tb.noise_forward(x, torch.ones((), device=device), seed, offset)
    expected = rng.randn((3, 1001), seed, offset)
    torch.testing.assert_close(z.cpu(), expected, atol=2e-6, rtol=1e-6)


def test_counter_high_word_changes_stream(tb, device):
    # offsets 2**32 apart differ only in c1: a layout that dropped c1 would repeat.
    x = torch.zeros(1, 64, device=device)
    one = torch.ones((), device=device)
    low = tb.noise_forward(x, one, 5, 3)
    high = tb.noise_forward(x, one, 5, 3 + 2**32)
    assert not torch.equal(low, high)
    torch.testing.assert_close(high.cpu(), rng.randn((1, 64), 5, 3 + 2**32), atol=2e-6, rtol=1e-6)


def test_counter_offset_shifts_stream(tb, device):
    # element i at offset k*... equals element i + 4k at offset 0: the index math is linear.
    x = torch.zeros(1, 4096, device=device)
    one = torch.ones((), device=device)
    whole = tb.noise_forward(x, one, 9, 2**31 - 8)
    shifted = tb.noise_forward(x[:, :1024], one, 9, 2**31 - 8 + 768)
    torch.testing.assert_close(shifted, whole[:, 3072:], atol=0, rtol=0)


def test_noise_statistics(tb, device):
    z = tb.noise_forward(torch.zeros(4, 16384, device=device), torch.ones((), device=device), 3, 0)
    z = z.double().flatten()
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.std().item() - 1) < 5 / math.sqrt(2 * n)
    assert abs((z.abs() < 1).double().mean().item() - 0.6827) < 0.01


# ---- noise injection ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_noise_injection_forward_backward(tb, device, dtype, shape, seed_offset):
    x = _make(shape, dtype, device)
    sigma = torch.rand(shape[1:], device=device)
    seed, offset = seed_offset
    _close(tb.noise_forward(x, sigma, seed, offset), ref.noise_forward(x, sigma, seed, offset))
    g = _make(shape, dtype, device)
    expected = ref.noise_backward_sigma(g, sigma, seed, offset)
    # grad_sigma sums N float32 products: compare against the fp32 reference scale.
    torch.testing.assert_close(
        tb.noise_backward_sigma(g, sigma, seed, offset).cpu(),
        expected.cpu(),
        atol=1e-4 * shape[0],
        rtol=1e-4,
    )


@pytest.mark.parametrize("sigma_shape", [(), (1,), (3, 1, 1), (1, 5, 1), (7,)])
def test_noise_injection_broadcast_sigma(tb, device, sigma_shape, seed_offset):
    x = _make((4, 3, 5, 7), torch.float32, device)
    sigma = torch.rand(sigma_shape, device=device)
    s, o = seed_offset
    _close(tb.noise_forward(x, sigma, s, o), ref.noise_forward(x, sigma, s, o))
    g = torch.randn_like(x)
    got = tb.noise_backward_sigma(g, sigma, s, o)
    assert got.shape == sigma.shape
    torch.testing.assert_close(got, ref.noise_backward_sigma(g, sigma, s, o), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
def test_noise_injection_strided(tb, device, layout, seed_offset):
    x = _make((3, 4, 6, 5), torch.float32, device, layout)
    sigma = torch.rand(4, 1, 1, device=device)
    s, o = seed_offset
    _close(tb.noise_forward(x, sigma, s, o), ref.noise_forward(x.contiguous(), sigma, s, o))
    g = _make((3, 4, 6, 5), torch.float32, device, layout)
    torch.testing.assert_close(
        tb.noise_backward_sigma(g, sigma, s, o),
        ref.noise_backward_sigma(g.contiguous(), sigma, s, o),
        atol=1e-4,
        rtol=1e-5,
    )


def test_empty_tensors(tb, device):
    x = torch.empty(0, 3, 4, device=device)
    sigma = torch.rand(3, 4, device=device)
    assert tb.noise_forward(x, sigma, 1, 0).shape == x.shape
    assert torch.equal(tb.noise_backward_sigma(x, sigma, 1, 0), torch.zeros_like(sigma))
    gx, gw, gb = tb.pnil_backward(x, x, sigma, sigma, 1, 0)
    assert gx.shape == x.shape and not gw.any() and not gb.any()
    assert tb.pgd_step(x, x, x, 0.1, 0.1, 0.0, 1.0).shape == x.shape
    assert tb.random_start(x, 0.1, 1, 0, 0.0, 1.0, True).shape == x.shape


# ---- PNIL -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pnil_forward_backward(tb, device, dtype, shape, seed_offset):
    x = _make(shape, dtype, device)
    weight = 0.3 * torch.randn(shape[1:], device=device)
    bias = 0.3 * torch.randn(shape[-1:], device=device)
    seed, offset = seed_offset
    _close(
        tb.pnil_forward(x, weight, bias, seed, offset),
        ref.pnil_forward(x, weight, bias, seed, offset),
    )
    g = _make(shape, dtype, device)
    got = tb.pnil_backward(g, x, weight, bias, seed, offset)
    expected = ref.pnil_backward(g, x, weight, bias, seed, offset)
    _close(got[0], expected[0])
    for a, b in zip(got[1:], expected[1:], strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a.cpu(), b.cpu(), atol=2e-4 * shape[0], rtol=1e-4)


def test_pnil_channels_last(tb, device, seed_offset):
    x = _make((2, 3, 4, 6), torch.float16, device, "channels_last")
    weight, bias = torch.randn(3, 1, 1, device=device), torch.randn(3, 1, 1, device=device)
    s, o = seed_offset
    _close(tb.pnil_forward(x, weight, bias, s, o), ref.pnil_forward(x, weight, bias, s, o))
    g = _make((2, 3, 4, 6), torch.float16, device, "channels_last")
    got = tb.pnil_backward(g, x, weight, bias, s, o)
    expected = ref.pnil_backward(g, x, weight, bias, s, o)
    _close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], atol=1e-3, rtol=1e-4)


# ---- attack steps ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", [(0.0, 1.0), (-math.inf, math.inf)])
def test_pgd_step(tb, device, dtype, clip):
    x_orig = torch.rand(3, 3, 7, 5, device=device).to(dtype)
    x_adv = (x_orig + 0.05 * torch.randn_like(x_orig)).to(dtype)
    grad = torch.randn_like(x_orig)
    grad[0, 0, 0] = 0.0  # sign(0) = 0
    got = tb.pgd_step(x_adv, grad, x_orig, 0.02, 0.03, *clip)
    expected = ref.pgd_step(x_adv, grad, x_orig, 0.02, 0.03, *clip)
    assert got.dtype == dtype
    # Exact in fp32/fp16; the interpreter rounds float32 -> bfloat16 its own way (1 ulp).
    tol = dict(atol=8e-3, rtol=8e-3) if dtype == torch.bfloat16 else dict(atol=0, rtol=0)
    torch.testing.assert_close(got, expected, **tol)
    x_adv_t, grad_t = x_adv.mT.contiguous().mT, grad.mT.contiguous().mT
    transposed = tb.pgd_step(x_adv_t, grad_t, x_orig, 0.02, 0.03, *clip)
    torch.testing.assert_close(transposed, expected, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("project", [True, False])
def test_random_start(tb, device, dtype, project):
    x = torch.rand(5, 3, 9, device=device).to(dtype)
    for seed, offset in SEED_OFFSETS:
        got = tb.random_start(x, 8 / 255, seed, offset, 0.0, 1.0, project)
        expected = ref.random_start(x, 8 / 255, seed, offset, 0.0, 1.0, project)
        _close(got, expected, dtype)
    delta = (got.float() - x.float()).abs().max().item()
    assert 0.5 * 8 / 255 < delta <= 8 / 255 + 1e-2


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_full_programs_and_a_masked_tail(tb, device, layout, monkeypatch):
    # numel = 315 in blocks of 64: four mask-free programs and a masked tail of 59 (the
    # interpreter otherwise sizes one block to the whole tensor, so it never sees both).
    from fastnoise.kernels import launch

    monkeypatch.setattr(launch, "INTERPRETER_MAX_BLOCK", 64)
    monkeypatch.setattr(launch, "GPU_BLOCK", 64)
    x = _make((3, 3, 5, 7), torch.float32, device, layout)
    grad = _make((3, 3, 5, 7), torch.float32, device, layout)
    sigma, weight = torch.rand(3, 5, 7, device=device), torch.randn(3, 5, 7, device=device)
    s, o = 2**40 + 1, 2**32 - 3
    cases = [
        (tb.noise_forward(x, sigma, s, o), ref.noise_forward(x, sigma, s, o)),
        (tb.pnil_forward(x, weight, sigma, s, o), ref.pnil_forward(x, weight, sigma, s, o)),
        (
            tb.random_start(x, 0.1, s, o, 0.0, 1.0, True),
            ref.random_start(x, 0.1, s, o, 0.0, 1.0, True),
        ),
        (
            tb.pgd_step(x, grad, x, 0.1, 0.2, -1.0, 1.0),
            ref.pgd_step(x, grad, x, 0.1, 0.2, -1.0, 1.0),
        ),
    ]
    for got, expected in cases:
        _close(got, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inputs_stay_nan_as_in_the_reference(tb, device, dtype):
    # max.f32 drops a NaN: without propagate_nan a NaN origin became a bound (pgd_step)
    # and a NaN pixel became clip_min (random_start)
    nan = math.nan
    x = torch.tensor([[0.5, nan, 0.5, 0.2, 0.7]], device=device).to(dtype)
    grad = torch.tensor([[nan, 1.0, -1.0, 0.0, 1.0]], device=device).to(dtype)
    x_orig = torch.tensor([[0.5, 0.5, nan, 0.2, 0.7]], device=device).to(dtype)
    for clip in [(0.0, 1.0), (-math.inf, math.inf)]:
        got = tb.pgd_step(x, grad, x_orig, 0.01, 0.03, *clip).cpu()
        want = ref.pgd_step(x, grad, x_orig, 0.01, 0.03, *clip).cpu()
        assert torch.equal(got.isnan(), want.isnan()), (clip, got, want)
    for project in (True, False):
        got = tb.random_start(x, 0.03, 7, 2**32 + 1, 0.0, 1.0, project).cpu()
        want = ref.random_start(x, 0.03, 7, 2**32 + 1, 0.0, 1.0, project).cpu()
        assert torch.equal(got.isnan(), want.isnan()), (project, got, want)


# ---- through the custom ops and the public API ----------------------------------------


def test_functional_api_runs_triton(device, tb, seed_offset):
    import fastnoise

    x = torch.randn(4, 3, 5, 5, device=device, requires_grad=True)
    sigma = torch.full((3, 1, 1), 0.2, device=device, requires_grad=True)
    weight = torch.full((3, 5, 5), 0.2, device=device, requires_grad=True)
    bias = torch.zeros(5, device=device, requires_grad=True)
    seed, offset = seed_offset
    results = {}
    for name in ("triton", "torch"):
        with use_backend(name):
            y = fastnoise.inject_noise(x, sigma, seed=seed, offset=offset)
            y = fastnoise.pnil(y, weight, bias, seed=seed + 1, offset=offset)
            grads = torch.autograd.grad(y.square().sum(), (x, sigma, weight, bias))
            results[name] = (y, *grads)
    for a, b in zip(results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_functional_attack_and_pnil_run_triton(device, tb):
    import fastnoise

    x = torch.rand(3, 2, 5, 5, device=device)
    weight = torch.full((2, 5, 5), 0.1, device=device)
    bias = torch.zeros(5, device=device)
    results = {}
    for name in ("triton", "torch"):
        with use_backend(name):
            y = fastnoise.pnil(x, weight, bias, seed=3)
            start = fastnoise.random_start(x, 0.03, seed=4, offset=2**33)
            step = fastnoise.pgd_step(start, y - x, x, 0.01, 0.03)
            results[name] = (y, start, step)
    for a, b in zip(results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-6)


def test_reduction_grid_on_gpu_sizes(tb, monkeypatch):
    from fastnoise.kernels import launch

    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "_sm_count", lambda index: 132)  # an H100
    cuda = torch.device("cuda", 0)
    cases = [(128, 16 * 32 * 32), (128, 64 * 8 * 8), (3, 10), (1000, 7), (64, 105), (256, 784)]
    for rows, features in cases:
        grid = launch.reduction_grid(rows, features, cuda)
        block_f, chunks, rows_per_chunk, warps = (
            grid.block_f,
            grid.chunks,
            grid.rows_per_chunk,
            grid.num_warps,
        )
        # Rows off counter boundaries go in 4 classes read through tiles shifted back by
        # up to 3 features, so the blocks cover features + 3.
        classes = 1 if features % 4 == 0 else 4
        span = features + 3 * (classes > 1)
        assert grid.classes == classes and grid.grid == (
            triton.cdiv(span, block_f),
            chunks * classes,
        )
        # One block covers a row below 1024 features, with no masked-off Philox work
        # beyond the next power of two.
        assert block_f == min(launch.GPU_BLOCK_F, max(16, triton.next_power_of_2(span)))
        # At least 4 features per thread (one 128-bit fp32 access), unless one warp is left.
        assert warps == 1 or block_f >= 4 * 32 * warps, (features, block_f, warps)
        assert (chunks - 1) * rows_per_chunk < rows <= chunks * rows_per_chunk  # every row once
        assert rows_per_chunk % classes == 0  # each class of a chunk: rows_per_chunk // 4 rows
        per_program = max(1, min(rows, launch.MIN_ROWS_PER_PROGRAM))
        assert grid.partial_rows <= max(classes, rows // per_program + classes)  # small sums
        if classes > 1:
            continue
        # The rows are chunked as with BLOCK_F = 1024, so the sums are grouped, and
        # rounded, the same way.
        blocks_1024 = triton.cdiv(features, 1024)
        chunks_1024 = min(rows, triton.cdiv(launch.PROGRAMS_PER_SM * 132, blocks_1024))
        chunks_1024 = max(1, min(chunks_1024, triton.cdiv(rows, launch.MIN_ROWS_PER_PROGRAM)))
        assert rows_per_chunk == triton.next_power_of_2(triton.cdiv(rows, chunks_1024))


@pytest.mark.parametrize("shape", [(20, 3, 5, 7), (20, 2, 4, 4), (9, 1, 7)])
def test_block_f_from_features_is_bit_identical(tb, device, shape, monkeypatch):
    # The backward sums per feature over the same rows in the same order whatever BLOCK_F
    # is: a block sized to the row gives the very bits of BLOCK_F = 1024.
    from fastnoise.kernels import launch

    monkeypatch.setattr(launch, "interpreting", lambda: False)  # the GPU's grid choices
    monkeypatch.setattr(launch, "_sm_count", lambda index: 132)
    x, g = _make(shape, torch.float32, device), _make(shape, torch.float32, device)
    sigma, weight, bias = (torch.rand(shape[1:], device=device) for _ in range(3))
    results = []
    for min_block_f in (launch.MIN_BLOCK_F, launch.GPU_BLOCK_F):
        monkeypatch.setattr(launch, "MIN_BLOCK_F", min_block_f)
        block_f = launch.reduction_grid(shape[0], math.prod(shape[1:]), x.device).block_f
        assert (block_f == 1024) == (min_block_f == 1024)
        grad_sigma = tb.noise_backward_sigma(g, sigma, 7, 2**32 + 1)
        results.append((grad_sigma, *tb.pnil_backward(g, x, weight, bias, 7, 3)))
    for sized, fixed in zip(*results, strict=True):
        assert torch.equal(sized, fixed)


@pytest.mark.parametrize("shape", [(70, 3, 5, 7), (66, 2, 3), (37, 10)])
def test_unaligned_rows_in_classes_and_chunks_match_the_reference(tb, device, shape, monkeypatch):
    # Rows that start mid-counter (features % 4 != 0) are summed in 4 classes of row % 4,
    # in row chunks on a GPU: the GPU's grid is forced here, so several chunks (the last
    # one short) and every class are exercised, with the tile shifted back per class.
    from fastnoise.kernels import launch

    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(launch, "_sm_count", lambda index: 132)
    grid = launch.reduction_grid(shape[0], math.prod(shape[1:]), torch.device("cuda", 0))
    assert grid.classes == 4 and (shape[0] < 64 or grid.chunks > 1)
    x, g = _make(shape, torch.float32, device), _make(shape, torch.float32, device)
    sigma = torch.rand(shape[1:], device=device)
    weight, bias = (
        0.3 * torch.randn(shape[1:], device=device),
        torch.randn(shape[1:], device=device),
    )
    s, o = 2**40 + 1, 2**32 - 3
    torch.testing.assert_close(
        tb.noise_backward_sigma(g, sigma, s, o),
        ref.noise_backward_sigma(g, sigma, s, o),
        atol=1e-4,
        rtol=1e-5,
    )
    got, expected = (
        tb.pnil_backward(g, x, weight, bias, s, o),
        ref.pnil_backward(g, x, weight, bias, s, o),
    )
    _close(got[0], expected[0])
    for a, b in zip(got[1:], expected[1:], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_features_past_the_int32_index_bound_are_refused_by_name(tb):
    # Kernels index within a sample in int32 up to features + BLOCK - 1: features up to
    # 2**31 - 1 (the old bound) wrapped the index around for the last block of a row.
    from fastnoise.kernels import launch

    assert launch.MAX_FEATURES + launch.MAX_BLOCK - 1 < 2**31
    assert launch.elementwise_block(2**40) <= launch.MAX_BLOCK
    cpu = torch.device("cpu")
    assert launch.reduction_grid(2, launch.MAX_FEATURES, cpu).block_f <= launch.MAX_BLOCK
    ok = torch.empty(2, launch.MAX_FEATURES, device="meta")  # shapes only: nothing allocated
    assert tb._rows_features(ok) == (2, launch.MAX_FEATURES)
    one = torch.ones((), device="meta")
    ops = [
        ("x", lambda big: tb.noise_forward(big, one, 1, 0)),
        ("x", lambda big: tb.pnil_forward(big, one, one, 1, 0)),
        ("x", lambda big: tb.pnil_backward(big, big, one, one, 1, 0)),
        ("x", lambda big: tb.random_start(big, 0.1, 1, 0, 0.0, 1.0, True)),
        ("grad_y", lambda big: tb.noise_backward_sigma(big, one, 1, 0)),
    ]
    for features in (launch.MAX_FEATURES + 1, 2**31 - 1):
        big = torch.empty(2, features, device="meta")
        for name, op in ops:
            with pytest.raises(ValueError, match=rf"{name} must have at most .* got {features}"):
                op(big)


def test_per_feature_parameter_is_passed_as_it_is(tb, device):
    # A per-feature parameter already in the compute dtype needs no broadcast, conversion
    # or copy: only a flat view of it reaches the kernel.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.called = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.called.append(func)
            return func(*args, **(kwargs or {}))

    sample = torch.Size((3, 4, 5))
    param = torch.rand(sample, device=device)
    with Ops() as ops:
        flat = tb._per_feature(param, sample, torch.float32)
    assert flat.data_ptr() == param.data_ptr() and flat.shape == (60,)
    assert ops.called == [torch.ops.aten.view.default]
    # Broadcast or in another dtype, it is still expanded to the F values of one sample.
    for other in (torch.rand(3, 1, 1, device=device), param.double(), param.mT.contiguous().mT):
        torch.testing.assert_close(
            tb._per_feature(other, sample, torch.float32),
            other.float().broadcast_to(sample).reshape(-1),
        )


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs 2 CUDA devices: a launch on cuda:1 while cuda:0 is current",
)
def test_launches_run_on_the_tensors_device(tb):
    s, o = 2**40 + 1, 2**32 + 3
    x = torch.randn(4, 3, 8, 8, device="cuda:1")
    sigma, weight = torch.rand(3, 8, 8, device="cuda:1"), torch.randn(3, 8, 8, device="cuda:1")
    bias = torch.randn(8, device="cuda:1")
    with torch.cuda.device(0):
        got = [
            tb.noise_forward(x, sigma, s, o),
            tb.noise_backward_sigma(x, sigma, s, o),
            tb.pnil_forward(x, weight, bias, s, o),
            *tb.pnil_backward(x, x, weight, bias, s, o),
            tb.random_start(x, 0.1, s, o, 0.0, 1.0, True),
            tb.pgd_step(x, x, x, 0.1, 0.2, -1.0, 1.0),
        ]
        torch.cuda.synchronize(1)
        assert torch.cuda.current_device() == 0
    expected = [
        ref.noise_forward(x, sigma, s, o),
        ref.noise_backward_sigma(x, sigma, s, o),
        ref.pnil_forward(x, weight, bias, s, o),
        *ref.pnil_backward(x, x, weight, bias, s, o),
        ref.random_start(x, 0.1, s, o, 0.0, 1.0, True),
        ref.pgd_step(x, x, x, 0.1, 0.2, -1.0, 1.0),
    ]
    for a, b in zip(got, expected, strict=True):
        assert a.device == x.device
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "seed,offset", [(21, 2), (2**63 - 25, 2**32 + 1)], ids=["low", "high"]
)  # the interpreter is slow: below and above 2**32 only
def test_gradcheck_float64(device, tb, seed, offset):
    from fastnoise import _ops

    state = _ops.make_rng_state(seed, offset)
    x = torch.randn(3, 2, 5, dtype=torch.float64, device=device, requires_grad=True)
    sigma = torch.rand(2, 1, dtype=torch.float64, device=device, requires_grad=True)
    weight = (0.2 * torch.randn(2, 5, dtype=torch.float64, device=device)).requires_grad_()
    bias = (0.2 * torch.randn(5, dtype=torch.float64, device=device)).requires_grad_()
    with use_backend("triton"):
        assert torch.autograd.gradcheck(lambda a, s: _ops.noise_injection(a, s, state), (x, sigma))
        assert torch.autograd.gradcheck(
            lambda a, w, b: _ops.pnil(a, w, b, state), (x, weight, bias), atol=1e-5
        )


# rows off / on counter boundaries; the last three run the channels_last tile kernels
# (H*W % 4 == C % 4 == 0): one block, a masked last pixel block, BLOCK_C = 4 of C = 12.
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 8, 4, 4), (2, 16, 6, 6), (2, 12, 2, 6)])
def test_channels_last_runs_in_place(tb, device, shape, seed_offset):
    x = _make(shape, torch.float32, device, "channels_last")
    sigma, weight = torch.rand(shape[1], 1, 1, device=device), torch.randn(shape[1:], device=device)
    bias = torch.randn(shape[-1], device=device)
    grad = torch.randn(shape, device=device)  # contiguous while x is channels_last
    s, o = seed_offset
    cases = [
        (tb.noise_forward(x, sigma, s, o), ref.noise_forward(x, sigma, s, o)),
        (tb.pnil_forward(x, weight, bias, s, o), ref.pnil_forward(x, weight, bias, s, o)),
        (
            tb.pnil_backward(grad, x, weight, bias, s, o)[0],
            ref.pnil_backward(grad, x, weight, bias, s, o)[0],
        ),
        (
            tb.random_start(x, 0.1, s, o, 0.0, 1.0, True),
            ref.random_start(x, 0.1, s, o, 0.0, 1.0, True),
        ),
        (
            tb.pgd_step(x, grad, x, 0.1, 0.2, -1.0, 1.0),
            ref.pgd_step(x, grad, x, 0.1, 0.2, -1.0, 1.0),
        ),
    ]
    for got, expected in cases:
        assert got.is_contiguous(memory_format=torch.channels_last)  # no copy to NCHW
        _close(got, expected)
    grad_cl = grad.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        tb.noise_backward_sigma(grad_cl, sigma, s, o),
        ref.noise_backward_sigma(grad, sigma, s, o),
        atol=1e-4,
        rtol=1e-5,
    )
    got_w = tb.pnil_backward(grad_cl, x, weight, bias, s, o)[1]
    expected_w = ref.pnil_backward(grad, x, weight, bias, s, o)[1]
    torch.testing.assert_close(got_w, expected_w, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_backward_tiles_in_row_chunks(tb, device, dtype, monkeypatch):
    """The channels_last backward kernels (grad_y, x, grad_x moved as channel vectors) sum
    their rows in chunks on a GPU: forced here to chunks of 2 rows of 5 (the last chunk
    half empty), with a pixel block masked (H*W = 12 in blocks of 8)."""
    from fastnoise.kernels import launch

    calls = []

    def chunks_of_two(rows, feature_programs, device_):
        calls.append(feature_programs)
        return math.ceil(rows / 2), 2

    monkeypatch.setattr(launch, "row_chunks", chunks_of_two)
    monkeypatch.setattr(launch, "INTERPRETER_MAX_BLOCK", 64)  # BLOCK_C 8 x BLOCK_HW 8
    shape = (5, 8, 3, 4)
    x, grad = (_make(shape, dtype, device, "channels_last") for _ in range(2))
    sigma, weight = torch.rand(8, 1, 1, device=device), 0.3 * torch.randn(shape[1:], device=device)
    bias = 0.3 * torch.randn(shape[1:], device=device)
    s, o = 2**40 + 1, 2**32 - 3
    got = tb.noise_backward_sigma(grad, sigma, s, o)
    torch.testing.assert_close(
        got, ref.noise_backward_sigma(grad, sigma, s, o), atol=1e-4, rtol=1e-5
    )
    got = tb.pnil_backward(grad, x, weight, bias, s, o)
    expected = ref.pnil_backward(grad, x, weight, bias, s, o)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    _close(got[0], expected[0])
    for a, b in zip(got[1:], expected[1:], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # Both took the tile kernels. The interpreter's block cap above gives 2 pixel blocks x
    # 1 channel block; a GPU's own tile covers the 12 pixels in one (H200: [1, 1]).
    assert calls == ([2, 2] if device == "cpu" else [1, 1])


# ---- the compiled (GPU) path, checked without a GPU ------------------------------------

_AOT_SCRIPT = r"""
import itertools, sys
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastnoise.kernels import attack_step, noise_injection, philox, pnil

FLOATS = {"eps", "step_size", "clip_min", "clip_max"}
ACCUMULATORS = {"sigma_ptr", "weight_ptr", "bias_ptr", "partial_ptr", "partial_w_ptr",
                "partial_b_ptr"}
kernels = [noise_injection.noise_forward_kernel, noise_injection.noise_backward_sigma_kernel,
           pnil.pnil_forward_kernel, pnil.pnil_backward_kernel, attack_step.pgd_step_kernel,
           attack_step.random_start_kernel, philox.random_words_kernel]
count = 0
for kernel, dtype, flag in itertools.product(kernels, ["fp32", "bf16", "fp64"], [False, True]):
    compute = tl.float64 if dtype == "fp64" else tl.float32
    flags = {"CHANNELS_LAST": flag, "ROWS_ALIGNED": not flag, "PROJECT": flag, "TAIL": flag,
             "RNG_IN_MEMORY": flag, "ROWS_PER_PROGRAM": 8, "COMPUTE_DTYPE": compute,
             "BLOCK": 1024, "BLOCK_F": 1024}
    constexprs, signature = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in flags:
            constexprs[(i,)] = flags[name]
            signature[name] = "constexpr"
        elif name == "rng_state_ptr":  # int64 [seed, offset]
            signature[name] = "*i64"
        elif name == "bounds_ptr":  # float32 [eps, clip_min, clip_max]
            signature[name] = "*fp32"
        elif name == "out_ptr" and kernel is philox.random_words_kernel:
            signature[name] = "*i64"
        elif name in ACCUMULATORS:
            signature[name] = "*fp64" if dtype == "fp64" else "*fp32"
        elif name.endswith("_ptr"):
            signature[name] = "*" + dtype
        else:
            signature[name] = "fp32" if name in FLOATS else "i64"
    triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                   options={"num_warps": 4})
    count += 1
print("compiled", count)
"""


def test_kernels_compile_to_ptx(tmp_path):
    # The interpreter skips Triton's compiler; this runs it (frontend, LLVM, ptxas) for
    # sm_90 in a clean process, so GPU-only errors (globals, types) fail here too.
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "compiled 42" in done.stdout


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_within_twice_eager(tb, device, dtype):
    # flash-attention's criterion: error vs a float64 truth at most 2x that of the same
    # formula evaluated by eager PyTorch in the low-precision dtype. Fixed inputs: the max
    # error ratio is a draw, above 2 for about 1 input in 40 (bf16, torch.manual_seed(10)).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 16, 16, generator=gen).to(device, dtype)
    sigma = torch.rand(3, 1, 1, generator=gen).to(device)
    weight = 0.3 * torch.randn(3, 16, 16, generator=gen).to(device)
    bias = 0.3 * torch.randn(16, generator=gen).to(device)
    z = rng.randn(x.shape, 6, 0).to(device)
    truths = {
        "inject": x.double() + sigma.double() * z.double(),
        "pnil": x.double()
        + z.double() * torch.exp((x.double() * weight.double() + bias.double()) / 2),
    }
    zl = z.to(dtype)
    eager = {
        "inject": x + sigma.to(dtype) * zl,
        "pnil": x + zl * torch.exp((x * weight.to(dtype) + bias.to(dtype)) * 0.5),
    }
    fused = {
        "inject": tb.noise_forward(x, sigma, 6, 0),
        "pnil": tb.pnil_forward(x, weight, bias, 6, 0),
    }
    for name, truth in truths.items():
        fused_err = (fused[name].double() - truth).abs().max().item()
        eager_err = (eager[name].double() - truth).abs().max().item()
        assert fused_err <= 2 * eager_err, (name, fused_err, eager_err)


def test_compiled_graph_runs_triton_backend(device, tb):
    # The backend is chosen when the graph is traced (on CUDA: the triton_ops; on the
    # interpreter: the custom ops), so the reference runs eagerly, with the same seeds.
    from torch._dynamo.testing import CompileCounter

    import fastnoise

    torch._dynamo.reset()
    counter = CompileCounter()

    def noisy(x, sigma):
        return fastnoise.pnil(fastnoise.inject_noise(x, sigma, seed=5), sigma, sigma, seed=6)

    x = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    sigma = torch.full((3, 1, 1), 0.1, device=device, requires_grad=True)
    with use_backend("triton"):
        compiled = torch.compile(noisy, backend=counter, fullgraph=True)
        y = compiled(x, sigma)
        grads = torch.autograd.grad(y.sum(), (x, sigma))
        compiled(x, sigma * 2)  # a new sigma: no recompile
    torch._dynamo.reset()
    with use_backend("torch"):
        y_ref = noisy(x, sigma)
        grads_ref = torch.autograd.grad(y_ref.sum(), (x, sigma))
    assert counter.frame_count == 1
    torch.testing.assert_close(y, y_ref, atol=2e-6, rtol=1e-6)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
