"""The command line as a user meets it: guarded output folders, a checked resume, Ctrl-C,
one-line errors and a --help that explains. Tiny runs on the embedded data set; a real
process only where the exit status or a signal is the point."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastnoise.cli import main
from fastnoise.train import TrainConfig, fit, load_checkpoint
from fastnoise.train.run_folder import ResumeMismatchError, config_changes

REPO_ROOT = Path(__file__).resolve().parents[1]  # `python -m fastnoise` imports this checkout

TINY = [
    "--dataset", "embedded", "--train-limit", "64", "--batch-size", "16",
    "--max-steps-per-epoch", "2", "--no-progress", "--no-plots",
]  # fmt: skip


def train(out, *flags: str) -> int:
    return main(["train", *TINY, "--epochs", "1", "--out", str(out), *flags])


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One epoch of plain training on the embedded set, lr 0.1, eps 8/255."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert train(out) == 0
    return out


@pytest.fixture
def used_folder(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def run_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastnoise", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# -- 1. a used --out is refused unless --resume or --overwrite ------------------------------


def test_used_out_is_refused_with_one_line_naming_resume_and_overwrite(used_folder, capsys):
    before = (used_folder / "last.pt").read_bytes()
    assert train(used_folder) == 2
    message = one_line(capsys.readouterr().err)
    assert "--resume" in message and "--overwrite" in message and str(used_folder) in message
    assert (used_folder / "last.pt").read_bytes() == before, "the old run was touched"


def test_overwrite_replaces_the_whole_old_run(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--holdout", "16") == 0
    assert (out / "best.pt").is_file()
    assert train(out, "--overwrite") == 0
    assert not (out / "best.pt").exists(), "a stale best.pt of the old run survived"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_fit_refuses_a_used_folder_in_python_terms(used_folder):
    config = TrainConfig(
        dataset="embedded", train_limit=64, batch_size=16, max_steps_per_epoch=2, epochs=1,
        out=str(used_folder), progress=False, plots=False,
    )  # fmt: skip
    with pytest.raises(FileExistsError, match=r"resume=True.*overwrite=True"):
        fit(config)
    config.overwrite = True
    assert fit(config).metrics[-1]["epoch"] == 1


def test_demo_replaces_its_own_runs_so_the_readme_command_reruns():
    import argparse

    from fastnoise.demo import add_arguments, demo_configs

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert all(config.overwrite for config in demo_configs(parser.parse_args([])).values())


# -- 2. --resume continues the same experiment, and says what changed ----------------------


def test_resume_with_another_dataset_and_eps_is_refused_naming_both(used_folder, capsys):
    before = (used_folder / "last.pt").read_bytes()
    flags = ["--resume", "--dataset", "embedded-fashion", "--eps", "4/255"]
    assert train(used_folder, *flags) == 2
    message = one_line(capsys.readouterr().err)
    for part in ("--dataset", "embedded-fashion", "--eps", "8/255", "4/255"):
        assert part in message
    assert (used_folder / "last.pt").read_bytes() == before


@pytest.mark.parametrize(
    "field, value",
    [
        ("method", "pgd-at"), ("model", "resnet20"), ("pnil", True), ("seed", 1),
        ("model_kwargs", {"width": 2}), ("holdout", 8), ("optimizer", "adam"),
    ],
)  # fmt: skip
def test_resume_refuses_any_change_to_what_is_trained(used_folder, field, value):
    saved = load_checkpoint(used_folder / "last.pt")["config"]
    config = TrainConfig.from_dict({**saved, "resume": True, field: value})
    with pytest.raises(ValueError, match=rf"{field}.*{re.escape(repr(saved[field]))}"):
        fit(config)


def test_resume_refuses_a_new_sigma_for_gaussian_only(tmp_path):
    """Gaussian data augmentation trains for one sigma (the one it is certified at), so a
    resume with another is another experiment; other methods ignore sigma."""
    saved = TrainConfig(method="gaussian", sigma=0.25).to_dict()
    with pytest.raises(ResumeMismatchError, match=r"sigma.*0\.25"):
        config_changes(saved, TrainConfig(method="gaussian", sigma=0.5), tmp_path / "last.pt")
    saved = TrainConfig(method="pgd-at", sigma=0.25).to_dict()
    changes = config_changes(saved, TrainConfig(method="pgd-at", sigma=0.5), tmp_path / "last.pt")
    assert [c.field for c in changes] == ["sigma"]


def test_resume_applies_a_new_lr_and_epochs_and_reports_them(used_folder, capsys):
    flags = ["--resume", "--epochs", "2", "--lr", "0.05", "--weight-decay", "0.001"]
    assert main(["train", *TINY, "--out", str(used_folder), *flags]) == 0
    printed = capsys.readouterr().out
    assert f"resuming {used_folder / 'last.pt'} after epoch 1" in printed
    assert re.search(r"lr changed.*0\.1 -> 0\.05", printed)
    assert re.search(r"epochs changed.*1 -> 2", printed)
    rows = [json.loads(x) for x in (used_folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"]["weights"] for r in rows] == pytest.approx([0.1, 0.05])
    ckpt = load_checkpoint(used_folder / "last.pt")
    assert ckpt["config"]["lr"] == 0.05 and ckpt["config"]["epochs"] == 2
    assert ckpt["optimizers"]["weights"]["param_groups"][0]["weight_decay"] == 0.001
    changed = {c["field"]: (c["old"], c["new"], c["epoch"]) for c in ckpt["config_changes"]}
    assert changed["lr"] == (0.1, 0.05, 1)


# -- 3. Ctrl-C: status 130, one line, and a command that resumes ---------------------------


def _default_sigint() -> None:
    """A shell's background job ignores SIGINT, and so would its children: undo that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_one_line_that_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastnoise", "train", *TINY, "--epochs", "1000", "--out", str(out)]
    child = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else None,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "last.pt").is_file():
            assert child.poll() is None and time.monotonic() < deadline, "no checkpoint came"
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, err
    line = one_line(err)
    assert "Traceback" not in line and str(out / "last.pt") in line
    epoch = int(re.search(r"\(epoch (\d+)\)", line).group(1))
    command = shlex.split(line.split("Resume with: ")[1])
    assert command[:2] == ["fastnoise", "train"] and "--resume" in command

    assert main([*command[1:], "--epochs", str(epoch + 1)]) == 0
    assert f"after epoch {epoch}" in capsys.readouterr().out
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, epoch + 2))


