"""Resumable evaluation (state_file) and saved adversarial examples (save_adv)."""

from __future__ import annotations

import pathlib

import pytest
import torch
from test_eval import K, Lookup, Noisy, Scripted, batches, lookup_data

from fastnoise.eval import evaluate
from fastnoise.eval.autoattack import autoattack


class Jitter:
    """A random attack (draws from torch's global RNG): moves each one-hot a random amount
    toward the previous class, inside an L-inf ball of eps."""

    def __init__(self, name="jitter", eps=0.6, kind="iterative"):
        self.name, self.eps, self.norm, self.kind = name, eps, "linf", kind

    def __call__(self, x, y):
        delta = torch.zeros_like(x)
        step = self.eps * torch.rand(len(x))
        delta[:, 0, 0, :K] = -x[:, 0, 0, :K] * step[:, None]
        delta[:, 0, 0, :K] += x[:, 0, 0, :K].roll(-1, dims=1) * step[:, None]
        return (x + delta).clamp(0, 1)


def interrupting(attack, at):
    """The attack, raising KeyboardInterrupt on its ``at``-th call (1-based); its settings
    (class name and public attributes) stay those of the attack."""
    base = type(attack)

    def __call__(self, x, y):
        self._calls += 1
        if self._calls == at:
            raise KeyboardInterrupt
        return base.__call__(self, x, y)

    attack.__class__ = type(base.__name__, (base,), {"__call__": __call__})
    attack._calls = 0
    return attack


def _same(a, b):
    assert a.clean == b.clean and a.worst_case == b.worst_case
    assert a.clean_majority == b.clean_majority and a.worst_case_all_draws == b.worst_case_all_draws
    for ra, rb in zip(a.attacks, b.attacks, strict=True):
        assert ra.accuracies == rb.accuracies and ra.majority == rb.majority
        assert ra.all_draws == rb.all_draws
        assert (ra.forward_passes, ra.forward_rows) == (rb.forward_passes, rb.forward_rows)
    assert a.outcomes.keys() == b.outcomes.keys()
    for name in a.outcomes:
        assert torch.equal(a.outcomes[name], b.outcomes[name])
    assert [(c.name, c.status) for c in a.checks] == [(c.name, c.status) for c in b.checks]


def _attacks(randomized):
    if randomized:
        return [Jitter("j1"), Jitter("j2", eps=0.3, kind="single-step")]
    return [Scripted("strong", [{0, 1, 4}]), Scripted("weak", [{5}], kind="single-step")]


@pytest.mark.parametrize("randomized", [False, True])
@pytest.mark.parametrize("at", [2, 4, 6, 8])
def test_an_interrupted_run_resumes_to_the_uninterrupted_report(tmp_path, randomized, at):
    x, y = lookup_data(n=10)
    make = (lambda: Noisy(sigma=1.0)) if randomized else Lookup
    kw = {"repeats": 3, "progress": False, "seed": 3, "draws": 3, "batch_size": 4}
    whole = evaluate(make(), (x, y), _attacks(randomized), **kw)
    state = tmp_path / "state.pt"
    first, second = _attacks(randomized)
    with pytest.raises(KeyboardInterrupt):  # 3 batches per repeat, 2 attacks per batch
        evaluate(make(), (x, y), [interrupting(first, at), second], state_file=state, **kw)
    assert state.is_file()
    saved = torch.load(state, weights_only=True)
    assert (saved["repeat"], saved["batch"]) == divmod(at - 1, 3)  # (repeat, batches done)
    resumed = evaluate(make(), (x, y), _attacks(randomized), state_file=state, **kw)
    _same(resumed, whole)
    assert not state.exists()  # removed once the run is complete


