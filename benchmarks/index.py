"""Fingerprints and the index, measured in one run.

1. Fingerprint size per parameter on synthetic Llama-style models of two sizes (bf16), with the default
   sample policy and with a fixed-rows policy (16 rows per tensor): is the size flat in the model's size?
2. Fingerprint time vs a full self-compare of the same model.
3. Search latency (sketch pruning: load the sketches from SQLite and rank) at 100 / 1,000 / 10,000 indexed
   synthetic sketches, and the time to confirm one candidate with the calibrated compare.

4. All-pairs lineage graph of N synthetic models (independent seeds, each with a fine-tuned copy) on a
   local Ray instance with 1 and with 2 CPUs (Ray workers): the speed-up (skipped when Ray is absent).

Usage: PYTHONPATH=src python3 benchmarks/index.py [--layers 4] [--graph-models 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

import modelkin
from modelkin.index.fingerprint import make_fingerprint
from modelkin.index.sketch import DIM
from modelkin.index.store import Index
from modelkin.sampling import DEFAULT_SAMPLE, SamplePolicy

FIXED16 = SamplePolicy(fraction=1e-9, min_rows=16, block_rows=16, small_bytes=256 << 10)


def synthetic_llama(folder: Path, hidden: int, ffn: int, layers: int, vocab: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    t = {}

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)

    t["model.embed_tokens.weight"] = w(vocab, hidden)
    t["lm_head.weight"] = w(vocab, hidden)
    t["model.norm.weight"] = np.ones(hidden, ml_dtypes.bfloat16)
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            t[p + f"self_attn.{n}_proj.weight"] = w(hidden, hidden)
        t[p + "mlp.gate_proj.weight"] = w(ffn, hidden)
        t[p + "mlp.up_proj.weight"] = w(ffn, hidden)
        t[p + "mlp.down_proj.weight"] = w(hidden, ffn)
        t[p + "input_layernorm.weight"] = np.ones(hidden, ml_dtypes.bfloat16)
        t[p + "post_attention_layernorm.weight"] = np.ones(hidden, ml_dtypes.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "model.safetensors"))
    cfg = {"model_type": "llama", "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
           "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 64, "vocab_size": vocab}
    (folder / "config.json").write_text(json.dumps(cfg))
    return sum(v.size for v in t.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--graph-models", type=int, default=8)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        print("model\tparams\tpolicy\tfingerprint bytes\tbytes/param\tfp s\tfull self-compare s")
        for name, (h, f, v) in {"small": (512, 1408, 8000), "large": (1536, 4224, 32000)}.items():
            n = synthetic_llama(work / name, h, f, args.layers, v)
            t0 = time.perf_counter()
            modelkin.compare(work / name, work / name, read_mode="full", hash_files=False)
            full_s = time.perf_counter() - t0
            for pname, pol in (("default", DEFAULT_SAMPLE), ("fixed16", FIXED16)):
                s = make_fingerprint(work / name, work / f"{name}-{pname}.mkfp", policy=pol, hash_files=False)
                print(f"{name}\t{n:,}\t{pname}\t{s.n_bytes:,}\t{s.n_bytes / n:.4f}\t{s.seconds:.2f}\t{full_s:.2f}")
                out[(name, pname)] = (n, s.n_bytes, s.seconds, full_s)
        for pname in ("default", "fixed16"):
            (n1, b1, *_), (n2, b2, *_) = out[("small", pname)], out[("large", pname)]
            print(f"{pname}: parameters x{n2 / n1:.1f} -> fingerprint x{b2 / b1:.2f} "
                  f"(7B extrapolated from bytes/param of 'large': {b2 / n2 * 7e9 / 1e6:.0f} MB)")
        # -- search latency ----------------------------------------------------------------------------
        rng = np.random.default_rng(1)
        q = rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        print("indexed\tprune s (load sketches + rank, median of 5)")
        for size in (100, 1000, 10_000):
            db = work / f"ix{size}.sqlite"
            with Index(db) as ix:
                vecs = rng.standard_normal((size, DIM)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                ix.add_sketch_rows([(f"m{i}", {"text": 1}, {"text": vecs[i]}) for i in range(size)])
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                with Index(db) as ix:
                    from modelkin.index.search import prune

                    prune(ix, {"text": q}, 32)
                times.append(time.perf_counter() - t0)
            print(f"{size:,}\t{np.median(times):.4f}")
        t0 = time.perf_counter()
        modelkin.compare(work / "small-fixed16.mkfp", work / "small-fixed16.mkfp", hash_files=False)
        print(f"confirming one candidate (compare of two fingerprints, 'small'): {time.perf_counter() - t0:.2f} s")
        ray_speedup(work, args.graph_models, args.layers)


def ray_speedup(work: Path, n_models: int, layers: int) -> None:
    try:
        import ray
    except ImportError:
        print("all-pairs on Ray: skipped (pip install 'modelkin[scale]')")
        return
    from modelkin.index.graph import build_graph

    db = work / "graph.sqlite"
    with Index(db) as ix:
        for i in range(n_models):
            d = work / f"g{i}"
            if i % 2 == 0:
                synthetic_llama(d, 512, 1408, layers, 8000, seed=100 + i)
            else:  # a lightly perturbed copy of the previous model: one related pair per two models
                from safetensors.numpy import load_file

                t = load_file(str(work / f"g{i - 1}" / "model.safetensors"))
                rng = np.random.default_rng(i)
                t = {k: (v.astype(np.float32) + rng.standard_normal(v.shape, dtype=np.float32) * 0.002).astype(v.dtype)
                     for k, v in t.items()}
                d.mkdir()
                save_file(t, str(d / "model.safetensors"))
                (d / "config.json").write_text((work / f"g{i - 1}" / "config.json").read_text())
            s = make_fingerprint(d, work / f"g{i}.mkfp", policy=FIXED16, hash_files=False)
            ix.add(s.path, name=f"g{i}")
        seconds = {}
        for cpus in (1, 2):
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            try:
                build_graph(ix, candidates=1, ray_address="auto")  # warm the workers (imports) before timing
                t0 = time.perf_counter()
                g = build_graph(ix, ray_address="auto")
                seconds[cpus] = time.perf_counter() - t0
            finally:
                ray.shutdown()
        print(f"all-pairs graph on Ray, {n_models} models, {g.n_compared} pairs ({len(g.edges)} related components): "
              f"1 worker {seconds[1]:.2f} s, 2 workers {seconds[2]:.2f} s, speed-up x{seconds[1] / seconds[2]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
