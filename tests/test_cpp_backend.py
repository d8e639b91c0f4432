"""The C++ backend (``fastnoise_C`` CPU kernels) against the pure-torch reference.

Words must be bit-exact; normals within 2e-6 (float32 log/sin/cos differ by an ulp or
two); fused outputs within one rounding of the activation's dtype; parameter gradients
within float32 summation-order error. The extension is built once per session.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastnoise import _extension, rng
from fastnoise._backends import cpp
from fastnoise._backends import reference as ref

from tolerances import assert_close_ulps

Z_ATOL = 2e-6  # spec normals: |z_cpp - z_ref|

# Output tolerances per activation dtype: float32 error of z (Z_ATOL) times the scale.
# fp16/bf16 outputs are float32 results rounded once: within one ulp (tests/tolerances.py).
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-6, atol=1e-5),
}
LOW_PRECISION = (torch.float16, torch.bfloat16)
DTYPES = [*TOLERANCES, *LOW_PRECISION]


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    reason = _extension.unavailable_reason()  # builds (or loads the cached build) once
    assert reason is None, f"the C++ extension must build on this machine: {reason}"


def _layouts(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int, kind: str = "normal"
) -> dict[str, torch.Tensor]:
    """The same logical values in three memory layouts. ``kind``: "normal" N(0, 1),
    "pixels" in [0, 1], "sparse" N(0, 1) with exact zeros (sign(0) == 0 in PGD)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    if kind == "pixels":
        x = (x.abs() - 0.2).clamp(0, 1)
    elif kind == "sparse":
        x = torch.where(x.abs() < 0.3, 0.0, x)
    x = x.to(dtype)
    n, c, h, w = shape
    wide = torch.randn((n, c, h, w + 3), generator=g).to(dtype)
    wide[..., :w] = x
    return {
        "contiguous": x,
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "strided": wide[..., :w],  # non-contiguous view
    }


SHAPE = (5, 3, 7, 9)  # odd sizes: tiles and counters never line up with rows
SIGMA_SHAPES = [(3, 7, 9), (3, 1, 1), ()]


def _param(shape: tuple[int, ...], seed: int, positive: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=g) * 0.5
    return t + 0.05 if positive else t - 0.25


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if dtype in LOW_PRECISION:
        assert_close_ulps(got, want, dtype=dtype, atol=TOLERANCES[torch.float32]["atol"])
    else:
        torch.testing.assert_close(got.double(), want.double(), **TOLERANCES[dtype])


def _grad_close(got: torch.Tensor, want: torch.Tensor, terms: int) -> None:
    """Sums of ``terms`` products: float32 summation order differs from torch's."""
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(want.abs().max()) + 1.0
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=2e-6 * terms * scale)


# --- the spec: words and normals -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 123456789, 2**32 + 5, 2**63 - 1])
def test_philox_words_bit_exact(seed):
    counters = torch.tensor([0, 1, 2**31, 2**32 - 1, 2**32, 2**40 + 7, 2**62], dtype=torch.int64)
    got = _extension.ops().philox_words(counters, seed)
    for row, counter in zip(got, counters.tolist(), strict=True):
        assert torch.equal(row, rng.random_words(4, seed, counter)), counter


@pytest.mark.parametrize("offset", [0, 5, 2**32 - 3, 2**40])
def test_random_words_layout(offset):
    assert torch.equal(cpp.random_words(1001, 77, offset), rng.random_words(1001, 77, offset))


@pytest.mark.parametrize(
    "offset",
    [0, 3, 2**32 - 100, 2**29 + 1],  # counters across 2**32; element offset past 2**31
)
def test_normals_match_spec(offset):
    numel = 100_003
    z = cpp.noise_forward(torch.zeros(1, numel), torch.ones(()), 99, offset)
    want = rng.randn((1, numel), 99, offset)
    assert (z - want).abs().max().item() <= Z_ATOL


def test_uniforms_match_spec():
    numel = 100_003
    x = torch.zeros(1, numel)
    got = cpp.random_start(x, 1.0, 5, 2**33 + 1, 0.0, 1.0, False)
    want = 2.0 * rng.rand((1, numel), 5, 2**33 + 1) - 1.0
    torch.testing.assert_close(got, want, rtol=0, atol=2e-7)


