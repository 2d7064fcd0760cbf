#!/usr/bin/env python3
"""Regenerate ``examples/`` with the zoo code (deterministic; needs torch and tokenizers).

    python3 scripts/make_examples.py [--out examples]

Models are built by the zoo's "examples" plan in a scratch folder, then their config.json,
model.safetensors and tokenizer.json are copied to examples/<name>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from modelkin.zoo.build import build_zoo
from modelkin.zoo.recipes import EXAMPLES

KEEP = ("config.json", "model.safetensors", "tokenizer.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "examples"))
    args = ap.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = build_zoo(tmp, "examples", progress=lambda m: print(m, flush=True))
        summary = {}
        for name, model_id in EXAMPLES.items():
            src, dst = Path(tmp) / "models" / model_id, out / name
            if dst.exists():
                shutil.rmtree(dst)
            dst.mkdir(parents=True)
            for f in KEEP:
                if (src / f).exists():
                    shutil.copy2(src / f, dst / f)
            meta = manifest["models"][model_id]
            summary[name] = {k: meta.get(k) for k in ("family", "seed", "data", "train_steps",
                                                       "initial_loss", "final_loss")}
    for name, s in summary.items():
        print(f"{name:12s} {json.dumps(s)}")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    for f in out.rglob("*"):
        if f.is_file():
            f.chmod(0o644)  # tempfile creates 0600 files; examples are committed
    print(f"examples/: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
