"""The attack contract: validation, mode restoration, projections, registry."""

from __future__ import annotations

import math

import pytest
import torch
from test_attacks_support import BrightPixelModel, NoisyMLP, SmallCNN, SmoothMLP

from fastnoise import attacks
from fastnoise.attacks import APGD, CW, FGSM, PGD, SPSA, Attack, FewPixel, Transfer, build

IMAGE = (1, 6, 6)
FEATURES = 36


class ImageMLP(SmoothMLP):
    def __init__(self):
        super().__init__(FEATURES, 16, 5)


def _batch(n=4, seed=0):
    torch.manual_seed(seed)
    return torch.rand(n, *IMAGE), torch.randint(0, 5, (n,))


# Small but complete configurations of every attack, keyed by registry name.
FAST = {
    "fgsm": dict(),
    "pgd": dict(steps=3, alpha=0.05),
    "eot-pgd": dict(steps=2, alpha=0.05, eot=3),
    "cw": dict(steps=10, binary_steps=2, lr=0.05),
    "spsa": dict(steps=2, samples=16),
    "square": dict(queries=10),
    "pixel": dict(population=8, iterations=2),
    "apgd": dict(steps=4, eot=2),
    "apgd-dlr": dict(steps=4, eot=2),
    "apgd-t": dict(steps=4, eot=2, n_target_classes=2),
    "transfer": dict(steps=2),
}


def _build(name, model, eps=0.1, **extra):
    kw = dict(FAST[name], **extra)
    if name == "transfer":
        kw["source_model"] = ImageMLP()
    if name in ("cw", "pixel"):
        eps = math.inf
    return build(name, model, eps, **kw)


def test_registry_names_and_kinds():
    assert set(attacks.ATTACK_NAMES) == set(FAST)
    kinds = {}
    for name in attacks.ATTACK_NAMES:
        attack = _build(name, ImageMLP())
        assert isinstance(attack, Attack)
        assert attack.name == name
        assert attack.kind in attacks.KINDS
        assert attack.norm in ("linf", "l2", "l0")
        assert isinstance(attack.eps, float)
        kinds[name] = attack.kind
    assert kinds["fgsm"] == "single-step"
    assert kinds["pgd"] == kinds["apgd"] == kinds["cw"] == "iterative"
    assert kinds["spsa"] == kinds["pixel"] == "gradient-free"
    assert kinds["transfer"] == "transfer"
    assert _build("eot-pgd", ImageMLP(), eot=5).eot == 5
    assert build("eot-pgd", ImageMLP(), 0.1).eot == 16
    assert build("apgd-dlr", ImageMLP(), 0.1).eot == 20
    assert build("cw", ImageMLP(), math.inf).norm == "l2"


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_attack_stays_in_ball_and_box_and_restores_state(name):
    model = NoisyMLP(FEATURES, 16, 5) if name != "pixel" else ImageMLP()
    model.train()
    list(model.children())[-1].eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    x, y = _batch()
    attack = _build(name, model)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    delta = (x_adv - x).flatten(1)
    if attack.norm == "linf":
        assert delta.abs().max() <= attack.eps + 1e-6
    elif attack.norm == "l2" and math.isfinite(attack.eps):
        assert delta.norm(dim=1).max() <= attack.eps + 1e-5
    elif attack.norm == "l0":
        assert (x_adv != x).flatten(2).any(1).sum(1).max() <= attack.pixels
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None


def test_l2_pgd_stays_in_l2_ball():
    x, y = _batch(6)
    x_adv = PGD(ImageMLP(), eps=0.5, alpha=0.3, steps=5, norm="l2", restarts=2)(x, y)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= 0.5 + 1e-5
    assert norms.min() > 0.1  # it moved
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_linf_ball_with_custom_clip_box():
    torch.manual_seed(0)
    x, y = torch.rand(4, *IMAGE) * 0.5, torch.randint(0, 5, (4,))
    x_adv = PGD(ImageMLP(), eps=0.3, alpha=0.2, steps=3, clip=(0.0, 0.5))(x, y)
    assert x_adv.max() <= 0.5 and (x_adv - x).abs().max() <= 0.3 + 1e-6


def test_eval_mode_during_attack_and_batchnorm_stats_untouched():
    model = SmallCNN(channels=2)
    model.train()
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    stats = model.features[1].running_mean.clone()
    x, y = torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,))
    PGD(model, eps=0.1, steps=2)(x, y)
    assert seen and not any(seen)  # ran in eval mode
    assert model.training and model.features[1].training  # restored
    torch.testing.assert_close(model.features[1].running_mean, stats)
    seen.clear()
    PGD(model, eps=0.1, steps=1, eval_mode=False)(x, y)
    assert all(seen)


def test_mode_restored_when_the_model_raises():
    class Broken(ImageMLP):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        PGD(model, eps=0.1, steps=1)(*_batch())
    assert model.training


def test_frozen_parameters_stay_frozen():
    model = ImageMLP()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = _batch()
    x_adv = FGSM(model, eps=0.1)(x, y)
    assert (x_adv - x).abs().max() > 0.05  # gradient still reached the input
    assert not any(p.requires_grad for p in model.parameters())


