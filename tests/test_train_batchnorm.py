"""BatchNorm in training: clean and adversarial batches in separate passes (``mixed_bn``
off) or one; running statistics frozen or updated while training attacks run
(``attack_bn``); Learn2Perturb's second (theta) pass leaves them alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastnoise.nn import PerturbationInjection
from fastnoise.train import TrainConfig, build_method
from fastnoise.train.batchnorm import batchnorm_stats_kept, frozen_batchnorm
from fastnoise.train.forwards import TrainForward

ATTACK_STEPS = 3


def bn_model(noise: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)]
    if noise:
        layers.append(PerturbationInjection((2, 4, 4), 0.25, 0.01))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32, 3))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)


def bn_state(model):
    bn = model[1]
    return bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)


def test_separate_forwards_normalize_each_batch_by_its_own_statistics():
    model = bn_model(noise=False).train()
    x, _ = batch()
    x_other = x * 3 + 1  # another distribution: a mixed batch has other statistics
    alone = model(x)
    clean, other = TrainForward(model)(x, x_other)
    torch.testing.assert_close(clean, alone)
    torch.testing.assert_close(other, model(x_other))
    mixed_clean, _ = TrainForward(model, concatenate=True)(x, x_other)
    assert not torch.allclose(mixed_clean, alone, atol=1e-3)
    torch.testing.assert_close(TrainForward(model)(x), alone)  # one batch: the model itself


def test_separate_forwards_count_two_batches_in_the_running_statistics():
    for concatenate, counted in ((False, 2), (True, 1)):
        model = bn_model(noise=False).train()
        x, _ = batch()
        TrainForward(model, concatenate)(x, x + 0.5)
        assert bn_state(model)[2] == counted


def test_frozen_batchnorm_moves_nothing_and_restores_the_modes():
    model = bn_model().train()
    x, _ = batch()
    start = bn_state(model)
    with frozen_batchnorm(model):
        assert not model[1].training and model[2].training  # noise layers keep their mode
        model(x)
    assert model[1].training
    after = bn_state(model)
    assert torch.equal(after[0], start[0]) and torch.equal(after[1], start[1])
    assert after[2] == start[2]
    with batchnorm_stats_kept(model):
        model(x)  # batch statistics used, running statistics restored afterwards
    assert torch.equal(bn_state(model)[0], start[0]) and bn_state(model)[2] == start[2]


def method_for(**kw):
    model = bn_model()
    config = TrainConfig(
        dataset="embedded", noise_off_epochs=0, attack_steps=ATTACK_STEPS, lr=0.05,
        eps=0.1, attack_step_size=0.05, **kw,
    )  # fmt: skip
    method = build_method(config, model)
    method.begin_epoch(0)
    return model, method


@pytest.mark.parametrize(
    "kw, counted",
    [
        # learn2perturb's reference code freezes BatchNorm for PGD, two forwards
        (dict(method="learn2perturb"), 2),
        (dict(method="learn2perturb", theta_update="joint"), 2),
        (dict(method="learn2perturb", theta_update="released-code"), 2),
        (dict(method="learn2perturb", mixed_bn=True), 1),
        (dict(method="learn2perturb", attack_bn="train"), ATTACK_STEPS + 2),
        (dict(method="pni"), 2),
        (dict(method="pni", attack_bn="train", mixed_bn=True), ATTACK_STEPS + 1),
        # Wong et al.'s code attacks in train mode: each attack forward is counted
        (dict(method="pgd-at"), ATTACK_STEPS + 1),
        (dict(method="pgd-at", attack_bn="frozen"), 1),
        (dict(method="rfgsm"), 2),
        (dict(method="rfgsm", attack_bn="frozen"), 1),
    ],
)
def test_which_batchnorm_statistics_one_training_step_moves(kw, counted):
    model, method = method_for(**kw)
    x, y = batch()
    method.train_step(x, y, 0)
    assert bn_state(model)[2] == counted
    assert model[1].training, "BatchNorm back in train mode after the attack"


@pytest.mark.parametrize("attack_bn, moves", [("frozen", False), ("train", True)])
def test_the_training_attack_alone_moves_the_running_statistics_only_in_train_mode(
    attack_bn, moves
):
    model, method = method_for(method="learn2perturb", attack_bn=attack_bn)
    x, y = batch()
    start = bn_state(model)
    method._adversarial_examples(x, y)
    after = bn_state(model)
    assert (not torch.equal(after[0], start[0])) is moves
    assert after[2] - start[2] == (ATTACK_STEPS if moves else 0)


def test_attack_bn_reference_follows_each_methods_released_code():
    modes = {m: TrainConfig(method=m).attack_bn_mode for m in ("learn2perturb", "pni", "nfgsm")}
    assert modes == {"learn2perturb": "frozen", "pni": "frozen", "nfgsm": "train"}
    assert TrainConfig(method="pni", attack_bn="train").attack_bn_mode == "train"
    with pytest.raises(ValueError, match="attack_bn"):
        TrainConfig(attack_bn="eval")
    with pytest.raises(ValueError, match="theta_update"):
        TrainConfig(theta_update="adam")