def test_a_changed_configuration_is_refused_and_the_state_is_plain(tmp_path):
    x, y = lookup_data(n=10)
    state = tmp_path / "state.pt"
    kw = {"repeats": 2, "progress": False, "seed": 3, "batch_size": 4, "state_file": state}
    with pytest.raises(KeyboardInterrupt):
        evaluate(Lookup(), (x, y), [interrupting(Scripted("a", [{0}]), 3)], **kw)
    saved = torch.load(state, weights_only=True)  # tensors, numbers, strings, lists, dicts
    assert saved["what"] == "evaluate" and (saved["repeat"], saved["batch"]) == (0, 2)
    for changed in ({"repeats": 3}, {"seed": 4}, {"draws": 2}, {"batch_size": 5}):
        with pytest.raises(ValueError, match=r"state_file .*state\.pt.* different evaluate run"):
            evaluate(Lookup(), (x, y), [Scripted("a", [{0}])], **{**kw, **changed})
    with pytest.raises(ValueError, match="different evaluate run.*attacks"):
        evaluate(Lookup(), (x, y), [Scripted("a", [{0}], eps=1 / 255)], **kw)
    # A file holding anything but plain types would not load: weights_only refuses it.
    torch.save({"format": 1, "what": "evaluate", "evil": pathlib.PurePosixPath("x")}, state)
    with pytest.raises(ValueError, match="not a readable fastnoise evaluate state"):
        evaluate(Lookup(), (x, y), [Scripted("a", [{0}])], **kw)
    assert state.is_file()  # refused, not overwritten


def test_save_adv_writes_repeat_0_examples_inside_the_ball(tmp_path):
    x, y = lookup_data(n=10)
    attacks = [Jitter("j1", eps=0.25), Scripted("s", [{1, 2}])]
    evaluate(
        Noisy(), (x, y), attacks, repeats=2, progress=False, seed=0, batch_size=4,
        checks=False, save_adv=tmp_path / "adv",
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "adv").iterdir()) == ["j1.pt", "s.pt"]
    for name, eps in (("j1", 0.25), ("s", 1.0)):
        saved = torch.load(tmp_path / "adv" / f"{name}.pt", weights_only=True)
        assert saved["x_adv"].shape == x.shape and saved["x_adv"].dtype == x.dtype
        assert torch.equal(saved["y"], y) and torch.equal(saved["index"], torch.arange(10))
        assert (saved["x_adv"] - x).abs().max() <= eps + 1e-6
    flipped = torch.load(tmp_path / "adv" / "s.pt", weights_only=True)["x_adv"]
    assert torch.equal((flipped != x).flatten(1).any(1).nonzero().flatten(), torch.tensor([1, 2]))


def test_save_adv_survives_an_interruption(tmp_path):
    x, y = lookup_data(n=10)
    kw = {"repeats": 1, "progress": False, "seed": 0, "batch_size": 4, "checks": False}
    kw.update(state_file=tmp_path / "s.pt", save_adv=tmp_path / "adv")
    loader = batches(x, y, 4)  # a loader of batches resumes as a pair does
    with pytest.raises(KeyboardInterrupt):
        evaluate(Lookup(), loader, [interrupting(Scripted("s", [{1, 6}]), 3)], **kw)
    assert torch.load(tmp_path / "s.pt", weights_only=True)["batch"] == 2
    evaluate(Lookup(), loader, [Scripted("s", [{1, 6}])], **kw)
    assert [p.name for p in (tmp_path / "adv").iterdir()] == ["s.pt"]  # parts merged
    saved = torch.load(tmp_path / "adv" / "s.pt", weights_only=True)
    assert torch.equal(saved["index"], torch.arange(10))
    assert torch.equal((saved["x_adv"] != x).flatten(1).any(1).nonzero().flatten(),
                       torch.tensor([1, 6]))  # fmt: skip


# -- autoattack ---------------------------------------------------------------------------------


class Tripwire(torch.nn.Module):
    """The model, raising KeyboardInterrupt on its ``at``-th forward."""

    def __init__(self, inner, at):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner(x)


def _plain(report):
    out = report.to_dict()
    out.pop("meta")
    for stage in out["stages"]:
        stage.pop("seconds")
    return out


