"""Shared test configuration."""

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests write plots; no screen here or in CI

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """MNIST/Fashion-MNIST in torchvision's layout: ../shared/data beside the checkout."""
    candidates = [os.environ.get("FASTNOISE_DATA_ROOT"), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MNIST").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip(
            "real MNIST/Fashion-MNIST not found at ../shared/data (set FASTNOISE_DATA_ROOT)"
        )
    return root
