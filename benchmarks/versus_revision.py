"""Time `modelkin.compare` on every pair of a zoo at the working tree and at an earlier git revision.

    python benchmarks/versus_revision.py ZOO_DIR [--rev REV] [--pairs N] [--repeats R]

Both versions run in this one invocation, alternating per pair (so machine load hits both alike), each in
its own interpreter with PYTHONPATH pointing at its own source tree; the earlier revision is exported with
`git archive`. Prints per-pair seconds of each and the ratio of totals (now / then). Used to check that
the robust statistics cost at most 2x the per-pair time of the first compare engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TIMER = r"""
import json, sys, time
import modelkin
pairs = json.loads(sys.argv[1]); repeats = int(sys.argv[2])
out = []
for a, b in pairs:
    modelkin.compare(a, b, threads=2)  # warm the page cache and imports
    best = min((lambda t0: (modelkin.compare(a, b, threads=2), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(repeats))
    out.append(best)
print(json.dumps(out))
"""


def export(rev: str, dest: Path) -> Path:
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest / "src"


def time_pairs(src: Path, pairs: list[tuple[str, str]], repeats: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(src), MODELKIN_CACHE=tempfile.mkdtemp())
    out = subprocess.run([sys.executable, "-c", TIMER, json.dumps(pairs), str(repeats)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo")
    ap.add_argument("--rev", default="08c8f2c", help="earlier revision (default: the first compare engine)")
    ap.add_argument("--pairs", type=int, default=30, help="at most this many pairs (spread over the manifest)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    zoo = Path(args.zoo)
    manifest = json.loads((zoo / "manifest.json").read_text())
    pairs = manifest["pairs"]
    step = max(1, len(pairs) // args.pairs)
    chosen = [(str(zoo / p["a"]), str(zoo / p["b"]), p["kind"]) for p in pairs[::step]][: args.pairs]
    with tempfile.TemporaryDirectory() as tmp:
        old_src = export(args.rev, Path(tmp))
        now_src = REPO / "src"
        rows = []
        for a, b, kind in chosen:  # alternate per pair so load changes hit both versions
            t_old = time_pairs(old_src, [(a, b)], args.repeats)[0]
            t_now = time_pairs(now_src, [(a, b)], args.repeats)[0]
            rows.append((kind, t_old, t_now))
    print(f"{'kind':24} {'then s':>8} {'now s':>8} {'ratio':>6}")
    for kind, t_old, t_now in rows:
        print(f"{kind:24} {t_old:8.3f} {t_now:8.3f} {t_now / t_old:6.2f}")
    total_old = sum(r[1] for r in rows)
    total_now = sum(r[2] for r in rows)
    print(f"{'total':24} {total_old:8.3f} {total_now:8.3f} {total_now / total_old:6.2f}   (revision {args.rev} vs working tree, {len(rows)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
