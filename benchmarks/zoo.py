#!/usr/bin/env python3
"""The bench on freshly built zoos, in one run: build the full, hard and null zoos of one seed with a process
pool, then run ``modelkin bench --fingerprints`` on each.

The default seed is 1: the development of modelkin's thresholds used seed 0, so seed 1 is a zoo no threshold
was tuned on. The builds run at once (their processes share ``--jobs``); each bench then gets every job.
A build still running at ``--build-deadline`` seconds is stopped: its manifest lists the models finished by
then (the build is resumable), and the bench runs on the pairs whose models exist, which the summary says.

Writes to ``--out``: ``bench-<size>.json`` (every pair's scores), ``bench-<size>.txt`` (the bench's tables),
``build-<size>.log``, and ``summary.json``; prints the summary.

    python benchmarks/zoo.py --out results --seed 1 --jobs 16 [--sizes full,hard,null] [--build-deadline 420]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SHARE = {"full": 10, "hard": 4, "null": 2}  # relative CPU each build needs (models x steps)


def start_build(size: str, zoo: Path, seed: int, jobs: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "modelkin", "zoo", "build", str(zoo), "--size", size, "--seed", str(seed),
           "--jobs", str(jobs)]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_bench(size: str, zoo: Path, out: Path, jobs: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "modelkin", "bench", str(zoo), "--jobs", str(jobs), "--threads", "1",
           "--fingerprints", "--json", str(out / f"bench-{size}.json")]
    t0 = time.perf_counter()
    env = {**os.environ, "COLUMNS": "220"}
    with (out / f"bench-{size}.txt").open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(max(timeout, 1))
        except subprocess.TimeoutExpired:
            stop(proc)
            code = "timeout"
    return {"exit": code, "seconds": round(time.perf_counter() - t0, 1)}


def summarize(size: str, zoo: Path, out: Path, seed: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from modelkin.zoo.recipes import plan

    P = plan(size, seed)
    manifest = json.loads((zoo / "manifest.json").read_text()) if (zoo / "manifest.json").is_file() else {"models": {}, "pairs": []}
    d = {"models_built": len(manifest["models"]), "models_planned": len(P.models),
         "pairs_benched": len(manifest["pairs"]), "pairs_planned": len(P.pairs)}
    path = out / f"bench-{size}.json"
    if not path.is_file():
        return d
    res = json.loads(path.read_text())
    pairs = res["pairs"]
    related = [p for p in pairs if p["label"] == "related"]
    indep = [p for p in pairs if p["label"] == "independent"]
    d.update({
        "related_called_related": sum(p["modelkin"]["verdict"] == "related" for p in related), "related": len(related),
        "independent_called_related": sum(p["modelkin"]["verdict"] == "related" for p in indep),
        "independent_called_independent": sum(p["modelkin"]["verdict"] == "independent" for p in indep),
        "independent": len(indep),
        "tpr_by_kind": {k: row["modelkin"].get("tpr") for k, row in res["summary"].items() if k != "independent"},
        "missing_components": res.get("missing_components"), "independent_on_related": res.get("independent_on_related"),
        "sampled": res.get("sampled"), "fingerprints": {k: v for k, v in (res.get("fingerprints") or {}).items()},
        "bench_seconds": res.get("total_seconds"),
    })
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where the zoos are built (default: OUT/zoos)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--bench-jobs", type=int, default=None, help="processes per bench (default: --jobs)")
    ap.add_argument("--sizes", default="full,hard,null")
    ap.add_argument("--build-deadline", type=float, default=1e9, help="seconds after which unfinished builds stop")
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds after which unfinished benches stop")
    args = ap.parse_args()
    t0 = time.perf_counter()
    sizes = args.sizes.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "zoos"
    total = sum(SHARE.get(s, 1) for s in sizes)
    builds = {s: start_build(s, work / f"{s}-seed{args.seed}", args.seed,
                             max(1, round(args.jobs * SHARE.get(s, 1) / total)), args.out / f"build-{s}.log")
              for s in sizes}
    build_seconds = {}
    while any(p.poll() is None for p in builds.values()):
        for s, p in builds.items():
            if p.poll() is not None and s not in build_seconds:
                build_seconds[s] = round(time.perf_counter() - t0, 1)
        if time.perf_counter() - t0 > args.build_deadline:
            for s, p in builds.items():
                if p.poll() is None:
                    stop(p)
                    build_seconds[s] = f"stopped at {args.build_deadline:.0f} s"
            break
        time.sleep(1)
    for s, p in builds.items():
        build_seconds.setdefault(s, round(time.perf_counter() - t0, 1))
    summary = {"seed": args.seed, "jobs": args.jobs, "cpus": os.cpu_count(), "zoos": {}}
    for s in sizes:
        zoo = work / f"{s}-seed{args.seed}"
        bench = run_bench(s, zoo, args.out, args.bench_jobs or args.jobs, args.deadline - (time.perf_counter() - t0))
        summary["zoos"][s] = {"build_seconds": build_seconds[s], "bench": bench, **summarize(s, zoo, args.out, args.seed)}
        print(json.dumps({s: summary["zoos"][s]}, indent=1), flush=True)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"total {summary['total_seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