def test_noise_statistics():
    """~1M draws: moments and a Kolmogorov-Smirnov test against N(0, 1), and no
    correlation between Box-Muller partners or neighbouring counters."""
    stats = pytest.importorskip("scipy.stats")
    n = 1 << 20
    z = cpp.noise_forward(torch.zeros(1, n), torch.ones(()), 2024, 11).reshape(-1).double()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(((z**4).mean() - 3.0).item()) < 0.05  # Gaussian kurtosis
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    pairs = z.reshape(-1, 2)
    assert abs(torch.corrcoef(pairs.T)[0, 1].item()) < 5 / math.sqrt(n / 2)
    blocks = z.reshape(-1, 4)
    assert abs(torch.corrcoef(torch.stack((blocks[:-1, 0], blocks[1:, 0])))[0, 1]) < 0.01


def test_uniform_statistics():
    stats = pytest.importorskip("scipy.stats")
    n = 1 << 20
    u = cpp.random_start(torch.zeros(1, n), 1.0, 31337, 0, 0.0, 1.0, False).reshape(-1)
    assert stats.kstest(u.double().numpy(), "uniform", args=(-1.0, 2.0)).pvalue > 1e-3


# --- fused ops against the reference ----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("sigma_shape", SIGMA_SHAPES, ids=str)
def test_noise_injection(dtype, layout, sigma_shape, seed_offset):
    x = _layouts(SHAPE, dtype, seed=1)[layout]
    sigma = _param(sigma_shape, seed=2, positive=True)
    seed, offset = seed_offset
    _close(
        cpp.noise_forward(x, sigma, seed, offset), ref.noise_forward(x, sigma, seed, offset), dtype
    )
    grad_y = _layouts(SHAPE, dtype, seed=3)[layout]
    terms = x.numel() // max(sigma.numel(), 1)
    _grad_close(
        cpp.noise_backward_sigma(grad_y, sigma, seed, offset),
        ref.noise_backward_sigma(grad_y, sigma, seed, offset),
        terms,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("param_shape", SIGMA_SHAPES, ids=str)
def test_pnil(dtype, layout, param_shape, seed_offset):
    x = _layouts(SHAPE, dtype, seed=5)[layout]
    weight, bias = _param(param_shape, seed=6), _param(param_shape, seed=7)
    seed, offset = seed_offset
    _close(
        cpp.pnil_forward(x, weight, bias, seed, offset),
        ref.pnil_forward(x, weight, bias, seed, offset),
        dtype,
    )
    grad_y = _layouts(SHAPE, dtype, seed=8)[layout]
    got = cpp.pnil_backward(grad_y, x, weight, bias, seed, offset)
    want = ref.pnil_backward(grad_y, x, weight, bias, seed, offset)
    _close(got[0], want[0], dtype)
    terms = x.numel() // max(weight.numel(), 1)
    _grad_close(got[1], want[1], terms)
    _grad_close(got[2], want[2], terms)


def test_long_flat_input_crosses_many_tiles_and_threads(seed_offset):
    """A size that is no multiple of a tile, with per-feature params of odd length."""
    x = torch.randn(3, 40_001)
    sigma = torch.rand(40_001)
    s, o = seed_offset
    torch.testing.assert_close(
        cpp.noise_forward(x, sigma, s, o), ref.noise_forward(x, sigma, s, o), rtol=1e-5, atol=1e-5
    )
    _grad_close(
        cpp.noise_backward_sigma(x, sigma, s, o), ref.noise_backward_sigma(x, sigma, s, o), 3
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("clip", [(0.0, 1.0), (-math.inf, math.inf)])
def test_pgd_step(dtype, layout, clip):
    x_adv = _layouts(SHAPE, dtype, seed=9, kind="pixels")[layout]
    grad = _layouts(SHAPE, dtype, seed=10, kind="sparse")[layout]
    x_orig = _layouts(SHAPE, dtype, seed=11, kind="pixels")[layout]
    args = (x_adv, grad, x_orig, 0.01, 8 / 255, *clip)
    got, want = cpp.pgd_step(*args), ref.pgd_step(*args)
    assert got.dtype == want.dtype
    assert torch.equal(got, want)  # no noise: the same float ops, bit for bit


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("project", [True, False])
def test_random_start(dtype, layout, project):
    x = _layouts(SHAPE, dtype, seed=12, kind="pixels")[layout]
    args = (x, 8 / 255, 7, 2**32 + 9, 0.0, 1.0, project)
    _close(cpp.random_start(*args), ref.random_start(*args), dtype)


def _nan_inputs(dtype, device="cpu"):
    """NaN in the iterate, the gradient and the origin, each in its own element."""
    nan = math.nan
    x = torch.tensor([[0.5, nan, 0.5, 0.2, 0.7]], dtype=dtype, device=device)
    grad = torch.tensor([[nan, 1.0, -1.0, 0.0, 1.0]], dtype=dtype, device=device)
    x_orig = torch.tensor([[0.5, 0.5, nan, 0.2, 0.7]], dtype=dtype, device=device)
    return x, grad, x_orig


def check_nan_inputs_stay_nan(backend, dtype, device="cpu"):
    """The reference keeps NaN through torch.maximum/minimum/clamp, so a broken input
    stays visibly broken; a kernel that clamps a NaN to a bound returns a plausible pixel."""
    x, grad, x_orig = _nan_inputs(dtype, device)
    for clip in [(0.0, 1.0), (-math.inf, math.inf)]:
        got = backend.pgd_step(x, grad, x_orig, 0.01, 0.03, *clip).cpu()
        want = ref.pgd_step(x, grad, x_orig, 0.01, 0.03, *clip).cpu()
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    for project in (True, False):
        got = backend.random_start(x, 0.03, 7, 2**32 + 1, 0.0, 1.0, project).cpu()
        want = ref.random_start(x, 0.03, 7, 2**32 + 1, 0.0, 1.0, project).cpu()
        assert torch.equal(got.isnan(), want.isnan()), (project, got, want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_inputs_stay_nan_as_in_the_reference(dtype):
    check_nan_inputs_stay_nan(cpp, dtype)


@pytest.mark.parametrize("shape", [(0, 3, 4), (4, 0), (0,)])
def test_empty_tensors(shape):
    x = torch.zeros(shape)
    param = torch.ones(shape[1:]) if len(shape) > 1 else torch.ones(())
    assert cpp.noise_forward(x, param, 1, 0).shape == x.shape
    assert torch.equal(cpp.noise_backward_sigma(x, param, 1, 0), torch.zeros_like(param))
    assert cpp.pnil_forward(x, param, param, 1, 0).shape == x.shape
    gx, gw, gb = cpp.pnil_backward(x, x, param, param, 1, 0)
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(param))
    assert torch.equal(gb, torch.zeros_like(param))
    assert cpp.pgd_step(x, x, x, 0.1, 0.1, 0.0, 1.0).shape == x.shape
    assert cpp.random_start(x, 0.1, 1, 0, 0.0, 1.0, True).shape == x.shape
    assert cpp.random_words(0, 1, 0).shape == (0,)


def test_mixed_parameter_dtype(seed_offset):
    """A float32 parameter with a bfloat16 activation (autocast): gradient in float32."""
    x = torch.randn(4, 3, 5, 5).bfloat16()
    sigma = _param((3, 1, 1), seed=13, positive=True)
    got = cpp.noise_backward_sigma(x, sigma, *seed_offset)
    assert got.dtype == torch.float32
    _grad_close(got, ref.noise_backward_sigma(x, sigma, *seed_offset), 100)


# --- errors -----------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="sigma .* does not broadcast"):
        cpp.noise_forward(x, torch.ones(5), 1, 0)
    with pytest.raises(ValueError, match="weight .* more dims"):
        cpp.pnil_forward(x, torch.ones(2, 2, 3, 4), torch.ones(()), 1, 0)
    with pytest.raises(ValueError, match=r"offset must be in \[0, 2\*\*63\)"):
        cpp.noise_forward(x, torch.ones(()), 1, -1)
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        cpp.noise_forward(x.int(), torch.ones(()), 1, 0)
    with pytest.raises(ValueError, match="grad and x_orig must have the shape"):
        cpp.pgd_step(x, x[:1], x, 0.1, 0.1, 0.0, 1.0)


# --- the torch.library contract ---------------------------------------------------------


def _opcheck_cases():
    x = torch.randn(3, 2, 5)
    sigma, w, b = torch.rand(2, 1), torch.randn(2, 5) * 0.1, torch.randn(5) * 0.1
    return [
        ("noise_forward", (x, sigma, 1, 2)),
        ("noise_backward_sigma", (x, sigma, 1, 2)),
        ("pnil_forward", (x, w, b, 3, 4)),
        ("pnil_backward", (x, x, w, b, 3, 4)),
        ("pgd_step", (x, x, x, 0.1, 0.2, 0.0, 1.0)),
        ("random_start", (x, 0.1, 5, 6, 0.0, 1.0, True)),
        ("philox_words", (torch.arange(9, dtype=torch.int64), 7)),
        *_channels_last_opcheck_cases(),
    ]


def _channels_last_opcheck_cases():
    """channels_last x: every backend returns activation-shaped outputs in x's layout, and
    the fake kernels must say so (a stride mismatch breaks compiled graphs)."""
    x = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    sigma, w, b = torch.rand(3, 1, 1), torch.randn(3, 4, 4) * 0.1, torch.randn(4) * 0.1
    return [
        ("noise_forward", (x, sigma, 1, 2)),
        ("pnil_forward", (x, w, b, 3, 4)),
        ("pnil_backward", (x, x, w, b, 3, 4)),
        ("pgd_step", (x, x, x, 0.1, 0.2, 0.0, 1.0)),
        ("random_start", (x, 0.1, 5, 6, 0.0, 1.0, True)),
    ]


@pytest.mark.parametrize(
    "name,args", _opcheck_cases(), ids=lambda c: c if isinstance(c, str) else ""
)
def test_opcheck(name, args):
    op = getattr(_extension.ops(), name).default
    torch.library.opcheck(op, args)  # schema, fake kernel, autograd registration, AOT dispatch
    if args[0].dim() == 4:  # channels_last in, channels_last out, on the CPU too
        out = op(*args)
        first = out[0] if isinstance(out, tuple) else out
        assert first.is_contiguous(memory_format=torch.channels_last), first.stride()


def test_functional_api_runs_on_cpp_backend(seed_offset):
    """Through fastnoise.functional (autograd regenerates the noise): same as the reference."""
    from fastnoise import functional
    from fastnoise._dispatch import use_backend

    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    sigma = torch.full((3, 1, 1), 0.3, requires_grad=True)
    weight = torch.full((3, 6, 6), 0.2, requires_grad=True)
    bias = torch.zeros(6, requires_grad=True)
    seed, offset = seed_offset
    results = {}
    for name in ("cpp", "torch"):
        with use_backend(name):
            y = functional.inject_noise(x, sigma, seed=seed, offset=offset)
            y = functional.pnil(y, weight, bias, seed=seed + 1, offset=offset)
            grads = torch.autograd.grad(y.square().sum(), (x, sigma, weight, bias))
        results[name] = (y.detach(), *grads)
    for got, want in zip(results["cpp"], results["torch"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_gradcheck_float64_through_functional(seed_offset):
    from fastnoise import functional
    from fastnoise._dispatch import use_backend

    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(3, 4, dtype=torch.float64) * 0.1).requires_grad_()
    b = (torch.randn(4, dtype=torch.float64) * 0.1).requires_grad_()
    sigma = torch.rand(3, 1, dtype=torch.float64).add_(0.1).requires_grad_()
    seed, offset = seed_offset
    with use_backend("cpp"):
        assert torch.autograd.gradcheck(
            lambda x, s: functional.inject_noise(x, s, seed=seed, offset=offset), (x, sigma)
        )
        assert torch.autograd.gradcheck(
            lambda *t: functional.pnil(*t, seed=seed, offset=offset), (x, w, b)
        )


def test_benchmark_baselines_match_the_reference():
    """benchmarks/eager.py (the baselines speed-ups are quoted against) computes the
    reference's math when handed the reference's noise."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "eager.py"
    spec = importlib.util.spec_from_file_location("fastnoise_bench_eager", path)
    eager = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eager)
    x = torch.randn(4, 3, 5, 5)
    z = rng.randn(x.shape, 9, 2)
    sigma, w, b = torch.rand(3, 1, 1), torch.randn(3, 5, 5) * 0.1, torch.randn(5, 5) * 0.1
    torch.testing.assert_close(
        eager.eager_inject_noise(x, sigma, z), ref.noise_forward(x, sigma, 9, 2)
    )
    torch.testing.assert_close(eager.eager_pnil(x, w, b, z), ref.pnil_forward(x, w, b, 9, 2))
    x_adv, grad, x_orig = torch.rand_like(x), torch.randn_like(x), torch.rand_like(x)
    assert torch.equal(
        eager.eager_pgd_step(x_adv, grad, x_orig, 0.01, 0.03),
        ref.pgd_step(x_adv, grad, x_orig, 0.01, 0.03, 0.0, 1.0),
    )


# --- the same checks for the CUDA kernels, where a GPU is present -----------------------

needs_cuda_kernels = pytest.mark.skipif(
    not torch.cuda.is_available() or not _extension.has_cuda_kernels(),
    reason="needs a GPU and the extension built with its CUDA sources",
)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_nan_inputs_stay_nan_as_in_the_reference(dtype):
    from fastnoise._backends import cuda

    check_nan_inputs_stay_nan(cuda, dtype, device="cuda")


SIGMA_CHECK_SCRIPT = """
import sys, torch, fastnoise
from fastnoise import functional as F
fastnoise.set_backend("cuda")
x = torch.rand(4, 8, device="cuda")
sigma = torch.full((8,), 0.5, device="cuda")
sigma[int(sys.argv[2])] = float(sys.argv[1])
abs_sigma = sys.argv[3] == "abs"
y = F.inject_noise_abs(x, sigma) if abs_sigma else F.inject_noise(x, sigma)
torch.cuda.synchronize()
print("no error", flush=True)
"""


@needs_cuda_kernels
@pytest.mark.parametrize(
    "bad,op", [("nan", "plain"), ("-0.1", "plain"), ("nan", "abs")], ids=["nan", "neg", "abs-nan"]
)
def test_cuda_forward_refuses_a_bad_sigma_on_the_device(bad, op):
    """The CUDA forward checks sigma >= 0 (and not NaN) in the kernel as it reads it, in
    place of three extra launches: a device-side assert that names sigma. In a child
    process, as a device assert ends the CUDA context."""
    import subprocess
    import sys

    for where in (0, 7):  # the first and the last feature
        done = subprocess.run(
            [sys.executable, "-c", SIGMA_CHECK_SCRIPT, bad, str(where), op],
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = done.stdout + done.stderr  # the device's message may land on either
        assert done.returncode != 0 and "no error" not in done.stdout, output[-2000:]
        assert "sigma must be non-negative and not NaN" in output, output[-2000:]
    good = subprocess.run(
        [sys.executable, "-c", SIGMA_CHECK_SCRIPT, "-0.1", "3", "abs"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert good.returncode == 0 and "no error" in good.stdout, good.stderr[-2000:]  # |-0.1|


ERROR_SCRIPT = """
import sys, torch, fastnoise
from fastnoise import functional as F
fastnoise.set_backend("cuda")
x = torch.rand(2, 8, device="cuda")
capture = sys.argv[1] == "capture"
graph = torch.cuda.CUDAGraph()
try:
    if capture:
        F.inject_noise(x, 0.5)  # warm-up
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            F.inject_noise(x, 0.5, offset=-1)
    else:
        F.inject_noise(x, 0.5, seed=-1)
except ValueError as error:
    print("ValueError:", error, flush=True)
"""


@needs_cuda_kernels
@pytest.mark.parametrize("where", ["eager", "capture"])
def test_cuda_errors_that_format_an_integer_raise_cleanly(where):
    """A C++ check whose message formats an int64 raises ValueError on a CUDA tensor. On the
    H100 machine (torch 2.11, its JIT build) the capture case segfaulted inside the
    extension's ostream code while formatting the offset (cuda-gdb: captured_state ->
    c10::str -> ostream::_M_insert<long>); a child process, so a crash is a failure here,
    and the eager case tells a capture-only fault from a build-wide one."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ERROR_SCRIPT, where], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "ValueError:" in done.stdout and "must be in [0, 2**63)" in done.stdout, done.stdout


@needs_cuda_kernels
def test_cuda_words_and_normals_match_spec():
    from fastnoise._backends import cuda

    for offset in (0, 2**32 - 3, 2**29 + 1):
        got = cuda.random_words(1001, 77, offset, device="cuda").cpu()
        assert torch.equal(got, rng.random_words(1001, 77, offset))
        z = cuda.noise_forward(
            torch.zeros(1, 100_003, device="cuda"), torch.ones((), device="cuda"), 9, offset
        )
        assert (z.cpu() - rng.randn((1, 100_003), 9, offset)).abs().max().item() <= Z_ATOL


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cuda_ops_match_reference(dtype, layout, seed_offset):
    from fastnoise._backends import cuda

    def dev(t):
        return t.cuda()

    x = dev(_layouts(SHAPE, dtype, seed=21)[layout])
    grad_y = dev(_layouts(SHAPE, dtype, seed=22)[layout])
    sigma = dev(_param((3, 1, 1), seed=23, positive=True))
    w, b = dev(_param((3, 7, 9), seed=24)), dev(_param((9,), seed=25))
    seed, offset = seed_offset
    _close(
        cuda.noise_forward(x, sigma, seed, offset).cpu(),
        ref.noise_forward(x, sigma, seed, offset).cpu(),
        dtype,
    )
    terms = x.numel() // 3
    _grad_close(
        cuda.noise_backward_sigma(grad_y, sigma, seed, offset).cpu(),
        ref.noise_backward_sigma(grad_y, sigma, seed, offset).cpu(),
        terms,
    )
    _close(
        cuda.pnil_forward(x, w, b, seed, offset).cpu(),
        ref.pnil_forward(x, w, b, seed, offset).cpu(),
        dtype,
    )
    got = cuda.pnil_backward(grad_y, x, w, b, seed, offset)
    want = ref.pnil_backward(grad_y, x, w, b, seed, offset)
    _close(got[0].cpu(), want[0].cpu(), dtype)
    _grad_close(got[1].cpu(), want[1].cpu(), x.shape[0])
    _grad_close(got[2].cpu(), want[2].cpu(), x.numel() // 9)
    pixels = dev(_layouts(SHAPE, dtype, seed=26, kind="pixels")[layout])
    sparse = dev(_layouts(SHAPE, dtype, seed=27, kind="sparse")[layout])
    args = (pixels, sparse, pixels.flip(0), 0.01, 8 / 255, 0.0, 1.0)
    assert torch.equal(cuda.pgd_step(*args).cpu(), ref.pgd_step(*args).cpu())
    args = (pixels, 8 / 255, 7, 2**32 + 9, 0.0, 1.0, True)
    _close(cuda.random_start(*args).cpu(), ref.random_start(*args).cpu(), dtype)


# channels_last with H * W % 4 == 0: the CUDA ops read and write in place (channels_last.h),
# no copy to row-major order and back. Many rows (two reduction passes), 3 and 16 channels.
CUDA_NHWC_SHAPES = [(6, 16, 8, 8), (130, 3, 4, 6), (512, 8, 4, 4)]


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CUDA_NHWC_SHAPES, ids=str)
def test_cuda_channels_last_in_place_equals_row_major_and_the_spec(dtype, shape):
    """Bit for bit what the row-major kernels give on the same values (same arithmetic per
    element and per feature sum), outputs channels_last, and within tolerance of the spec."""
    from fastnoise._backends import cuda

    x, grad_y, sigma, w, b = _cuda_backward_inputs(shape, dtype)
    cl_x, cl_grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad_y))
    seed, offset = 2**32 + 99, 2**32 - 3
    y = cuda.noise_forward(cl_x, sigma, seed, offset)
    p = cuda.pnil_forward(cl_x, w, b, seed, offset)
    gx = cuda.pnil_backward(cl_grad, cl_x, w, b, seed, offset)[0]
    step = cuda.pgd_step(cl_x, cl_grad, cl_x.flip(0), 0.01, 8 / 255, 0.0, 1.0)
    start = cuda.random_start(cl_x, 8 / 255, seed, offset, 0.0, 1.0, True)
    for out in (y, p, gx, step, start):
        assert out.is_contiguous(memory_format=torch.channels_last), out.stride()
    pairs = [
        (y, cuda.noise_forward(x, sigma, seed, offset)),
        (p, cuda.pnil_forward(x, w, b, seed, offset)),
        (step, cuda.pgd_step(x, grad_y, x.flip(0), 0.01, 8 / 255, 0.0, 1.0)),
        (start, cuda.random_start(x, 8 / 255, seed, offset, 0.0, 1.0, True)),
        *zip(
            _cuda_backward(cl_x, cl_grad, sigma, w, b, seed, offset),
            _cuda_backward(x, grad_y, sigma, w, b, seed, offset),
            strict=True,
        ),
    ]
    for got, want in pairs:
        assert torch.equal(got, want)
    _close(y.cpu(), ref.noise_forward(x, sigma, seed, offset).cpu(), dtype)
    _close(p.cpu(), ref.pnil_forward(x, w, b, seed, offset).cpu(), dtype)
    want_grads = ref.pnil_backward(grad_y, x, w, b, seed, offset)
    _close(gx.cpu(), want_grads[0].cpu(), dtype)
    got_sums = _cuda_backward(cl_x, cl_grad, sigma, w, b, seed, offset)
    _grad_close(got_sums[0].cpu(), ref.noise_backward_sigma(grad_y, sigma, seed, offset).cpu(),
                shape[0])  # fmt: skip
    _grad_close(got_sums[2].cpu(), want_grads[1].cpu(), shape[0])
    _grad_close(got_sums[3].cpu(), want_grads[2].cpu(), shape[0])


