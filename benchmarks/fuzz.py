#!/usr/bin/env python3
"""Fuzz every parser modelkin has, at length: ``--inputs`` (default 100,000) inputs per target.

Targets are ``tests/fuzz/target_*.py`` (safetensors, shard index, GGUF, PyTorch, tokenizer, config, ONNX
when present); inputs are drawn by hypothesis from each target's seeds (``tests/fuzz/harness.py`` says
how). Each target runs in its own child process, in chunks of ``--chunk`` inputs with consecutive
hypothesis seeds (each chunk a fresh hypothesis run, so its bookkeeping stays small), so that

* the peak RSS printed is that target's alone (``ru_maxrss`` of the child: interpreter, imports, seeds
  and every input; "after seeds" is the same figure before the first generated input);
* a target that kills its process (a segfault or abort in a native library) is reported with the
  input that did it (the child writes each input to a file before running it).

Per target it prints: inputs run, crashes (inputs that raised anything but ``ModelkinError``; target 0)
and their distinct signatures, hangs (inputs over ``--time-limit`` seconds; target 0), memory findings
(inputs whose resident memory peaked more than ``--memory-limit-mb`` above its level before the input;
target 0), the slowest input, peak RSS, the most resident memory one input added, and inputs per second. Every finding is written to
``tests/fuzz/regressions/<target>/`` (``--save-dir`` elsewhere, ``--no-save`` not at all), where
``tests/test_fuzz.py`` replays it: fix the parser, keep the file.

Run: ``python benchmarks/fuzz.py [--inputs 100000] [--targets gguf,pytorch] [--seed 0] [--jobs 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUZZ_DIR = HERE.parent / "tests" / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import harness  # noqa: E402  (tests/fuzz/harness.py)


def child(args: argparse.Namespace) -> int:
    """Fuzz one target in this process; print its report as one JSON line."""
    name = args.child
    module = harness.load(name)
    save_dir = None if args.no_save else Path(args.save_dir) / name
    total = harness.Report(name)
    t0 = time.perf_counter()
    done = 0
    chunk_index = 0
    while done < args.inputs:
        n = min(args.chunk, args.inputs - done)
        r = harness.run(name, module, n, seed=args.seed * 1_000_003 + chunk_index, time_limit_s=args.time_limit,
                        memory_limit_bytes=args.memory_limit_mb << 20, trace_memory=args.trace_memory,
                        last_input=Path(args.last_input))
        if chunk_index == 0:
            total.rss_after_seeds = r.rss_after_seeds
        seeds_run = len(module.SEEDS)
        total.inputs += r.inputs - seeds_run  # the seeds are re-run (and checked) at each chunk's start
        done += n
        chunk_index += 1
        for kind in ("crash", "hang", "memory"):
            setattr(total, f"{kind}_inputs", getattr(total, f"{kind}_inputs") + getattr(r, f"{kind}_inputs"))
        total.max_seconds = max(total.max_seconds, r.max_seconds)
        total.peak_input_bytes = max(total.peak_input_bytes, r.peak_input_bytes)
        for f in r.findings.values():
            total.add(f)
    seconds = time.perf_counter() - t0
    saved = [str(f.save(save_dir)) for f in total.findings.values()] if save_dir else []
    print(json.dumps({
        "target": name, "inputs": total.inputs, "seconds": seconds, "crash_inputs": total.crash_inputs,
        "hang_inputs": total.hang_inputs, "memory_inputs": total.memory_inputs, "max_seconds": total.max_seconds,
        "peak_rss_bytes": harness.peak_rss_bytes(), "rss_after_seeds": total.rss_after_seeds,
        "peak_input_bytes": total.peak_input_bytes,
        "findings": [{"kind": f.kind, "signature": f.signature, "detail": f.detail, "bytes": len(f.data)} for f in total.findings.values()],
        "saved": saved,
    }))
    return 0


def run_target(name: str, args: argparse.Namespace, work: Path) -> dict:
    last_input = work / f"{name}.last"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--inputs", str(args.inputs),
           "--chunk", str(args.chunk), "--seed", str(args.seed), "--time-limit", str(args.time_limit),
           "--memory-limit-mb", str(args.memory_limit_mb), "--save-dir", str(args.save_dir), "--last-input", str(last_input)]
    cmd += ["--trace-memory"] * args.trace_memory + ["--no-save"] * args.no_save
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    # The child died: a native crash (signal) or an error in the harness itself.
    how = f"signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    out = {"target": name, "inputs": None, "seconds": time.perf_counter() - t0, "crash_inputs": 1, "hang_inputs": 0,
           "memory_inputs": 0, "max_seconds": None, "peak_rss_bytes": None, "rss_after_seeds": None, "peak_input_bytes": None,
           "findings": [{"kind": "crash", "signature": f"process died ({how})", "detail": tail, "bytes": None}], "saved": []}
    if last_input.exists() and not args.no_save:
        data = last_input.read_bytes()
        f = harness.Finding(name, "crash", f"process died ({how})", tail, data)
        out["saved"] = [str(f.save(Path(args.save_dir) / name))]
        out["findings"][0]["bytes"] = len(data)
    return out


def _mib(n, digits: int = 0) -> str:
    return "-" if n is None else f"{n / 2**20:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="generated inputs per target (default 100000)")
    ap.add_argument("--targets", default="", help="comma-separated target names (default: every tests/fuzz/target_*.py)")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (chunk i uses a seed derived from it and i)")
    ap.add_argument("--chunk", type=int, default=5000, help="inputs per hypothesis run (default 5000)")
    ap.add_argument("--time-limit", type=float, default=harness.TIME_LIMIT_S, help="seconds an input may take (default 5)")
    ap.add_argument("--memory-limit-mb", type=int, default=harness.MEMORY_LIMIT_BYTES >> 20,
                    help="rise of peak RSS above its level after the seeds that counts as a memory finding (default 256)")
    ap.add_argument("--trace-memory", action="store_true", help="also measure each input's allocations with tracemalloc (about 4x slower)")
    ap.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (default 1)")
    ap.add_argument("--save-dir", default=str(harness.REGRESSIONS), help="where findings are written (default tests/fuzz/regressions)")
    ap.add_argument("--no-save", action="store_true", help="do not write findings")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--last-input", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    names = [n for n in args.targets.split(",") if n] or list(harness.discover())
    unknown = set(names) - set(harness.discover())
    if unknown:
        ap.error(f"no target(s) {sorted(unknown)}; have {list(harness.discover())}")
    print(f"fuzzing {len(names)} targets, {args.inputs} inputs each, seed {args.seed}, {args.jobs} at a time; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: run_target(n, args, Path(work)), names))
    header = (f"{'target':12} {'inputs':>8} {'crashes':>7} {'hangs':>5} {'memory':>6} {'slowest s':>9} {'peak RSS MiB':>12} "
              f"{'after seeds':>11} {'input peak MiB':>14} {'inputs/s':>8}")
    print(header)
    print("-" * len(header))
    for r in results:
        rate = f"{r['inputs'] / r['seconds']:.0f}" if r["inputs"] else "-"
        slow = "-" if r["max_seconds"] is None else f"{r['max_seconds']:.2f}"
        print(f"{r['target']:12} {r['inputs'] if r['inputs'] is not None else '-':>8} {r['crash_inputs']:>7} {r['hang_inputs']:>5} "
              f"{r['memory_inputs']:>6} {slow:>9} {_mib(r['peak_rss_bytes']):>12} {_mib(r['rss_after_seeds']):>11} "
              f"{_mib(r['peak_input_bytes'], 1):>14} {rate:>8}")
    bad = [(r["target"], f) for r in results for f in r["findings"]]
    for target, f in bad:
        print(f"  {target}: {f['kind']}: {f['signature']}: {f['detail'][:200]}")
    for r in results:
        for path in r["saved"]:
            print(f"  saved {path}")
    print("PASS: no crashes, hangs or memory findings" if not bad else f"FAIL: {len(bad)} distinct findings")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
