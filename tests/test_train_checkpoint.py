"""Checkpoints: atomic writes, exact resume, the NaN stop, load_model, the CLI."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from fastnoise.cli import main as cli_main
from fastnoise.train import NonFiniteLossError, TrainConfig, atomic_save, fit, load_model
from fastnoise.train import methods as methods_module
from fastnoise.train.checkpoint import (
    capture_rng_state,
    interrupts_deferred,
    load_checkpoint,
    restore_rng_state,
)


def tiny_data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def l2p_config(out, **kw) -> TrainConfig:
    base = dict(
        method="learn2perturb", dataset="embedded", epochs=3, batch_size=8,
        max_steps_per_epoch=3, attack_steps=1, val_pgd_steps=1, holdout=8,
        noise_off_epochs=1, lr=0.05, out=str(out), progress=False, plots=False,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": torch.zeros(3)}, path)
    assert path.read_bytes() == before, "the old checkpoint must survive a failed write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"], "temp file left behind"


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, also where the shell started us ignoring SIGINT."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_write(tmp_path, monkeypatch, python_sigint):
    """SIGINT inside torch.save's zip writer used to surface as RuntimeError('unexpected
    pos'), a traceback instead of the resume line. It must wait, then be KeyboardInterrupt."""
    real_save = torch.save
    path = tmp_path / "ckpt.pt"

    def save_hit_by_ctrl_c(obj, f):
        f.write(b"")  # the write has begun
        signal.raise_signal(signal.SIGINT)
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", save_hit_by_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"model": torch.arange(5.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["model"], torch.arange(5.0))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler not restored"


