"""The C++ front door (csrc/front_door.cpp): eager calls on the extension's devices take
one dispatcher call that checks, draws the seed, runs the kernel and records autograd.

It must give exactly what the custom-op path of fastnoise/_ops.py gives on the same
kernels, match the pure-torch spec, draw the same seed from torch's generator, reject the
same bad inputs, and resolve the backend once per device, not per call.
"""

from __future__ import annotations

import types

import pytest
import torch

from fastnoise import _dispatch, rng, use_backend
from fastnoise import functional as F
from fastnoise._backends import cpp, reference

from tolerances import assert_close_ulps

pytestmark = pytest.mark.skipif(
    cpp.unavailable_reason() is not None, reason=f"C++ extension: {cpp.unavailable_reason()}"
)

SHAPE = (5, 3, 5, 7)  # odd sizes: runs cross tiles and rows
# Parameter shapes against one sample (3, 5, 7): read in place (full, channel, scalar,
# leading) or expanded per call (trailing, middle).
PARAM_SHAPES = {
    "full": (3, 5, 7),
    "channel": (3, 1, 1),
    "scalar": (),
    "leading": (3, 5, 1),
    "trailing": (5, 7),
    "middle": (1, 5, 1),
}
X = torch.rand(2, 3)  # for the bad-input cases
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@pytest.fixture
def custom_op_path(monkeypatch):
    """Run a call through fastnoise._ops' custom ops instead of the front door."""

    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(F, "_front_door", lambda *args: None)
            return fn()

    return run


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # a non-contiguous view with the same values
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


def _grads(fn, *inputs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = fn(*leaves)
    weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype)
    (y * weights).sum().backward()
    return y.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("param", list(PARAM_SHAPES), ids=list(PARAM_SHAPES))
