"""``fastnoise demo`` end to end at a tiny scale (the README's main command)."""

from __future__ import annotations

import json

from fastnoise.cli import main as cli_main


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli_main(
        [
            "demo", "--out", str(out), "--epochs", "2", "--train-limit", "200",
            "--eval-samples", "16", "--repeats", "1", "--spsa-steps", "1", "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| PNIL + NFGSM |" in printed and "| Learn2Perturb |" in printed
    assert str(out.resolve()) in printed
    report = (out / "report.md").read_text()
    for needle in ("EOT-PGD", "SPSA", "not the papers' accuracies", "## Time"):
        assert needle in report
    for path in (
        "pnil-nfgsm/pnil_variance.png",
        "learn2perturb/theta_evolution.png",
        "pnil-nfgsm/best.pt",
        "learn2perturb/last.pt",
        "eval-nfgsm/report.json",
        "eval-learn2perturb/report.json",
    ):
        assert (out / path).stat().st_size > 0, path
    rows = [
        json.loads(x)
        for x in (out / "learn2perturb" / "metrics.jsonl").read_text().split("\n")
        if x
    ]
    assert [r["noise_on"] for r in rows] == [False, True]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["total"] > 0
