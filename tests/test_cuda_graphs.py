"""CUDA graph capture with the extension's CUDA kernels (issue 9 item 2).

With ``seed=None`` the front door draws a seed on the host outside capture. Inside
``torch.cuda.graph`` that seed would be baked into the graph, so there the seed and offset
come from torch's CUDA generator on the device instead (``csrc/cuda/graph_rng.h``): a
two-int64 device tensor ``[seed, offset]`` that the graph refills on every replay, read by
the forward kernels and saved for the backward ones. Mapping onto the spec: seed = torch's
generator seed with its top bit cleared, offset = torch's philox offset, ``ceil(numel / 4)``
counters reserved per call (the call's offset argument is checked, then unused: it picks
counters under a known seed, and a captured seed=None call has none).

What the tests check:

- replays of a captured model with PNIL and PerturbationInjection draw fresh, finite
  noise (no_grad, inference_mode and grad mode); captured standard-normal draws are
  N(0, 1) and uncorrelated across replays and across calls in one graph;
- an explicit (seed, offset) inside capture gives exactly eager's numbers;
- a captured forward + backward gives eager's loss and gradients when eager is called
  with the (seed, offset) read back from the saved device tensors, and those states are
  in the spec's range, disjoint within a replay and moved on between replays;
- a negative offset is still refused inside capture;
- ``torch.compile(mode="reduce-overhead")`` captures a noisy model and draws fresh
  noise on every replay (the compiled path's seed=None state is a device tensor);
- outside capture, seed=None on CUDA still draws what ``rng.draw_seed()`` draws.

GPU only: skipped without a GPU or without the extension's CUDA kernels.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from fastnoise import _extension, nn, rng, use_backend
from fastnoise import functional as F

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not _extension.has_cuda_kernels(),
    reason="CUDA graph capture needs a GPU and the fastnoise extension built with its CUDA "
    "kernels (FASTNOISE_BUILD_CUDA=1 or nvcc found at build time)",
)

MODES = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "grad": contextlib.nullcontext,
}


@pytest.fixture(autouse=True)
def cuda_backend():
    """The extension's CUDA kernels run every CUDA tensor (auto may pick them anyway)."""
    with use_backend("cuda"):
        yield


def _warm_up(fn, iterations: int = 3) -> None:
    """Eager iterations on a side stream before capture, as torch.cuda.graph asks."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(iterations):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def _replays(graph: torch.cuda.CUDAGraph, outputs, count: int) -> list:
    """Replay ``count`` times; a detached copy of ``outputs`` (a tuple) after each."""
    copies = []
    for _ in range(count):
        graph.replay()
        torch.cuda.synchronize()
        copies.append(tuple(t.detach().clone() for t in outputs))
    return copies


@pytest.mark.parametrize("mode", list(MODES))
def test_replays_of_a_noisy_model_draw_fresh_noise(mode):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        nn.PNIL((3, 8, 8), bias_init=-2.0),
        torch.nn.Conv2d(3, 4, 3, padding=1),
        nn.PerturbationInjection((4, 8, 8), init=0.5),
    ).cuda()
    x = torch.rand(2, 3, 8, 8, device="cuda")
    with MODES[mode]():
        _warm_up(lambda: model(x))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model(x)
    (first,), (second,), (third,) = _replays(graph, (out,), 3)

    for layer in (model[0], model[2]):
        layer.enabled = False
    with torch.no_grad():
        clean = model(x)
    for got in (first, second, third):
        assert torch.isfinite(got).all()
        assert (got - clean).abs().max() > 1e-2  # the noise is on
    # Fresh noise on every replay: no two replays alike anywhere near.
    for a, b in ((first, second), (second, third), (first, third)):
        assert (a - b).abs().max() > 1e-2
        assert not torch.isclose(a, b).all()


@pytest.mark.parametrize("mode", ["no_grad", "grad"])
def test_reduce_overhead_compile_captures_and_draws_fresh_noise(mode):
    """torch.compile(mode="reduce-overhead") captures the noisy model in a CUDA graph (its
    seed=None state is a device tensor, not a CPU one) and each replay draws new noise."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        nn.PNIL((3, 8, 8), bias_init=-2.0),
        torch.nn.Conv2d(3, 4, 3, padding=1),
        nn.PerturbationInjection((4, 8, 8), init=0.5),
    ).cuda()
    x = torch.rand(2, 3, 8, 8, device="cuda")
    compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    counters = torch._dynamo.utils.counters
    counters.clear()
    outputs = []
    with MODES[mode]():
        for _ in range(5):  # warm-up, record, then replays
            torch.compiler.cudagraph_mark_step_begin()
            outputs.append(compiled(x).detach().clone())
    assert counters["inductor"]["cudagraph_skips"] == 0  # inductor's count of refusals
    manager = torch._inductor.cudagraph_trees.get_manager(0, create_if_none_exists=False)
    assert manager is not None and any(manager.roots.values()), "nothing was captured"
    for a, b in itertools.pairwise(outputs[2:]):
        assert torch.isfinite(a).all()
        assert (a - b).abs().max() > 1e-2  # fresh noise on every replay


