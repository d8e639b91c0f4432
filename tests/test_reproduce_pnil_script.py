"""benchmarks/reproduce_pnil_table1.py's choices, checked without training or attacking:
the protocol's attack settings per model and seed, and the mean ± std table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import reproduce_pnil_table1 as script  # noqa: E402

from fastnoise.models import small_cnn  # noqa: E402

ARGS = ["--protocol", "pnil", "--seeds", "0", "1", "--full-spsa-seeds", "0"]
EPS = 4 / 255  # Fashion-MNIST, PNIL Sec. 4.3


def _plan(pnil: bool, seed: int, extra=()):
    args = script.parse_args([*ARGS, "--spsa-steps", "5", "--spsa-batch", "16", *extra])
    return script.attack_plan(args, small_cnn(pnil=pnil), "fashion-mnist", pnil, seed)


def test_pnil_models_get_the_protocols_eot_and_a_robust_spsa_stop():
    white_box, spsa, budget = _plan(pnil=True, seed=0)
    pgd = next(a for a in white_box if a.name.endswith("pgd"))
    assert pgd.eot == 100 and pgd.steps == 50 and pgd.alpha == pytest.approx(2 * EPS / 50)
    assert {a.name for a in white_box} == {"fgsm", "eot-pgd"}
    assert (spsa.steps, spsa.samples, budget) == (100, 2048, "100 x 2048")  # a full seed
    assert spsa.stop_draws == script.STOP_DRAWS  # one lucky draw ends no attack


def test_deterministic_models_skip_eot_and_other_seeds_get_the_stated_budget():
    white_box, spsa, budget = _plan(pnil=False, seed=1)
    assert all(a.eot == 1 for a in white_box)  # EOT over 100 equal draws is one draw
    assert (spsa.steps, spsa.samples, budget) == (5, 16, "5 x 16")
    assert spsa.stop_draws == 1


def test_table_gives_mean_and_std_over_seeds_and_each_seeds_budget():
    args = script.parse_args([*ARGS, "--datasets", "fashion-mnist", "--patience", "3"])
    base = dict(dataset="fashion-mnist", pnil=False, epochs_run=9, best_epoch=6, pgd_eot=1,
                spsa_passes=1000, t_train=1.0, t_pgd=1.0, t_spsa=1.0)  # fmt: skip
    rows = [
        {**base, "seed": 0, "clean": 90.0, "spsa": 80.0, "pgd": 70.0, "min": 70.0,
         "spsa_budget": "100 x 2048"},
        {**base, "seed": 1, "clean": 92.0, "spsa": 84.0, "pgd": 74.0, "min": 74.0,
         "spsa_budget": "5 x 16"},
    ]  # fmt: skip
    text = script.render(args, rows, 60.0)
    assert (
        "| fashion-mnist (eps 4/255) | NFGSM | 2 | 91.0 ± 1.4 | 82.0 ± 2.8 | 72.0 ± 2.8 |" in text
    )
    assert "| 100 x 2048 |" in text and "| 5 x 16 |" in text
    assert "--patience 3 --protocol pnil --full-spsa-seeds 0" in text


def test_command_line_names_the_spsa_budget_only_where_a_seed_uses_it():
    """GPU run 3's header printed --spsa-steps 10 --spsa-batch 128 (the defaults) although
    --full-spsa-seeds gave every seed the protocol's 100 x 2048."""
    seeds = ["--protocol", "pnil", "--seeds", "0", "1", "--full-spsa-seeds"]
    every, some = script.parse_args([*seeds, "0", "1"]), script.parse_args([*seeds, "0"])
    assert "--spsa-batch" not in script.render(every, [], 1.0).splitlines()[2]
    assert "--spsa-steps 10 --spsa-batch 128" in script.render(some, [], 1.0).splitlines()[2]


def test_table_shows_pgd_on_the_spsa_images_where_rows_have_it():
    """SPSA against PGD on the same images: a column of its own; rows written before it
    existed show '-', and so does a mean over seeds that lack it."""
    args = script.parse_args([*ARGS, "--datasets", "fashion-mnist"])
    base = dict(dataset="fashion-mnist", pnil=True, epochs_run=9, best_epoch=6, pgd_eot=100,
                spsa_passes=1000, t_train=1.0, t_pgd=1.0, t_spsa=1.0, clean=90.0, spsa=80.0,
                pgd=70.0, min=70.0, spsa_budget="5 x 16")  # fmt: skip
    both = [
        {**base, "seed": 0, "pgd_spsa_images": 81.0},
        {**base, "seed": 1, "pgd_spsa_images": 85.0},
    ]
    text = script.render(args, both, 1.0)
    assert "| 70.0 ± 0.0 | 70.0 ± 0.0 | 83.0 ± 2.8 | 82/78/67/67 |" in text
    assert text.rstrip().endswith("| 1 | 1 | 1 | 85.0 |")
    text = script.render(args, [both[0], {**base, "seed": 1}], 1.0)
    assert "| 70.0 ± 0.0 | 70.0 ± 0.0 | - | 82/78/67/67 |" in text
    assert text.rstrip().endswith("| 1 | 1 | 1 | - |")
