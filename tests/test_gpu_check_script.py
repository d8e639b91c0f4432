"""benchmarks/gpu_check.py, the script run whenever a GPU is lent, checked without one:
its --dry-run plan names every step, and its report writer turns step results (faked
here, in the formats the real steps print) into the JSON and Markdown RESULTS.md takes.
Also benchmarks/ratio_table.py, which it uses for the overhead table."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"
STEPS = ["env", "setup", "extension", "tests", "graph", "overhead", "eot", "bandwidth", "l2p"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gc():
    return _load("gpu_check")


def _dry_run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _planned(stdout: str) -> list[str]:
    return re.findall(r"^\[(\w+)\]", stdout, flags=re.MULTILINE)


def test_dry_run_names_every_step_and_command(gc):
    done = _dry_run()
    assert done.returncode == 0, done.stderr
    assert gc.STEP_NAMES == STEPS
    assert _planned(done.stdout) == STEPS
    for command in (
        "gpu_check.py --worker env",
        "gpu_check.py --worker extension",
        "python -m pytest tests -k",
        "--graph-backend triton",
        "--graph-backend cuda",
        "--graph-compiled",
        "benchmarks/test_bench_overhead.py --benchmark-only -k "
        "'cuda and not plain-cuda and not compiled-cuda'",
        "benchmarks/test_bench_attacks.py --benchmark-only -k 'paired and cuda' -s",
        "benchmarks/gpu_bandwidth.py --backend triton",
        "benchmarks/gpu_bandwidth.py --backend cuda",
        "benchmarks/l2p_epoch.py --images",
    ):
        assert command in done.stdout, command
    # Every command has a time limit, and they fit the default budget's story (< 8 min).
    assert len(re.findall(r"^  \(\d+ s\) ", done.stdout, flags=re.MULTILINE)) == 13
    assert gc.DEFAULT_BUDGET_S < 8 * 60


def test_dry_run_needs_no_torch():
    code = f"import runpy, sys; runpy.run_path({str(SCRIPT)!r}); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_only_and_skip_keep_env_and_setup():
    assert _planned(_dry_run("--only", "graph,l2p").stdout) == ["env", "setup", "graph", "l2p"]
    assert _planned(_dry_run("--only", "tests", "--only", "overhead").stdout) == [
        "env",
        "setup",
        "tests",
        "overhead",
    ]
    skipped = _planned(_dry_run("--skip", "l2p,bandwidth").stdout)
    assert skipped == ["env", "setup", "extension", "tests", "graph", "overhead", "eot"]


def test_unknown_step_is_a_usage_error_that_lists_the_steps():
    done = _dry_run("--only", "bandwith")
    assert done.returncode == 2
    assert "unknown step 'bandwith'" in done.stderr
    assert ", ".join(STEPS) in done.stderr


def test_report_goes_under_OUT_when_set(tmp_path):
    done = _dry_run(env={**os.environ, "OUT": str(tmp_path)})
    assert f"json: {tmp_path / 'gpu_check.json'}" in done.stdout
    assert f"markdown: {tmp_path / 'gpu_check.md'}" in done.stdout
    explicit = _dry_run("--out", str(tmp_path / "run1.json"))
    assert f"overhead_json: {tmp_path / 'run1-overhead.json'}" in explicit.stdout


# ---- the report, from fake results in the formats the steps really print ----------------

BANDWIDTH_OUTPUT = """\
# NVIDIA H100 80GB HBM3 | torch 2.11.0+cu130 | triton 3.6.0 | python 3.12.3 | backend triton | float32
shape                 op                fused ms  eager ms  speed-up     GB/s  % copy
(128, 16, 32, 32)     d2d copy            0.0120    0.0120     1.00x     2796    100%
(128, 16, 32, 32)     inject fwd          0.0130    0.0450     3.46x     2581     92%
(128, 16, 32, 32)     inject fwd+bwd      0.0250    0.0900     3.60x     2013     72%
"""  # noqa: E501

L2P_OUTPUT = """\
Learn2Perturb epoch, ResNet-V1(20), 10000 images, batch 128, PGD-7, NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, 16 threads
ops        s/epoch  images/s
eager        30.00     333.3
fastnoise    20.00     500.0
speed-up: 1.50x
"""  # noqa: E501

EOT_OUTPUT = """\
attack benchmarks: torch 2.11.0+cu130, 16 threads, load average 1.2 on 16 CPUs, NVIDIA H100 80GB HBM3
workload              approach        size               best ms  median ms      rate  speed-up
-----------------------------------------------------------------------------------------------
best of 5 rounds; rate (at best): EOT copies (image x draw) or images per second; speed-up: batched over the loop, best vs best.
EOT grad l2p L=16     cuda  batched vs loop, back-to-back pairs: median speed-up 1.62x (range 1.55x to 1.70x)
EOT grad l2p L=80     cuda  batched vs loop, back-to-back pairs: median speed-up 4.10x (range 3.90x to 4.25x)
EOT grad pni-w L=16   cuda  batched vs loop, back-to-back pairs: median speed-up 0.98x (range 0.95x to 1.01x)
3 passed, 10 deselected in 21.50s
"""  # noqa: E501

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3">
<testcase classname="tests.test_triton" name="test_a" time="0.1"/>
<testcase classname="tests.test_triton" name="test_b" time="0.1">
  <failure message="AssertionError: noise differs">trace</failure></testcase>
<testcase classname="tests.test_nn" name="test_c" time="0.0">
  <skipped type="pytest.skip" message="needs a CUDA device">skip</skipped></testcase>
</testsuite></testsuites>
"""


