"""The one prepared script to run whenever a GPU is lent: every GPU check and benchmark
of this repository, each in its own process with its own time limit, inside a 7.5-minute
budget (``--budget``) sized for 8 minutes of one H100.

    python benchmarks/gpu_check.py                  # everything; JSON + Markdown report
    python benchmarks/gpu_check.py --dry-run        # the plan: steps and commands, no GPU
    python benchmarks/gpu_check.py --only tests,graph

Steps, in order (``env`` and ``setup`` always run: the others need them):

  env        device, driver, torch / triton / CUDA / Python versions, commit, tree hash
  setup      makes ``import fastnoise`` work from this checkout (pip install -e, offline)
  extension  builds / loads the C++/CUDA extension and lists the backends
  tests      pytest on the GPU tests of tests/ (Triton on CUDA, the CUDA kernels, ...)
  graph      a small model with fastnoise noise layers captured by torch.cuda.graph (and
             torch.compile mode="reduce-overhead"): does capture work, and do two
             replays draw different noise?
  overhead   benchmarks/test_bench_overhead.py on CUDA: per-call cost vs eager
  eot        benchmarks/test_bench_attacks.py on CUDA: batched EOT gradient vs the loop of
             draws, median of back-to-back pairs
  bandwidth  benchmarks/gpu_bandwidth.py, triton and cuda backends
  l2p        benchmarks/l2p_epoch.py: one Learn2Perturb ResNet-20 epoch, fused vs eager

A failing or hanging step is recorded (exit status, output tail, time) and the next one
runs. The report is written after every step, so a run cut short keeps what it finished:
``--out`` (default ``$OUT/gpu_check.json`` when ``OUT`` is set, else
``benchmarks/gpu_check.json``), the Markdown summary beside it (``.md``), every
command's full output (``.log``), the pytest JUnit XML (``-tests.xml``) and the overhead
benchmark's pytest-benchmark JSON (``-overhead.json``). Exit status: 0 when every step
passed, 1 when one failed or timed out, 2 on a usage error or without a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCRIPT = Path(__file__).resolve()
MARKER = "@@gpu_check "  # a worker's last line: this marker, then its result as JSON
DEFAULT_BUDGET_S = 450  # 7.5 minutes: the whole run ends inside 8 minutes on an H100
MIN_STEP_S = 15  # a step with less time than this left is skipped, not started
GRACE_S = 10  # after SIGINT, time for pytest to write its JSON/XML before SIGKILL
TAIL_CHARS = 3000  # output kept in the JSON per command; the .log has all of it
ALWAYS = ("env", "setup")

# The GPU tests: test_triton.py runs on CUDA when there is one; the CUDA-only tests are
# named cuda/gpu. Left out: the nvcc compile test (the extension step builds the same
# library; a second full build would cost minutes) and the CPU-only modules the names
# also match (the sm_90 AOT compile of test_triton_aot.py alone takes minutes; CI runs it).
TEST_SELECTION = (
    "(test_triton or cuda or gpu) and not test_cuda_sources_compile_and_register"
    " and not test_triton_aot and not test_gpu_check_script"
)
TEST_WORKERS = 6  # pytest-xdist processes when it is installed and the CPUs allow
L2P_IMAGES = 5120  # 40 batches of 128, PGD-7 each: seconds per side on an H100


@dataclass
class Command:
    label: str
    argv: list[str]
    timeout_s: float
    # Output kept for parsing and the JSON; the bandwidth table is ~4.5 KB, and a 3 KB
    # tail lost its header and first shape (GPU run 3).
    tail_chars: int = TAIL_CHARS


@dataclass
class Step:
    name: str
    description: str
    commands: list[Command]
    needs_gpu: bool = True


@dataclass
class CommandResult:
    label: str
    argv: list[str]
    returncode: int | None = None  # None: not run
    seconds: float = 0.0
    timed_out: bool = False
    output_tail: str = ""
    result: dict | None = None  # a worker's JSON result


@dataclass
class StepResult:
    name: str
    status: str  # passed, failed, timeout, error, skipped, done (a measurement that ran)
    seconds: float = 0.0
    summary: str = ""
    details: dict = field(default_factory=dict)
    commands: list[CommandResult] = field(default_factory=list)


# ---- the plan ----------------------------------------------------------------------------


def _worker(name: str, *extra: str) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", name, *extra]


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider"]


def _parallel() -> list[str]:
    """``-n N`` for pytest-xdist where it is installed and there are CPUs to spare: the
    Triton tests spend most of their time compiling kernels, one CPU each."""
    if importlib.util.find_spec("xdist") is None or (os.cpu_count() or 1) < 2 * TEST_WORKERS:
        return []
    return ["-n", str(TEST_WORKERS)]


def output_paths(out: Path) -> dict[str, Path]:
    stem = out.with_suffix("")
    return {
        "json": out,
        "markdown": stem.with_suffix(".md"),
        "log": stem.with_suffix(".log"),
        "tests_xml": Path(f"{stem}-tests.xml"),
        "overhead_json": Path(f"{stem}-overhead.json"),
    }


def build_plan(out: Path) -> list[Step]:
    paths = output_paths(out)
    py = sys.executable
    xml = paths["tests_xml"]
    tests = ["tests", "-k", TEST_SELECTION, *_parallel()]
    # Not the explicit `cuda` rows: `auto` runs the C++/CUDA kernels where they are built,
    # so those rows time the same code (and with the extension missing, there are none).
    # The time goes to the Triton rows instead: eager (their host path was cut) and compiled
    # (the triton_ops, each its own graph).
    overhead = [str(HERE / "test_bench_overhead.py"), "--benchmark-only"]
    overhead += ["-k", "cuda and not plain-cuda and not compiled-cuda"]
    overhead.append(f"--benchmark-json={paths['overhead_json']}")
    # Parsed from the output tail (TAIL_CHARS): the EOT lines print just before
    # pytest-benchmark's short table of the 3 cases.
    eot = [str(HERE / "test_bench_attacks.py"), "--benchmark-only", "-k", "paired and cuda", "-s"]
    return [
        Step("env", "device, driver and versions", [Command("env", _worker("env"), 60)], False),
        Step(
            "setup",
            "import fastnoise from this checkout; pip install --no-deps -e . (offline) if not",
            [Command("setup", _worker("setup"), 180)],
            False,
        ),
        Step(
            "extension",
            "build/load the C++/CUDA extension; fastnoise.backends()",
            [Command("extension", _worker("extension"), 300)],
        ),
        Step(
            "tests",
            "pytest: the GPU tests of tests/",
            [Command("pytest", _pytest(*tests, f"--junitxml={xml}"), 240)],
        ),
        Step(
            "graph",
            "torch.cuda.graph capture of a model with PNIL + PerturbationInjection: "
            "capture works? two replays draw different noise?",
            [
                Command("triton", _worker("graph", "--graph-backend", "triton"), 60),
                Command("cuda", _worker("graph", "--graph-backend", "cuda"), 60),
                Command(
                    "compile-reduce-overhead",
                    _worker("graph", "--graph-backend", "auto", "--graph-compiled"),
                    120,
                ),
                Command(  # the Triton kernels as triton_ops (fastnoise._triton_ops)
                    "compile-reduce-overhead-triton",
                    _worker("graph", "--graph-backend", "triton", "--graph-compiled"),
                    120,
                ),
            ],
        ),
        Step(
            "overhead",
            "per-call cost on a tiny tensor vs eager PyTorch (benchmarks/test_bench_overhead.py)",
            [Command("pytest-benchmark", _pytest(*overhead), 200)],
        ),
        Step(
            "eot",
            "batched EOT gradient vs the sequential loop of draws on CUDA, back-to-back pairs "
            "(benchmarks/test_bench_attacks.py)",
            [Command("pytest-benchmark", _pytest(*eot), 90)],
        ),
        Step(
            "bandwidth",
            "fused vs eager, GB/s against a device-to-device copy (benchmarks/gpu_bandwidth.py)",
            [
                Command(b, [py, str(HERE / "gpu_bandwidth.py"), "--backend", b], 75, 4 * TAIL_CHARS)
                for b in ("triton", "cuda")
            ],
        ),
        Step(
            "l2p",
            f"one Learn2Perturb ResNet-V1(20) epoch of {L2P_IMAGES} images, fused vs eager",
            [
                Command(
                    "l2p_epoch",
                    [py, str(HERE / "l2p_epoch.py"), "--images", str(L2P_IMAGES)],
                    150,
                )
            ],
        ),
    ]


STEP_NAMES = [step.name for step in build_plan(Path("gpu_check.json"))]


def _display(argv: list[str]) -> str:
    """A command as one would type it in the repository root."""
    shown = ["python" if a == sys.executable else a for a in argv]
    shown = [a.replace(str(REPO) + os.sep, "") for a in shown]
    return shlex.join(shown)


def print_plan(steps: list[Step], paths: dict[str, Path], budget_s: float) -> None:
    print(f"gpu_check plan: {len(steps)} steps, at most {budget_s:.0f} s in all")
    for step in steps:
        gpu = "" if step.needs_gpu else ", no GPU needed"
        print(f"\n[{step.name}] {step.description}{gpu}")
        for command in step.commands:
            print(f"  ({command.timeout_s:.0f} s) {_display(command.argv)}")
    print("\nwrites:")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")


# ---- running a command ---------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # output in order, and up to the kill
    env.setdefault("MPLBACKEND", "Agg")
    # Inductor compiles in-process: its worker pool's atexit shutdown hung a finished
    # pytest run until its time limit on the first H100 run.
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    return env


def run_command(command: Command, timeout_s: float, log) -> CommandResult:
    """Run in its own process group; on timeout SIGINT (pytest then still writes its
    reports), then SIGKILL. Output goes to a file, not a pipe, so a chatty child can't
    block on a full pipe."""
    result = CommandResult(command.label, command.argv)
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+b") as out:
        try:
            proc = subprocess.Popen(
                command.argv,
                cwd=REPO,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            result.returncode = -1
            result.output_tail = f"could not start: {error}"
            return result
        try:
            result.returncode = proc.wait(timeout=timeout_s)
        except KeyboardInterrupt:  # the child has its own session: Ctrl-C must reach it
            _signal_group(proc, signal.SIGKILL)
            raise
        except subprocess.TimeoutExpired:
            result.timed_out = True
            _signal_group(proc, signal.SIGINT)
            try:
                result.returncode = proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                result.returncode = proc.wait()
        result.seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    log.write(f"\n===== {command.label}: {_display(command.argv)}\n")
    log.write(text)
    log.write(f"===== exit {result.returncode} after {result.seconds:.1f} s")
    log.write(" (timed out)\n" if result.timed_out else "\n")
    log.flush()
    result.output_tail = text[-command.tail_chars :]
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            try:
                result.result = json.loads(line[len(MARKER) :])
            except ValueError:
                pass
            break
    return result


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this run started (start_new_session)
    except ProcessLookupError:
        pass


# ---- turning command results into a step result --------------------------------------


def _base_status(commands: list[CommandResult]) -> str:
    if any(c.timed_out for c in commands):
        return "timeout"
    if any(c.returncode not in (0, None) for c in commands):
        return "failed"
    return "passed"


def _first_error(command: CommandResult) -> str:
    lines = [ln for ln in command.output_tail.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.search(r"Error|error:|Exception", ln)]
    return (errors or lines or ["no output"])[-1].strip()[:200]


def _why(commands: list[CommandResult]) -> str:
    bad = [c for c in commands if c.timed_out or c.returncode not in (0, None)]
    return "; ".join(
        f"{c.label}: " + ("timed out" if c.timed_out else _first_error(c)) for c in bad
    )


def summarize_env(commands: list[CommandResult]) -> tuple[str, str, dict]:
    info = commands[0].result or {}
    if not info:
        return _base_status(commands), _why(commands) or "no result", {}
    name = info.get("device_name") or "no CUDA device"
    versions = (
        f"torch {info.get('torch')} (CUDA {info.get('torch_cuda')}), triton {info.get('triton')}"
    )
    return "passed", f"{name}; {versions}", info


def summarize_worker(commands: list[CommandResult]) -> tuple[str, str, dict]:
    result = commands[0].result
    if result is None:
        status = _base_status(commands) if commands[0].returncode else "error"
        return status, _why(commands) or _first_error(commands[0]), {}
    status = "passed" if result.get("ok") else "failed"
    return status, result.get("summary", ""), result


def summarize_tests(commands: list[CommandResult], xml_path: Path) -> tuple[str, str, dict]:
    command = commands[0]
    details = parse_junit(xml_path) if xml_path.is_file() else {}
    if details:
        counts = details["counts"]
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    else:  # no XML (killed before it was written): pytest's last line, if any
        lines = [ln for ln in command.output_tail.splitlines() if re.search(r"\d+ \w+", ln)]
        summary = lines[-1].strip("= ") if lines else _first_error(command)
    if command.timed_out:
        return "timeout", f"timed out; {summary}", details
    if command.returncode == 0:
        return "passed", summary, details
    if command.returncode == 1:
        return "failed", summary, details
    return "error", f"pytest exit {command.returncode}: {summary}", details


def parse_junit(path: Path) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return {}
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "errors"
                message = (child.get("message") or child.text or "").strip().splitlines()
                failures.append({"test": name, "message": (message or [""])[0][:300]})
            elif child.tag == "skipped":
                outcome = "skipped"
                reason = (child.get("message") or "").strip()[:200]
                skips[reason] = skips.get(reason, 0) + 1
        counts[outcome] += 1
    return {"counts": counts, "failures": failures[:50], "skip_reasons": skips}


def summarize_graph(commands: list[CommandResult]) -> tuple[str, str, dict]:
    results = []
    for c in commands:
        r = dict(c.result or {})
        r.setdefault("label", c.label)
        if c.result is None:
            r["error"] = "timed out" if c.timed_out else _first_error(c)
            r.setdefault("captured", False)
        results.append(r)
    captured = [r["label"] for r in results if r.get("captured")]
    fresh = [r["label"] for r in results if r.get("replays_differ")]
    frozen = [r["label"] for r in results if r.get("captured") and not r.get("replays_differ")]
    parts = [f"captured: {', '.join(captured) or 'none'}"]
    if fresh:
        parts.append(f"fresh noise per replay: {', '.join(fresh)}")
    if frozen:
        parts.append(f"SAME noise every replay: {', '.join(frozen)}")
    refused = [r["label"] for r in results if r.get("refused")]
    if refused:
        parts.append(f"seed=None refused in capture (host seeds): {', '.join(refused)}")
    failed = [r["label"] for r in results if not r.get("captured") and not r.get("refused")]
    if failed:
        parts.append(f"capture failed: {', '.join(failed)}")
    ok = len(fresh) + len(refused) == len(results)
    if any(c.timed_out for c in commands):
        status = "timeout"
    else:
        status = "passed" if ok else "failed"
    return status, "; ".join(parts), {"runs": results}


BANDWIDTH_ROW = re.compile(
    r"^(\([\d, ]+\))\s+(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(\d+)\s+(\d+)%\s*$"
)


def parse_bandwidth(text: str) -> dict:
    header = next((ln[2:].strip() for ln in text.splitlines() if ln.startswith("# ")), "")
    rows = []
    for line in text.splitlines():
        match = BANDWIDTH_ROW.match(line.strip())
        if match:
            shape, op, fused, eager, speedup, gbs, pct = match.groups()
            rows.append(
                dict(
                    shape=shape,
                    op=op,
                    fused_ms=float(fused),
                    eager_ms=float(eager),
                    speedup=float(speedup),
                    gbs=int(gbs),
                    pct_copy=int(pct),
                )
            )
    return {"header": header, "rows": rows}


def summarize_bandwidth(commands: list[CommandResult]) -> tuple[str, str, dict]:
    details, parts = {}, []
    for c in commands:
        parsed = parse_bandwidth(c.output_tail)
        details[c.label] = parsed
        ups = [r["speedup"] for r in parsed["rows"] if r["op"] != "d2d copy"]
        if ups:
            parts.append(f"{c.label}: speed-up over eager {min(ups):.2f}x-{max(ups):.2f}x")
        else:
            parts.append(f"{c.label}: " + ("timed out" if c.timed_out else _first_error(c)))
    status = _base_status(commands)
    return ("done" if status == "passed" else status), "; ".join(parts), details


def summarize_overhead(commands: list[CommandResult], json_path: Path) -> tuple[str, str, dict]:
    command = commands[0]
    details: dict = {}
    summary = ""
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text())
            details["table"] = _ratio_table().markdown(data)
            ratios = _median_ratios(data)
            details["median_ratios"] = ratios
            if ratios:
                values = [r["ratio"] for r in ratios]
                summary = (
                    f"{len(values)} fastnoise rows, fastnoise / eager {min(values):.2f}"
                    f"-{max(values):.2f} (median time per call)"
                )
        except (OSError, ValueError, KeyError) as error:
            summary = f"unreadable benchmark JSON: {error}"
    status = _base_status(commands)
    if not summary:
        summary = "timed out" if command.timed_out else _first_error(command)
    return ("done" if status == "passed" else status), summary, details


def _median_ratios(data: dict) -> list[dict]:
    pairs, _ = _ratio_table()._pairs(data.get("benchmarks", []))
    return [
        {
            "group": f.get("group"),
            "backend": f["extra_info"]["backend"],
            "ratio": f["stats"]["median"] / b["stats"]["median"],
        }
        for b, f in pairs
    ]


def parse_l2p(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        if line.startswith("Learn2Perturb epoch"):
            out["header"] = line.strip()
        match = re.match(r"^(eager|fastnoise)\s+([\d.]+)\s+([\d.]+)\s*$", line.strip())
        if match:
            out[match[1]] = {"s_per_epoch": float(match[2]), "images_per_s": float(match[3])}
        match = re.match(r"^speed-up: ([\d.]+)x", line.strip())
        if match:
            out["speedup"] = float(match[1])
    return out


def summarize_l2p(commands: list[CommandResult]) -> tuple[str, str, dict]:
    command = commands[0]
    details = parse_l2p(command.output_tail)
    status = _base_status(commands)
    if "speedup" in details:
        summary = (
            f"eager {details['eager']['s_per_epoch']:.2f} s, fastnoise "
            f"{details['fastnoise']['s_per_epoch']:.2f} s per epoch: {details['speedup']:.2f}x"
        )
    else:
        summary = "timed out" if command.timed_out else _first_error(command)
    return ("done" if status == "passed" else status), summary, details


# test_bench_attacks.py's summary line of one paired EOT case, e.g.
# "EOT grad l2p L=16     cuda  batched vs loop, back-to-back pairs: median speed-up 1.62x
# (range 1.55x to 1.70x)" (one line).
EOT_PAIRED_LINE = re.compile(
    r"^(EOT grad .+?)\s+batched vs loop, back-to-back pairs: median speed-up ([\d.]+)x "
    r"\(range ([\d.]+)x to ([\d.]+)x\)"
)


def parse_eot(text: str) -> dict:
    header = next((ln.strip() for ln in text.splitlines() if ln.startswith("attack bench")), "")
    rows = []
    for line in text.splitlines():
        match = EOT_PAIRED_LINE.match(line.strip())
        if match:
            workload, median, low, high = match.groups()
            rows.append(
                dict(
                    workload=" ".join(workload.split()),  # the device column's padding
                    median=float(median),
                    min=float(low),
                    max=float(high),
                )
            )
    return {"header": header, "rows": rows}


def summarize_eot(commands: list[CommandResult]) -> tuple[str, str, dict]:
    command = commands[0]
    details = parse_eot(command.output_tail)
    status = _base_status(commands)
    if details["rows"]:
        speedups = ", ".join(
            f"{r['workload'].removeprefix('EOT grad ')} {r['median']:.2f}x "
            f"({r['min']:.2f}x-{r['max']:.2f}x)"
            for r in details["rows"]
        )
        summary = f"batched over the loop, median (range) of back-to-back pairs: {speedups}"
    else:
        summary = "timed out" if command.timed_out else _first_error(command)
    return ("done" if status == "passed" else status), summary, details


def summarize(step: Step, commands: list[CommandResult], paths: dict[str, Path]):
    """(status, one-line summary, details) of a step that ran."""
    if step.name == "env":
        return summarize_env(commands)
    if step.name in ("setup", "extension"):
        return summarize_worker(commands)
    if step.name == "tests":
        return summarize_tests(commands, paths["tests_xml"])
    if step.name == "graph":
        return summarize_graph(commands)
    if step.name == "overhead":
        return summarize_overhead(commands, paths["overhead_json"])
    if step.name == "eot":
        return summarize_eot(commands)
    if step.name == "bandwidth":
        return summarize_bandwidth(commands)
    if step.name == "l2p":
        return summarize_l2p(commands)
    return _base_status(commands), _why(commands), {}


def _ratio_table():
    """benchmarks/ratio_table.py, loaded by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "fastnoise_bench_ratio_table", HERE / "ratio_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the report: JSON and Markdown ---------------------------------------------------


