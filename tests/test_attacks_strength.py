"""The attacks work: on a small CNN trained on real MNIST digits, stronger attacks
lower accuracy more, and an undefended model falls to ~0%.

The CNN trains for two epochs on 3000 digits (a few seconds). MNIST needs larger eps
than CIFAR for an undefended model to collapse: eps = 0.2 here (8/255 barely dents an
MNIST model), the usual MNIST budgets being 0.1 to 0.3.
"""

from __future__ import annotations

import pytest
import torch
from test_attacks_support import accuracy, trained_mnist_cnn
from torch import nn

from fastnoise.attacks import APGD, CW, FGSM, PGD, SPSA, Transfer
from fastnoise.functional import inject_noise


@pytest.fixture(scope="module")
def mnist_cnn():
    model, x, y = trained_mnist_cnn()
    assert accuracy(model, x, y) > 0.9  # a real classifier, or the rest means nothing
    return model, x, y


def test_undefended_model_falls_to_zero_under_pgd(mnist_cnn):
    model, x, y = mnist_cnn
    torch.manual_seed(0)
    x_adv = PGD(model, eps=0.2, alpha=0.05, steps=20)(x, y)
    assert accuracy(model, x_adv, y) <= 0.02
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6


def test_pgd_beats_fgsm_and_apgd_matches_pgd(mnist_cnn):
    model, x, y = mnist_cnn
    torch.manual_seed(0)
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, FGSM(model, eps=0.1)(x, y), y)
    pgd = accuracy(model, PGD(model, eps=0.1, alpha=0.025, steps=20)(x, y), y)
    apgd = accuracy(model, APGD(model, eps=0.1, steps=20, eot=1)(x, y), y)
    apgd_dlr = accuracy(model, APGD(model, eps=0.1, loss="dlr", steps=20, eot=1)(x, y), y)
    assert clean - fgsm > 0.1  # FGSM does something
    assert fgsm - pgd > 0.1  # iterating helps a lot
    assert apgd <= pgd + 0.02 and apgd_dlr <= pgd + 0.05  # no step size tuned, as good


def test_restarts_keep_each_samples_worst_case(mnist_cnn):
    model, x, y = mnist_cnn
    config = dict(eps=0.08, alpha=0.02, steps=5)
    torch.manual_seed(1)
    one = accuracy(model, PGD(model, **config)(x, y), y)
    torch.manual_seed(1)  # same first restart, so three can only be worse
    three = accuracy(model, PGD(model, restarts=3, **config)(x, y), y)
    assert three <= one
    assert three < accuracy(model, x, y)


def test_l2_pgd_and_cw_fool_the_model(mnist_cnn):
    model, x, y = mnist_cnn
    x, y = x[:40], y[:40]
    torch.manual_seed(2)
    x_l2 = PGD(model, eps=2.0, alpha=0.4, steps=15, norm="l2")(x, y)
    assert accuracy(model, x_l2, y) <= 0.1
    x, y = x[:10], y[:10]
    x_cw = CW(model, initial_c=1.0, steps=100, binary_steps=2, lr=0.05)(x, y)
    norms = (x_cw - x).flatten(1).norm(dim=1)
    assert accuracy(model, x_cw, y) <= 0.1
    # Minimum-norm: CW needs less L2 than the L2 budget PGD was given.
    assert norms.median() < 2.0


def test_spsa_fools_without_gradients(mnist_cnn):
    model, x, y = mnist_cnn
    x, y = x[:16], y[:16]
    torch.manual_seed(3)
    x_adv = SPSA(model, eps=0.2, steps=10, samples=64, lr=0.05)(x, y)
    assert accuracy(model, x_adv, y) <= accuracy(model, x, y) - 0.3
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6


def test_transfer_from_a_surrogate_hurts_but_less_than_white_box(mnist_cnn):
    model, x, y = mnist_cnn
    from test_attacks_support import mnist_subset

    torch.manual_seed(4)
    x_train, y_train, _, _ = mnist_subset()
    surrogate = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(surrogate.parameters(), lr=3e-3)
    for start in range(0, x_train.shape[0], 64):
        loss = nn.functional.cross_entropy(
            surrogate(x_train[start : start + 64]), y_train[start : start + 64]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    transfer = Transfer(surrogate, model, eps=0.2, alpha=0.05, steps=10)
    assert transfer.kind == "transfer" and transfer.eps == pytest.approx(0.2)
    transferred = accuracy(model, transfer(x, y), y)
    white_box = accuracy(model, PGD(model, eps=0.2, alpha=0.05, steps=10)(x, y), y)
    assert transferred < accuracy(model, x, y) - 0.2
    assert white_box < transferred


class _InputNoise(nn.Module):
    def __init__(self, inner: nn.Module, sigma: float):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(inject_noise(x, self.sigma))


def test_eot_makes_pgd_stronger_on_a_randomized_model(mnist_cnn):
    model, x, y = mnist_cnn
    noisy = _InputNoise(model, sigma=0.3)
    torch.manual_seed(5)
    mean_accuracy = lambda x_adv: sum(accuracy(noisy, x_adv, y) for _ in range(8)) / 8
    plain = mean_accuracy(PGD(noisy, eps=0.1, alpha=0.02, steps=8)(x, y))
    with_eot = mean_accuracy(PGD(noisy, eps=0.1, alpha=0.02, steps=8, eot=6)(x, y))
    assert with_eot < plain - 0.03