def _bench(name, group, device, backend, median, minimum, **info):
    return {
        "name": name,
        "group": group,
        "extra_info": {"device": device, "backend": backend, **info},
        "stats": {"median": median, "min": minimum},
    }


def fake_benchmark_json() -> dict:
    common = dict(op="pnil", passes="fwd", compiled=False, shape=[2, 4, 2, 2], threads=1)
    common["torch"] = "2.11.0+cu130"
    group = "cuda pnil fwd, no compile"
    return {
        "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 16}, "python_version": "3.12"},
        "commit_info": {"id": "unversioned"},
        "datetime": "2026-11-27T12:00:00",
        "benchmarks": [
            _bench("e", group, "cuda", "eager", 20e-6, 18e-6, device_name="H100", **common),
            _bench("a", group, "cuda", "auto", 30e-6, 27e-6, device_name="H100", **common),
            _bench("t", group, "cuda", "triton", 25e-6, 27e-6, device_name="H100", **common),
            _bench("lonely", "cuda other", "cuda", "cuda", 1e-5, 1e-5),
        ],
    }


def _fake_commands(gc, step, paths):
    """CommandResults as the real commands leave them."""
    run = lambda command, **kw: gc.CommandResult(command.label, command.argv, 0, 1.5, **kw)
    cmds = step.commands
    if step.name == "env":
        env = dict(device_name="NVIDIA H100 80GB HBM3", cuda_available=True, torch="2.11.0")
        env.update(torch_cuda="13.0", triton="3.6.0", python="3.12.3", driver="580.1")
        env.update(capability="9.0", sm_count=132, device_memory_gib=79.2, commit="abc")
        return [run(cmds[0], result=env)]
    if step.name == "setup":
        return [run(cmds[0], result={"ok": True, "summary": "pip install -e /repo"})]
    if step.name == "extension":  # crashed: no result line, exit 1
        tail = "Traceback ...\nRuntimeError: nvcc exploded"
        return [gc.CommandResult(cmds[0].label, cmds[0].argv, 1, 3.0, output_tail=tail)]
    if step.name == "tests":
        paths["tests_xml"].write_text(JUNIT)
        return [gc.CommandResult(cmds[0].label, cmds[0].argv, 1, 40.0)]
    if step.name == "graph":
        triton = {"label": "triton", "captured": True, "replays_differ": False}
        cuda = {"label": "cuda", "captured": False, "error": "capture: RuntimeError: boom"}
        return [
            run(cmds[0], result={**triton, "eager_differ": True}),
            run(cmds[1], result=cuda),
            gc.CommandResult(cmds[2].label, cmds[2].argv, -9, 120.0, timed_out=True),
        ]
    if step.name == "overhead":
        paths["overhead_json"].write_text(json.dumps(fake_benchmark_json()))
        return [run(cmds[0])]
    if step.name == "eot":
        return [run(cmds[0], output_tail=EOT_OUTPUT)]
    if step.name == "bandwidth":
        cuda_fail = "RuntimeError: fastnoise backend 'cuda' is not available"
        return [
            run(cmds[0], output_tail=BANDWIDTH_OUTPUT),
            gc.CommandResult(cmds[1].label, cmds[1].argv, 1, 2.0, output_tail=cuda_fail),
        ]
    if step.name == "l2p":
        return [run(cmds[0], output_tail=L2P_OUTPUT)]
    raise AssertionError(step.name)