def new_report(budget_s: float, argv: list[str]) -> dict:
    return {
        "schema": 1,
        "script": "benchmarks/gpu_check.py",
        "argv": argv,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "finished": None,
        "budget_s": budget_s,
        "seconds": 0.0,
        "env": {},
        "steps": [],
    }


def write_report(report: dict, paths: dict[str, Path]) -> None:
    """Write the JSON and the Markdown (atomically: a run killed mid-write keeps the last)."""
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(paths["json"], json.dumps(report, indent=2, default=str) + "\n")
    _atomic_write(paths["markdown"], render_markdown(report))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    env = report.get("env") or {}
    device = env.get("device_name") or "no CUDA device"
    date = (report.get("started") or "?")[:10]
    lines = [f"### GPU check: {device}, {date}", ""]
    if env:
        v = {k: "?" if value is None else value for k, value in env.items()}
        gpu = device
        if env.get("device_name"):
            gpu += (
                f" ({v.get('device_memory_gib', '?')} GiB, {v.get('sm_count', '?')} SMs, "
                f"compute capability {v.get('capability', '?')}), driver {v.get('driver', '?')}"
            )
        lines.append(
            f"{gpu}; torch {v.get('torch', '?')} (CUDA {v.get('torch_cuda', '?')}), "
            f"triton {v.get('triton', '?')}, nvcc {v.get('nvcc', '?')}, "
            f"Python {v.get('python', '?')}; {v.get('cpu_count', '?')} CPUs; "
            f"commit {v.get('commit', '?')} (git there; tree hash {v.get('tree', '?')}, "
            "compare `gpu_check.py --tree-hash` here). "
            f"All steps took {report.get('seconds', 0):.0f} s."
        )
        lines.append("")
    lines += ["| step | status | time | result |", "| --- | --- | ---: | --- |"]
    for step in report.get("steps", []):
        lines.append(
            f"| {step['name']} | {step['status']} | {step['seconds']:.0f} s "
            f"| {_cell(step.get('summary', ''))} |"
        )
    for step in report.get("steps", []):
        lines += _details_markdown(step)
    return "\n".join(lines) + "\n"


