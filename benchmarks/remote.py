"""Remote compare: full vs sampled ranged reads vs download-everything, against a local Hub stand-in.

Builds a VLM pair (vision tower copied and fine-tuned, text tower independent) of about ``--size`` bytes
per model (BF16), serves it from tests/hub_server.py on 127.0.0.1 with an injected per-request latency
and a bandwidth cap, and in one run times:
  * sampled  — ``modelkin compare org/a org/b`` (remote default: key-seeded row blocks);
  * full     — the same with ``--full`` (every byte of the compared tensors, fetched by ranges);
  * download — ``snapshot_download`` of both repos, then a local compare.
Each run starts from empty caches. Prints bytes fetched / bytes of the compared tensors, requests, wall
time, the verdicts, and the speed-up of sampled over download-then-compare.

Fairness: the stand-in runs in its own process (``HubProcess``): in-process, its Python would hold the
client's GIL and be charged to the client, which a CDN is not. Before any timing, a small remote compare
of two example models (and a small ``snapshot_download``) runs untimed, so one-time start-up costs
(imports, first calls) are charged to no mode; the warm-up's time is printed.

    python benchmarks/remote.py --size 1e9 --latency 0.05 --bandwidth 100e6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import builders  # noqa: E402
from hub_server import HubProcess  # noqa: E402


def build_pair(folder: Path, size: float) -> tuple[Path, Path]:
    hidden, ffn, vocab = 2048, 5632, 4096
    per_layer = 2 * ((3 * hidden * hidden + 3 * hidden * ffn) + (4 * hidden * hidden + 3 * hidden * ffn))  # BF16
    fixed = 2 * (2 * vocab * hidden + hidden * 3 * 2 * 14 * 14 + 16 * hidden * hidden + 4 * hidden * hidden)
    depth = max(1, round((size - fixed) / per_layer))
    dims = dict(hidden=hidden, ffn=ffn, vocab=vocab, layers=depth, v_hidden=hidden, v_ffn=ffn, v_depth=depth)
    donor = builders.vlm_tensors(1, **dims)
    other = builders.vlm_tensors(2, **dims)
    rng = np.random.default_rng(7)
    out = []
    for name in ("donor", "graft"):
        tensors = donor if name == "donor" else {
            k: (donor[k] + 0.3 * donor[k].std() * rng.normal(size=donor[k].shape).astype(np.float32)) if k.startswith("visual.blocks") else other[k]
            for k in donor}
        d = folder / name
        d.mkdir(parents=True)
        save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(builders.vlm_config(**dims)))
        out.append(d)
    return out[0], out[1]


def warm_up(hub, tmp: Path) -> float:
    """An untimed small remote compare and download (imports, first calls, threads); returns its seconds."""
    import huggingface_hub
    import modelkin

    t0 = time.perf_counter()
    for name in ("base", "finetuned"):
        hub.add_repo(f"warm/{name}", ROOT / "examples" / name)
    fresh_caches(tmp)
    modelkin.compare("warm/base", "warm/finetuned")
    local = huggingface_hub.snapshot_download("warm/base", endpoint=hub.url, cache_dir=str(tmp / "hf"))
    modelkin.compare(local, local)
    return time.perf_counter() - t0


def fresh_caches(tmp: Path) -> None:
    for sub in ("hf", "mk"):
        shutil.rmtree(tmp / sub, ignore_errors=True)
    os.environ["HF_HUB_CACHE"] = str(tmp / "hf")
    os.environ["MODELKIN_CACHE"] = str(tmp / "mk")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=float, default=1e9, help="bytes per model (about)")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    ap.add_argument("--bandwidth", type=float, default=100e6, help="bytes/s of the link")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="modelkin-remote-"))
    try:
        donor, graft = build_pair(tmp / "models", args.size)
        model_bytes = (donor / "model.safetensors").stat().st_size
        with HubProcess() as hub:
            hub.add_repo("bench/donor", donor)
            hub.add_repo("bench/graft", graft)
            os.environ["HF_ENDPOINT"] = hub.url
            import huggingface_hub
            from huggingface_hub import constants

            constants.ENDPOINT = hub.url
            constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
            import modelkin

            warm = warm_up(hub, tmp)

            hub.inject("latency", seconds=args.latency)
            hub.inject("bandwidth", kind="content", bytes_per_s=args.bandwidth)
            rows = []
            for label, mode in (("sampled", "sampled"), ("full", "full")):
                fresh_caches(tmp)
                hub.reset_counters()
                t0 = time.perf_counter()
                r = modelkin.compare("bench/donor", "bench/graft", read_mode=mode)
                rows.append((label, time.perf_counter() - t0, r.reads.remote_bytes_fetched, r.reads.full_bytes,
                             hub.counters().count(), r.verdict, {k: c.verdict for k, c in r.components.items()}))
            fresh_caches(tmp)
            hub.reset_counters()
            t0 = time.perf_counter()
            paths = [huggingface_hub.snapshot_download(f"bench/{n}", endpoint=hub.url, cache_dir=str(tmp / "hf"))
                     for n in ("donor", "graft")]
            r = modelkin.compare(paths[0], paths[1])
            rows.append(("download", time.perf_counter() - t0, hub.counters().bytes_by_kind.get("content", 0),
                         r.reads.full_bytes, hub.counters().count(), r.verdict, {k: c.verdict for k, c in r.components.items()}))
        print(f"models: 2 x {model_bytes / 1e9:.2f} GB BF16; latency {args.latency * 1e3:.0f} ms/request; link {args.bandwidth / 1e6:.0f} MB/s;"
              f" stand-in in its own process; untimed warm-up {warm:.1f} s")
        print(f"{'mode':9} {'wall s':>8} {'fetched MB':>11} {'fetched/needed':>15} {'requests':>9}  verdicts")
        for label, wall, fetched, needed, requests, verdict, comps in rows:
            print(f"{label:9} {wall:8.2f} {fetched / 1e6:11.1f} {fetched / max(needed, 1):15.4f} {requests:9d}  {verdict} {comps}")
        print(f"speed-up of sampled over download-then-compare: {rows[2][1] / rows[0][1]:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