def test_report_json_and_markdown_from_fake_step_results(gc, tmp_path):
    paths = gc.output_paths(tmp_path / "gpu_check.json")
    report = gc.new_report(450, ["--fake"])
    for step in gc.build_plan(paths["json"]):
        status, summary, details = gc.summarize(step, _fake_commands(gc, step, paths), paths)
        result = gc.StepResult(step.name, status, 2.0, summary, details)
        if step.name == "env":
            report["env"] = details
        report["steps"].append(gc.asdict(result))
    gc.write_report(report, paths)

    saved = json.loads(paths["json"].read_text())
    assert {"schema", "started", "env", "steps", "budget_s", "seconds"} <= set(saved)
    statuses = {s["name"]: s["status"] for s in saved["steps"]}
    assert statuses == {
        "env": "passed",
        "setup": "passed",
        "extension": "failed",
        "tests": "failed",
        "graph": "timeout",
        "overhead": "done",
        "eot": "done",
        "bandwidth": "failed",
        "l2p": "done",
    }
    steps = {s["name"]: s for s in saved["steps"]}
    assert steps["tests"]["details"]["counts"] == {
        "passed": 1,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
    }
    assert steps["tests"]["summary"] == "1 passed, 1 failed, 1 skipped"
    assert "nvcc exploded" in steps["extension"]["summary"]
    graph = steps["graph"]["summary"]
    assert "SAME noise every replay: triton" in graph and "capture failed: cuda" in graph
    assert steps["bandwidth"]["details"]["triton"]["rows"][1]["speedup"] == 3.46
    assert steps["l2p"]["details"]["speedup"] == 1.5
    assert steps["eot"]["details"]["rows"][1]["median"] == 4.1
    assert [r["ratio"] for r in steps["overhead"]["details"]["median_ratios"]] == [1.5, 1.25]

    md = paths["markdown"].read_text()
    assert md.startswith("### GPU check: NVIDIA H100 80GB HBM3, ")
    assert "driver 580.1; torch 2.11.0 (CUDA 13.0), triton 3.6.0" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| step | status | time | result |"
    assert [row.split(" | ")[0][2:] for row in table[2 : 2 + len(STEPS)]] == STEPS
    assert "| tests | failed | 2 s | 1 passed, 1 failed, 1 skipped |" in md
    assert "- `tests.test_triton::test_b`: AssertionError: noise differs" in md
    assert "| triton | yes | no | yes |" in md  # the graph table
    assert "| (128, 16, 32, 32) | inject fwd | 0.0130 | 0.0450 | 3.46x | 2581 | 92% |" in md
    assert "| fastnoise | 20.00 | 500.0 |" in md and "Speed-up: 1.50x." in md
    assert "| EOT grad pni-w L=16 cuda | 0.98x | 0.95x | 1.01x |" in md
    assert "| cuda | pnil | fwd | no | auto | 20.00 | 30.00 | 1.50 | 1.50 |" in md


def test_eot_step_parses_the_paired_speedup_lines(gc):
    parsed = gc.parse_eot(EOT_OUTPUT)
    assert parsed["header"].startswith("attack benchmarks: torch 2.11.0+cu130")
    assert parsed["rows"] == [
        {"workload": "EOT grad l2p L=16 cuda", "median": 1.62, "min": 1.55, "max": 1.7},
        {"workload": "EOT grad l2p L=80 cuda", "median": 4.1, "min": 3.9, "max": 4.25},
        {"workload": "EOT grad pni-w L=16 cuda", "median": 0.98, "min": 0.95, "max": 1.01},
    ]
    command = gc.CommandResult("pytest-benchmark", ["pytest"], 0, 30.0, output_tail=EOT_OUTPUT)
    status, summary, details = gc.summarize_eot([command])
    assert status == "done" and details == parsed
    assert summary == (
        "batched over the loop, median (range) of back-to-back pairs: "
        "l2p L=16 cuda 1.62x (1.55x-1.70x), l2p L=80 cuda 4.10x (3.90x-4.25x), "
        "pni-w L=16 cuda 0.98x (0.95x-1.01x)"
    )


def test_eot_step_without_cuda_cases_says_why(gc):
    tail = "10 deselected in 0.50s\nno tests ran"
    command = gc.CommandResult("pytest-benchmark", ["pytest"], 5, 3.0, output_tail=tail)
    status, summary, details = gc.summarize_eot([command])
    assert status == "failed" and details["rows"] == [] and summary == "no tests ran"