# The CUDA backward sums parameter gradients as per-block partials over a fixed grid, then
# the partial rows in a fixed order: no atomics. Shapes with several row chunks and two
# passes (rows >> 4 * row lanes), features % 4 == 0 (rows start on a Philox counter, quad
# loads) and != 0 (rows start mid-counter), tiny feature counts, and one pass (2 rows).
CUDA_BACKWARD_SHAPES = [(512, 3, 16, 16), (300, 5, 7, 9), (4096, 10), (2, 3, 200, 200)]


def _cuda_backward_inputs(shape, dtype, param_shape=None):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g).to(dtype).cuda()
    grad_y = torch.randn(shape, generator=g).to(dtype).cuda()
    param_shape = shape[1:] if param_shape is None else param_shape
    sigma = (torch.rand(param_shape, generator=g) * 0.5 + 0.05).cuda()
    w = ((torch.rand(param_shape, generator=g) - 0.5) * 0.5).cuda()
    b = ((torch.rand(param_shape, generator=g) - 0.5) * 0.5).cuda()
    return x, grad_y, sigma, w, b


def _cuda_backward(x, grad_y, sigma, w, b, seed, offset):
    from fastnoise._backends import cuda

    return (
        cuda.noise_backward_sigma(grad_y, sigma, seed, offset),
        *cuda.pnil_backward(grad_y, x, w, b, seed, offset),
    )


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """The same values, contiguous, one element past an aligned address: the kernels then
    take their scalar-load path instead of 8/16-byte quads."""
    buffer = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buffer[1:].view(t.shape).copy_(t)
    assert out.is_contiguous() and out.data_ptr() % 16 != 0
    return out


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CUDA_BACKWARD_SHAPES, ids=str)
def test_cuda_backward_is_bitwise_reproducible(dtype, shape):
    # With one float atomicAdd per element (the kernels before), the hundreds to thousands
    # of adds into each feature's sum landed in scheduling order, so two runs differed in
    # the last bits; a reduction that depends on timing fails here.
    x, grad_y, sigma, w, b = _cuda_backward_inputs(shape, dtype)
    first = _cuda_backward(x, grad_y, sigma, w, b, 2**32 + 99, 2**32 - 3)
    for _ in range(3):
        again = _cuda_backward(x, grad_y, sigma, w, b, 2**32 + 99, 2**32 - 3)
        for got, want in zip(again, first, strict=True):
            assert torch.equal(got, want)


