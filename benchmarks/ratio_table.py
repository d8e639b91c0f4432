"""Turn a pytest-benchmark JSON into a Markdown table of fastnoise / eager time ratios.

    pytest benchmarks/test_bench_overhead.py --benchmark-only --benchmark-json=overhead.json
    python benchmarks/ratio_table.py overhead.json [--out overhead.md]

Every row whose ``extra_info`` names a ``backend`` other than ``eager`` is divided by the
``eager`` row of the same group and device, both measured in that one run. Ratios below
1 mean fastnoise is faster. The output (a one-line header saying where and when, then
the table) can go into ``RESULTS.md`` whole. Works for every file here that records
``extra_info`` backends: ``test_bench_overhead.py``, ``test_bench_noise.py``, ...
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BASELINE = "eager"


def _pairs(benchmarks: list[dict]) -> tuple[list[tuple[dict, dict]], list[str]]:
    """(eager, fastnoise) pairs in run order, and the fastnoise rows with no eager row."""
    eager: dict[tuple[str, str], dict] = {}
    for bench in benchmarks:
        info = bench.get("extra_info", {})
        if info.get("backend") == BASELINE:
            eager[(bench.get("group"), info.get("device"))] = bench
    pairs, unpaired = [], []
    for bench in benchmarks:
        info = bench.get("extra_info", {})
        if info.get("backend") in (None, BASELINE):
            continue
        base = eager.get((bench.get("group"), info.get("device")))
        if base is None:
            unpaired.append(bench["name"])
        else:
            pairs.append((base, bench))
    # Device first (a table per machine part reads better), then run order.
    devices = list(dict.fromkeys(b["extra_info"].get("device") for _, b in pairs))
    pairs.sort(key=lambda pair: devices.index(pair[1]["extra_info"].get("device")))
    return pairs, unpaired


def _per_call(bench: dict) -> dict:
    """The row's stats per call: a round of ``calls_per_round`` calls (the CUDA overhead
    rows) divided by that count; ratios are unchanged."""
    calls = bench.get("extra_info", {}).get("calls_per_round", 1)
    return {k: bench["stats"][k] / calls for k in ("min", "median") if k in bench["stats"]}


def _time_unit(seconds: list[float]) -> tuple[str, float]:
    if not seconds or max(seconds) < 1e-3:
        return "µs", 1e6
    return "ms", 1e3


def _header(data: dict, pairs: list[tuple[dict, dict]]) -> str:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    infos = [b["extra_info"] for pair in pairs for b in pair]
    parts = [
        f"{cpu.get('brand_raw') or machine.get('machine', '?')} ({cpu.get('count', '?')} CPUs)"
    ]
    parts += sorted({i["device_name"] for i in infos if i.get("device_name")})
    torches = sorted({i["torch"] for i in infos if i.get("torch")})
    if torches:
        parts.append("torch " + ", ".join(torches))
    parts.append(f"Python {machine.get('python_version', '?')}")
    threads = sorted({i["threads"] for i in infos if i.get("threads") is not None})
    if threads:
        parts.append(f"{', '.join(map(str, threads))} thread(s)")
    shapes = sorted({tuple(i["shape"]) for i in infos if i.get("shape")})
    if shapes:
        parts.append("x of shape " + ", ".join(str(s) for s in shapes))
    commit = str(data.get("commit_info", {}).get("id") or "")
    if re.fullmatch(r"[0-9a-f]{7,40}", commit):  # "unversioned" outside a git checkout
        dirty = " (uncommitted changes)" if data["commit_info"].get("dirty") else ""
        parts.append(f"commit {commit[:10]}{dirty}")
    parts.append(str(data.get("datetime", "?"))[:16].replace("T", " ") + " UTC")
    return "; ".join(parts)


def markdown(data: dict) -> str:
    """The Markdown text for one pytest-benchmark JSON document (already parsed)."""
    pairs, unpaired = _pairs(data.get("benchmarks", []))
    if not pairs:
        return "No fastnoise row with an eager row in the same group: nothing to compare.\n"
    unit, scale = _time_unit([_per_call(b)["median"] for pair in pairs for b in pair])
    # The overhead benchmark records op/passes/compiled: one column each. Other files
    # give only a group name, which already says op, mode and shape.
    detailed = all({"op", "passes", "compiled"} <= set(b["extra_info"]) for _, b in pairs)
    label = ["op", "pass", "torch.compile"] if detailed else ["benchmark"]
    lines = [
        f"Median time per call and fastnoise / eager ratio in the same run "
        f"(below 1: fastnoise faster). {_header(data, pairs)}.",
        "",
        "| device | " + " | ".join(label) + f" | backend | eager {unit} | fastnoise {unit} "
        "| ratio (median) | ratio (min) |",
        "| --- | " + " | ".join("---" for _ in label) + " | --- | ---: | ---: | ---: | ---: |",
    ]
    for base, fast in pairs:
        info = fast["extra_info"]
        if detailed:
            cells = [info["op"], info["passes"], "yes" if info["compiled"] else "no"]
        else:
            cells = [fast.get("group") or fast["name"]]
        b, f = _per_call(base), _per_call(fast)
        lines.append(
            f"| {info.get('device', '?')} | "
            + " | ".join(str(c) for c in cells)
            + f" | {info['backend']} | {b['median'] * scale:.2f} | {f['median'] * scale:.2f} "
            f"| {f['median'] / b['median']:.2f} | {f['min'] / b['min']:.2f} |"
        )
    if unpaired:
        lines += ["", f"No eager row to compare with: {', '.join(unpaired)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="file written by pytest --benchmark-json")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.json.read_text())
    except (OSError, ValueError) as error:
        print(f"ratio_table.py: cannot read {args.json}: {error}", file=sys.stderr)
        return 2
    text = markdown(data)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