def test_interrupts_deferred_lets_a_quiet_block_through(python_sigint):
    with interrupts_deferred():
        value = 1
    assert value == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_rng_state_roundtrip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    atomic_save({"rng": state}, tmp_path / "r.pt")
    restore_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    data = tiny_data()
    straight = fit(l2p_config(tmp_path / "straight"), data=data)

    # the same run, killed in the middle of epoch 3 ...
    calls = {"n": 0}
    original = methods_module.Learn2Perturb.train_step

    def dying_step(self, x, y, epoch):
        calls["n"] += 1
        if epoch == 2 and calls["n"] > 7:
            raise KeyboardInterrupt("simulated kill")
        return original(self, x, y, epoch)

    monkeypatch.setattr(methods_module.Learn2Perturb, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(l2p_config(tmp_path / "resumed"), data=data)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(methods_module.Learn2Perturb, "train_step", original)
    # ... and resumed from its last checkpoint
    resumed = fit(l2p_config(tmp_path / "resumed", resume=True), data=data)

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    drop_time = lambda rows: [
        {k: v for k, v in r.items() if "time" not in k and k != "images_per_s"} for r in rows
    ]  # noqa: E731,E501
    assert drop_time(straight.metrics) == drop_time(resumed.metrics)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    ck_a = load_checkpoint(tmp_path / "straight" / "last.pt")
    ck_b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for k in ("weights", "theta"):
        sa, sb = ck_a["optimizers"][k]["state"], ck_b["optimizers"][k]["state"]
        for i in sa:
            assert torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"])


# pni: a NaN image makes PNI's noise std NaN, which its sigma check met before the loss
# check did, so the run ended with "sigma must be non-negative" instead of this error
@pytest.mark.parametrize("method", ["standard", "pni"])
def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path, method):
    X, Y = tiny_data()
    config = TrainConfig(
        method=method, dataset="embedded", epochs=1, batch_size=8, lr=0.05, attack_steps=1,
        out=str(tmp_path), progress=False, plots=False,
    )  # fmt: skip
    fit(config, data=(X, Y))
    good = (tmp_path / "last.pt").read_bytes()
    bad_X = X.clone()
    bad_X[20] = float("nan")  # lands in some batch of epoch 2
    config.epochs, config.resume = 2, True
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step \d+.*last good checkpoint"):
        fit(config, data=(bad_X, Y))
    assert (tmp_path / "last.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_checkpoint_rebuilds_model_for_eval(tmp_path):
    config = TrainConfig(
        method="nfgsm", pnil=True, dataset="embedded", epochs=1, batch_size=16,
        max_steps_per_epoch=2, holdout=8, val_pgd_steps=1, out=str(tmp_path),
        progress=False, plots=True,
    )  # fmt: skip
    result = fit(config, data=tiny_data())
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["model_config"]["name"] == "small_cnn" and ckpt["model_config"]["pnil"] is True
    assert (ckpt["dataset"], ckpt["method"]) == ("embedded", "nfgsm")  # fastnoise eval reads it
    for path in (tmp_path / "last.pt", tmp_path / "best.pt"):
        model = load_model(path, "cpu")
        assert not model.training
        for key, value in result.model.state_dict().items():
            if path.name == "last.pt":
                assert torch.equal(model.state_dict()[key], value)
    assert (tmp_path / "pnil_variance.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "missing.pt")


def test_cli_train_smoke(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(
        [
            "train", "--method", "learn2perturb", "--dataset", "embedded", "--train-limit", "64",
            "--epochs", "2", "--batch-size", "16", "--max-steps-per-epoch", "2",
            "--attack-steps", "1", "--noise-off-epochs", "1", "--out", str(out),
            "--no-progress", "--milestones", "1", "--model-kwargs", '{"pni_mode": "layer"}',
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "checkpoint:" in printed and str(out) in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"]["weights"] for r in rows] == pytest.approx([0.1, 0.01])
    assert rows[1]["tau"] == 1.0
    assert (out / "theta_evolution.png").is_file()
    assert cli_main(["train", "--list-presets"]) == 0
    assert "l2p-cifar10-resnet20" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["train", "--method", "magic"])


def test_fit_returns_the_best_epochs_model_and_says_so(tmp_path, monkeypatch):
    """PNIL Sec. 4.4 tests the checkpoint with the lowest adversarial validation loss: with
    a holdout, fit returns that epoch's weights (here epoch 2 of 3), not the last epoch's."""
    from fastnoise.train import Trainer

    losses = iter([0.9, 0.5, 0.7])

    def fake_validate(self, method, data, dist_info):
        return {"val_acc_clean": 0.5, "val_acc_pgd": 0.5, "val_loss_clean": 0.5,
                "val_loss_pgd": next(losses)}  # fmt: skip

    monkeypatch.setattr(Trainer, "_validate", fake_validate)
    config = TrainConfig(
        method="standard", dataset="embedded", epochs=3, batch_size=8, max_steps_per_epoch=2,
        holdout=8, lr=0.05, out=str(tmp_path), progress=False, plots=False,
    )  # fmt: skip
    result = fit(config, data=tiny_data())
    assert (result.model_source, result.model_epoch) == ("best", 2)
    best, last = load_checkpoint(result.best_checkpoint), load_checkpoint(result.checkpoint)
    assert best["epoch"] == 2 and last["epoch"] == 3
    state = result.model.state_dict()
    assert all(torch.equal(state[k], best["model"][k]) for k in state)
    assert not all(torch.equal(state[k], last["model"][k]) for k in state)


def test_fit_without_a_holdout_returns_the_last_epoch(tmp_path):
    config = TrainConfig(
        method="standard", dataset="embedded", epochs=2, batch_size=8, max_steps_per_epoch=1,
        out=str(tmp_path), progress=False, plots=False,
    )  # fmt: skip
    result = fit(config, data=tiny_data())
    assert (result.model_source, result.model_epoch, result.best_checkpoint) == ("last", 2, None)
    last = load_checkpoint(result.checkpoint)["model"]
    assert all(torch.equal(v, last[k]) for k, v in result.model.state_dict().items())


def test_resuming_a_run_from_before_theta_update_reports_the_new_rule(tmp_path):
    """Checkpoints written before theta_update / mixed_bn / attack_bn existed trained with
    the joint rule, one mixed forward and attacks in train mode: a resume says it switches."""
    from fastnoise.train.run_folder import config_changes

    saved = l2p_config(tmp_path).to_dict()
    for name in ("theta_update", "mixed_bn", "attack_bn"):
        del saved[name]
    changes = {c.field: (c.saved, c.requested) for c in
               config_changes(saved, l2p_config(tmp_path), tmp_path / "last.pt")}  # fmt: skip
    assert changes == {
        "theta_update": ("joint", "algorithm1"),
        "mixed_bn": (True, False),
        "attack_bn": ("train", "reference"),
    }
    nfgsm = TrainConfig(method="nfgsm", dataset="embedded")
    saved = {k: v for k, v in nfgsm.to_dict().items() if k not in ("theta_update", "attack_bn")}
    assert config_changes(saved, nfgsm, tmp_path / "last.pt") == []  # nothing changed for it
