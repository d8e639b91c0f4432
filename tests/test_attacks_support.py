"""Tiny models shared by the attack tests (this module holds no tests itself).

Kept here instead of importing fastnoise.models so the attack tests stand alone and
stay fast: every model is a few thousand parameters.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from fastnoise.functional import inject_noise


class NoisyMLP(nn.Module):
    """A randomized model: Learn2Perturb-style Gaussian noise on the input and the hidden
    layer, a fresh draw per element on every forward (fastnoise.functional.inject_noise)."""

    def __init__(self, in_features: int = 16, hidden: int = 32, classes: int = 5, sigma=0.3):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.fc1(inject_noise(x.flatten(1), self.sigma)))
        return self.fc2(inject_noise(h, self.sigma))


class SharedDrawMLP(NoisyMLP):
    """The released Learn2Perturb EOT bug in model form: one noise vector per forward,
    broadcast over the batch, so every row of a batch sees the same draw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        noise = self.sigma * torch.randn(1, flat.shape[1], device=x.device)
        return self.fc2(torch.tanh(self.fc1(flat + noise)))


class ReplayNoise(nn.Module):
    """Adds pre-drawn noise rows in call order: lets a batched pass and a loop of passes
    see exactly the same draws, so their EOT gradients can be compared exactly."""

    def __init__(self, inner: nn.Module, rows: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.rows = rows
        self.cursor = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.rows[self.cursor : self.cursor + x.shape[0]]
        assert noise.shape[0] == x.shape[0], "ReplayNoise ran out of noise rows"
        self.cursor += x.shape[0]
        return self.inner(x + noise.view_as(x))


class SmoothMLP(nn.Module):
    """Deterministic smooth classifier (tanh MLP) for gradient-estimate tests."""

    def __init__(self, in_features: int = 16, hidden: int = 32, classes: int = 5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BrightPixelModel(nn.Module):
    """Predicts class 0 unless pixel (row, col) is bright in every channel, then class 1:
    a model with a known one-pixel adversarial example for dark images."""

    def __init__(self, row: int, col: int, threshold: float = 0.6):
        super().__init__()
        self.row, self.col, self.threshold = row, col, threshold
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x[:, :, self.row, self.col].amin(dim=1)
        flip = self.scale * (brightness - self.threshold)
        return torch.stack([torch.zeros_like(flip), flip, flip - 1.0], dim=1)


class SmallCNN(nn.Module):
    """A small MNIST CNN (two convs, one linear layer), optionally with a BatchNorm to
    check that attacks restore train/eval mode."""

    def __init__(self, channels: int = 8, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 7 * 7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@functools.lru_cache(maxsize=1)
def mnist_subset(train: int = 3000, test: int = 200):
    """(x_train, y_train, x_test, y_test) float images in [0, 1]: real MNIST digits from
    the subset that ships inside fastnoise, so these tests never depend on a download."""
    from fastnoise.data import as_tensors, load_dataset

    x_tr, y_tr = as_tensors(load_dataset("embedded", train=True), limit=train)
    x_te, y_te = as_tensors(load_dataset("embedded", train=False), limit=test)
    return x_tr, y_tr, x_te, y_te


@functools.lru_cache(maxsize=1)
def trained_mnist_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A SmallCNN trained for two epochs on 3000 MNIST images (a few seconds on a CPU),
    with 200 test images it classifies. Returns the model in eval mode."""
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = mnist_subset()
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        order = torch.randperm(x_train.shape[0])
        for start in range(0, x_train.shape[0], 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model, x_test, y_test


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()
