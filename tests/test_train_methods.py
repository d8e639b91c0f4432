"""Training methods: Learn2Perturb's alternating step, the regularizer, tau, schedules,
presets against the papers' numbers, and one short run per method."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from fastnoise import models
from fastnoise.models import small_cnn
from fastnoise.train import (
    PRESETS,
    TrainConfig,
    build_method,
    fit,
    harmonic_tau,
    learning_rate,
    model_config_for,
)
from fastnoise.train.noise_params import perturbation_modules, theta_parameters


def tiny_data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def l2p_setup(method: str = "learn2perturb", **kw):
    torch.manual_seed(0)
    kw = {"noise_off_epochs": 0, "attack_steps": 1, "lr": 0.05, **kw}
    config = TrainConfig(method=method, dataset="embedded", **kw)
    model = small_cnn(noise="l2p", noise_init=config.theta_init, theta_min=config.theta_min)
    return config, model, build_method(config, model)


def snapshot(params):
    return [p.detach().clone() for p in params]


def changed(before, params) -> list[bool]:
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)]


def test_alternating_step_updates_w_then_theta_only():
    config, model, method = l2p_setup()
    x, y = tiny_data(8)
    method.begin_epoch(0)
    thetas = theta_parameters(model)
    weights = [p for p in model.parameters() if all(p is not t for t in thetas)]
    w0, t0 = snapshot(weights), snapshot(thetas)
    method.weights_half(x, y)  # Algorithm 1, first half
    assert all(changed(w0, weights)), "every W tensor should move in the first half"
    assert not any(changed(t0, thetas)), "theta must stay fixed in the first half"
    w1, t1 = snapshot(weights), snapshot(thetas)
    method.noise_half()  # second half
    assert not any(changed(w1, weights)), "W must stay fixed in the second half"
    assert all(changed(t1, thetas)), "every theta should move in the second half"


def test_regularizer_only_grows_theta_and_respects_theta_min():
    config, model, method = l2p_setup("learn2perturb-r", theta_init=0.02, theta_min=0.01)
    x, y = tiny_data(8)
    method.begin_epoch(0)
    thetas = theta_parameters(model)
    start = snapshot(thetas)
    for _ in range(2):
        method.train_step(x, y, 0)
    for before, t in zip(start, thetas, strict=True):
        assert (t.detach() > before).all(), "g(theta) = -sqrt(theta)/tau must push theta up"
    # Eq. (8): d(gamma*g)/dtheta = -gamma / (2 tau sqrt(theta)); Algorithm 1 steps by gamma
    # times it, the joint rule by lr * gamma times it (first SGD step, no momentum: exact)
    for rule, scale in (("algorithm1", 1.0), ("joint", 0.05)):
        config, model, method = l2p_setup(
            "learn2perturb-r", theta_init=0.04, momentum=0.0, theta_update=rule
        )
        method.begin_epoch(0)
        method.train_step(x, y, 0)
        expected = 0.04 + scale * config.gamma / (2 * 1.0 * math.sqrt(0.04))
        for t in theta_parameters(model):
            torch.testing.assert_close(t.detach(), torch.full_like(t, expected), rtol=0, atol=1e-7)


def test_theta_is_projected_onto_theta_min():
    # a huge lr drives some theta far below theta_min without the projection
    config, model, method = l2p_setup(theta_init=0.01, theta_min=0.01, gamma=0.0)
    config.lr = 1e4
    for opt in method.optimizers.values():
        for g in opt.param_groups:
            g["lr"] = 1e4
    x, y = tiny_data(16)
    method.begin_epoch(0)
    for _ in range(2):
        method.train_step(x, y, 0)
    values = torch.cat([t.detach().flatten() for t in theta_parameters(model)])
    assert values.min() == pytest.approx(0.01)
    assert (values >= 0.01).all()
    assert (values > 0.01).any()  # and some went up: the step really ran


def test_noise_off_epochs_freeze_theta_and_disable_modules():
    config, model, method = l2p_setup(noise_off_epochs=2)
    logged = method.begin_epoch(1)
    assert logged == {"tau": None, "noise_on": False}
    assert all(not m.enabled for _, m in perturbation_modules(model))
    t0 = snapshot(theta_parameters(model))
    x, y = tiny_data(8)
    method.train_step(x, y, 1)
    assert not any(changed(t0, theta_parameters(model)))
    logged = method.begin_epoch(2)
    assert logged == {"tau": 1.0, "noise_on": True}
    assert all(m.enabled for _, m in perturbation_modules(model))


def test_harmonic_tau():
    assert harmonic_tau(20, 20) == 1.0  # first noise epoch: H(1) = 1 (Eq. 9 divides by 0)
    assert harmonic_tau(21, 20) == 1.5
    assert harmonic_tau(22, 20) == pytest.approx(1 + 1 / 2 + 1 / 3)
    assert harmonic_tau(349, 20) == pytest.approx(sum(1 / k for k in range(1, 331)))
    with pytest.raises(ValueError, match="noise_start"):
        harmonic_tau(5, 20)


def test_learning_rate_schedules():
    l2p = TrainConfig.from_preset("l2p-cifar10-resnet20")
    lr = lambda e: learning_rate(l2p, l2p.lr, e, 0, 391)
    assert [lr(0), lr(149), lr(150), lr(249), lr(250), lr(349)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    cyc = TrainConfig(method="nfgsm", lr_schedule="cyclic", lr=1e-3, lr_min=1e-4, cycle_epochs=2)
    at = lambda t: learning_rate(cyc, cyc.lr, int(t), round((t % 1) * 100), 100)
    assert [at(0), at(1), at(2), at(3), at(4)] == pytest.approx([1e-4, 5.5e-4, 1e-3, 5.5e-4, 1e-4])
    tri = TrainConfig(method="rfgsm", lr_schedule="triangle", lr=0.2, epochs=10)
    at = lambda t: learning_rate(tri, tri.lr, int(t), round((t % 1) * 100), 100)
    assert [at(0), at(2), at(4), at(7), at(10)] == pytest.approx([0, 0.1, 0.2, 0.1, 0])


def test_presets_match_the_papers():
    l2p = TrainConfig.from_preset("l2p-cifar10-resnet20")  # Learn2Perturb A.4 / Sec. 4
    assert (l2p.method, l2p.model, l2p.dataset) == ("learn2perturb", "resnet20", "cifar10")
    assert (l2p.epochs, l2p.batch_size, l2p.lr, l2p.milestones) == (350, 128, 0.1, (150, 250))
    assert (l2p.lr_gamma, l2p.momentum, l2p.nesterov) == (0.1, 0.9, True)
    assert (l2p.weight_decay, l2p.noise_weight_decay, l2p.gamma) == (1e-4, 0.0, 1e-4)
    assert (l2p.eps, l2p.attack_steps, l2p.attack_step_size) == (8 / 255, 7, 0.01)
    assert (l2p.clean_weight, l2p.noise_off_epochs, l2p.theta_min) == (0.5, 20, 0.01)
    assert TrainConfig.from_preset("l2p-cifar10-resnet56").model == "resnet56"
    pni = TrainConfig.from_preset("pni-cifar10-resnet20")
    assert (pni.method, pni.epochs, pni.milestones) == ("pni", 160, (80, 120))
    assert (pni.weight_decay, pni.noise_weight_decay) == (3e-4, 0.0)  # released PNI script
    for name, eps in (("mnist", 8 / 255), ("fashion-mnist", 4 / 255)):  # PNIL Sec. 4.3
        for prefix, pnil in (("pnil", True), ("nfgsm", False)):
            c = TrainConfig.from_preset(f"{prefix}-{name}")
            assert (c.method, c.dataset, c.eps, c.pnil) == ("nfgsm", name, eps, pnil)
            assert (c.optimizer, c.lr_schedule, c.batch_size) == ("adam", "cyclic", 100)
            assert c.adam_betas == (0.9, 0.999)
    r11 = TrainConfig.from_preset("pnil-cifar10-resnet11")
    assert (r11.model, r11.eps, r11.pnil) == ("resnet11", 0.03, True)
    assert TrainConfig.from_preset("pnil-mnist", epochs=3).epochs == 3  # overridable
    for name in PRESETS:
        TrainConfig.from_preset(name)  # every preset validates


def test_presets_for_every_row_the_papers_train():
    # PNIL Table 1, RFGSM columns: step 1.2 eps (Sec. 4.3), otherwise as the NFGSM presets
    for name, eps, pnil in (("mnist", 8 / 255, False), ("pnil-mnist", 8 / 255, True),
                            ("fashion-mnist", 4 / 255, False),
                            ("pnil-fashion-mnist", 4 / 255, True),
                            ("cifar10-resnet11", 0.03, False),
                            ("pnil-cifar10-resnet11", 0.03, True)):  # fmt: skip
        c = TrainConfig.from_preset(f"rfgsm-{name}")
        assert (c.method, c.fgsm_step_ratio, c.eps, c.pnil) == ("rfgsm", 1.2, eps, pnil)
        assert (c.optimizer, c.batch_size, c.holdout > 0) == ("adam", 100, True)
    # Learn2Perturb Table 1 (Vanilla, Learn2Perturb-R) and Table 2 (depths, widths)
    l2p = TrainConfig.from_preset("l2p-cifar10-resnet20")
    same_training = ("epochs", "batch_size", "lr", "milestones", "momentum", "weight_decay",
                     "eps", "attack_steps", "attack_step_size")  # fmt: skip
    for model in ("resnet20", "resnet56", "resnet_v2_18"):
        for prefix, method in (("pgd-at", "pgd-at"), ("l2p-r", "learn2perturb-r")):
            c = TrainConfig.from_preset(f"{prefix}-cifar10-{model}")
            assert (c.method, c.model) == (method, model)
            assert all(getattr(c, f) == getattr(l2p, f) for f in same_training)
    table2 = {"resnet32": 464_154, "resnet44": 658_586, "resnet20-x1.5": 605_026,
              "resnet20-x2": 1_073_962, "resnet20-x4": 4_286_026}  # fmt: skip
    for row, parameters in table2.items():
        c = TrainConfig.from_preset(f"l2p-cifar10-{row}")
        spec = {**model_config_for(c), "noise": None}  # the table counts the network alone
        model = models.build(spec.pop("name"), **spec)
        assert sum(p.numel() for p in model.parameters()) == parameters, row
    # Algorithm 1's step, two forwards and the released code's BatchNorm by default
    assert (l2p.theta_update, l2p.mixed_bn, l2p.attack_bn_mode) == ("algorithm1", False, "frozen")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="sgd-magic")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="theta_init"):
        TrainConfig(theta_init=0.001, theta_min=0.01)
    with pytest.raises(ValueError, match="preset"):
        TrainConfig.from_preset("nope")
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match="noise='l2p'"):
        build_method(TrainConfig(method="learn2perturb"), small_cnn())


@pytest.mark.parametrize(
    "method, extra",
    [
        ("standard", {}),
        ("pgd-at", {}),
        ("rfgsm", {"holdout": 16, "lr_schedule": "triangle"}),
        ("nfgsm", {"pnil": True, "optimizer": "adam", "lr": 1e-3, "lr_schedule": "cyclic"}),
        ("pni", {}),
        ("learn2perturb", {"noise_off_epochs": 1}),
        ("learn2perturb", {"noise_off_epochs": 1, "theta_update": "joint", "mixed_bn": True}),
        ("learn2perturb", {"noise_off_epochs": 1, "theta_update": "released-code"}),
    ],
)
def test_each_method_trains(tmp_path, method, extra):
    config = TrainConfig(
        method=method, dataset="embedded", epochs=2, batch_size=16, max_steps_per_epoch=2,
        attack_steps=2, val_pgd_steps=2, out=str(tmp_path), progress=False, plots=False,
        **{"lr": 0.02, **extra},
    )  # fmt: skip
    result = fit(config, data=tiny_data(48))
    assert [m["epoch"] for m in result.metrics] == [1, 2]
    row = result.metrics[-1]
    assert math.isfinite(row["adv_loss"] if method != "standard" else row["clean_loss"])
    assert 0.0 <= row["train_acc_clean"] <= 1.0
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
    if method in ("pni", "learn2perturb"):
        assert row["theta_mean"], "noise layers must be logged"
    if method == "learn2perturb":
        assert [m["noise_on"] for m in result.metrics] == [False, True]
    if "holdout" in extra:
        assert 0.0 <= row["val_acc_pgd"] <= 1.0


def test_config_roundtrip_through_plain_dict():
    c = TrainConfig.from_preset("pnil-mnist", model_kwargs={"pni_mode": "layer"})
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert dataclasses.replace(c, lr=0.5).lr == 0.5


def test_rfgsm_catastrophic_overfitting_stops_and_keeps_best(tmp_path):
    from fastnoise.train import Trainer
    from fastnoise.train.distributed import DistInfo

    config = TrainConfig(
        method="rfgsm", dataset="embedded", out=str(tmp_path), overfit_drop=0.2, holdout=16
    )
    trainer = Trainer(config)
    model = small_cnn()
    rows = [
        {"epoch": 1, "val_loss_pgd": 1.0, "val_acc_pgd": 0.50},
        {"epoch": 2, "val_loss_pgd": 0.8, "val_acc_pgd": 0.60},
        {"epoch": 3, "val_loss_pgd": 0.9, "val_acc_pgd": 0.45},  # a drop of 0.15: keep going
        {"epoch": 4, "val_loss_pgd": 2.5, "val_acc_pgd": 0.05},  # collapse: stop
    ]
    best, stops = None, []
    for row in rows:
        best, stopped = trainer._track_best(row, model, best, DistInfo())
        stops.append(stopped)
    assert stops == [False, False, False, True]
    assert best["epoch"] == 2 and rows[3]["catastrophic_overfitting"] is True
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 2


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path):
    config = TrainConfig(
        method="pni", dataset="embedded", epochs=1, batch_size=8, max_steps_per_epoch=2,
        attack_steps=1, amp="bf16", channels_last=True, out=str(tmp_path), progress=False,
        plots=False,
    )  # fmt: skip
    result = fit(config, data=tiny_data(16))
    assert math.isfinite(result.metrics[0]["adv_loss"])
    with pytest.raises(ValueError, match="fp16"):
        fit(dataclasses.replace(config, amp="fp16"), data=tiny_data(16))


def test_patience_stops_when_validation_loss_stops_improving(tmp_path):
    from fastnoise.train import Trainer
    from fastnoise.train.distributed import DistInfo

    config = TrainConfig(method="nfgsm", dataset="embedded", out=str(tmp_path), holdout=16,
                         patience=2)  # fmt: skip
    trainer = Trainer(config)
    losses = [1.0, 0.7, 0.75, 0.69, 0.8, 0.9]  # best at epoch 4, two worse epochs after
    best, stops = None, []
    for epoch, loss in enumerate(losses, 1):
        row = {"epoch": epoch, "val_loss_pgd": loss, "val_acc_pgd": 0.5}
        best, stopped = trainer._track_best(row, small_cnn(), best, DistInfo())
        stops.append(stopped)
    assert stops == [False, False, False, False, False, True]
    assert best["epoch"] == 4


def test_patience_ends_fit_and_returns_the_best_epochs_model(tmp_path):
    config = TrainConfig(
        method="standard", dataset="embedded", epochs=6, batch_size=16, max_steps_per_epoch=1,
        holdout=16, val_pgd_steps=1, lr=0.0, patience=1, out=str(tmp_path), progress=False,
        plots=False,
    )  # fmt: skip
    result = fit(config, data=tiny_data(48))  # lr 0: only PGD's random start moves the loss
    losses = [m["val_loss_pgd"] for m in result.metrics]
    assert len(losses) < 6 and result.stopped_early and result.metrics[-1]["converged"] is True
    assert losses[-1] >= min(losses[:-1])  # stopped at the first epoch that did not improve
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == 1 + losses.index(min(losses))
    for name, value in result.model.state_dict().items():  # fit returns the best epoch's
        assert torch.equal(value, best["model"][name])
    with pytest.raises(ValueError, match="patience needs holdout"):
        TrainConfig(patience=3)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        TrainConfig(patience=0, holdout=8)


def test_patience_shorter_than_the_cyclic_lr_period_warns():
    # The PNIL presets' cyclic lr (period 4 epochs) puts the validation-loss dips at every
    # 4th epoch; patience 3 stopped every run of the issue 10 rerun at 4k + 3.
    with pytest.warns(UserWarning, match="shorter than the cyclic lr's period"):
        TrainConfig.from_preset("nfgsm-fashion-mnist", patience=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainConfig.from_preset("nfgsm-fashion-mnist", patience=5)
