"""fastnoise.eval.autoattack: the cascade, majority-vote successes, RobustBench output."""

from __future__ import annotations

import json

import pytest
import torch
from test_attacks_support import NoisyMLP

from fastnoise.eval.autoattack import autoattack

STEPS, QUERIES = 10, 60  # small budgets: the defaults (100, 5000) are AutoAttack's


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained to 100% on separable synthetic images, and its data."""
    torch.manual_seed(0)
    n, classes = 48, 4
    x = torch.rand(n, 1, 6, 6)
    y = (x.flatten(1) @ torch.randn(36, classes)).argmax(1)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(36, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).all()
    return model.eval(), x, y


def _run(model, x, y, **kw):
    kw = {"eps": 0.05, "steps": STEPS, "queries": QUERIES, "progress": False, **kw}
    return autoattack(model, (x, y), **kw)


def test_the_cascade_is_no_weaker_than_its_strongest_stage(trained):
    model, x, y = trained
    full = _run(model, x, y)
    assert [s.name for s in full.stages] == ["apgd-ce", "apgd-t", "mt-pgd", "square"]
    singles = {s.name: _run(model, x, y, stages=[s.name]).robust_accuracy for s in full.stages}
    assert full.robust_accuracy <= min(singles.values())
    assert full.clean_accuracy == 1.0 and full.robust_accuracy < 1.0  # it breaks something
    # Each stage only attacks what is left, and the counts add up.
    left = full.n_samples
    for stage in full.stages:
        assert stage.attacked == left
        left -= stage.broken
        assert stage.robust_accuracy == pytest.approx(left / full.n_samples)
    assert full.forward_passes == sum(s.forward_passes for s in full.stages) > 0


def test_large_eps_breaks_everything_and_the_json_has_robustbench_fields(trained, tmp_path):
    model, x, y = trained
    report = _run(model, x, y, eps=0.5, stages=["apgd-ce"])
    assert report.robust_accuracy == 0.0
    path = tmp_path / "rb.json"
    entry = report.to_robustbench_json(path, name="tiny", dataset="synthetic")
    assert json.loads(path.read_text()) == entry
    assert entry["clean_acc"] == "100.00" and entry["autoattack_acc"] == "0.00"
    assert entry["threat_model"] == entry["norm"] == "Linf"
    assert entry["number_forward_passes"] == 1
    assert entry["name"] == "tiny" and "eps" in entry
    assert "AutoAttack" in report.to_markdown()


def test_randomized_models_vote_over_draws_and_the_rand_version_uses_eot():
    torch.manual_seed(1)
    model = NoisyMLP(36, sigma=0.3).eval()
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 5, (8,))
    report = _run(model, x, y, version="rand")
    assert report.draws == 5  # a randomized model: majority over 5 draws
    assert [s.name for s in report.stages] == ["apgd-ce", "apgd-dlr"]
    assert all(s.unconfirmed >= 0 for s in report.stages)
    assert report.robust_accuracy <= report.clean_accuracy


def test_arguments_are_checked(trained):
    model, x, y = trained
    for kw, match in [
        (dict(norm="L1"), "norm"),
        (dict(version="fast"), "version"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=float("inf")), "eps"),
        (dict(draws=0), "draws"),
        (dict(stages=["fab-t"]), "stages"),
    ]:
        with pytest.raises(ValueError, match=match):
            _run(model, x, y, **{"eps": 0.05, **kw})


def test_cli_autoattack_writes_the_reports(tmp_path, capsys):
    from fastnoise.cli import main
    from fastnoise.models import build

    torch.manual_seed(0)
    config = {"name": "small_cnn", "noise": None}
    checkpoint = tmp_path / "plain.pt"
    torch.save({"model_config": config, "model": build(**config).state_dict()}, checkpoint)
    out = tmp_path / "aa"
    argv = [
        "eval", "--checkpoint", str(checkpoint), "--dataset", "embedded", "--autoattack",
        "standard", "--limit", "4", "--device", "cpu", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "AutoAttack (standard" in capsys.readouterr().out
    entry = json.loads((out / "robustbench.json").read_text())
    assert entry["dataset"] == "embedded" and float(entry["autoattack_acc"]) <= float(
        entry["clean_acc"]
    )
    assert json.loads((out / "autoattack.json").read_text())["n_samples"] == 4
    assert (out / "autoattack.md").stat().st_size > 0
