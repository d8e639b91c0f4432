"""The torch.library custom ops: opcheck, gradcheck, saved memory and torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import fastnoise
from fastnoise import _ops, rng


@pytest.fixture(params=["torch", "auto"])
def backend(request):
    """The reference and whatever auto picks on the CPU (the C++ backend when built)."""
    with fastnoise.use_backend(request.param):
        yield request.param


def _inputs(shape=(3, 2, 5), dtype=torch.float32):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    sigma = torch.rand(shape[1:2] + (1,), dtype=dtype, requires_grad=True)
    weight = (0.2 * torch.randn(shape[1:], dtype=dtype)).requires_grad_()
    bias = (0.2 * torch.randn(shape[-1:], dtype=dtype)).requires_grad_()
    return x, sigma, weight, bias


def test_opcheck_every_op(backend):
    x, sigma, weight, bias = _inputs()
    state = _ops.make_rng_state(5, 9)
    x_orig = torch.rand(3, 2, 5)
    bounds = _ops.make_bounds(0.01, 0.03, 0.0, 1.0)
    cases = [
        (_ops.noise_injection, (x, sigma, state)),
        (_ops.noise_injection_backward, (torch.randn(3, 2, 5), sigma.detach(), state)),
        (_ops.pnil, (x, weight, bias, state)),
        (
            _ops.pnil_backward,
            (torch.randn(3, 2, 5), x.detach(), weight.detach(), bias.detach(), state),
        ),
        (_ops.pgd_step, (x_orig + 0.01, torch.randn(3, 2, 5), x_orig, bounds)),
        (_ops.random_start, (x_orig, state, bounds, True)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_opcheck_channels_last(backend):
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    sigma, weight, bias = torch.rand(3, 1, 1), torch.randn(3, 4, 5), torch.randn(5)
    state = _ops.make_rng_state(5, 9)
    for op, args in [
        (_ops.noise_injection, (x.requires_grad_(), sigma, state)),
        (_ops.pnil, (x, weight, bias, state)),
        (_ops.random_start, (x.detach(), state, _ops.make_bounds(0.0, 0.1, 0.0, 1.0), False)),
    ]:
        torch.library.opcheck(op, args)
        assert op(*args).is_contiguous(memory_format=torch.channels_last)


def test_gradcheck_float64(backend, seed_offset):
    x, sigma, weight, bias = _inputs(dtype=torch.float64)
    state = _ops.make_rng_state(*seed_offset)
    assert torch.autograd.gradcheck(lambda a, s: _ops.noise_injection(a, s, state), (x, sigma))
    assert torch.autograd.gradcheck(lambda a, w, b: _ops.pnil(a, w, b, state), (x, weight, bias))


def test_ops_match_reference_values(backend):
    x, sigma, weight, bias = _inputs((4, 3, 7))
    state = _ops.make_rng_state(2**40 + 3, 2**33)
    z = rng.randn(x.shape, 2**40 + 3, 2**33)
    expected = x + sigma * z
    torch.testing.assert_close(
        _ops.noise_injection(x, sigma, state), expected, atol=2e-6, rtol=1e-6
    )


def _saved_activation_sized(fn, x):
    """Tensors autograd saves for backward that are as large as x, and whether each is
    x itself (shares its storage: costs no memory)."""
    saved = []

    def pack(t):
        if t.numel() >= x.numel():
            saved.append(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x).sum().backward()
    return saved


def test_noise_injection_saves_no_activation():
    x = torch.randn(8, 4, 6, 6, requires_grad=True)
    sigma = torch.full((4, 1, 1), 0.1, requires_grad=True)
    assert _saved_activation_sized(lambda t: fastnoise.inject_noise(t, sigma), x) == []
    # The eager composition keeps its noise tensor alive for the backward pass.
    eager = _saved_activation_sized(lambda t: t + sigma * torch.randn_like(t), x)
    assert eager and not any(eager)


def test_pnil_saves_only_its_input():
    x = torch.randn(8, 4, 6, 6, requires_grad=True)
    weight = torch.full((4, 6, 6), 0.1, requires_grad=True)
    bias = torch.zeros(4, 6, 6, requires_grad=True)
    saved = _saved_activation_sized(lambda t: fastnoise.pnil(t, weight, bias), x)
    assert saved == [True]  # x itself: no new activation-sized buffer


def _train_step(x, sigma, eps):
    y = fastnoise.inject_noise(x, sigma)  # seed drawn inside the compiled region
    y = fastnoise.pnil(y, sigma, sigma)
    start = fastnoise.random_start(x.detach(), eps)
    step = fastnoise.pgd_step(start, y.detach(), x.detach(), eps / 4, eps)
    return y, step


@pytest.mark.parametrize("dynamic", [None, True])
def test_compile_fullgraph_no_recompile(dynamic):
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(_train_step, backend=counter, fullgraph=True, dynamic=dynamic)
    x = torch.rand(4, 3, 6, 6)
    sigma = torch.full((3, 1, 1), 0.1)
    outs = [compiled(x, sigma * (1 + i), eps) for i, eps in enumerate([0.01, 0.02, 0.03, 0.05])]
    # New sigma tensors and fresh seeds never recompile. A new Python-float eps recompiles
    # once under automatic dynamic shapes (dynamic=None), never with dynamic=True.
    assert counter.frame_count == (1 if dynamic else 2)
    assert not torch.equal(outs[0][0], outs[1][0])  # a new seed on every call


def test_compile_explicit_seed_tensor_does_not_recompile():
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(
        lambda x, seed: fastnoise.inject_noise(x, 0.5, seed=seed), backend=counter, fullgraph=True
    )
    x = torch.zeros(2, 8)
    ys = [compiled(x, torch.tensor(s)) for s in (1, 2, 3)]
    assert counter.frame_count == 1
    torch.testing.assert_close(ys[1], 0.5 * rng.randn((2, 8), 2), atol=2e-6, rtol=1e-6)


def test_compile_inductor_end_to_end():
    torch._dynamo.reset()
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    sigma = torch.full((3, 1, 1), 0.2, requires_grad=True)
    compiled = torch.compile(_train_step, fullgraph=True)
    torch.manual_seed(0)
    y, step = compiled(x, sigma, 0.03)
    y.square().sum().backward()
    assert sigma.grad is not None and torch.isfinite(sigma.grad).all()
    assert ((step - x).abs() <= 0.03 + 1e-6).all()
    torch.manual_seed(0)
    y_again, _ = compiled(x, sigma, 0.03)
    torch.testing.assert_close(y_again, y)  # torch.manual_seed reproduces the drawn seeds


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_pgd_step_is_fused_and_equals_eager(dtype):
    """Under torch.compile the step is plain tensor arithmetic that Inductor fuses (no op
    call in the graph), with the eager op's exact numbers, NaN kept as NaN."""
    from torch._dynamo.testing import EagerAndRecordGraphs

    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 5, 7, generator=g).to(dtype)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1).to(dtype)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    grad[0, 0, :2] = 0.0
    x_adv[1, 1, 1] = float("nan")

    def step(a, gr, o):
        return fastnoise.pgd_step(a, gr, o, 2 / 255, 8 / 255)

    eager = step(x_adv, grad, x)
    fused = torch.compile(step, fullgraph=True)(x_adv, grad, x)
    torch.testing.assert_close(fused, eager, atol=0, rtol=0, equal_nan=True)
    assert torch.isnan(fused[1, 1, 1])
    recorder = EagerAndRecordGraphs()
    torch.compile(step, backend=recorder, fullgraph=True)(x_adv, grad, x)
    targets = {str(n.target) for gm in recorder.graphs for n in gm.graph.nodes}
    assert not any("fastnoise" in t for t in targets), targets


