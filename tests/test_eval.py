"""Tests for fastnoise.eval: statistics, self-checks, report formats, plots and the CLI.

Most tests use hand-made attacks with known outcomes on a tiny "lookup" model, so every
expected number can be worked out by hand.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from fastnoise.eval import (
    AttackResult,
    RobustnessReport,
    SweepResult,
    check_eot_on_randomized,
    check_eps_sweeps,
    check_gradients,
    check_iterative_vs_single_step,
    check_randomized,
    check_unbounded_attack,
    check_white_box_vs_black_box,
    evaluate,
    format_eps,
    mean_std,
    sweep_eps,
)

K = 3  # classes


# -- a model and attacks whose outcomes are known ---------------------------------------------


class Lookup(nn.Module):
    """Logits = the first K features; feature K carries the sample id (ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(K + 1, K, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(K, K + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class Noisy(nn.Module):
    """A randomized model: Gaussian noise on the logits."""

    def __init__(self, sigma: float = 0.5) -> None:
        super().__init__()
        self.inner, self.sigma = Lookup(), sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return logits + self.sigma * torch.randn_like(logits)


def lookup_data(n: int = 10, wrong: tuple[int, ...] = (9,)) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot images (class i % K) plus an id feature; labels of ``wrong`` are off by one."""
    y = torch.arange(n) % K
    x = torch.zeros(n, 1, 1, K + 1)
    x[torch.arange(n), 0, 0, y] = 1.0
    x[:, 0, 0, K] = torch.arange(n) / 100
    labels = y.clone()
    for i in wrong:
        labels[i] = (labels[i] + 1) % K
    return x, labels


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 4) -> list:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


class Scripted:
    """Fools chosen sample ids, a different set per repeat (a repeat starts at id 0)."""

    def __init__(self, name, fooled_per_repeat, kind="iterative", eps=8 / 255, norm="linf", eot=1):
        self.name, self.kind, self.eps, self.norm, self.eot = name, kind, eps, norm, eot
        self.fooled_per_repeat = fooled_per_repeat
        self.repeat = -1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ids = (x[:, 0, 0, K] * 100).round().long()
        if int(ids[0]) == 0:
            self.repeat += 1
        fooled = self.fooled_per_repeat[self.repeat % len(self.fooled_per_repeat)]
        x_adv = x.clone()
        for row, i in enumerate(ids.tolist()):
            if i in fooled:  # move the one-hot to the previous class (never the label)
                x_adv[row, 0, 0, :K] = x[row, 0, 0, :K].roll(-1)
        return x_adv


# -- statistics --------------------------------------------------------------------------------


def test_mean_std_is_sample_std():
    assert mean_std([0.8, 0.6]) == pytest.approx((0.7, math.sqrt(0.02)))
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="values"):
        mean_std([])


def hand_made_report(**kwargs) -> RobustnessReport:
    x, y = lookup_data()
    a = Scripted("strong", [{0, 1}, {0, 1, 2, 3}])
    b = Scripted("weak", [{5}, {1}], kind="single-step")
    return evaluate(Lookup(), batches(x, y), [a, b], repeats=2, progress=False, **kwargs)


def test_report_statistics_on_known_outcomes():
    report = hand_made_report(checks=False)
    assert report.n_samples == 10 and report.repeats == 2
    assert report.clean == [0.9, 0.9]  # sample 9 is mislabelled
    strong, weak = report.attack("strong"), report.attack("weak")
    assert strong.accuracies == [0.7, 0.5]
    assert weak.accuracies == [0.8, 0.8]
    assert strong.mean == pytest.approx(0.6) and strong.std == pytest.approx(math.sqrt(0.02))
    assert weak.std == 0.0
    assert report.effective is strong  # effective robustness = the min over attacks
    # Per sample, per repeat: robust only if correct clean and under both attacks.
    # Repeat 0 loses {0, 1, 5, 9}; repeat 1 loses {0, 1, 2, 3, 9}.
    assert report.worst_case == [0.6, 0.5]


def test_worst_case_can_be_below_every_attack():
    x, y = lookup_data(wrong=())
    a = Scripted("a", [{0, 1}], kind="single-step")
    b = Scripted("b", [{2, 3}])
    report = evaluate(Lookup(), batches(x, y), [a, b], repeats=1, progress=False, checks=False)
    assert report.attack("a").mean == report.attack("b").mean == 0.8
    assert report.worst_case == [0.6]


def test_evaluate_restores_mode_and_leaks_no_gradients():
    model = nn.Sequential(Lookup(), nn.Dropout(0.0))
    model.train()
    model[1].eval()
    x, y = lookup_data()
    flip_all = Scripted("all", [set(range(10))])
    before = [p.requires_grad for p in model.parameters()]
    evaluate(model, batches(x, y), [flip_all], repeats=1, progress=False, unbounded_attack=flip_all)
    assert model.training and not model[1].training
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())


def test_seed_makes_random_model_reproducible_and_keeps_global_rng():
    x, y = lookup_data(n=40, wrong=())
    model = Noisy(sigma=2.0)
    attack = Scripted("none", [set()] * 3)
    state = torch.get_rng_state()
    r1 = evaluate(model, batches(x, y), [attack], repeats=3, progress=False, seed=7, checks=False)
    attack.repeat = -1
    r2 = evaluate(model, batches(x, y), [attack], repeats=3, progress=False, seed=7, checks=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert r1.clean == r2.clean
    assert len(set(r1.clean)) > 1  # the noise really is redrawn every repeat


def test_evaluate_rejects_bad_arguments():
    x, y = lookup_data()
    good = Scripted("a", [set()])
    with pytest.raises(TypeError, match="model"):
        evaluate("not a model", batches(x, y), [good])
    with pytest.raises(TypeError, match=r"attacks\[0\]"):
        evaluate(Lookup(), batches(x, y), [lambda x, y: x])
    with pytest.raises(ValueError, match="kind"):
        evaluate(Lookup(), batches(x, y), [Scripted("a", [set()], kind="magic")])
    with pytest.raises(ValueError, match="distinct"):
        evaluate(Lookup(), batches(x, y), [good, Scripted("a", [set()])])
    with pytest.raises(ValueError, match="repeats"):
        evaluate(Lookup(), batches(x, y), [good], repeats=0)
    with pytest.raises(ValueError, match="no samples"):
        evaluate(Lookup(), [], [good], progress=False)
    with pytest.raises(ValueError, match="device"):
        evaluate(Lookup(), batches(x, y), [good], device="meta", progress=False)


def test_an_x_y_pair_of_tensors_is_evaluated_like_its_batches():
    x, y = lookup_data()
    a = Scripted("strong", [{0, 1}, {0, 1, 2, 3}])
    b = Scripted("weak", [{5}, {1}], kind="single-step")
    report = evaluate(
        Lookup(), (x, y), [a, b], repeats=2, progress=False, checks=False, batch_size=4
    )
    by_batches = hand_made_report(checks=False)
    assert report.n_samples == by_batches.n_samples == 10
    assert report.clean == by_batches.clean and report.worst_case == by_batches.worst_case
    for name in ("strong", "weak"):
        assert report.attack(name).accuracies == by_batches.attack(name).accuracies
    sweep = sweep_eps(Lookup(), (x, y), BudgetFlip, [0, 8 / 255], 1, progress=False)
    assert sweep.n_samples == 10


def test_an_x_y_pair_must_match_and_batch_sizes_be_positive():
    x, y = lookup_data()
    good = Scripted("a", [set()])
    with pytest.raises(ValueError, match=r"an \(x, y\) pair needs .* \(10, 1, 1, 4\) and \(5,\)"):
        evaluate(Lookup(), (x, y[:5]), [good], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(Lookup(), (x, y), [good], progress=False, batch_size=0)
    with pytest.raises(TypeError, match=r"an \(x, y\) pair of tensors or yield \(x, y\) pairs"):
        evaluate(Lookup(), [x, y, y], [good], progress=False)


def test_progress_bar_and_mapping_of_attacks(capsys):
    x, y = lookup_data(wrong=())
    attacks = {"a": Scripted("a", [{0}])}
    report = evaluate(Lookup(), batches(x, y), attacks, repeats=1, checks=False)
    assert report.attack("a").accuracies == [0.9]
    assert "evaluate" in capsys.readouterr().err  # the tqdm bar
    evaluate(Lookup(), batches(x, y), attacks, repeats=1, checks=False, progress=False)
    assert capsys.readouterr().err == ""


# -- self-checks with planted problems -----------------------------------------------------------


def result(name, kind, accs, eps=8 / 255, norm="linf", eot=1):
    return AttackResult(name=name, eps=eps, norm=norm, kind=kind, accuracies=accs, eot=eot)


def test_iterative_weaker_than_single_step_fails():
    fgsm = result("fgsm", "single-step", [0.30, 0.31, 0.29])
    weak_pgd = result("pgd", "iterative", [0.60, 0.62, 0.61])
    good_pgd = result("pgd", "iterative", [0.20, 0.21, 0.19])
    assert check_iterative_vs_single_step([fgsm, weak_pgd], 500).status == "fail"
    assert check_iterative_vs_single_step([fgsm, good_pgd], 500).status == "pass"
    # Within noise: slightly higher but inside two standard errors is not shown either way.
    close = result("pgd", "iterative", [0.305, 0.32, 0.29])
    check = check_iterative_vs_single_step([fgsm, close], 500)
    assert check.status == "inconclusive" and "unpaired, approximate" in check.message
    assert check_iterative_vs_single_step([fgsm], 500).status == "skip"


def test_transfer_stronger_than_white_box_fails():
    pgd = result("pgd", "iterative", [0.50, 0.51])
    strong_transfer = result("transfer", "transfer", [0.10, 0.11])
    weak_transfer = result("transfer", "transfer", [0.80, 0.81])
    spsa = result("spsa", "gradient-free", [0.20, 0.21])
    assert check_white_box_vs_black_box([pgd, strong_transfer], 500).status == "fail"
    assert check_white_box_vs_black_box([pgd, spsa], 500).status == "fail"
    assert check_white_box_vs_black_box([pgd, weak_transfer], 500).status == "pass"
    # An L0 pixel attack has no comparable L-inf white-box budget: nothing to compare.
    pixel = result("pixel", "gradient-free", [0.1], eps=math.inf, norm="l0")
    assert check_white_box_vs_black_box([pgd, pixel], 500).status == "skip"


def test_randomized_model_flagged_and_deterministic_not():
    x, _ = lookup_data()
    check, randomized = check_randomized(Noisy(), x)
    assert randomized and check.status == "info" and "EOT" in check.message
    check, randomized = check_randomized(Lookup(), x)
    assert not randomized and check.status == "pass"


def test_eot_less_attacks_on_randomized_model_warned():
    pgd = result("pgd", "iterative", [0.5])
    eot_pgd = result("eot-pgd", "iterative", [0.4], eot=8)
    assert check_eot_on_randomized([pgd], randomized=True).status == "warn"
    assert check_eot_on_randomized([pgd, eot_pgd], randomized=True).status == "info"
    assert check_eot_on_randomized([eot_pgd], randomized=True).status == "pass"
    assert check_eot_on_randomized([pgd], randomized=False).status == "pass"


def test_unbounded_attack_that_does_not_reach_zero_is_flagged():
    x, y = lookup_data(wrong=())
    identity = Scripted("identity", [set()])
    flip_all = Scripted("flip", [set(range(10))])
    check = check_unbounded_attack(Lookup(), x, y, attack=identity)
    assert check.status == "fail" and "100.0%" in check.message
    assert check_unbounded_attack(Lookup(), x, y, attack=flip_all).status == "pass"


def test_gradient_check_flags_zero_and_nan_gradients():
    x, y = lookup_data()
    assert check_gradients(Lookup(), x, y).status == "pass"

    class Rounded(nn.Module):
        def forward(self, x):
            return torch.round(x.flatten(1)[:, :K])

    class NaNs(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :K] * float("nan")

    assert check_gradients(Rounded(), x, y).status == "warn"
    assert check_gradients(NaNs(), x, y).status == "fail"


def sweep(label, accs, eps=(0.0, 4 / 255, 8 / 255)):
    return SweepResult(label, "linf", list(eps), [list(a) for a in accs], n_samples=500)


def test_eps_sweep_check():
    falling = sweep("pgd", [[0.9, 0.91], [0.5, 0.52], [0.1, 0.12]])
    rising = sweep("pgd", [[0.9, 0.91], [0.3, 0.31], [0.7, 0.71]])
    flat = sweep("fgsm", [[0.9, 0.91], [0.9, 0.9], [0.905, 0.9]])
    assert check_eps_sweeps([falling]).status == "pass"
    assert check_eps_sweeps([falling, rising]).status == "fail"
    assert check_eps_sweeps([flat]).status == "warn"
    assert check_eps_sweeps([]).status == "skip"


def test_checks_run_inside_evaluate():
    x, y = lookup_data(wrong=())
    flip_all = Scripted("flip", [set(range(10))])
    report = hand_made_report(unbounded_attack=flip_all)
    names = [c.name for c in report.checks]
    assert names == [
        "randomized_model",
        "gradients",
        "unbounded_attack",
        "iterative_vs_single_step",
        "white_box_vs_black_box",
        "eot_on_randomized",
        "accuracy_falls_with_eps",
    ]
    assert report.randomized is False
    # 10 samples x 2 repeats cannot show "at least as strong" (paired or not).
    assert report.check("iterative_vs_single_step").status == "inconclusive"
    assert report.check("unbounded_attack").status == "pass"


# -- sweeps --------------------------------------------------------------------------------------


class BudgetFlip:
    """Fools the first round(eps * 10 * 255 / 8) samples of each batch: stronger with eps."""

    kind, norm = "iterative", "linf"

    def __init__(self, eps: float) -> None:
        self.eps, self.name = eps, "budget"

    def __call__(self, x, y):
        x_adv = x.clone()
        k = round(self.eps * 255 / 8 * 2)
        x_adv[:k, 0, 0, :K] = x[:k, 0, 0, :K].roll(1, dims=-1)
        return x_adv


def test_sweep_eps_with_factory():
    x, y = lookup_data(n=8, wrong=())
    s = sweep_eps(Lookup(), batches(x, y), BudgetFlip, [0, 4 / 255, 8 / 255], 2, progress=False)
    assert s.label == "budget" and s.n_samples == 8
    assert s.accuracies == [[1.0, 1.0], [0.75, 0.75], [0.5, 0.5]]  # eps 0 is the clean accuracy
    with pytest.raises(ValueError, match=r"eps_values\[1\]"):
        sweep_eps(Lookup(), batches(x, y), BudgetFlip, [0.0, -1.0], progress=False)
    with pytest.raises(TypeError, match="attack"):
        sweep_eps(Lookup(), batches(x, y), 3, [0.1], progress=False)


# -- report formats ------------------------------------------------------------------------------


def test_json_round_trip():
    report = hand_made_report(unbounded_attack=Scripted("flip", [set(range(10))]))
    report.attacks.append(result("pixel", "gradient-free", [0.7, 0.8], eps=math.inf, norm="l0"))
    report.add_sweep(sweep("pgd", [[0.9, 0.91], [0.5, 0.52], [0.1, 0.12]]))
    text = report.to_json()
    json.loads(text)  # strict JSON: no bare Infinity
    assert "Infinity" not in text
    again = RobustnessReport.from_json(text)
    assert again == report
    assert json.loads(text)["summary"]["effective"]["attack"] == "strong"


def test_markdown_contains_the_numbers():
    report = hand_made_report(unbounded_attack=Scripted("flip", [set(range(10))]))
    md = report.to_markdown()
    assert "| Attack | eps | Accuracy (%) |" in md
    assert "| Clean | – | 90.00 ± 0.00 |" in md
    assert "| strong | 8/255 | 60.00 ± 14.14 |" in md
    assert "| weak | 8/255 | 80.00 ± 0.00 |" in md
    assert "**Effective robustness** (min over attacks: strong)" in md
    assert "| Per-sample worst case (all attacks) | – | 55.00 ± 7.07 |" in md
    assert "| unbounded_attack | PASS |" in md
    report.add_sweep(sweep("pgd", [[0.9, 0.9], [0.5, 0.5], [0.1, 0.1]]))
    md = report.to_markdown()
    assert "| pgd: eps | 0 | 4/255 | 8/255 |" in md
    assert "| accuracy_falls_with_eps | PASS |" in md


def test_format_eps():
    assert format_eps(8 / 255) == "8/255"
    assert format_eps(0.3) == "0.3"  # MNIST budgets stay plain numbers
    assert format_eps(0.5, "l2") == "0.5 (L2)"
    assert format_eps(math.inf, "l0") == "–"


def test_save_writes_report_and_png_plots(tmp_path):
    report = hand_made_report(checks=False)
    report.add_sweep(sweep("pgd", [[0.9, 0.91], [0.5, 0.52], [0.1, 0.12]]))
    paths = report.save(tmp_path / "out")
    assert set(paths) == {"markdown", "json", "bars", "sweep"}
    for key in ("bars", "sweep"):
        with open(paths[key], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert RobustnessReport.from_json(open(paths["json"]).read()) == report
    assert "60.00 ± 14.14" in open(paths["markdown"]).read()


def test_unbounded_attacks_stay_out_of_effective_robustness():
    x, y = lookup_data(wrong=())
    pgd = Scripted("pgd", [{0, 1}])
    pixel = Scripted("pixel", [set(range(10))], kind="gradient-free", eps=math.inf, norm="l0")
    report = evaluate(Lookup(), batches(x, y), [pgd, pixel], 1, progress=False, checks=False)
    assert report.attack("pixel").mean == 0.0
    assert report.effective.name == "pgd"  # no budget contains an unbounded attack
    assert report.worst_case == [0.8]
    assert "Per-sample worst case (bounded attacks)" in report.to_markdown()
    alone = evaluate(Lookup(), batches(x, y), [pixel], 1, progress=False, checks=False)
    assert alone.effective.name == "pixel" and alone.worst_case == [0.0]


# -- the CLI, end to end on a tiny checkpoint with the real attacks ------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from fastnoise.models import build

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    paths = {}
    for name, noise in (("l2p", "l2p"), ("plain", None)):
        config = {"name": "small_cnn", "noise": noise}
        model = build(**config)
        paths[name] = str(folder / f"{name}.pt")
        torch.save({"model_config": config, "model": model.state_dict()}, paths[name])
    return paths


def test_cli_end_to_end(tiny_checkpoint, tmp_path, capsys):
    from fastnoise.cli import main

    out = tmp_path / "report"
    argv = [
        "eval",
        "--checkpoint", tiny_checkpoint["l2p"],
        "--dataset", "embedded",
        "--attacks", "fgsm,pgd,transfer",
        "--source-checkpoint", tiny_checkpoint["plain"],
        "--eps", "8/255,16/255",
        "--sweep-attacks", "pgd",
        "--pgd-steps", "3",
        "--repeats", "2",
        "--limit", "4",
        "--batch-size", "4",
        "--check-samples", "4",
        "--device", "cpu",
        "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Attack | eps | Accuracy (%) |" in printed and "| pgd | 8/255 |" in printed
    report = RobustnessReport.from_json((out / "report.json").read_text())
    assert report.n_samples == 4 and report.repeats == 2
    assert [a.name for a in report.attacks] == ["fgsm", "pgd", "transfer"]
    assert report.attack("pgd").eps == pytest.approx(8 / 255)
    assert report.randomized is True  # an L2P model redraws its noise every pass
    assert report.check("unbounded_attack").status == "pass"  # real PGD with eps = 1
    assert [s.label for s in report.sweeps] == ["pgd"]
    assert report.sweeps[0].eps_values == pytest.approx([0, 8 / 255, 16 / 255])
    for name in ("report.md", "accuracy_by_attack.png", "accuracy_vs_eps.png"):
        assert (out / name).stat().st_size > 0
    assert report.meta["dataset"] == "embedded"


def test_cli_argument_errors(tiny_checkpoint, capsys):
    from fastnoise.cli import main
    from fastnoise.eval.cli import parse_eps, pgd_step_size

    assert parse_eps("8/255, 0.5,inf") == [8 / 255, 0.5, math.inf]
    # PNIL's 2 * eps / steps, no floor (Learn2Perturb's 0.01 is --protocol l2p's)
    assert pgd_step_size(8 / 255, 7) == pytest.approx(16 / 255 / 7)
    assert pgd_step_size(0.3, 50) == pytest.approx(0.012)
    base = ["eval", "--checkpoint", tiny_checkpoint["plain"], "--dataset", "embedded"]
    with pytest.raises(SystemExit):
        main([*base, "--eps", "8/zero"])
    assert "--eps expects numbers or fractions" in capsys.readouterr().err
    assert main([*base, "--attacks", "transfer"]) == 2
    assert "--source-checkpoint" in capsys.readouterr().err
    assert main([*base, "--attacks", "nonsense", "--limit", "2"]) == 2
    assert "unknown attack" in capsys.readouterr().err
    assert main([*base, "--pgd-steps", "0"]) == 2
    assert "--pgd-steps must be >= 1" in capsys.readouterr().err
    assert main([*base, "--spsa-samples", "0"]) == 2
    assert "--spsa-samples must be >= 1" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", "/nonexistent.pt"]) == 2


def test_cli_passes_attack_settings_to_the_attacks():
    import argparse

    from fastnoise.eval.cli import _attack_builder, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--checkpoint", "x.pt", "--spsa-steps", "3", "--spsa-samples", "16", "--pgd-steps", "5"]
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    build = _attack_builder(args, model, None)
    spsa = build("spsa", 8 / 255)
    assert (spsa.steps, spsa.samples) == (3, 16)
    assert build("pgd", 8 / 255).steps == 5