def _details_markdown(step: dict) -> list[str]:
    name, details = step["name"], step.get("details") or {}
    out: list[str] = []
    if name == "tests":
        if details.get("failures"):
            out += ["", "Tests failing on the GPU:", ""]
            out += [f"- `{f['test']}`: {_cell(f['message'])}" for f in details["failures"]]
        if details.get("skip_reasons"):
            out += ["", "Skipped (count, reason):"]
            out += [f"- {n}: {_cell(r)}" for r, n in details["skip_reasons"].items()]
    elif name == "graph" and details.get("runs"):
        out += [
            "",
            "CUDA graphs (eval-mode model: PNIL, conv, PerturbationInjection, ReLU, linear):",
            "",
            "| run | captured | two replays differ | two eager calls differ | note |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in details["runs"]:
            note = _cell(r.get("error") or r.get("note") or "")
            out.append(
                f"| {r['label']} | {_yes(r.get('captured'))} | {_yes(r.get('replays_differ'))} "
                f"| {_yes(r.get('eager_differ'))} | {note} |"
            )
    elif name == "overhead" and details.get("table"):
        table = details["table"].strip()
        out += ["", "Per-call overhead (benchmarks/test_bench_overhead.py):", "", table]
    elif name == "eot" and details.get("rows"):
        out += [
            "",
            "Batched EOT gradient vs the sequential loop (benchmarks/test_bench_attacks.py, "
            f"back-to-back pairs): `{details.get('header', '')}`",
            "",
            "| workload | median speed-up | min | max |",
            "| --- | ---: | ---: | ---: |",
        ]
        out += [
            f"| {r['workload']} | {r['median']:.2f}x | {r['min']:.2f}x | {r['max']:.2f}x |"
            for r in details["rows"]
        ]
    elif name == "bandwidth":
        for backend, parsed in details.items():
            if not parsed.get("rows"):
                continue
            out += ["", f"`gpu_bandwidth.py --backend {backend}`: `{parsed['header']}`", ""]
            out += [
                "| shape | op | fused ms | eager ms | speed-up | GB/s | % of copy |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
            ]
            out += [
                f"| {r['shape']} | {r['op']} | {r['fused_ms']:.4f} | {r['eager_ms']:.4f} "
                f"| {r['speedup']:.2f}x | {r['gbs']} | {r['pct_copy']}% |"
                for r in parsed["rows"]
            ]
    elif name == "l2p" and "speedup" in details:
        out += [
            "",
            f"{_cell(details.get('header', 'Learn2Perturb epoch'))}:",
            "",
            "| ops | s/epoch | images/s |",
            "| --- | ---: | ---: |",
        ]
        for ops in ("eager", "fastnoise"):
            d = details[ops]
            out.append(f"| {ops} | {d['s_per_epoch']:.2f} | {d['images_per_s']:.1f} |")
        out += ["", f"Speed-up: {details['speedup']:.2f}x."]
    return out


def _yes(value: object) -> str:
    return {True: "yes", False: "no", None: "-"}.get(value, str(value))  # type: ignore[arg-type]


# ---- the main loop -------------------------------------------------------------------


def select_steps(steps: list[Step], only: list[str], skip: list[str]) -> list[Step]:
    unknown = sorted(set(only + skip) - set(STEP_NAMES))
    if unknown:
        raise ValueError(
            f"unknown step {', '.join(map(repr, unknown))}; steps: {', '.join(STEP_NAMES)}"
        )
    wanted = set(only or STEP_NAMES) | set(ALWAYS)
    return [s for s in steps if s.name in wanted and s.name not in set(skip) - set(ALWAYS)]


def run_plan(
    steps: list[Step], paths: dict[str, Path], budget_s: float, allow_no_gpu: bool, argv: list[str]
) -> int:
    start = time.perf_counter()
    deadline = start + budget_s
    report = new_report(budget_s, argv)
    has_gpu = True
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    for stale in (paths["tests_xml"], paths["overhead_json"]):  # never report a past run's
        stale.unlink(missing_ok=True)
    with open(paths["log"], "w") as log:
        for step in steps:
            left = deadline - time.perf_counter()
            if step.needs_gpu and not has_gpu and not allow_no_gpu:
                result = StepResult(step.name, "skipped", summary="no CUDA device")
            elif left < MIN_STEP_S:
                result = StepResult(
                    step.name, "skipped", summary=f"time budget spent ({budget_s:.0f} s)"
                )
            else:
                print(f"[gpu_check] {step.name}: {step.description}", flush=True)
                result = run_step(step, paths, deadline, log)
            if step.name == "env":
                report["env"] = result.details
                has_gpu = bool(result.details.get("cuda_available"))
                if not has_gpu and not allow_no_gpu:
                    why = (
                        "no CUDA device here (torch.cuda.is_available() is False)"
                        if result.details
                        else f"the env step failed ({result.summary})"
                    )
                    print(
                        f"[gpu_check] {why}: the GPU steps are skipped. --dry-run shows the "
                        "plan; --allow-no-gpu runs them anyway (to try this script on a CPU).",
                        file=sys.stderr,
                    )
            print(
                f"[gpu_check] {step.name}: {result.status} in {result.seconds:.0f} s: "
                f"{result.summary}",
                flush=True,
            )
            report["steps"].append(asdict(result))
            report["seconds"] = time.perf_counter() - start
            write_report(report, paths)
    report["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_report(report, paths)
    print()
    print(paths["markdown"].read_text())
    print(f"[gpu_check] wrote {paths['json']}, {paths['markdown']}, {paths['log']}")
    if not has_gpu and not allow_no_gpu:
        return 2
    bad = [s for s in report["steps"] if s["status"] in ("failed", "timeout", "error")]
    return 1 if bad else 0


def run_step(step: Step, paths: dict[str, Path], deadline: float, log) -> StepResult:
    start = time.perf_counter()
    commands = []
    for command in step.commands:
        left = deadline - time.perf_counter() - 5
        if left < MIN_STEP_S:
            skipped = CommandResult(command.label, command.argv, output_tail="time budget spent")
            commands.append(skipped)
            continue
        commands.append(run_command(command, min(command.timeout_s, left), log))
    try:
        status, summary, details = summarize(step, commands, paths)
    except Exception as error:  # a parser bug must not lose the run's other results
        status, summary, details = "error", f"summarizing failed: {error!r}", {}
    return StepResult(step.name, status, time.perf_counter() - start, summary, details, commands)


def default_out() -> Path:
    out_dir = os.environ.get("OUT")
    return Path(out_dir) / "gpu_check.json" if out_dir else HERE / "gpu_check.json"


def _names(values: list[str]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="report JSON (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STEP",
        help="run only these steps (comma-separated or repeated): " + ", ".join(STEP_NAMES),
    )
    parser.add_argument(
        "--skip", action="append", default=[], metavar="STEP", help="leave these steps out"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="seconds for the whole run; steps that would start later are skipped "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--allow-no-gpu",
        action="store_true",
        help="run the GPU steps without a GPU (to try the script itself)",
    )
    parser.add_argument(
        "--tree-hash",
        action="store_true",
        help="print the source tree's fingerprint (as the env step records it) and exit",
    )
    # Internal: one check run in a child process (so a crash or hang costs one step).
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--graph-backend", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--graph-compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tree_hash:
        print(tree_fingerprint())
        return 0
    if args.worker:
        return run_worker(args)

    out = (args.out or default_out()).resolve()
    paths = output_paths(out)
    try:
        steps = select_steps(build_plan(out), _names(args.only), _names(args.skip))
    except ValueError as error:
        parser.error(str(error))
    if args.budget <= 0:
        parser.error(f"--budget must be positive, got {args.budget}")
    if args.dry_run:
        print_plan(steps, paths, args.budget)
        return 0
    return run_plan(steps, paths, args.budget, args.allow_no_gpu, argv)


# ---- workers: each runs in its own process and prints MARKER + JSON last ------------------


def run_worker(args: argparse.Namespace) -> int:
    workers = {
        "env": worker_env,
        "setup": worker_setup,
        "extension": worker_extension,
        "graph": lambda: worker_graph(args.graph_backend, args.graph_compiled),
    }
    if args.worker not in workers:
        print(f"unknown worker {args.worker!r}; workers: {', '.join(workers)}", file=sys.stderr)
        return 2
    result = workers[args.worker]()
    print(MARKER + json.dumps(result, default=str), flush=True)
    return 0


def _run_text(argv: list[str], timeout: float = 30) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def worker_env() -> dict:
    import platform

    import torch

    info: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError as error:
        info["triton"] = f"not importable: {error}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device_name=props.name,
            device_count=torch.cuda.device_count(),
            capability=f"{props.major}.{props.minor}",
            device_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
        )
    smi = _run_text(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    info["driver"] = smi.splitlines()[0] if smi else None
    nvcc = _run_text(["nvcc", "--version"])
    releases = [ln for ln in (nvcc or "").splitlines() if "release" in ln]
    info["nvcc"] = releases[-1].split("release")[-1].strip(" ,") if releases else None
    commit = _run_text(["git", "rev-parse", "--short=10", "HEAD"])  # read-only
    if commit:
        # --no-optional-locks: status must not even refresh the index (others work here)
        dirty = _run_text(["git", "--no-optional-locks", "status", "--porcelain", "-uno"])
        info["commit"] = commit + (" (uncommitted changes)" if dirty else "")
    else:
        info["commit"] = "unknown (no git here)"
    info["tree"] = tree_fingerprint()
    return info


# What the tree fingerprint covers: the sources that decide what runs, not build outputs.
TREE_FOLDERS = ("fastnoise", "kernels", "csrc", "benchmarks", "tests")
TREE_FILES = ("setup.py", "pyproject.toml")
TREE_SUFFIXES = (".py", ".cpp", ".cu", ".cuh", ".h")


def tree_fingerprint(root: Path = REPO) -> str:
    """A short hash of the source files under ``root`` (paths and contents).

    The lent GPU gets a copy of the working tree whose ``.git`` may be an older one, so
    ``git rev-parse`` there named a stale commit (both GPU runs of 2026-11-27 recorded
    37d4a53). ``--tree-hash`` prints the same hash here, so a report can be matched to the
    tree that produced it."""
    digest = hashlib.sha256()
    paths = [root / name for name in TREE_FILES if (root / name).is_file()]
    for folder in TREE_FOLDERS:
        paths += [p for p in (root / folder).rglob("*") if p.suffix in TREE_SUFFIXES]
    for path in sorted(p for p in paths if "__pycache__" not in p.parts and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def worker_setup() -> dict:
    """``import fastnoise`` (with ``fastnoise.kernels``, which only an install maps onto
    kernels/) must find this checkout. A bare GPU machine has torch but not fastnoise:
    install it editable, offline, without dependencies (torch is already there)."""
    probe = [sys.executable, "-c", "import fastnoise, fastnoise.kernels; print(fastnoise.__file__)"]

    def where() -> tuple[str | None, str]:
        with tempfile.TemporaryDirectory() as empty:  # not the repo: its cwd would shadow
            done = subprocess.run(probe, capture_output=True, text=True, cwd=empty)
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return (done.stdout.strip() if done.returncode == 0 else None), last

    found, _ = where()
    mine = str(REPO / "fastnoise")
    if found and found.startswith(mine):
        return {"ok": True, "summary": f"fastnoise already imports from {REPO}", "installed": False}
    if found:
        return {
            "ok": False,
            "summary": f"another fastnoise is installed ({found}): uninstall it, or run "
            "gpu_check.py from that checkout",
        }
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "-e", str(REPO)]
    done = subprocess.run(pip, capture_output=True, text=True)
    found, import_error = where()
    if found and found.startswith(mine):
        return {
            "ok": True,
            "summary": f"pip install -e {REPO} (offline, no deps)",
            "installed": True,
        }
    if done.returncode == 0:
        summary = f"installed, but import fastnoise still fails: {import_error}"
    else:
        summary = "pip install -e failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return {
        "ok": False,
        "summary": summary,
        "pip_output": (done.stdout + done.stderr)[-TAIL_CHARS:],
    }


def worker_extension() -> dict:
    import torch

    import fastnoise

    start = time.perf_counter()
    report = fastnoise.backends()  # builds (or loads the cached) C++/CUDA extension
    seconds = time.perf_counter() - start
    rows = [
        {"name": r.name, "available": r.available, "reason": r.reason, "devices": list(r.devices)}
        for r in report
    ]
    here = {"cpu"} | ({"cuda"} if torch.cuda.is_available() else set())
    missing = [r for r in rows if not r["available"] and set(r["devices"]) & here]
    missing = [r for r in missing if r["name"] != "torch"]
    available = ", ".join(r["name"] for r in rows if r["available"])
    summary = f"{seconds:.0f} s to build/load; available: {available}"
    if missing:
        summary += "; unavailable: " + "; ".join(f"{r['name']} ({r['reason']})" for r in missing)
    print(report)
    return {"ok": not missing, "summary": summary, "seconds": seconds, "backends": rows}


def worker_graph(backend: str, compiled: bool) -> dict:
    """Capture a small noisy model in a CUDA graph and replay it twice. Every stage is
    guarded: the answer (which stage failed, and why) is the result."""
    import torch

    import fastnoise
    from fastnoise import nn as fnn

    label = backend
    if compiled:
        label = "compile-reduce-overhead" + ("" if backend == "auto" else f"-{backend}")
    result: dict = {
        "label": label,
        "backend": backend,
        "compiled": compiled,
        "captured": False,
        "replays_differ": None,
        "eager_differ": None,
        "error": None,
    }
    stage = "setup"
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            fnn.PNIL((3, 16, 16)),
            torch.nn.Conv2d(3, 8, 3, padding=1),
            fnn.PerturbationInjection((8, 16, 16)),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(8 * 16 * 16, 10),
        )
        model = model.cuda().eval()
        x = torch.rand(4, 3, 16, 16, device="cuda")
        with fastnoise.use_backend(backend), torch.no_grad():
            stage = "eager calls"
            result["eager_differ"] = not torch.equal(model(x), model(x))
            if compiled:
                stage = "torch.compile(mode='reduce-overhead')"
                skips = _collect_cudagraph_skips()
                run = torch.compile(model, mode="reduce-overhead", fullgraph=True)
                for _ in range(3):  # cudagraph trees record on the 2nd-3rd call
                    run(x)
                first = run(x).clone()
                second = run(x).clone()
                result["note"] = _cudagraph_note(skips)
            else:
                stage = "warm-up on a side stream"
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        model(x)
                torch.cuda.current_stream().wait_stream(side)
                stage = "capture"
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_y = model(x)
                stage = "replay"
                graph.replay()
                first = static_y.clone()
                graph.replay()
                second = static_y.clone()
            torch.cuda.synchronize()
            result["captured"] = True
            result["finite"] = bool(torch.isfinite(first).all() and torch.isfinite(second).all())
            result["replays_differ"] = not torch.equal(first, second)
    except Exception as error:  # the failure is the finding: record it, don't crash
        first_line = (str(error).splitlines() or [""])[0][:300]
        result["error"] = f"{stage}: {type(error).__name__}: {first_line}"
        # A backend whose seeds come from the host must refuse seed=None in capture
        # (fastnoise._ops.CAPTURE_NEEDS_DEVICE_SEEDS), not replay the same noise.
        result["refused"] = "seed=None inside CUDA graph capture" in first_line
    result["ok"] = bool(result["captured"] and result["replays_differ"] or result.get("refused"))
    return result


def _collect_cudagraph_skips() -> list[str]:
    """Inductor falls back from CUDA graphs silently unless its "cudagraphs" log is on:
    turn it on and keep the reasons it gives."""
    import logging

    import torch

    reasons: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "skipping cudagraphs" in message:
                reasons.append(message.strip().splitlines()[0][:200])

    try:
        torch._logging.set_logs(cudagraphs=True)
        logging.getLogger("torch._inductor").addHandler(Keep())
    except Exception:  # private API: the counter below still says whether it skipped
        pass
    return reasons


def _cudagraph_note(reasons: list[str]) -> str:
    """Whether inductor really used CUDA graphs, and if not, why."""
    try:
        from torch._dynamo.utils import counters

        skipped = dict(counters["inductor"]).get("cudagraph_skips", 0) or reasons
    except Exception as error:
        return f"cudagraph use unknown ({type(error).__name__})"
    if not skipped:
        return "inductor used cudagraphs"
    return "inductor skipped cudagraphs" + (
        f": {'; '.join(dict.fromkeys(reasons))}" if reasons else ""
    )


if __name__ == "__main__":
    raise SystemExit(main())
