"""Batched EOT: equal to the loop of single draws, copies independent, chunking exact."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from test_attacks_support import NoisyMLP, ReplayNoise, SharedDrawMLP, SmoothMLP

from fastnoise.attacks import (
    PGD,
    eot_evaluate,
    eot_gradient,
    eot_per_copy,
    rows_share_noise,
    sequential_eot_gradient,
)
from fastnoise.attacks._losses import cross_entropy

BATCH, FEATURES, COPIES = 5, 16, 7


def _per_copy_draws(copies: int) -> torch.Tensor:
    """(copies, BATCH, FEATURES) noise, copy l drawn after torch.manual_seed(100 + l)."""
    draws = []
    for copy in range(copies):
        torch.manual_seed(100 + copy)
        draws.append(torch.randn(BATCH, FEATURES))
    return torch.stack(draws)


@pytest.mark.parametrize("chunk", [None, 1, 3, 8, BATCH * COPIES])
def test_batched_eot_equals_mean_of_single_draw_gradients(chunk):
    torch.manual_seed(0)
    inner = SmoothMLP(FEATURES)
    x, y = torch.rand(BATCH, FEATURES), torch.randint(0, 5, (BATCH,))
    draws = _per_copy_draws(COPIES)
    # The loop sees copy l for the whole batch; the batched pass sees row b*L + l.
    looped = ReplayNoise(inner, draws.reshape(-1, FEATURES))
    batched = ReplayNoise(inner, draws.transpose(0, 1).reshape(-1, FEATURES))

    expected = sequential_eot_gradient(looped, cross_entropy, x, y, COPIES)
    # separate_passes=False: no probe forward, which would consume replayed rows.
    result = eot_gradient(batched, cross_entropy, x, y, COPIES, chunk=chunk, separate_passes=False)

    assert looped.cursor == batched.cursor == BATCH * COPIES  # every draw used once
    torch.testing.assert_close(result.grad, expected.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.loss, expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.logits, expected.logits, rtol=1e-5, atol=1e-6)
    # The noise matters: one draw alone gives a different gradient (the test can fail).
    single = sequential_eot_gradient(ReplayNoise(inner, draws[0]), cross_entropy, x, y, 1)
    assert (single.grad - expected.grad).abs().max() > 1e-3


def test_eot_gradient_matches_autograd_of_mean_loss():
    """With a deterministic model every copy is identical: EOT = the plain gradient."""
    torch.manual_seed(1)
    model = SmoothMLP(FEATURES)
    x, y = torch.rand(BATCH, FEATURES), torch.randint(0, 5, (BATCH,))
    x_req = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(model(x_req), y, reduction="sum"), x_req)
    result = eot_gradient(model, cross_entropy, x, y, eot=4, chunk=6)
    torch.testing.assert_close(result.grad, expected, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # input gradients only


def test_eot_copies_get_independent_noise():
    torch.manual_seed(2)
    model = NoisyMLP(FEATURES)
    x, y = torch.rand(3, FEATURES), torch.randint(0, 5, (3,))
    copies = eot_per_copy(model, cross_entropy, x, y, eot=6)
    assert copies.grad.shape == (3, 6, FEATURES) and copies.logits.shape == (3, 6, 5)
    for b in range(3):
        grads = copies.grad[b]
        distance = torch.cdist(grads, grads) + torch.eye(6) * 1e9
        assert distance.min() > 1e-4, "two EOT copies of one sample got the same noise"
    # Averaging many independent draws shrinks the spread of the per-copy gradients.
    many = eot_per_copy(model, cross_entropy, x, y, eot=64).grad
    spread = many.std(dim=1).mean()
    assert (many.mean(1) - many[:, 0]).abs().mean() > 0.1 * spread


def _assert_independent(grads: torch.Tensor) -> None:
    """(B, L, ...) per-copy gradients: no two copies of a sample alike."""
    for per_sample in grads:
        flat = per_sample.flatten(1)
        distance = torch.cdist(flat, flat) + torch.eye(len(flat)) * 1e9
        assert distance.min() > 1e-6 * flat.norm(dim=1).max(), "two EOT copies share a draw"


def test_shared_draw_model_makes_identical_copies_in_one_batched_pass():
    """Negative control: the released-L2P style model (one draw broadcast over the
    batch) gives every copy of a forced batched pass the same gradient."""
    torch.manual_seed(3)
    model = SharedDrawMLP(FEATURES)
    x, y = torch.rand(2, FEATURES), torch.randint(0, 5, (2,))
    copies = eot_per_copy(model, cross_entropy, x, y, eot=4, chunk=8, separate_passes=False)
    torch.testing.assert_close(copies.grad[:, 1:], copies.grad[:, :1].expand_as(copies.grad[:, 1:]))


def test_a_per_forward_draw_is_detected_and_gets_separate_passes():
    """A third-party module that draws once per forward: the probe finds it, warns, and
    the copies run as separate passes with independent gradients."""
    torch.manual_seed(3)
    model = SharedDrawMLP(FEATURES)
    x, y = torch.rand(2, FEATURES), torch.randint(0, 5, (2,))
    assert rows_share_noise(model, x)
    assert not rows_share_noise(NoisyMLP(FEATURES), x)  # per-row draws
    assert not rows_share_noise(SmoothMLP(FEATURES), x)  # deterministic
    with pytest.warns(UserWarning, match="separate passes"):
        copies = eot_per_copy(model, cross_entropy, x, y, eot=4, chunk=8)
    _assert_independent(copies.grad)
    # The mean over copies is the EOT gradient of the same separate passes.
    torch.manual_seed(9)
    mean = eot_gradient(model, cross_entropy, x, y, eot=4, separate_passes=True)
    torch.manual_seed(9)
    looped = sequential_eot_gradient(model, cross_entropy, x, y, eot=4)
    torch.testing.assert_close(mean.grad, looped.grad, rtol=1e-5, atol=1e-6)


def _pni_w_mlp() -> torch.nn.Module:
    from fastnoise.nn import pni_weight

    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5)
    )
    pni_weight(model[0], init=0.5)
    pni_weight(model[2], init=0.5)
    return model.eval()


def test_pni_w_models_get_independent_eot_copies():
    """PNI-W draws its weight noise once per forward: the attack sees it (the layer says
    draws_per_row = False), runs separate passes and its copies differ."""
    torch.manual_seed(10)
    model = _pni_w_mlp()
    x, y = torch.rand(3, FEATURES), torch.randint(0, 5, (3,))
    _assert_independent(eot_per_copy(model, cross_entropy, x, y, eot=4, chunk=64).grad)
    with pytest.warns(UserWarning, match="PNI-W"):
        assert PGD(model, eps=0.1, steps=1, eot=4).separate_passes(x)


def test_mixed_per_row_and_per_forward_noise_is_detected():
    """Per-row activation noise makes the rows of a pass differ, which alone would hide
    the shared weight draw: the structural check and the probe with fastnoise's per-row
    layers switched off both catch it."""
    from fastnoise.nn import PerturbationInjection

    torch.manual_seed(11)
    pni_w = _pni_w_mlp()
    model = torch.nn.Sequential(PerturbationInjection((FEATURES,), init=0.2), pni_w).eval()
    x = torch.rand(2, FEATURES)
    assert not rows_share_noise(model, x)  # the bare probe is fooled by per-row noise
    with pytest.warns(UserWarning):
        assert PGD(model, eps=0.1, steps=1, eot=4).separate_passes(x)
    shared = torch.nn.Sequential(PerturbationInjection((FEATURES,), init=0.2), SharedDrawMLP())
    with pytest.warns(UserWarning):
        assert PGD(shared.eval(), eps=0.1, steps=1, eot=4).separate_passes(x)
    assert all(m.enabled for m in shared.modules() if hasattr(m, "enabled"))  # restored


def test_per_row_models_keep_the_batched_pass_without_a_warning():
    torch.manual_seed(12)
    x = torch.rand(2, FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not PGD(NoisyMLP(FEATURES), eps=0.1, steps=1, eot=4).separate_passes(x)
        models = pytest.importorskip("fastnoise.models")
        cnn = models.small_cnn(noise="l2p").eval()
        assert not PGD(cnn, eps=0.1, steps=1, eot=4).separate_passes(torch.rand(2, 1, 28, 28))


def test_batched_and_looped_eot_estimate_the_same_expectation():
    torch.manual_seed(4)
    model = NoisyMLP(FEATURES, sigma=0.5)
    x, y = torch.rand(4, FEATURES), torch.randint(0, 5, (4,))
    batched = eot_gradient(model, cross_entropy, x, y, eot=200).grad
    looped = sequential_eot_gradient(model, cross_entropy, x, y, eot=200).grad
    single = eot_gradient(model, cross_entropy, x, y, eot=1).grad
    cosine = lambda a, b: F.cosine_similarity(a.flatten(1), b.flatten(1)).min().item()
    assert cosine(batched, looped) > 0.95
    assert cosine(single, looped) < cosine(batched, looped)


def test_eot_evaluate_has_no_gradient_and_averages_logits():
    torch.manual_seed(5)
    model = SmoothMLP(FEATURES)
    x, y = torch.rand(3, FEATURES), torch.randint(0, 5, (3,))
    result = eot_evaluate(model, cross_entropy, x, y, eot=3, chunk=4)
    assert result.grad is None
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model(x))
        torch.testing.assert_close(result.loss, F.cross_entropy(model(x), y, reduction="none"))


def test_attack_with_eot_runs_the_batched_pass_once_per_step():
    calls = []

    class Counting(SmoothMLP):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    torch.manual_seed(6)
    x, y = torch.rand(4, FEATURES), torch.randint(0, 5, (4,))
    PGD(Counting(FEATURES), eps=0.1, steps=3, eot=16)(x, y)
    # Once per attack, the probe's two forwards of two rows (do rows share a draw?); then
    # one forward of B * L rows per step, not L loops.
    assert calls == [2, 2] + [4 * 16] * 3
    calls.clear()
    PGD(Counting(FEATURES), eps=0.1, steps=2, eot=16, eot_chunk=24)(x, y)
    assert calls == [2, 2] + [24, 24, 16] * 2


def test_compile_flag_gives_the_same_attack():
    torch.manual_seed(7)
    model = SmoothMLP(FEATURES)
    x, y = torch.rand(4, FEATURES), torch.randint(0, 5, (4,))
    plain = PGD(model, eps=0.1, steps=3, random_start=False)(x, y)
    compiled = PGD(model, eps=0.1, steps=3, random_start=False, compile="eager")(x, y)
    torch.testing.assert_close(compiled, plain)


def test_fastnoise_noise_layers_give_independent_copies():
    models = pytest.importorskip("fastnoise.models")
    torch.manual_seed(8)
    model = models.small_cnn(noise="l2p").eval()
    x, y = torch.rand(2, 1, 28, 28), torch.randint(0, 10, (2,))
    copies = eot_per_copy(model, cross_entropy, x, y, eot=4)
    for b in range(2):
        flat = copies.grad[b].flatten(1)
        distance = torch.cdist(flat, flat) + torch.eye(4) * 1e9
        assert distance.min() > 1e-6 * flat.norm(dim=1).max()


def test_probing_for_shared_draws_leaves_the_random_stream_alone():
    """The probe's forwards run on a forked generator: an attack called twice after the
    same torch.manual_seed gives the same result, and the stream after it is untouched."""
    model = NoisyMLP(FEATURES)
    x, y = torch.rand(3, FEATURES), torch.randint(0, 5, (3,))
    attack = PGD(model, eps=0.1, steps=2, eot=4)
    torch.manual_seed(13)
    first = attack(x, y)  # probes here
    torch.manual_seed(13)
    second = attack(x, y)  # cached: no probe
    torch.testing.assert_close(first, second)
    torch.manual_seed(14)
    before = torch.rand(3)
    torch.manual_seed(14)
    rows_share_noise(model, x)
    torch.testing.assert_close(torch.rand(3), before)


def test_the_free_functions_probe_a_module_once_while_it_is_unchanged():
    calls = []

    class Counting(NoisyMLP):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    model = Counting(FEATURES)
    x, y = torch.rand(3, FEATURES), torch.randint(0, 5, (3,))
    eot_gradient(model, cross_entropy, x, y, eot=4)
    assert calls == [2, 3 * 4]  # the probe's one forward (rows differ), then the pass
    calls.clear()
    eot_gradient(model, cross_entropy, x, y, eot=4)
    assert calls == [3 * 4]  # cached
    calls.clear()
    model.eval()  # a changed model (it was in training mode) is probed again
    eot_gradient(model, cross_entropy, x, y, eot=4)
    assert calls == [2, 3 * 4]