def test_captured_draws_are_standard_normal_and_independent_across_replays_and_calls():
    zeros = torch.zeros(64, 1024, device="cuda")
    with torch.no_grad():
        _warm_up(lambda: (F.inject_noise(zeros, 1.0), F.inject_noise(zeros, 1.0)))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            z1 = F.inject_noise(zeros, 1.0)
            z2 = F.inject_noise(zeros, 1.0, offset=5)  # checked, then unused (no seed)
    draws = [z for pair in _replays(graph, (z1, z2), 3) for z in pair]
    for z in draws:
        assert torch.isfinite(z).all()
        assert abs(z.mean().item()) < 0.02  # 65,536 draws: 5 sigma is ~0.02
        assert abs(z.std().item() - 1.0) < 0.02
    flat = torch.stack([z.flatten() for z in draws])
    correlation = torch.corrcoef(flat)
    off_diagonal = correlation - torch.eye(len(draws), device="cuda")
    assert off_diagonal.abs().max() < 0.03  # independent: |r| ~ 1 / sqrt(65536) = 0.004


@pytest.mark.parametrize("mode", ["no_grad", "grad"])
def test_an_explicit_seed_inside_capture_gives_eagers_numbers(mode, seed_offset):
    seed, offset = seed_offset
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 5, 7, generator=g).cuda()
    sigma = (torch.rand(5, 7, generator=g) * 0.5).cuda()
    w = ((torch.rand(5, 7, generator=g) - 0.5) * 0.5).cuda()
    b = torch.full((5, 1), -1.0).cuda()
    if mode == "grad":
        for t in (sigma, w, b):
            t.requires_grad_(True)

    def calls():
        return (
            F.inject_noise(x, sigma, seed=seed, offset=offset),
            F.inject_noise(x, 0.3, seed=seed + 1, offset=offset),
            F.inject_noise_abs(x, sigma - 0.2, seed=seed + 2, offset=offset),
            F.pnil(x, w, b, seed=seed + 3, offset=offset),
            F.random_start(x, 8 / 255, seed=seed + 4, offset=offset),
        )

    with MODES[mode]():
        eager = [t.detach().clone() for t in calls()]
        _warm_up(calls)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = calls()
    for replay in _replays(graph, captured, 2):
        for got, want in zip(replay, eager, strict=True):
            assert torch.equal(got, want)


def _noisy_loss(x, w, b, theta, sigma, mix, target, states):
    """Every captured front-door op with autograd: PNIL, |theta| injection, tensor-sigma
    injection and number-sigma injection, with some ordinary ops between. ``states``: one
    (seed, offset) per noise call, seed None inside capture."""
    (s1, o1), (s2, o2), (s3, o3), (s4, o4) = states
    h = F.pnil(x, w, b, seed=s1, offset=o1)
    h = torch.tanh(h @ mix)
    h = F.inject_noise_abs(h, theta, seed=s2, offset=o2)
    h = F.inject_noise(h, sigma, seed=s3, offset=o3)
    h = F.inject_noise(h, 0.1, seed=s4, offset=o4)
    return ((h - target) ** 2).mean()


