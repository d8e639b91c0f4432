"""Targeted PGD, APGD and CW: toward a given label tensor, a "random" wrong class or the
"least-likely" class; success means predicting the target. Also the targeted losses
(targeted DLR of Croce & Hein 2020) and the argument errors.
"""

from __future__ import annotations

import pytest
import torch
from test_attacks_apgd_norms import CLASSES, SAMPLES, separable_mlp
from test_attacks_support import NoisyMLP, SmoothMLP
from torch import nn

from fastnoise.attacks import _losses
from fastnoise.attacks.apgd import APGD
from fastnoise.attacks.cw import CW
from fastnoise.attacks.pgd import PGD
from fastnoise.attacks.targets import (
    attack_labels,
    least_likely_targets,
    pack,
    random_targets,
    ranked_other_classes,
    resolve_targets,
)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _given_targets(y: torch.Tensor) -> torch.Tensor:
    return (y + 2) % CLASSES


ATTACKS = {
    "pgd-linf": lambda m, **kw: PGD(m, 0.5, alpha=0.05, steps=20, **kw),
    "pgd-l2": lambda m, **kw: PGD(m, 2.0, alpha=0.25, steps=20, norm="l2", **kw),
    "apgd-linf": lambda m, **kw: APGD(m, 0.5, steps=20, eot=1, **kw),
    "apgd-l2": lambda m, **kw: APGD(m, 2.0, steps=20, eot=1, norm="L2", **kw),
    "apgd-l1": lambda m, **kw: APGD(m, 6.0, steps=20, eot=1, norm="L1", **kw),
    "apgd-dlr-l2": lambda m, **kw: APGD(m, 2.0, loss="dlr", steps=20, eot=1, norm="L2", **kw),
    "cw": lambda m, **kw: CW(m, steps=100, binary_steps=3, lr=0.05, initial_c=1.0, **kw),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("mode", ["tensor", "random", "least-likely"])
def test_targeted_attacks_hit_their_target(name, mode):
    model, x, y = separable_mlp()
    x, y = x[:40], y[:40]
    torch.manual_seed(5)
    if mode == "tensor":
        target, expected = _given_targets(y), _given_targets(y)
    elif mode == "random":
        expected = random_targets(y, CLASSES)
        torch.manual_seed(5)  # the attack draws the same targets from the same seed
        target = "random"
    else:
        with torch.no_grad():
            expected = least_likely_targets(model(x), y)
        target = "least-likely"
    attack = ATTACKS[name](model, targeted=True, target=target)
    assert attack.name.endswith("-targeted")
    x_adv = attack(x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    hit = _predict(model, x_adv) == expected
    assert hit.float().mean() >= 0.95, hit.float().mean()


def test_untargeted_attacks_rarely_land_on_a_given_target():
    # The check above means something: untargeted, the same budget lands elsewhere.
    model, x, y = separable_mlp()
    x, y = x[:40], y[:40]
    torch.manual_seed(5)
    x_adv = ATTACKS["apgd-l2"](model)(x, y)
    assert (_predict(model, x_adv) != y).all()
    assert (_predict(model, x_adv) == _given_targets(y)).float().mean() < 0.6


def test_least_likely_is_the_lowest_wrong_logit():
    logits = torch.tensor(
        [
            [3.0, 1.0, -2.0, 0.5],  # lowest is class 2
            [-5.0, 2.0, -1.0, 0.0],  # true class 0 is lowest: next lowest, class 2
            [1.0, 1.0, 1.0, -1.0],
        ]
    )
    y = torch.tensor([0, 0, 3])  # third row: true class is the lowest -> a tie among 0, 1, 2
    targets = least_likely_targets(logits, y)
    assert targets[:2].tolist() == [2, 2]
    assert targets[2].item() in (0, 1, 2)
    assert (targets != y).all()


def test_random_targets_are_uniform_wrong_classes_and_seeded():
    y = torch.arange(CLASSES).repeat(2000)
    torch.manual_seed(11)
    first = random_targets(y, CLASSES)
    torch.manual_seed(11)
    assert torch.equal(first, random_targets(y, CLASSES))
    assert (first != y).all() and first.min() >= 0 and first.max() < CLASSES
    # Each (true, target) pair with target != true: 2000 draws over 4 classes, ~500 each.
    counts = torch.zeros(CLASSES, CLASSES)
    counts.index_put_((y, first), torch.ones(len(y)), accumulate=True)
    off_diagonal = counts[~torch.eye(CLASSES, dtype=torch.bool)]
    assert counts.diagonal().sum() == 0
    assert off_diagonal.min() > 400 and off_diagonal.max() < 600


def test_random_and_least_likely_never_pick_the_true_label_through_the_attack():
    model, x, y = separable_mlp()
    seen = {}
    for mode in ("random", "least-likely"):
        attack = PGD(model, 0.3, alpha=0.05, steps=1, targeted=True, target=mode)
        original = attack.gradient

        def spy(loss_fn, x_adv, labels, original=original, mode=mode):
            seen[mode] = labels
            return original(loss_fn, x_adv, labels)

        attack.gradient = spy
        attack(x, y)
    for mode, labels in seen.items():
        assert labels.shape == (SAMPLES, 2) and torch.equal(labels[:, 0], y), mode
        assert (labels[:, 1] != y).all(), mode
    with torch.no_grad():
        assert torch.equal(seen["least-likely"][:, 1], least_likely_targets(model(x), y))


def test_least_likely_uses_the_eot_average_on_a_randomized_model():
    torch.manual_seed(0)
    model = NoisyMLP(16, 16, CLASSES, sigma=0.3)
    x, y = torch.rand(8, 16), torch.randint(0, CLASSES, (8,))
    attack = APGD(model, 0.1, steps=1, eot=8, targeted=True, target="least-likely")
    torch.manual_seed(1)
    labels = attack_labels(attack, attack.target, x, y)
    torch.manual_seed(1)
    clean = attack.evaluate(_losses.cross_entropy, x, y).logits
    assert torch.equal(labels[:, 1], least_likely_targets(clean, y))


def test_targeted_dlr_matches_croce_and_hein():
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), z sorted decreasingly.
    logits = torch.tensor([[4.0, 1.0, 3.0, 0.0, -2.0]])
    y, t = torch.tensor([0]), torch.tensor([3])
    expected = -(4.0 - 0.0) / (4.0 - (1.0 + 0.0) / 2)
    torch.testing.assert_close(_losses.dlr_targeted(logits, y, t), torch.tensor([expected]))
    # Shift- and scale-invariant, like DLR.
    torch.testing.assert_close(
        _losses.dlr_targeted(3 * logits + 7, y, t), torch.tensor([expected]), rtol=1e-5, atol=0
    )
    labels = pack(y, t)
    loss = _losses.get_loss("dlr", targeted=True)(logits, labels)
    torch.testing.assert_close(loss, torch.tensor([expected]))
    ce = _losses.get_loss("ce", targeted=True)(logits, labels)
    torch.testing.assert_close(ce, -nn.functional.cross_entropy(logits, t, reduction="none"))
    gap = _losses.get_loss("margin", targeted=True)(logits, labels)
    torch.testing.assert_close(gap, torch.tensor([0.0 - 4.0]))  # z_t - max_{i != t} z_i
    with pytest.raises(ValueError, match="at least 4 classes"):
        _losses.dlr_targeted(logits[:, :3], y, torch.tensor([1]))


def test_ranked_other_classes_skips_the_true_class():
    logits = torch.tensor([[0.0, 5.0, 3.0, 4.0, 1.0]])
    assert ranked_other_classes(logits, torch.tensor([1]), 3).tolist() == [[3, 2, 4]]
    assert ranked_other_classes(logits, torch.tensor([3]), 2).tolist() == [[1, 2]]


def test_cw_targeted_reaches_the_target_with_kappa_confidence():
    # f_6 toward t, max(max_{i != t} z_i - z_t, -kappa): success means z_t leads by kappa.
    model, x, y = separable_mlp()
    x, y = x[:20], y[:20]
    target = _given_targets(y)
    kappa = 1.0
    attack = CW(
        model,
        steps=200,
        binary_steps=4,
        lr=0.05,
        initial_c=1.0,
        kappa=kappa,
        targeted=True,
        target=target,
    )
    x_adv = attack(x, y)
    with torch.no_grad():
        logits = model(x_adv)
    lead = logits.gather(1, target[:, None]).squeeze(1) - logits.scatter(
        1, target[:, None], float("-inf")
    ).amax(1)
    assert (lead >= kappa - 1e-4).all(), lead


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda m: PGD(m, 0.1, targeted=True), ValueError, "target="),
        (lambda m: APGD(m, 0.1, targeted=True), ValueError, "target="),
        (lambda m: CW(m, targeted=True), ValueError, "target="),
        (lambda m: PGD(m, 0.1, target="random"), ValueError, "targeted=False"),
        (lambda m: APGD(m, 0.1, target=torch.tensor([1])), ValueError, "targeted=False"),
        (lambda m: PGD(m, 0.1, targeted="yes", target="random"), TypeError, "targeted"),
        (lambda m: PGD(m, 0.1, targeted=True, target="most-likely"), ValueError, "target"),
        (lambda m: APGD(m, 0.1, targeted=True, target=[1, 2]), TypeError, "target"),
        (lambda m: CW(m, targeted=True, target=torch.tensor([1.0])), TypeError, "target"),
        (lambda m: PGD(m, 0.1, targeted=True, target=torch.ones(2, 2).long()), ValueError, "1-D"),
    ],
)
def test_bad_target_arguments_name_the_argument(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(SmoothMLP(16, 8, CLASSES))


@pytest.mark.parametrize(
    "target, pattern",
    [
        (torch.tensor([1, 2, 3]), "target has 3 labels but x has 4"),
        (torch.tensor([1, 2, 3, 7]), r"target must hold class labels in \[0, 5\)"),
        (torch.tensor([1, 2, 3, -1]), r"target must hold class labels in \[0, 5\)"),
        (torch.tensor([0, 2, 3, 4]), r"target equals the true label y for sample\(s\) \[0\]"),
        (torch.tensor([1, 2, 3, 4], device="meta"), "target is on meta"),
    ],
)
@pytest.mark.parametrize("kind", ["pgd", "apgd", "cw"])
def test_bad_targets_for_the_batch_are_rejected_at_call_time(target, pattern, kind):
    model = SmoothMLP(16, 8, CLASSES)
    make = {
        "pgd": lambda: PGD(model, 0.1, steps=1, targeted=True, target=target),
        "apgd": lambda: APGD(model, 0.1, steps=1, eot=1, targeted=True, target=target),
        "cw": lambda: CW(model, steps=1, binary_steps=1, targeted=True, target=target),
    }[kind]
    with pytest.raises(ValueError, match=pattern):
        make()(torch.rand(4, 16), torch.tensor([0, 1, 2, 3]))


def test_resolve_targets_passes_a_valid_tensor_through():
    y = torch.tensor([0, 1])
    target = torch.tensor([2, 0])
    assert resolve_targets(target, torch.zeros(2, 3), y) is target