def test_inject_noise_matches_the_custom_op_path_and_the_spec(
    param, dtype, layout, seed_offset, custom_op_path
):
    seed, offset = seed_offset
    x = _layout(torch.randn(SHAPE, dtype=dtype), layout)
    sigma = torch.rand(PARAM_SHAPES[param], dtype=dtype) + 0.1

    def call(x, sigma):
        return F.inject_noise(x, sigma, seed=seed, offset=offset)

    y, (gx, gs) = _grads(call, x, sigma)
    y_op, (gx_op, gs_op) = custom_op_path(lambda: _grads(call, x, sigma))
    assert torch.equal(y, y_op) and torch.equal(gx, gx_op) and torch.equal(gs, gs_op)
    assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    with use_backend("torch"):
        y_ref, (_, gs_ref) = _grads(call, x, sigma)
    assert_close_ulps(y, y_ref, atol=1e-6)
    torch.testing.assert_close(gs, gs_ref, rtol=2e-2, atol=2e-2 * gs_ref.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shapes",
    [("full", "full"), ("channel", "channel"), ("scalar", "scalar"), ("full", "channel")],
    ids=["full", "channel", "scalar", "mixed"],
)
def test_pnil_matches_the_custom_op_path_and_the_spec(shapes, dtype, seed_offset, custom_op_path):
    seed, offset = seed_offset
    x = torch.rand(SHAPE, dtype=dtype)
    weight = torch.randn(PARAM_SHAPES[shapes[0]], dtype=dtype) * 0.5
    bias = torch.randn(PARAM_SHAPES[shapes[1]], dtype=dtype) * 0.5 - 2

    def call(x, weight, bias):
        return F.pnil(x, weight, bias, seed=seed, offset=offset)

    y, grads = _grads(call, x, weight, bias)
    y_op, grads_op = custom_op_path(lambda: _grads(call, x, weight, bias))
    assert torch.equal(y, y_op)
    assert all(torch.equal(g, g_op) for g, g_op in zip(grads, grads_op, strict=True))
    with use_backend("torch"):
        y_ref, grads_ref = _grads(call, x, weight, bias)
    assert_close_ulps(y, y_ref, ulps=2, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        scale = g_ref.abs().max().item()
        torch.testing.assert_close(g, g_ref, rtol=2e-2, atol=2e-2 * scale)


def test_gradcheck_float64(seed_offset):
    seed, offset = seed_offset
    x = torch.rand(3, 2, 3, 5, dtype=torch.float64, requires_grad=True)
    sigma = (torch.rand(2, 1, 1, dtype=torch.float64) + 0.1).requires_grad_()
    weight = (torch.randn(2, 3, 5, dtype=torch.float64) * 0.3).requires_grad_()
    bias = (torch.randn(2, 1, 1, dtype=torch.float64) * 0.3 - 1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, s: F.inject_noise(x, s, seed=seed, offset=offset), (x, sigma)
    )
    assert torch.autograd.gradcheck(
        lambda x, w, b: F.pnil(x, w, b, seed=seed, offset=offset), (x, weight, bias)
    )


@pytest.mark.parametrize("op", ["inject_noise", "pnil", "random_start"])
def test_seed_none_draws_what_rng_draw_seed_draws(op):
    """torch.manual_seed makes the front door reproducible, and it consumes the generator
    exactly as the Python path's rng.draw_seed() does."""
    x = torch.rand(4, 3, 8)
    calls = {
        "inject_noise": lambda seed: F.inject_noise(x, torch.full((3, 1), 0.5), seed=seed),
        "pnil": lambda seed: F.pnil(x, torch.ones(3, 8), torch.zeros(3, 8), seed=seed),
        "random_start": lambda seed: F.random_start(x, 0.1, seed=seed),
    }
    torch.manual_seed(11)
    drawn, after_drawn = calls[op](None), torch.rand(2)
    torch.manual_seed(11)
    explicit, after_explicit = calls[op](rng.draw_seed()), torch.rand(2)
    assert torch.equal(drawn, explicit) and torch.equal(after_drawn, after_explicit)
    assert not torch.equal(calls[op](None), calls[op](None)), "two draws gave the same noise"


def test_inference_mode_float_sigma_and_no_graph_attack_steps(seed_offset):
    seed, offset = seed_offset
    x = torch.rand(4, 3, 5, requires_grad=True)
    y = F.inject_noise(x, 0.3, seed=seed, offset=offset)  # a float sigma: a filled 0-d tensor
    assert torch.equal(y, F.inject_noise(x, torch.tensor(0.3), seed=seed, offset=offset))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with torch.inference_mode():  # below autograd: the CompositeExplicitAutograd kernels
        assert torch.equal(F.inject_noise(x, 0.3, seed=seed, offset=offset), y)
        w, b = torch.ones(3, 5), torch.zeros(3, 5)
        assert torch.equal(
            F.pnil(x, w, b, seed=seed, offset=offset),
            F.pnil(x.detach(), w, b, seed=seed, offset=offset),
        )
    step = F.pgd_step(x, torch.randn_like(x), x.detach(), 0.1, 0.2)
    start = F.random_start(x, 0.1, seed=seed, offset=offset)
    assert step.grad_fn is None and not step.requires_grad
    assert start.grad_fn is None and not start.requires_grad


@pytest.mark.parametrize(
    "call, error, needle",
    [
        (lambda: F.inject_noise(torch.rand(2, 3), -torch.ones(3)), ValueError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), torch.tensor(float("nan"))), ValueError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), -0.5), ValueError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), float("nan")), ValueError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), "0.5"), TypeError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), torch.ones(3).long()), TypeError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), torch.ones(4)), ValueError, "sigma"),
        (lambda: F.inject_noise(torch.ones(2, 3, dtype=torch.int32), 0.1), TypeError, "x"),
        (lambda: F.inject_noise(torch.tensor(1.0), 0.1), ValueError, "x"),
        (lambda: F.inject_noise(torch.rand(2, 3), 0.1, seed=-1), ValueError, "seed"),
        (lambda: F.inject_noise(torch.rand(2, 3), 0.1, seed=2**63), ValueError, "seed"),
        (lambda: F.inject_noise(torch.rand(2, 3), 0.1, seed=1, offset=-2), ValueError, "offset"),
        (lambda: F.inject_noise(torch.rand(2, 3), 0.1, seed=1, offset=2**64), ValueError, "offset"),
        (lambda: F.pnil(X, torch.ones(2, 3, 1), torch.ones(3)), ValueError, "weight"),
        (lambda: F.pnil(torch.rand(2, 3), torch.ones(3), torch.ones(2)), ValueError, "bias"),
        (lambda: F.pnil(torch.rand(2, 3), torch.ones(3), [0.0]), TypeError, "bias"),
        (lambda: F.pnil(X, torch.ones(3), torch.ones(3), seed=-1), ValueError, "seed"),
        (lambda: F.random_start(torch.rand(2, 3), 0.1, seed=-5), ValueError, "seed"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_argument_on_both_paths(call, error, needle, custom_op_path):
    for run in (lambda: call(), lambda: custom_op_path(call)):
        with pytest.raises(error, match=needle):
            run()


def test_backend_resolved_once_per_device_and_cleared_by_set_backend(monkeypatch):
    x, sigma = torch.rand(2, 3), torch.full((3,), 0.2)
    _dispatch.refresh()
    F.inject_noise(x, sigma, seed=1)  # resolves and caches the choice for the CPU

    class NoReads(dict):
        def get(self, *args, **kwargs):
            raise AssertionError("the environment was read during a call")

    monkeypatch.setattr(_dispatch, "os", types.SimpleNamespace(environ=NoReads()))
    for _ in range(3):
        F.inject_noise(x, sigma, seed=1)
    monkeypatch.undo()

    calls = []
    real = reference.noise_forward
    monkeypatch.setattr(reference, "noise_forward", lambda *a: calls.append(1) or real(*a))
    with use_backend("torch"):  # a new choice replaces the cached one...
        torch.testing.assert_close(F.inject_noise(x, sigma, seed=1), real(x, sigma, 1, 0))
    assert calls == [1]
    F.inject_noise(x, sigma, seed=1)  # ...and leaving the block brings the old one back
    assert calls == [1]


# -- torch.compile: the graph calls the extension's .state ops, with no Python between --


def _graph_code(fn, *args) -> str:
    codes = []

    def backend(gm, example_inputs):
        codes.append(gm.code)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, fullgraph=True)(*args)
    return "\n".join(codes)