@needs_cuda_kernels
@pytest.mark.parametrize("shape", CUDA_BACKWARD_SHAPES[:2], ids=str)
def test_cuda_backward_runs_under_deterministic_algorithms(shape):
    # torch.use_deterministic_algorithms(True) must neither raise (an op flagged
    # nondeterministic would) nor change the result: the kernels are deterministic anyway.
    from fastnoise import functional
    from fastnoise._dispatch import use_backend

    x, grad_y, sigma, w, b = _cuda_backward_inputs(shape, torch.float32)
    free = _cuda_backward(x, grad_y, sigma, w, b, 99, 7)
    was_on, was_warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        strict = _cuda_backward(x, grad_y, sigma, w, b, 99, 7)
        x_leaf, s_leaf = x.clone().requires_grad_(), sigma.clone().requires_grad_()
        w_leaf, b_leaf = w.clone().requires_grad_(), b.clone().requires_grad_()
        with use_backend("cuda"):
            y = functional.inject_noise(x_leaf, s_leaf, seed=5, offset=0)
            y = functional.pnil(y, w_leaf, b_leaf, seed=6, offset=0)
            grads = torch.autograd.grad(y.square().sum(), (x_leaf, s_leaf, w_leaf, b_leaf))
        torch.cuda.synchronize()
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)
    for got, want in zip(strict, free, strict=True):
        assert torch.equal(got, want)
    assert all(bool(g.isfinite().all()) for g in grads)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", CUDA_BACKWARD_SHAPES, ids=str)
