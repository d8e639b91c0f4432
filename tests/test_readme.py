"""The README is the front door: its Python blocks run as pasted, and what it claims about
install size and demo time matches what was measured (benchmarks/RESULTS.md).

Each ```python block runs on its own, in a fresh namespace and an empty working folder, as a
reader pasting just that block would run it; so each block must make everything it uses.
The sizes in the blocks keep each to seconds on a CPU. Bash blocks are not run here (CI runs
the two install commands, `.ci/run`).
"""

from __future__ import annotations

import re

import pytest
import torch

from conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block of the README."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


BLOCKS = python_blocks()


def test_the_tour_has_its_python_blocks():
    assert len(BLOCKS) >= 6, "a README block lost its ```python fence?"


@pytest.fixture
def one_thread():
    # On cores shared with other jobs, two OpenMP threads wait on each other: the evaluation
    # block took 17 s with two and 1.7 s with one (load ~3, benchmarks/RESULTS.md). This test
    # checks that the blocks run, not how fast, so it takes the thread count out of it.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_python_block_runs_as_pasted(line, code, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # blocks write runs/...; keep them out of the checkout
    with torch.random.fork_rng():  # a block may seed torch; do not leak that into other tests
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def test_readme_offers_the_cpu_only_torch_install_with_its_size():
    text = README.read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "5.7 GB" in text and "3.2 GB" in text  # what the CUDA build costs
    assert re.search(r"CPU wheel is a \d+ MB download, [\d.]+ GB installed", text)


def test_readme_demo_time_is_the_one_measured_in_results():
    text = README.read_text()
    assert "about a minute" not in text
    intro = text[: text.index("## A short tour")]
    stated = re.findall(r"\d+ min \d+ s|\d+ s\b", intro)
    assert stated, "the README should state the demo's measured time"
    results = RESULTS.read_text()
    for figure in stated:
        assert figure in results, f"README says {figure!r}; benchmarks/RESULTS.md does not"