def test_empty_batch_returns_empty():
    x, y = torch.rand(0, *IMAGE), torch.zeros(0, dtype=torch.long)
    assert PGD(ImageMLP(), eps=0.1)(x, y).shape == (0, *IMAGE)


def test_fgsm_is_one_signed_step():
    torch.manual_seed(0)
    model = ImageMLP()
    x, y = torch.rand(4, *IMAGE) * 0.5 + 0.25, torch.randint(0, 5, (4,))
    x_req = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(x_req), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    expected = (x + 0.1 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(FGSM(model, 0.1)(x, y), expected)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda m: PGD(m, eps=-0.1), ValueError, "eps"),
        (lambda m: PGD(m, eps="big"), TypeError, "eps"),
        (lambda m: PGD(m, eps=0.1, steps=0), ValueError, "steps"),
        (lambda m: PGD(m, eps=0.1, steps=2.5), TypeError, "steps"),
        (lambda m: PGD(m, eps=0.1, norm="l1"), ValueError, "norm"),
        (lambda m: PGD(m, eps=0.1, eot=0), ValueError, "eot"),
        (lambda m: PGD(m, eps=0.1, eot_chunk=0), ValueError, "eot_chunk"),
        (lambda m: PGD(m, eps=0.1, restarts=0), ValueError, "restarts"),
        (lambda m: PGD(m, eps=0.1, clip=(1, 0)), ValueError, "clip"),
        (lambda m: PGD("not a model", eps=0.1), TypeError, "model"),
        (lambda m: PGD(m, eps=0.1, loss="hinge"), ValueError, "loss"),
        (lambda m: APGD(m, eps=0.1, steps=0), ValueError, "steps"),
        (lambda m: APGD(m, eps=0.1, loss="margin"), ValueError, "loss"),
        (lambda m: APGD(m, eps=0.1, rho=2.0), ValueError, "rho"),
        (lambda m: CW(m, c_range=(1.0, 0.1)), ValueError, "c_range"),
        (lambda m: CW(m, initial_c=1e20), ValueError, "initial_c"),
        (lambda m: CW(m, binary_steps=0), ValueError, "binary_steps"),
        (lambda m: SPSA(m, eps=0.1, samples=0), ValueError, "samples"),
        (lambda m: SPSA(m, eps=0.1, delta=0.0), ValueError, "delta"),
        (lambda m: FewPixel(m, pixels=0), ValueError, "pixels"),
        (lambda m: FewPixel(m, population=3), ValueError, "population"),
        (lambda m: FewPixel(m, crossover=1.5), ValueError, "crossover"),
        (lambda m: Transfer(m, m), ValueError, "same model"),
        (lambda m: Transfer(3, m), TypeError, "source"),
        (lambda m: build("deepfool", m, 0.1), ValueError, "unknown attack"),
        (lambda m: build("transfer", m, 0.1), ValueError, "source_model"),
        (lambda m: build("apgd", m, 0.1, loss="dlr"), TypeError, "loss"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(ImageMLP())


@pytest.mark.parametrize(
    "x, y, error, pattern",
    [
        ([[0.5]], torch.tensor([0]), TypeError, "x must be a torch.Tensor"),
        (torch.rand(4, *IMAGE), [0, 1, 2, 3], TypeError, "y must be a torch.Tensor"),
        (torch.rand(4, *IMAGE), torch.zeros(4), TypeError, "y must hold integer"),
        (torch.rand(4, *IMAGE), torch.zeros(4, 1, dtype=torch.long), ValueError, "y must be 1-D"),
        (torch.rand(4, *IMAGE), torch.zeros(3, dtype=torch.long), ValueError, "3 labels"),
        (torch.rand(4, *IMAGE) + 1.5, torch.zeros(4, dtype=torch.long), ValueError, "pixel range"),
        (torch.rand(4), torch.zeros(4, dtype=torch.long), ValueError, "batch"),
        (
            torch.zeros(4, *IMAGE, dtype=torch.long),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            "x",
        ),
        (
            torch.rand(4, *IMAGE),
            torch.zeros(4, dtype=torch.long, device="meta"),
            ValueError,
            "y is on meta",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(x, y, error, pattern):
    with pytest.raises(error, match=pattern):
        PGD(ImageMLP(), eps=0.1)(x, y)


def test_model_on_another_device_is_rejected():
    model = ImageMLP().to("meta")
    with pytest.raises(ValueError, match="model's parameters are on meta"):
        PGD(model, eps=0.1)(*_batch())


def test_pixel_attack_needs_images():
    model = BrightPixelModel(0, 0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        FewPixel(model)(torch.rand(2, 5), torch.zeros(2, dtype=torch.long))


def test_repr_names_the_attack():
    assert "eot=4" in repr(PGD(ImageMLP(), 0.1, eot=4)) and "eot-pgd" in repr(
        PGD(ImageMLP(), 0.1, eot=4)
    )
    assert "PGD" in repr(Transfer(ImageMLP(), ImageMLP(), 0.1))