def test_ratio_table_pairs_each_row_with_its_eager_row(tmp_path):
    ratio_table = _load("ratio_table")
    md = ratio_table.markdown(fake_benchmark_json())
    lines = md.splitlines()
    assert "Test CPU (16 CPUs); H100; torch 2.11.0+cu130; Python 3.12; 1 thread(s)" in lines[0]
    assert "unversioned" not in lines[0]  # not a commit id
    assert lines[2].startswith("| device | op | pass | torch.compile | backend | eager µs |")
    assert lines[4] == "| cuda | pnil | fwd | no | auto | 20.00 | 30.00 | 1.50 | 1.50 |"
    assert lines[5] == "| cuda | pnil | fwd | no | triton | 20.00 | 25.00 | 1.25 | 1.50 |"
    assert lines[-1] == "No eager row to compare with: lonely."
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(fake_benchmark_json()))
    assert ratio_table.main([str(source), "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == md
    assert ratio_table.main([str(tmp_path / "missing.json")]) == 2


def test_tree_hash_follows_sources_not_build_outputs(gc, tmp_path):
    """The env step's tree hash (the device's .git may be stale) changes with a source
    file and ignores caches and build outputs; --tree-hash prints the one of this tree."""
    (tmp_path / "fastnoise").mkdir()
    (tmp_path / "csrc").mkdir()
    (tmp_path / "fastnoise" / "a.py").write_text("x = 1\n")
    (tmp_path / "csrc" / "k.cu").write_text("// kernel\n")
    (tmp_path / "setup.py").write_text("# setup\n")
    first = gc.tree_fingerprint(tmp_path)
    (tmp_path / "fastnoise" / "__pycache__").mkdir()
    (tmp_path / "fastnoise" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "fastnoise" / "_C.so").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("not a source\n")
    assert gc.tree_fingerprint(tmp_path) == first
    (tmp_path / "csrc" / "k.cu").write_text("// kernel, changed\n")
    assert gc.tree_fingerprint(tmp_path) != first
    printed = subprocess.run(
        [sys.executable, str(SCRIPT), "--tree-hash"], capture_output=True, text=True, timeout=60
    )
    assert printed.returncode == 0
    assert printed.stdout.strip() == gc.tree_fingerprint(REPO_ROOT)


def test_bandwidth_table_is_parsed_whole_from_a_long_output(gc, tmp_path):
    """GPU run 3: the bandwidth table (42 rows, ~4.5 KB) was parsed from a 3 KB output tail,
    so the report lost its header line and the first shape's rows."""
    header = "# NVIDIA H200 | torch 2.11.0+cu130 | backend cuda | float32"
    rows = [
        f"(128, {c}, 32, 32)     {op:<18}  0.0151    0.0253     1.67x     1108     60%"
        for c in range(1, 8)
        for op in ("d2d copy", "inject fwd", "inject fwd+bwd", "pnil fwd", "pnil fwd+bwd", "pgd")
    ]
    table = tmp_path / "table.txt"
    table.write_text("\n".join([header, "shape  op  fused ms", *rows]) + "\n")
    assert len(table.read_text()) > gc.TAIL_CHARS
    plan = {s.name: s for s in gc.build_plan(tmp_path / "r.json")}
    bandwidth = plan["bandwidth"].commands[0]
    command = gc.Command("cuda", ["cat", str(table)], 30, bandwidth.tail_chars)
    with open(tmp_path / "log", "w") as log:
        result = gc.run_command(command, 30, log)
    _, _, details = gc.summarize_bandwidth([result])
    assert details["cuda"]["header"] == header[2:]
    assert len(details["cuda"]["rows"]) == len(rows)


def test_ratio_table_reports_per_call_times_of_multi_call_rounds():
    """The CUDA overhead rows time 8 calls per round: the table divides the round by the
    ``calls_per_round`` it records, and the ratios stay the rounds' ratios."""
    ratio_table = _load("ratio_table")
    data = fake_benchmark_json()
    for bench in data["benchmarks"][:3]:
        bench["stats"] = {k: 8 * v for k, v in bench["stats"].items()}
        bench["extra_info"]["calls_per_round"] = 8
    lines = ratio_table.markdown(data).splitlines()
    assert lines[4] == "| cuda | pnil | fwd | no | auto | 20.00 | 30.00 | 1.50 | 1.50 |"
    assert lines[5] == "| cuda | pnil | fwd | no | triton | 20.00 | 25.00 | 1.25 | 1.50 |"
