"""Fingerprints and the index, measured in one run.

1. Fingerprint size per parameter on synthetic Llama-style models of two sizes (bf16), with the default
   (budgeted) fingerprint policy and with 16 rows per tensor in 2 layers: is the size flat in the model's size?
   (Both synthetic models fit the default budget and are kept whole; ``--fp-size`` plans 7B and 70B sizes.)
2. Fingerprint time vs a full self-compare of the same model.
3. Search latency (sketch pruning: load the sketches from SQLite and rank) at 100 / 1,000 / 10,000 indexed
   synthetic sketches, and the time to confirm one candidate with the calibrated compare.
   The whole search (prune, then confirm every candidate) at 100 / 1,000 / 10,000 indexed models, for a
   fine-tuned and a permuted copy of an indexed model (``whole_search``).

4. All-pairs lineage graph of N synthetic models (independent seeds, each with a fine-tuned copy) on a
   local Ray instance with 1 and with 2 CPUs (Ray workers): the speed-up (skipped when Ray is absent).

0. ``--fp-size``: the planned fingerprint size of Llama-shaped 7B and 70B models (bf16), per role, from shapes
   alone (no weights): the budgeted fingerprint policy against the unbudgeted 1 %-of-rows sample (version 1).
   ``--tradeoff [ZOO ...]``: for sample budgets (rows per tensor x layers per component), the planned 7B and 70B
   fingerprint bytes, the agreement of fingerprint-vs-fingerprint verdicts with the full compare of the models
   (every pair of the given zoos' manifests and the examples), and the median |log10 p| of the related pairs.

Usage: PYTHONPATH=src python3 benchmarks/index.py [--layers 4] [--graph-models 8]
       PYTHONPATH=src python3 benchmarks/index.py --fp-size
       PYTHONPATH=src python3 benchmarks/index.py --tradeoff $MODELKIN_ZOO_CACHE /work/cache/zoo-full-cs
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
from modelkin.index.fingerprint import llama_like, make_fingerprint, planned_size
from modelkin.index.sketch import DIM, RAW_DIM, RAW_SUFFIX
from modelkin.index.store import Index
from modelkin.sampling import DEFAULT_SAMPLE, FINGERPRINT_SAMPLE, SamplePolicy

FIXED16 = SamplePolicy(fraction=0.0, min_rows=16, block_rows=16, small_bytes=256 << 10, max_layers=2)  # 16 rows, 2 layers


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


SHAPES = {"7B": dict(hidden=4096, layers=32, ffn=11008, vocab=32000),
          "70B": dict(hidden=8192, layers=80, ffn=28672, vocab=128256, kv_heads=8)}


def _vocab(n: int) -> dict[str, int]:
    return {f"tok{i}": i for i in range(n)}  # a header's vocabulary of that many short tokens


def fp_size() -> None:
    """Planned fingerprint bytes of 7B- and 70B-shaped models, per role, from shapes alone."""
    for pname, pol in (("budgeted (default)", FINGERPRINT_SAMPLE), ("v1: 1 % of rows, every layer", DEFAULT_SAMPLE)):
        for name, shape in SHAPES.items():
            tensors, config = llama_like(**shape)
            n, plan = planned_size(tensors, config, pol, _vocab(shape["vocab"]))
            roles = ", ".join(f"{r} {b / 1e6:.2f}" for r, b in plan.by_role.items())
            layers = f"{plan.k} of {shape['layers']} layers" if plan.k else f"all {shape['layers']} layers"
            print(f"{pname}\t{name}\t{n / 1e6:.2f} MB\t{layers}\theader {(n - plan.payload_bytes) / 1e6:.2f} MB\t"
                  f"payload MB per role: {roles}")


def _tradeoff_pairs(zoos: list[Path]) -> list[tuple[Path, Path]]:
    root = Path(__file__).resolve().parents[1] / "examples"
    pairs = [(root / "base", root / b) for b in ("finetuned", "independent")] + [(root / "vlm-donor", root / "vlm-graft")]
    for z in zoos:
        manifest = json.loads((z / "manifest.json").read_text())
        pairs += [(z / p["a"], z / p["b"]) for p in manifest["pairs"]]
    return pairs


def _budget(rows: int, layers: int | None) -> SamplePolicy:
    """rows per tensor (small tensors too), ``layers`` per component (None: all of them)."""
    return SamplePolicy(fraction=0.0, min_rows=rows, block_rows=16, small_bytes=0, max_layers=layers or 10_000,
                        whole_bytes=0)


def tradeoff(zoos: list[Path]) -> None:
    pairs = _tradeoff_pairs(zoos)
    budgets = {"16 rows x 1 layer": _budget(16, 1), "16 rows x 2 layers": _budget(16, 2),
               "32 rows x 1 layer": _budget(32, 1), "32 rows x 2 layers": _budget(32, 2),
               "32 rows x all layers": _budget(32, None), "48 rows x all layers": _budget(48, None),
               "default (14 MiB budget)": FINGERPRINT_SAMPLE}
    full = {}
    for a, b in pairs:
        r = modelkin.compare(a, b, read_mode="full", hash_files=False)
        full[(a, b)] = ({c: x.verdict for c, x in r.components.items()}, r.verdict)
    print(f"{len(pairs)} pairs ({sum(v[1] == 'related' for v in full.values())} related by the full compare)")
    print("budget\t7B MB\t70B MB\t7B units/type\tagreement\tflips\tmedian |log10 p| related (fp / full)\tdisagreeing pairs")
    full_p = {}
    with tempfile.TemporaryDirectory() as work:
        for bname, pol in budgets.items():
            fps: dict[Path, Path] = {}
            agree, logs, wrong = 0, [], []
            for a, b in pairs:
                for m in (a, b):
                    if m not in fps:
                        fps[m] = Path(make_fingerprint(m, Path(work) / f"{len(fps)}.mkfp", policy=pol, hash_files=False).path)
                r = modelkin.compare(fps[a], fps[b], hash_files=False)
                verdicts = {c: x.verdict for c, x in r.components.items()}
                if verdicts == full[(a, b)][0]:
                    agree += 1
                else:
                    wrong.append(f"{a.name}~{b.name}: " + ",".join(f"{c} {full[(a, b)][0].get(c)}->{v}" for c, v in verdicts.items()
                                                          if full[(a, b)][0].get(c) != v))
                if full[(a, b)][1] == "related":
                    logs.append(abs(r.log10_p))
                    if (a, b) not in full_p:
                        full_p[(a, b)] = abs(modelkin.compare(a, b, read_mode="full", hash_files=False).log10_p)
            sizes, units = [], 0
            for shape in SHAPES.values():
                tensors, config = llama_like(**shape)
                n, plan = planned_size(tensors, config, pol, _vocab(shape["vocab"]))
                sizes.append(n / 1e6)
                units = units or min(shape["ffn"], pol.min_rows) * plan.k  # FFN units (gate rows) per 7B
            # flips: a component called related by one and independent by the other (never acceptable)
            flips = sum(w.count("related->independent") + w.count("independent->related") for w in wrong)
            print(f"{bname}\t{sizes[0]:.1f}\t{sizes[1]:.1f}\t{units}\t{agree}/{len(pairs)}\t{flips}\t"
                  f"{np.median(logs):.1f} / {np.median(list(full_p.values())):.1f}\t{'; '.join(wrong) or '-'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--graph-models", type=int, default=8)
    ap.add_argument("--fp-size", action="store_true", help="only the planned 7B / 70B fingerprint sizes")
    ap.add_argument("--search", action="store_true", help="only the whole-search latency at 100 / 1,000 / 10,000")
    ap.add_argument("--fp7b", action="store_true", help="only 7B-shaped fingerprints (virtual weights): size, compare, search")
    ap.add_argument("--vectors", action="store_true", help="only pruning against FAISS and usearch (when installed)")
    ap.add_argument("--tradeoff", nargs="*", type=Path, default=None, metavar="ZOO",
                    help="only the sample-budget trade-off table, over these zoos' pairs and the examples")
    args = ap.parse_args()
    if args.fp_size:
        return fp_size()
    if args.tradeoff is not None:
        return tradeoff(args.tradeoff)
    if args.search:
        with tempfile.TemporaryDirectory() as work:
            return whole_search(Path(work), args.layers)
    if args.fp7b:
        with tempfile.TemporaryDirectory() as work:
            return fingerprints_7b(Path(work))
    if args.vectors:
        with tempfile.TemporaryDirectory() as work:
            return vector_libraries(Path(work))
    fp_size()
    out = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        print("model\tparams\tpolicy\tfingerprint bytes\tbytes/param\tfp s\tfull self-compare s")
        for name, (h, f, v) in {"small": (512, 1408, 8000), "large": (1536, 4224, 32000)}.items():
            n = synthetic_llama(work / name, h, f, args.layers, v)
            t0 = time.perf_counter()
            modelkin.compare(work / name, work / name, read_mode="full", hash_files=False)
            full_s = time.perf_counter() - t0
            for pname, pol in (("default", FINGERPRINT_SAMPLE), ("fixed16", FIXED16)):
                s = make_fingerprint(work / name, work / f"{name}-{pname}.mkfp", policy=pol, hash_files=False)
                print(f"{name}\t{n:,}\t{pname}\t{s.n_bytes:,}\t{s.n_bytes / n:.4f}\t{s.seconds:.2f}\t{full_s:.2f}")
                out[(name, pname)] = (n, s.n_bytes, s.seconds, full_s)
        for pname in ("default", "fixed16"):
            (n1, b1, *_), (n2, b2, *_) = out[("small", pname)], out[("large", pname)]
            print(f"{pname}: parameters x{n2 / n1:.1f} -> fingerprint x{b2 / b1:.2f}")
        # -- search latency ----------------------------------------------------------------------------
        rng = np.random.default_rng(1)
        keys = {"text": DIM, "text" + RAW_SUFFIX: RAW_DIM}  # both sketches of a component (index/sketch.py)
        q = {k: (v := rng.standard_normal(d).astype(np.float32)) / np.linalg.norm(v) for k, d in keys.items()}
        print("indexed\tprune s (load both sketches + rank, median of 5)")
        for size in (100, 1000, 10_000):
            db = work / f"ix{size}.sqlite"
            with Index(db) as ix:
                vecs = {k: rng.standard_normal((size, d)).astype(np.float32) for k, d in keys.items()}
                vecs = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in vecs.items()}
                ix.add_sketch_rows([(f"m{i}", {"text": 1}, {k: v[i] for k, v in vecs.items()}) for i in range(size)])
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                with Index(db) as ix:
                    from modelkin.index.search import prune

                    prune(ix, q, 32)
                times.append(time.perf_counter() - t0)
            print(f"{size:,}\t{np.median(times):.4f}")
        t0 = time.perf_counter()
        modelkin.compare(work / "small-fixed16.mkfp", work / "small-fixed16.mkfp", hash_files=False)
        print(f"confirming one candidate (compare of two fingerprints, 'small'): {time.perf_counter() - t0:.2f} s")
        whole_search(work, args.layers)
        ray_speedup(work, args.graph_models, args.layers)


def _derived(src: Path, dst: Path, seed: int, permute: bool) -> None:
    """A copy of ``src`` with noise (sd 0.2 x the weights' sd: a fine-tune), its FFN units permuted if asked."""
    from safetensors.numpy import load_file

    t = {k: v.astype(np.float32) for k, v in load_file(str(src / "model.safetensors")).items()}
    rng = np.random.default_rng(seed)
    if permute:
        for k in [k for k in t if k.endswith("mlp.gate_proj.weight")]:
            perm = rng.permutation(t[k].shape[0])
            p = k[: -len("gate_proj.weight")]
            t[p + "gate_proj.weight"], t[p + "up_proj.weight"] = t[p + "gate_proj.weight"][perm], t[p + "up_proj.weight"][perm]
            t[p + "down_proj.weight"] = t[p + "down_proj.weight"][:, perm]
    t = {k: (v + (0.2 * v.std() * rng.standard_normal(v.shape, dtype=np.float32) if v.ndim == 2 else 0)).astype(ml_dtypes.bfloat16)
         for k, v in t.items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(t, str(dst / "model.safetensors"))
    (dst / "config.json").write_text((src / "config.json").read_text())


def whole_search(work: Path, layers: int, sizes=(100, 1000, 10_000), n_unrelated: int = 12) -> None:
    """``search`` end to end (prune, then confirm each candidate with the calibrated compare) at 100 / 1,000 /
    10,000 indexed models, in one process, for a fine-tuned copy of an indexed model and one whose FFN units
    were permuted first (its attention and embedding rows stay in place: random weights have alike spectra, so
    a copy whose every unit moved could not be told from them by its spectrum; the full zoo's trained copies
    show that route).

    The index holds real fingerprints of the parent and of ``n_unrelated`` independent models (random weights
    of one shape: their spectral sketches are alike, the hard case for the spectral sketch), and synthetic
    entries up to the size: each points at one unrelated model's fingerprint (so confirming it is a real
    compare), with that model's spectral sketch plus small noise and a raw sketch drawn from the null."""
    from modelkin.index.search import search

    hidden, ffn, vocab = 256, 704, 4000
    synthetic_llama(work / "s-parent", hidden, ffn, layers, vocab, seed=500)
    for i in range(n_unrelated):
        synthetic_llama(work / f"s-u{i}", hidden, ffn, layers, vocab, seed=501 + i)
    _derived(work / "s-parent", work / "s-finetuned", 1, permute=False)
    _derived(work / "s-parent", work / "s-permuted", 2, permute=True)
    fps = {n: make_fingerprint(work / n, work / f"{n}.mkfp", hash_files=False).path
           for n in ["s-parent", "s-finetuned", "s-permuted"] + [f"s-u{i}" for i in range(n_unrelated)]}
    rng = np.random.default_rng(3)
    print("indexed\tquery\twhole search s (median of 3)\tcandidates confirmed\tparent's rank and verdict")
    for size in sizes:
        db = work / f"search{size}.sqlite"
        with Index(db) as ix:
            real = {n: ix.add(fps[n], name=n) for n in ["s-parent"] + [f"s-u{i}" for i in range(n_unrelated)]}
            _add_synthetic(ix, [real[n] for n in real if n != "s-parent"], size - len(real), rng)
        for q in ("s-finetuned", "s-permuted"):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                with Index(db) as ix:
                    res = search(ix, str(fps[q]))
                times.append(time.perf_counter() - t0)
            rank = next(((k + 1, h.verdict) for k, h in enumerate(res.hits) if h.name == "s-parent"), None)
            print(f"{size:,}\t{q}\t{np.median(times):.2f}\t{res.n_confirmed}\t{rank}")


def vector_libraries(work: Path, sizes=(10_000, 100_000), k: int = 32) -> None:
    """Pruning as the index does it (sketch BLOBs loaded from SQLite, ranked by one matrix product) against two
    vector-search libraries, where installed (not dependencies of modelkin): FAISS (exact inner product,
    ``IndexFlatIP``, read from its file) and usearch (HNSW, cosine, its file memory-mapped with ``view``).
    Each time is a whole query from a cold open of what is on disk, median of 5; the libraries' top-k is
    checked against the exact top-k (recall@k)."""
    from modelkin.index.search import prune

    rng = np.random.default_rng(4)
    keys = {"text": DIM, "text" + RAW_SUFFIX: RAW_DIM}
    print(f"indexed\tmethod\tquery s (median of 5)\trecall@{k} of the exact top {k}")
    for size in sizes:
        vecs = {key: rng.standard_normal((size, d)).astype(np.float32) for key, d in keys.items()}
        vecs = {key: v / np.linalg.norm(v, axis=1, keepdims=True) for key, v in vecs.items()}
        q = {key: v[0] + 0.5 * rng.standard_normal(v.shape[1]).astype(np.float32) / np.sqrt(v.shape[1]) for key, v in vecs.items()}
        q = {key: v / np.linalg.norm(v) for key, v in q.items()}
        exact = {key: set(np.argsort(-(v @ q[key]))[:k].tolist()) for key, v in vecs.items()}
        db = work / f"vec{size}.sqlite"
        with Index(db) as ix:
            ix.add_sketch_rows([(f"m{i}", {"text": 1}, {key: v[i] for key, v in vecs.items()}) for i in range(size)])

        def sqlite_numpy():
            with Index(db) as ix:
                prune(ix, q, k)
        runs = {"SQLite + numpy (modelkin)": (sqlite_numpy, 1.0)}
        try:
            import faiss

            for key, v in vecs.items():
                flat = faiss.IndexFlatIP(v.shape[1])
                flat.add(v)
                faiss.write_index(flat, str(work / f"faiss{size}{key}"))

            def faiss_run():
                got = {}
                for key in vecs:
                    flat = faiss.read_index(str(work / f"faiss{size}{key}"))
                    got[key] = set(flat.search(q[key][None, :], k)[1][0].tolist())
                return np.mean([len(got[key] & exact[key]) / k for key in vecs])
            runs["FAISS IndexFlatIP (exact)"] = (faiss_run, None)
        except ImportError:
            print(f"{size:,}\tFAISS\tnot installed")
        try:
            from usearch.index import Index as UIndex

            for key, v in vecs.items():
                u = UIndex(ndim=v.shape[1], metric="cos", dtype="f32")
                u.add(np.arange(size), v)
                u.save(str(work / f"usearch{size}{key}"))

            def usearch_run():
                got = {}
                for key in vecs:
                    u = UIndex.restore(str(work / f"usearch{size}{key}"), view=True)
                    got[key] = set(u.search(q[key], k).keys.tolist())
                return np.mean([len(got[key] & exact[key]) / k for key in vecs])
            runs["usearch HNSW (approximate)"] = (usearch_run, None)
        except ImportError:
            print(f"{size:,}\tusearch\tnot installed")
        for name, (fn, recall) in runs.items():
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                r = fn()
                times.append(time.perf_counter() - t0)
            recall = recall if r is None else r
            print(f"{size:,}\t{name}\t{np.median(times):.4f}\t{recall:.3f}")


class VirtualWeights:
    """A safetensors file of a Llama-shaped model that is never written: a transport (``read_into``) that
    answers the header from memory and every weight from a counter-based hash of its position, N(0, 0.02^2)
    in BF16 — the same value at the same place on every read. ``noise_seed``: the weights plus 0.2 x their sd
    of independent noise (a fine-tuned copy). Only what a fingerprint reads is ever computed; making one reads
    through ``read_into`` alone (a local file is neither prefetched nor streamed by it)."""

    remote = False

    def __init__(self, name: str, tensors: dict, seed: int, noise_seed: int | None = None):
        import json as _json

        head, off = {}, 0
        for n, info in sorted(tensors.items()):
            head[n] = {"dtype": "BF16", "shape": list(info.shape), "data_offsets": [off, off + info.n_bytes]}
            off += info.n_bytes
        text = _json.dumps(head).encode()
        text += b" " * (-len(text) % 8)
        self.header = len(text).to_bytes(8, "little") + text
        self.name, self.size, self.seed, self.noise_seed = name, len(self.header) + off, seed, noise_seed

    @staticmethod
    def _normal(seed: int, idx: np.ndarray) -> np.ndarray:
        def mix(z):
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return z ^ (z >> np.uint64(31))
        base = idx.astype(np.uint64) * np.uint64(2) + np.uint64((seed * 0x9E3779B97F4A7C15) % (1 << 64))
        u1 = ((mix(base) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
        u2 = ((mix(base + np.uint64(1)) >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
        return np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)

    def read_into(self, offset: int, out: np.ndarray) -> None:
        buf = out.reshape(-1).view(np.uint8)
        n, h = buf.size, len(self.header)
        if offset < h:
            k = min(n, h - offset)
            buf[:k] = np.frombuffer(self.header[offset: offset + k], np.uint8)
            buf, offset, n = buf[k:], offset + k, n - k
        if n:
            e0, e1 = (offset - h) // 2, (offset - h + n + 1) // 2
            idx = np.arange(e0, e1, dtype=np.uint64)
            v = self._normal(self.seed, idx)
            if self.noise_seed is not None:
                v = v + 0.2 * self._normal(self.noise_seed, idx)
            raw = (0.02 * v).astype(ml_dtypes.bfloat16).view(np.uint8)
            lead = (offset - h) % 2
            buf[:] = raw[lead: lead + n]

    def close(self) -> None:
        pass


def fingerprints_7b(work: Path, indexed: int = 10_000) -> None:
    """Fingerprints of Llama-shaped 7B models (BF16, random weights) made from virtual files (``VirtualWeights``):
    their size, the time to make one, a compare of two of them (a fine-tuned copy, an independent model), and a
    whole search at ``indexed`` models whose every candidate is such a fingerprint."""
    from modelkin.index.search import search
    from modelkin.sources.model import ModelSource
    from modelkin.sources.safetensors_format import SafetensorsFile

    tensors, config = llama_like(**SHAPES["7B"])
    fps = {}
    for name, seed, noise in (("parent", 7, None), ("copy", 7, 8), ("other", 9, None), ("other2", 10, None)):
        f = SafetensorsFile(VirtualWeights(f"virtual-7b-{name}/model.safetensors", tensors, seed, noise))
        src = ModelSource(f"virtual-7b-{name}", f"virtual-7b-{name}", (f,), dict(f.tensors), config)
        t0 = time.perf_counter()
        s = make_fingerprint(src, work / f"7b-{name}.mkfp", hash_files=False)
        fps[name] = Path(s.path)
        print(f"7B fingerprint {name}: {s.n_bytes / 1e6:.2f} MB in {time.perf_counter() - t0:.1f} s")
    for b in ("parent", "other"):
        modelkin.compare(fps["copy"], fps[b], hash_files=False, threads=1)  # warm
        t0 = time.perf_counter()
        r = modelkin.compare(fps["copy"], fps[b], hash_files=False, threads=1)
        print(f"compare 7B fingerprints copy vs {b}: {r.verdict} (log10 p {r.log10_p:.1f}) in {time.perf_counter() - t0:.2f} s")
    rng = np.random.default_rng(5)
    with Index(work / "7b.sqlite") as ix:
        real = {n: ix.add(fps[n], name=n) for n in ("parent", "other", "other2")}
        _add_synthetic(ix, [real["other"], real["other2"]], indexed - len(real), rng)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        with Index(work / "7b.sqlite") as ix:
            res = search(ix, str(fps["copy"]))
        times.append(time.perf_counter() - t0)
    rank = next(((k + 1, h.verdict) for k, h in enumerate(res.hits) if h.name == "parent"), None)
    print(f"whole search among {indexed:,} indexed 7B fingerprints: {np.median(times):.2f} s (median of 5; "
          f"{min(times):.2f} to {max(times):.2f}), {res.n_confirmed} compared, parent {rank}")


def _add_synthetic(ix: Index, unrelated: list, count: int, rng: np.random.Generator) -> None:
    """``count`` synthetic entries, each pointing at one of the ``unrelated`` indexed models' fingerprint (so
    confirming it is a real compare), with that model's spectral sketch plus noise (sd 0.002) and a raw sketch
    drawn from the null (independent of every other)."""

    base = {rec.name: _sketches_of(ix, rec.name) for rec in unrelated}
    rows, shas = [], []
    for j in range(count):
        rec = unrelated[j % len(unrelated)]
        sk = {}
        for comp, v in base[rec.name].items():
            w = rng.standard_normal(v.size) if comp.endswith(RAW_SUFFIX) else v + 0.002 * rng.standard_normal(v.size)
            sk[comp] = (w / np.linalg.norm(w)).astype(np.float32)
        rows.append((f"syn{j}", rec.parameters, sk))
        shas.append(rec.sha256)
    ix.add_sketch_rows(rows, shas)


def _sketches_of(ix: Index, name: str) -> dict[str, np.ndarray]:
    out = {}
    for (comp,) in ix.db.execute("SELECT component FROM sketches WHERE name=?", (name,)).fetchall():
        names, mat = ix.sketches(comp)
        out[comp] = mat[names.index(name)]
    return out


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