def test_cuda_backward_matches_reference(dtype, shape, seed_offset):
    x, grad_y, sigma, w, b = _cuda_backward_inputs(shape, dtype)
    seed, offset = seed_offset
    got = _cuda_backward(x, grad_y, sigma, w, b, seed, offset)
    want = (
        ref.noise_backward_sigma(grad_y, sigma, seed, offset),
        *ref.pnil_backward(grad_y, x, w, b, seed, offset),
    )
    rows = shape[0]
    _grad_close(got[0].cpu(), want[0].cpu(), rows)
    _close(got[1].cpu(), want[1].cpu(), dtype)
    _grad_close(got[2].cpu(), want[2].cpu(), rows)
    _grad_close(got[3].cpu(), want[3].cpu(), rows)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_backward_broadcast_parameters_match_reference(dtype, seed_offset):
    """Per-channel and scalar parameters: the kernels sum per feature, ATen the rest."""
    shape = (64, 3, 9, 11)  # 297 features: rows start mid-counter
    seed, offset = seed_offset
    for param_shape in [(3, 1, 1), ()]:
        x, grad_y, sigma, w, b = _cuda_backward_inputs(shape, dtype, param_shape)
        got = _cuda_backward(x, grad_y, sigma, w, b, seed, offset)
        want = (
            ref.noise_backward_sigma(grad_y, sigma, seed, offset),
            *ref.pnil_backward(grad_y, x, w, b, seed, offset),
        )
        terms = x.numel() // max(sigma.numel(), 1)
        _grad_close(got[0].cpu(), want[0].cpu(), terms)
        _close(got[1].cpu(), want[1].cpu(), dtype)
        _grad_close(got[2].cpu(), want[2].cpu(), terms)
        _grad_close(got[3].cpu(), want[3].cpu(), terms)


