"""The papers' evaluation protocols (issue 10 item 5): settings, eps by data set, and the
random-subset run of an attack (PNIL's SPSA on 1000 images), end to end in the CLI."""

from __future__ import annotations

import math

import pytest
import torch
from test_eval import tiny_checkpoint  # noqa: F401  (a module-scoped fixture)

from fastnoise.eval import RobustnessReport
from fastnoise.eval.protocols import PROTOCOLS, AttackSpec, Protocol, get_protocol


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_pnil_protocol_is_the_papers_settings():
    pnil = get_protocol("pnil")
    assert pnil.eps_for("fashion-mnist") == pytest.approx(4 / 255)
    assert pnil.eps_for("mnist") == pytest.approx(8 / 255)
    assert pnil.eps_for("cifar10") == pytest.approx(0.03)
    with pytest.raises(ValueError, match="pass --eps"):
        pnil.eps_for("embedded")
    built = dict((a.name, (a, limit)) for a, limit in pnil.build(_model(), 4 / 255))
    pgd, limit = built["eot-pgd"]  # PGD with eot > 1 names itself eot-pgd
    assert (pgd.steps, pgd.eot, limit) == (50, 100, None)
    assert pgd.alpha == pytest.approx(2 * (4 / 255) / 50)  # reaches every point of the ball
    spsa, limit = built["spsa"]
    assert (spsa.steps, spsa.samples, limit) == (100, 2048, 1000)
    assert built["fgsm"][0].eot == 100


def test_l2p_protocol_is_the_papers_settings():
    l2p = get_protocol("l2p")
    assert l2p.eps_for("anything") == pytest.approx(8 / 255)
    built = {a.name: a for a, _ in l2p.build(_model(), 8 / 255)}
    assert (built["pgd"].steps, built["pgd"].alpha, built["pgd"].eot) == (7, 0.01, 1)
    assert built["eot-pgd"].eot == 80
    cw = built["cw"]
    assert (cw.steps, cw.lr, cw.binary_steps, cw.kappa, cw.eps) == (1000, 5e-4, 9, 0.0, math.inf)
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("madry")


def test_cli_protocol_runs_a_limited_attack_on_a_random_subset(
    tiny_checkpoint,  # noqa: F811  (the fixture imported above)
    tmp_path,
    monkeypatch,
    capsys,
):
    """A small stand-in protocol (the real budgets take hours on a CPU): its limited
    attack runs on a seeded random subset and is reported with its own sample count."""
    from fastnoise.cli import main

    tiny = Protocol(
        name="pnil",
        source="test stand-in",
        eps={"*": 8 / 255},
        attacks=(
            AttackSpec("pgd", {"steps": 2}, pgd_steps_per_ball=True),
            AttackSpec("spsa", {"steps": 2, "samples": 8}, limit=3),
        ),
    )
    monkeypatch.setitem(PROTOCOLS, "pnil", tiny)
    out = tmp_path / "report"
    argv = [
        "eval", "--checkpoint", tiny_checkpoint["plain"], "--dataset", "embedded",
        "--protocol", "pnil", "--limit", "8", "--batch-size", "4", "--repeats", "1",
        "--no-checks", "--no-progress", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = RobustnessReport.from_json((out / "report.json").read_text())
    assert report.n_samples == 8
    assert [a.name for a in report.attacks] == ["pgd", "spsa"]
    assert report.attack("spsa").n_samples == 3 and report.attack("pgd").n_samples is None
    assert report.attack("pgd").settings["alpha"] == pytest.approx(2 * (8 / 255) / 2)
    assert report.meta["protocol"] == "pnil" and report.meta["subsets"]["spsa"]["samples"] == 3
    assert "on 3 images" in (out / "report.md").read_text()
    assert main([*argv[:7], "--attacks", "fgsm"]) == 2
    assert "--protocol sets the attacks" in capsys.readouterr().err
    assert main([*argv[:7], "--eps", "4/255,8/255"]) == 2
    assert "one budget" in capsys.readouterr().err


def test_evaluate_takes_a_protocol_and_checks_its_arguments(monkeypatch):
    from test_eval import Lookup, batches, lookup_data

    from fastnoise.eval import evaluate

    tiny = Protocol(
        name="l2p",
        source="test stand-in",
        eps={"*": 8 / 255},
        attacks=(AttackSpec("fgsm"), AttackSpec("pgd", {"steps": 2}, limit=4)),
    )
    monkeypatch.setitem(PROTOCOLS, "l2p", tiny)
    x, y = lookup_data(12, wrong=())
    report = evaluate(
        Lookup(), batches(x, y), protocol="l2p", eps=8 / 255, repeats=1, progress=False, seed=1
    )
    assert [a.name for a in report.attacks] == ["fgsm", "pgd"]
    assert report.attack("pgd").n_samples == 4 and report.n_samples == 12
    assert report.meta["protocol"] == "l2p"
    with pytest.raises(ValueError, match="needs eps="):
        evaluate(Lookup(), batches(x, y), protocol="l2p")
    with pytest.raises(ValueError, match="not both"):
        evaluate(Lookup(), batches(x, y), [object()], protocol="l2p", eps=0.1)
    with pytest.raises(TypeError, match="needs attacks"):
        evaluate(Lookup(), batches(x, y))
