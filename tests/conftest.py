"""Shared test configuration."""

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests write plots; no screen here or in CI

REPO_ROOT = Path(__file__).resolve().parents[1]

# (seed, offset) for every test of a noise backward. Seeds below and above 2**32 (the
# Philox key's high word) and offsets crossing and above 2**32 (the counter's high word):
# layers draw 63-bit seeds, so high words are the common case, not an edge case.
SEED_OFFSETS = {
    "low": (99, 7),
    "crossing": (2**32 + 99, 2**32 - 3),
    "high": (2**63 - 25, 2**40 + 1),
}


@pytest.fixture(params=list(SEED_OFFSETS.values()), ids=list(SEED_OFFSETS))
def seed_offset(request) -> tuple[int, int]:
    return request.param


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