@pytest.mark.parametrize("randomized", [False, True])
def test_autoattack_resumes_mid_stage(tmp_path, randomized):
    from test_attacks_support import NoisyMLP

    torch.manual_seed(0)
    x = torch.rand(24, 1, 6, 6)
    if randomized:
        inner = NoisyMLP(36, classes=3, sigma=0.2).eval()
    else:
        inner = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)).eval()
    with torch.no_grad():
        y = inner(x).argmax(1)
    kw = {"eps": 0.05, "steps": 5, "queries": 20, "progress": False, "batch_size": 4,
          "stages": ["apgd-ce", "square"], "seed": 5}  # fmt: skip
    whole = autoattack(Tripwire(inner, -1), (x, y), **kw)
    state, adv = tmp_path / "aa-state.pt", tmp_path / "adv"
    kw.update(state_file=state, save_adv=adv)
    with pytest.raises(KeyboardInterrupt):
        autoattack(Tripwire(inner, 60 if randomized else 40), (x, y), **kw)
    saved = torch.load(state, weights_only=True)
    assert saved["partial"] and saved["partial"]["next"] > 0  # stopped inside a stage
    resumed = autoattack(Tripwire(inner, -1), (x, y), **kw)
    assert _plain(resumed) == _plain(whole)
    assert not state.exists()
    out = torch.load(adv / "autoattack.pt", weights_only=True)
    assert out["x_adv"].shape == x.shape and out["broken"].dtype == torch.bool
    assert int(out["broken"].sum()) == sum(s.broken for s in whole.stages)
    assert (out["x_adv"] - x).abs().max() <= 0.05 + 1e-6
    assert torch.equal(out["x_adv"][~out["broken"]], x[~out["broken"]])


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_resumes_an_interrupted_run_and_saves_adv(tmp_path, capsys, monkeypatch):
    import importlib

    from fastnoise.cli import main
    from fastnoise.eval.report import RobustnessReport
    from fastnoise.models import build

    torch.manual_seed(0)
    config = {"name": "small_cnn", "noise": "l2p"}
    checkpoint = tmp_path / "l2p.pt"
    torch.save({"model_config": config, "model": build(**config).state_dict()}, checkpoint)

    def argv(out, *extra):
        return [
            "eval", "--checkpoint", str(checkpoint), "--dataset", "embedded",
            "--attacks", "fgsm,pgd", "--pgd-steps", "2", "--eps", "8/255", "--repeats", "2",
            "--limit", "6", "--batch-size", "2", "--check-samples", "2", "--device", "cpu",
            "--no-progress", "--out", str(out), *extra,
        ]  # fmt: skip

    assert main(argv(tmp_path / "whole")) == 0
    whole = RobustnessReport.from_json((tmp_path / "whole" / "report.json").read_text())

    out = tmp_path / "out"
    E = importlib.import_module("fastnoise.eval.evaluate")  # the module, not the function
    new_batch, calls = E._Judge.new_batch, []

    def stop_at_the_fourth(self):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        new_batch(self)

    monkeypatch.setattr(E._Judge, "new_batch", stop_at_the_fourth)
    assert main(argv(out, "--save-adv")) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert (out / "eval-state.pt").is_file()
    monkeypatch.setattr(E._Judge, "new_batch", new_batch)
    assert main(argv(out, "--save-adv")) == 0
    printed = capsys.readouterr().out
    assert "resuming the interrupted run" in printed and "repeat 2, after 0 batch(es)" in printed
    resumed = RobustnessReport.from_json((out / "report.json").read_text())
    assert resumed.clean == whole.clean and resumed.worst_case == whole.worst_case
    for a, b in zip(resumed.attacks, whole.attacks, strict=True):
        assert a.accuracies == b.accuracies and a.forward_passes == b.forward_passes
    assert not (out / "eval-state.pt").exists()
    for name in ("fgsm", "pgd"):
        saved = torch.load(out / "adv" / f"{name}.pt", weights_only=True)
        assert saved["x_adv"].shape[0] == 6 and torch.equal(saved["index"], torch.arange(6))
        assert saved["x_adv"].min() >= 0 and saved["x_adv"].max() <= 1

    # A different configuration is refused, naming the state file; --fresh starts over.
    monkeypatch.setattr(E._Judge, "new_batch", stop_at_the_fourth)
    calls.clear()
    assert main(argv(out)) == 130
    monkeypatch.setattr(E._Judge, "new_batch", new_batch)
    assert main([*argv(out), "--repeats", "3"]) == 2
    assert "eval-state.pt" in capsys.readouterr().err
    assert main([*argv(out), "--repeats", "3", "--fresh"]) == 0
    assert "resuming" not in capsys.readouterr().out