def test_seed_tensor_validation():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="seed tensor must be one int64"):
        fastnoise.inject_noise(x, 0.1, seed=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="seed must be in"):
        fastnoise.inject_noise(x, 0.1, seed=torch.tensor(-1))
    y = fastnoise.inject_noise(x, 0.1, seed=torch.tensor(7))
    torch.testing.assert_close(y, fastnoise.inject_noise(x, 0.1, seed=7))


def test_a_host_seed_is_refused_inside_cuda_graph_capture(monkeypatch):
    """seed=None on a backend whose seed comes from the host (here the reference) would be
    baked into a captured CUDA graph: refused with a message that names the fix. Capture
    is faked (no GPU here); tests/test_cuda_graphs.py checks it on a GPU."""
    x = torch.rand(2, 3)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with fastnoise.use_backend("torch"):
        with pytest.raises(RuntimeError, match="seed=None inside CUDA graph capture"):
            fastnoise.inject_noise(x, 0.5)
        fastnoise.inject_noise(x, 0.5, seed=3)  # an explicit seed is the user's to vary
    assert "'cuda' backend" in _ops.CAPTURE_NEEDS_DEVICE_SEEDS


def test_a_float_sigma_is_filled_on_the_device_not_copied(monkeypatch):
    """A float sigma becomes a 0-d tensor by a fill on x's device: torch.tensor(..., device=)
    is a host-to-device copy per call on CUDA, refused inside CUDA graph capture (seen on
    an H100 with the triton backend)."""
    real_tensor = torch.tensor

    def no_device_copies(*args, **kwargs):
        assert "device" not in kwargs, "a host-to-device copy of a number"
        return real_tensor(*args, **kwargs)

    monkeypatch.setattr(torch, "tensor", no_device_copies)
    x = torch.rand(2, 3)
    with fastnoise.use_backend("torch"):
        y = fastnoise.inject_noise(x, 0.25, seed=4)
    with fastnoise.use_backend("torch"):
        assert torch.equal(y, fastnoise.inject_noise(x, torch.tensor(0.25), seed=4))