def test_compiled_graph_calls_the_extension_or_the_custom_ops_of_the_backend_in_force():
    x, sigma = torch.rand(2, 3, 4), torch.full((3, 1), 0.2)

    def step(x, sigma):
        y = F.pnil(F.inject_noise(x, sigma), sigma, sigma)
        return F.pgd_step(F.random_start(x, 0.1), y, x, 0.01, 0.1)

    code = _graph_code(step, x, sigma)
    # seed=None: each op draws its state inside, one call each and no other extension op
    for op in ("inject_noise.fresh", "pnil.fresh", "random_start.fresh"):
        assert f"fastnoise_C.{op}" in code
    assert code.count("torch.ops.fastnoise_C.") == 3 and ".state(" not in code

    def seeded(x, sigma):
        y = F.pnil(F.inject_noise(x, sigma, seed=1), sigma, sigma, seed=2)
        return F.random_start(y, 0.1, seed=3)

    code = _graph_code(seeded, x, sigma)  # given seeds: [seed, offset] is a graph input
    for op in ("inject_noise.state", "pnil.state", "random_start.state"):
        assert f"fastnoise_C.{op}" in code
    assert ".fresh(" not in code
    assert "torch.ops.fastnoise." not in code
    assert "pgd_step" not in code  # plain arithmetic for Inductor to fuse (test_ops.py)
    with use_backend("torch"):  # not the extension: the custom ops pick it at run time
        code = _graph_code(step, x, sigma)
    assert "fastnoise_C" not in code and "fastnoise.noise_injection" in code


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compiled_matches_eager_forward_and_backward(layout, seed_offset):
    """Values and gradients of the compiled graph (the .state ops and their C++ autograd)
    equal eager's, for both layouts and for seeds past 2**32."""
    seed, offset = seed_offset
    x = _layout(torch.rand(3, 4, 5, 6), layout)
    sigma, weight, bias = (
        torch.rand(4, 1, 1) + 0.1,
        torch.randn(4, 5, 6) * 0.3,
        torch.zeros(4, 5, 6),
    )

    def step(x, sigma, weight, bias):
        y = F.inject_noise(x, sigma, seed=seed, offset=offset)
        y = F.pnil(y, weight, bias, seed=seed + 1, offset=offset)
        start = F.random_start(x.detach(), 0.1, seed=seed, offset=offset)
        return y, F.pgd_step(start, y.detach(), x.detach(), 0.02, 0.1)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    results = []
    for fn in (step, compiled):
        leaves = [t.detach().clone().requires_grad_() for t in (x, sigma, weight, bias)]
        y, stepped = fn(*leaves)
        (y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append([y.detach(), stepped, *(leaf.grad for leaf in leaves)])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_compiled_seed_none_draws_what_eager_draws():
    """Each compiled op draws its state in C++ as eager seed=None does (the .fresh ops):
    after the same torch.manual_seed, layers in sequence (their order fixed by the data, as
    in a model) give eager's noise, and a second call gives new noise (inductor must not
    fold or reuse a draw). Draws with no data between them may run in another order than
    eager's (inductor schedules them), but in the same order every call."""
    x, sigma = torch.rand(3, 4, 5), torch.full((4, 1), 0.3)
    weight, bias = torch.full((4, 5), 0.2), torch.full((5,), -1.0)

    def layers(x, sigma):
        y = F.pnil(F.inject_noise(x, sigma), weight, bias)
        return y, F.random_start(y.clamp(0, 1), 0.1)

    def independent(x, sigma):
        return F.inject_noise(x, sigma), F.random_start(x, 0.1)

    torch._dynamo.reset()
    compiled = torch.compile(layers, fullgraph=True)
    torch.manual_seed(5)
    eager = layers(x, sigma), layers(x, sigma)
    torch.manual_seed(5)
    got = compiled(x, sigma), compiled(x, sigma)
    for pair_got, pair_eager in zip(got, eager, strict=True):
        for a, b in zip(pair_got, pair_eager, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(got[0][0], got[1][0])
    compiled = torch.compile(independent, fullgraph=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(compiled(x, sigma))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_compiled_seed_none_backward_regenerates_the_forwards_noise():
    """The .fresh ops return their drawn state beside y and the backward reads it: values
    and gradients of a compiled seed=None graph (inject, |theta| inject, PNIL) equal
    eager's after the same torch.manual_seed; with the state dropped or redrawn, the
    backward's noise would not be the forward's."""
    x = torch.rand(3, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    sigma, theta = torch.rand(4, 1, 1) + 0.1, torch.randn(4, 5, 6) * 0.3
    weight, bias = torch.randn(4, 5, 6) * 0.3, torch.zeros(4, 5, 6)

    def layers(x, sigma, theta, weight, bias):
        y = F.inject_noise_abs(F.inject_noise(x, sigma), theta)
        return F.pnil(y, weight, bias)

    torch._dynamo.reset()
    results = []
    for fn in (layers, torch.compile(layers, fullgraph=True)):
        leaves = [t.detach().clone().requires_grad_() for t in (x, sigma, theta, weight, bias)]
        torch.manual_seed(11)
        y = fn(*leaves)
        (y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum().backward()
        results.append([y.detach(), *(leaf.grad for leaf in leaves)])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_compiled_fresh_state_lives_on_the_cuda_device():
    """Traced on CUDA (fake tensors: no GPU needed), a compiled graph's seed=None state is
    a device tensor, so the graph holds no CPU tensor and reduce-overhead can capture it
    (a CPU state was the "Non cuda output" that stopped capture on an H100); on the CPU it
    stays a CPU tensor the kernels read on the host."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = torch.ops.fastnoise_C
    with FakeTensorMode():
        for device in ("cuda", "cpu"):
            x, sigma = torch.empty(2, 3, device=device), torch.ones((), device=device)
            states = [
                ops.inject_noise.fresh(x, sigma, 0)[1],
                ops.inject_noise.abs_fresh(x, sigma, 0)[1],
                ops.pnil.fresh(x, sigma, sigma, 0)[1],
            ]
            for state in states:
                assert state.device.type == device, state.device
                assert state.dtype == torch.int64 and state.shape == (2,)


@pytest.mark.parametrize(
    "rows, dtype",
    [
        ([-0.3, 0.0, 0.4], torch.float32),  # the abs path: a copy, and sgn in the backward
        ([0.3, 1e-30, 0.4], torch.float32),  # all > 0: sigma read as is, no sign product
        ([0.3, 0.0, 0.4], torch.float32),  # one 0 keeps the abs path: its gradient is 0
        ([0.3, 0.2, 0.4], torch.float64),
        ([-0.3, 0.2, 0.4], torch.float64),
    ],
)
def test_inject_noise_abs_is_inject_noise_of_abs(seed_offset, rows, dtype):
    """PerturbationInjection's fused |theta| (one op) against sigma.abs() + inject_noise:
    same values, gradient sign(theta) * d/d|theta| (0 at 0, as abs' is), NaN refused;
    with and without autograd, on both of the op's paths (theta all > 0 or not)."""
    seed, offset = seed_offset
    x = torch.rand(4, 3, 5, dtype=dtype)
    theta = torch.tensor(rows, dtype=dtype)[:, None].expand(3, 5).contiguous()

    def fused(x, t):
        return F.inject_noise_abs(x, t, seed=seed, offset=offset)

    def composed(x, t):
        return F.inject_noise(x, t.abs(), seed=seed, offset=offset)

    y, grads = _grads(fused, x, theta)
    y_ref, grads_ref = _grads(composed, x, theta)
    assert torch.equal(y, y_ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.equal(g, g_ref)
    assert ((grads[1][1] == 0).all()) == (rows[1] == 0.0) and (grads[1][0] != 0).all()
    with torch.no_grad():
        assert torch.equal(fused(x, theta), y_ref)
    with pytest.raises(ValueError, match="sigma must be non-negative and not NaN"):
        F.inject_noise_abs(x, torch.full((3, 5), float("nan")), seed=1)


@pytest.mark.parametrize("rows", [[0.3, 0.2, 0.4], [-0.3, 0.0, 0.4]], ids=["positive", "mixed"])
def test_compiled_inject_noise_abs_takes_abs_inside_one_op(rows, seed_offset):
    """Under torch.compile, PerturbationInjection's |theta| is taken inside one op
    (inject_noise.abs_state): no abs or sign kernel of its own in the graph, and values and
    gradients equal eager sigma.abs() + inject_noise (0 gradient at 0, as abs' is)."""
    seed, offset = seed_offset
    x, theta = torch.rand(4, 3, 5), torch.tensor(rows)[:, None].expand(3, 5).contiguous()

    def fused(x, t):
        return F.inject_noise_abs(x, t, seed=seed, offset=offset)

    code = _graph_code(fused, x, theta)
    assert "fastnoise_C.inject_noise.abs_state" in code and "abs(" not in code
    torch._dynamo.reset()
    y, grads = _grads(torch.compile(fused, fullgraph=True), x, theta)
    y_ref, grads_ref = _grads(
        lambda x, t: F.inject_noise(x, t.abs(), seed=seed, offset=offset), x, theta
    )
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "dtype,layout",
    [(torch.float16, "channels_last"), (torch.bfloat16, "strided"), (torch.float64, "contiguous")],
    ids=str,
)
def test_compiled_inject_noise_abs_matches_the_spec_in_every_dtype_and_layout(dtype, layout):
    """The compiled |theta| op on an odd 4-D shape, half/bfloat/double, channels_last and
    strided x: values equal the reference spec's x + |theta| * z, the gradients eager's,
    the output keeps x's layout; a NaN theta is refused inside the graph too."""
    seed, offset = 2**40 + 3, 7
    x = _layout(torch.rand(3, 3, 5, 7).to(dtype), layout)
    theta = (torch.randn(3, 5, 7) * 0.3).to(
        torch.float64 if dtype == torch.float64 else torch.float32
    )
    theta[0, 0, 0] = 0.0

    def fused(x, t):
        return F.inject_noise_abs(x, t, seed=seed, offset=offset)

    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True)
    y, grads = _grads(compiled, x, theta)
    spec = reference.noise_forward(x.detach(), theta.abs(), seed, offset)
    assert_close_ulps(y, spec, atol=1e-6)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    y_ref, grads_ref = _grads(
        lambda x, t: F.inject_noise(x, t.abs(), seed=seed, offset=offset), x, theta
    )
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    assert grads[1][0, 0, 0] == 0  # d|theta|/dtheta at 0, as abs' is
    with pytest.raises(ValueError, match="sigma must be non-negative and not NaN"):
        compiled(x.detach(), torch.full_like(theta, float("nan")))


def test_opcheck_the_extension_ops(seed_offset):
    """Schema and autograd registration of the C++ ops; fake kernels and AOT dispatch too
    for the .state ops compiled graphs call. Explicit seeds (the .fresh ops draw, so
    opcheck's repeated runs could not agree; they get the checks that compare no values)."""
    seed, offset = seed_offset
    ops = torch.ops.fastnoise_C
    x = torch.rand(3, 2, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    sigma = (torch.rand(2, 1, 1) + 0.1).requires_grad_()
    weight = (torch.randn(2, 4, 5) * 0.3).requires_grad_()
    bias = torch.zeros(2, 4, 5, requires_grad=True)
    state = torch.tensor([seed, offset])
    bounds = torch.tensor([0.01, 0.1, 0.0, 1.0], dtype=torch.float64)
    plain = x.detach()
    cases = [
        (ops.inject_noise.default, (x, sigma, seed, offset)),
        (ops.inject_noise.scalar, (x, 0.3, seed, offset)),
        (ops.inject_noise.abs, (x, sigma - 0.2, seed, offset)),
        (ops.pnil.default, (x, weight, bias, seed, offset)),
        (ops.random_start.draw, (plain, 0.1, seed, offset, 0.0, 1.0, True)),
        (ops.inject_noise.state, (x, sigma, state)),
        (ops.inject_noise.abs_state, (x, sigma - 0.2, state)),
        (
            ops.noise_backward_sigma.abs_state,
            (torch.randn_like(plain), sigma.detach() - 0.2, state),
        ),
        (ops.pnil.state, (x, weight, bias, state)),
        (ops.noise_backward_sigma.state, (torch.randn_like(plain), sigma.detach(), state)),
        (
            ops.pnil_backward.state,
            (torch.randn_like(plain), plain, weight.detach(), bias.detach(), state),
        ),
        (ops.pgd_step.state, (plain, torch.randn_like(plain), plain, bounds)),
        (ops.random_start.state, (plain, state, bounds, False)),
    ]
    # The eager front door: its checks read values, so it traces under static shapes only
    # (compiled graphs call the .state ops below instead).
    front_door_checks = (
        "test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static",
    )  # fmt: skip
    for op, args in cases[:5]:
        torch.library.opcheck(op, args, test_utils=front_door_checks)
    for op, args in cases[5:]:  # what compiled graphs call: every check
        torch.library.opcheck(op, args)
    # The .fresh ops draw their seed, so their runs cannot agree: no value comparisons.
    fresh_cases = [
        (ops.inject_noise.fresh, (x, sigma, offset)),
        (ops.inject_noise.abs_fresh, (x, sigma - 0.2, offset)),
        (ops.pnil.fresh, (x, weight, bias, offset)),
        (ops.random_start.fresh, (plain, offset, bounds, True)),
    ]
    for op, args in fresh_cases:
        torch.library.opcheck(
            op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
        )