@needs_cuda_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 3, 8, 8), (5, 3, 7, 9), (9, 2), (6, 1)], ids=str)
def test_cuda_quad_and_scalar_loads_give_the_same_bits(dtype, shape):
    # Aligned tensors take the 8/16-byte quad loads and stores, misaligned ones the scalar
    # path; both must give the same bits, forward and backward (the backward's summation
    # order does not depend on the loads). A lane mix-up in a quad (e.g. the half words of
    # an fp16 quad swapped) fails here, and against the reference in the tests above.
    from fastnoise._backends import cuda

    x, grad_y, sigma, w, b = _cuda_backward_inputs(shape, dtype)
    seed, offset = 2**63 - 25, 2**40 + 1
    x2, grad_y2 = _misaligned(x), _misaligned(grad_y)
    sigma2, w2, b2 = _misaligned(sigma), _misaligned(w), _misaligned(b)
    pairs = [
        (cuda.noise_forward(x, sigma, seed, offset), cuda.noise_forward(x2, sigma2, seed, offset)),
        (cuda.pnil_forward(x, w, b, seed, offset), cuda.pnil_forward(x2, w2, b2, seed, offset)),
        (
            cuda.random_start(x, 8 / 255, seed, offset, 0.0, 1.0, True),
            cuda.random_start(x2, 8 / 255, seed, offset, 0.0, 1.0, True),
        ),
        (
            cuda.pgd_step(x, grad_y, x.flip(0), 0.01, 8 / 255, 0.0, 1.0),
            cuda.pgd_step(x2, grad_y2, _misaligned(x.flip(0)), 0.01, 8 / 255, 0.0, 1.0),
        ),
    ]
    pairs += zip(
        _cuda_backward(x, grad_y, sigma, w, b, seed, offset),
        _cuda_backward(x2, grad_y2, sigma2, w2, b2, seed, offset),
        strict=True,
    )
    for aligned, scalar in pairs:
        assert torch.equal(aligned, scalar)
    _close(pairs[0][0].cpu(), ref.noise_forward(x, sigma, seed, offset).cpu(), dtype)
    _close(pairs[1][0].cpu(), ref.pnil_forward(x, w, b, seed, offset).cpu(), dtype)
