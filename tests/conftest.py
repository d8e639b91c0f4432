"""Shared test configuration."""

import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # tests write plots; no screen here or in CI

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_ENV = "FASTNOISE_DATA_ROOT"

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


SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # the project's copy, beside the checkout


def shared_data_root() -> Path | None:
    """Real MNIST/Fashion-MNIST in torchvision's layout: ``$FASTNOISE_DATA_ROOT``, else
    ../shared/data beside the checkout, else the library's default root."""
    from fastnoise.data import default_root

    candidates = [os.environ.get(ROOT_ENV), SHARED_DATA, default_root()]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MNIST").is_dir():
            return Path(candidate)
    return None


def pytest_configure(config) -> None:
    # Code that passes no root reads $FASTNOISE_DATA_ROOT (the library's rule), so the whole
    # session, CLI runs and subprocesses included, finds the real data wherever it was found.
    root = shared_data_root()
    if root is not None and not os.environ.get(ROOT_ENV):
        os.environ[ROOT_ENV] = str(root)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip(
            f"real MNIST/Fashion-MNIST not found in ${ROOT_ENV}, {SHARED_DATA} or the "
            "default root (set FASTNOISE_DATA_ROOT)"
        )
    return root


# ---- the Triton tests' device and backend (test_triton*.py) ----------------------------


def _reload_kernels() -> None:
    import triton_launches  # imports triton: only for the Triton tests

    triton_launches.reload_kernel_modules()


@pytest.fixture(scope="module")
def device():
    """The Triton tests' device: "cuda" on a GPU, else "cpu" with the kernels in Triton's
    interpreter: TRITON_INTERPRET=1 and the kernel modules re-imported (``@triton.jit``
    reads the variable when it decorates), both undone after the module."""
    if torch.cuda.is_available():
        yield "cuda"
        return
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    _reload_kernels()
    try:
        yield "cpu"
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
        _reload_kernels()


@pytest.fixture(scope="module")
def tb(device):
    from fastnoise._backends import triton as triton_backend

    assert triton_backend.unavailable_reason() is None
    assert triton_backend.supports(torch.device(device))
    return triton_backend