# -- 4. expected errors: one line, status 2, no traceback; --debug shows it ----------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--dataset", "fmnist"], "invalid choice: 'fmnist'"),
        (["train", "--method", "magic"], "--method"),
        (["train", "--preset", "pnil-mnst"], "--preset"),
        (["train", "--model", "resnet21"], "--model"),
        (["train", "--eps", "8/zero"], "--eps"),
        (["train", "--dataset", "embedded", "--epochs", "0"], "--epochs must be >= 1"),
        (["eval", "--checkpoint", "x.pt", "--dataset", "fmnist"], "invalid choice: 'fmnist'"),
        (["eval", "--checkpoint", "/nonexistent.pt"], "--checkpoint"),
    ],
)
def test_bad_requests_are_one_line_with_status_2(argv, needle, capsys):
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert needle in one_line(capsys.readouterr().err)


def test_unreadable_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    assert main(["eval", "--checkpoint", str(bad), "--dataset", "embedded"]) == 2
    assert str(bad) in one_line(capsys.readouterr().err)


def test_missing_data_gives_command_line_advice_and_debug_the_traceback(tmp_path, capsys):
    argv = ["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path)]
    assert main(argv) == 2
    message = one_line(capsys.readouterr().err)
    assert "--download" in message and "--data-root" in message
    assert "download=True" not in message, "Python advice on the command line"
    with pytest.raises(FileNotFoundError, match="download=True"):  # the library's own error
        main([*argv, "--debug"])


def test_missing_data_exits_2_without_traceback_in_a_real_process(finished_run, tmp_path):
    checkpoint = str(finished_run / "last.pt")
    done = run_process("eval", "--checkpoint", checkpoint, "--dataset", "mnist", "--data-root",
                       str(tmp_path), "--limit", "1")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--download" in one_line(done.stderr) and "Traceback" not in done.stderr


def test_download_flag_reaches_the_data_loader(tmp_path, monkeypatch, capsys):
    import fastnoise.data

    seen = []

    def spy(name, root=None, train=True, download=False, **kw):
        seen.append((train, download))
        raise fastnoise.data.DatasetNotFoundError("offline test. To fix: nothing")

    monkeypatch.setattr(fastnoise.data, "load_dataset", spy)
    assert train(tmp_path / "run", "--download") == 2
    from fastnoise.models import build

    ckpt = tmp_path / "tiny.pt"
    model = build("small_cnn").state_dict()
    torch.save({"model_config": {"name": "small_cnn"}, "model": model, "dataset": "mnist"}, ckpt)
    assert main(["eval", "--checkpoint", str(ckpt), "--download"]) == 2
    assert seen == [(True, True), (False, True)]
    capsys.readouterr()


# -- 5. --help explains; --eps takes k/255; --version; --no-progress keeps epoch lines -----


def help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # one line: help wraps anywhere


def test_train_help_lists_choices_and_units(capsys):
    text = help_text(["train"], capsys)
    for choices in (
        "{standard,pgd-at,rfgsm,nfgsm,pni,learn2perturb,learn2perturb-r,gaussian}",
        "{mnist,fashion-mnist,cifar10,cifar100,embedded,embedded-fashion}",
        "{sgd,adam}",
        "{constant,multistep,cyclic,triangle}",
        "small_cnn",
    ):
        assert choices in text
    assert "pixel units" in text and "(default: 8/255)" in text
    assert "--epochs EPOCHS passes over the training set" in text


def test_preset_help_shows_the_preset_values(capsys):
    text = help_text(["train", "--preset", "pnil-fashion-mnist"], capsys)
    for flag, value in (("--epochs EPOCHS", "30"), ("--eps VALUE", "4/255")):
        shown = re.search(re.escape(flag) + r" .*?\(preset pnil-fashion-mnist: ([^)]*)\)", text)
        assert shown and shown.group(1) == value, flag


def test_every_train_flag_has_a_real_help_text():
    import dataclasses

    from fastnoise.train.cli_help import FIELD_HELP

    for f in dataclasses.fields(TrainConfig):  # HEAD's help mostly restated the name
        assert len(FIELD_HELP.get(f.name, "").split()) > len(f.name.split("_")), f.name


def test_train_eps_takes_fractions_like_eval():
    import argparse

    from fastnoise.train.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--eps", "8/255", "--dataset", "embedded"]))
    assert config.eps == 8 / 255


def test_version_and_plain_text_top_level_help(capsys):
    import fastnoise

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastnoise {fastnoise.__version__}"
    text = help_text([], capsys)
    assert "``" not in text and "train" in text and "eval" in text


def test_no_progress_keeps_one_summary_line_per_epoch(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert re.findall(r"^epoch (\d+) \|", printed, flags=re.M) == ["1", "2"]


# -- 6. fastnoise eval defaults to the best checkpoint of a run --------------------------


def test_eval_of_a_run_folder_evaluates_its_best_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--epochs", "2", "--holdout", "8", "--val-pgd-steps", "1") == 0
    assert "fastnoise eval --checkpoint" in capsys.readouterr().out  # train says how
    code = main(["eval", "--checkpoint", str(out), "--attacks", "fgsm", "--limit", "4",
                 "--repeats", "1", "--no-progress"])  # fmt: skip
    assert code == 0
    assert f"evaluating {out / 'best.pt'}" in capsys.readouterr().out
    report = json.loads((out / "best-eval" / "report.json").read_text())
    assert report["meta"]["checkpoint"] == str((out / "best.pt").resolve())


def test_eval_checkpoint_resolution(tmp_path):
    from fastnoise.eval.cli import resolve_checkpoint

    (tmp_path / "last.pt").write_bytes(b"")
    assert resolve_checkpoint(str(tmp_path))[0] == str(tmp_path / "last.pt")  # no holdout
    assert resolve_checkpoint(str(tmp_path / "last.pt")) == (str(tmp_path / "last.pt"), None)
    (tmp_path / "best.pt").write_bytes(b"")
    assert resolve_checkpoint(str(tmp_path))[0] == str(tmp_path / "best.pt")
    path, note = resolve_checkpoint(str(tmp_path / "last.pt"))  # as asked, with a note
    assert path == str(tmp_path / "last.pt") and "best.pt" in note
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="without best.pt or last.pt"):
        resolve_checkpoint(str(tmp_path / "empty"))