def test_captured_backward_matches_eager_with_the_saved_device_state():
    g = torch.Generator().manual_seed(2)
    features = 37  # not a multiple of 4: rows start mid-counter
    x = torch.rand(6, features, generator=g).cuda().requires_grad_()
    w = ((torch.rand(features, generator=g) - 0.5) * 0.5).cuda().requires_grad_()
    b = torch.full((features,), -2.0).cuda().requires_grad_()
    theta = ((torch.rand(features, generator=g) - 0.5) * 0.6).cuda().requires_grad_()  # |.| used
    sigma = (torch.rand(1, generator=g) * 0.3 + 0.05).cuda().requires_grad_()
    mix = (torch.randn(features, features, generator=g) / features**0.5).cuda()
    target = torch.rand(6, features, generator=g).cuda()
    leaves = (x, w, b, theta, sigma)
    # Offsets are checked, then unused under capture with seed=None: the state's offset is
    # torch's alone, so no call's counters can run into another's.
    capture_states = [(None, o) for o in (0, 3, 0, 2**20 + 1)]

    def step():
        for t in leaves:
            t.grad = None
        loss = _noisy_loss(*leaves, mix, target, capture_states)
        loss.backward()
        return loss

    _warm_up(step)
    for t in leaves:
        t.grad = None
    saved = []  # the [seed, offset] device tensors the autograd Functions save, in call order

    def pack(t):
        if t.is_cuda and t.dtype == torch.int64 and t.shape == (2,):
            saved.append(t)
        return t

    graph = torch.cuda.CUDAGraph()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.cuda.graph(graph):
            static_loss = step()
    assert len(saved) == 4, f"expected one device state per noise call, got {len(saved)}"
    # Philox counters per call, ceil(numel / 4): PNIL on x, then three injections on an
    # activation of x's shape.
    counters = [-(-x.numel() // 4)] * 4

    replays = []
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        states = [tuple(int(v) for v in s.cpu()) for s in saved]
        grads = [t.grad.detach().clone() for t in leaves]
        replays.append((states, static_loss.detach().clone(), grads))

    for states, loss, grads in replays:
        for seed, offset in states:
            assert 0 <= seed < 2**63 and 0 <= offset < 2**63
        # Within one replay the calls' counter ranges (torch's offsets) never overlap.
        ranges = sorted(
            (offset, offset + n) for (_, offset), n in zip(states, counters, strict=True)
        )
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end <= start, ranges
        # Eager, with the (seed, offset) each call read on the device, gives the same
        # loss and gradients: forward and backward regenerated the same noise.
        eager_leaves = [t.detach().clone().requires_grad_() for t in leaves]
        eager_loss = _noisy_loss(*eager_leaves, mix, target, states)
        eager_grads = torch.autograd.grad(eager_loss, eager_leaves)
        torch.testing.assert_close(loss, eager_loss.detach(), rtol=1e-5, atol=1e-6)
        for got, want in zip(grads, eager_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    # Replays move the generator on: every call's counters are new, the key stays.
    for (before, *_), (after, *_) in itertools.pairwise(replays):
        assert [s for s, _ in before] == [s for s, _ in after]
        shifts = {a[1] - b[1] for a, b in zip(after, before, strict=True)}
        assert len(shifts) == 1, shifts  # the whole graph's increment, the same for each call
        (shift,) = shifts
        assert shift >= sum(counters)  # so no replay's ranges overlap another's
    assert not torch.equal(replays[0][2][3], replays[1][2][3])  # fresh noise: new grad_theta


@pytest.mark.parametrize("sigma_kind", ["tensor", "float"])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_host_seeded_backends_refuse_seed_none_inside_capture(backend, sigma_kind):
    """Triton and the reference take their seed from the host: captured, it would replay
    one seed forever (seen on an H100: the same noise on every replay). They refuse."""
    from fastnoise import backends

    if not {b.name: b.available for b in backends()}[backend]:
        pytest.skip(f"the {backend} backend is not available here")
    x = torch.rand(2, 8, device="cuda")
    # A float sigma is filled on the device: no host copy, which capture would refuse first.
    sigma = 0.5 if sigma_kind == "float" else torch.full((8,), 0.5, device="cuda")
    with use_backend(backend):
        _warm_up(lambda: F.inject_noise(x, sigma, seed=1))
        graph = torch.cuda.CUDAGraph()
        with pytest.raises(RuntimeError, match="seed=None inside CUDA graph capture"):
            with torch.no_grad(), torch.cuda.graph(graph):
                F.inject_noise(x, sigma)


def test_a_negative_offset_is_refused_inside_capture():
    x = torch.rand(2, 8, device="cuda")
    _warm_up(lambda: F.inject_noise(x, 0.5))
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match="offset must be in"):
        with torch.no_grad(), torch.cuda.graph(graph):
            F.inject_noise(x, 0.5, offset=-1)


def test_outside_capture_seed_none_still_draws_on_the_host():
    x = torch.rand(4, 9, device="cuda")
    w, b = torch.zeros(9, device="cuda"), torch.full((9,), -1.0, device="cuda")
    for call in (
        lambda seed: F.inject_noise(x, 0.5, seed=seed),
        lambda seed: F.pnil(x, w, b, seed=seed),
        lambda seed: F.random_start(x, 0.1, seed=seed),
    ):
        torch.manual_seed(11)
        drawn = call(None)
        torch.manual_seed(11)
        assert torch.equal(drawn, call(rng.draw_seed()))
