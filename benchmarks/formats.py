#!/usr/bin/env python3
"""Reading each weights format: ``modelkin compare`` against loading the file whole with the format's own
library, in one run (issue 9). Formats so far: safetensors (the reference) and ONNX.

For each format it writes (or reuses) a synthetic Llama-shaped model A of about ``--size-mb`` and a
related model B (A plus noise of 10 % of each tensor's scale), then times comparing A with B two ways:

* ``modelkin``  ``modelkin.compare(A, B)`` in this process after one untimed warm-up run (page cache warm),
  and ``python -m modelkin compare A B --quiet --json /dev/null`` in a child for peak RSS.
* ``load-all``  the format's own library loads both files whole (``safetensors.numpy.load_file``;
  ``onnx.load``, then ``onnx.numpy_helper.to_array`` per initializer), then cosine and Pearson per tensor:
  what a script without modelkin does. Same warm-up, same child measurement.

ONNX cases: ``onnx-fp32`` (B an fp32 export like A: anonymous [in, out] MatMul weights, transposed back
on read) and ``onnx-int8`` (B quantised like onnxruntime's dynamic quantiser: MatMulInteger, per-channel
int8, dequantised on read; ``load-all`` then dequantises with numpy).

Throughput is bytes of both source files / seconds. Peak RSS is "Maximum resident set size" of the child
from ``/usr/bin/time -v`` (it includes file pages a method maps).

Run: ``python benchmarks/formats.py [--size-mb 600] [--dir DIR] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the ONNX writers the tests use


def _tensors(size_mb: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Llama-shaped float32 weights (hidden 2048, MLP 5632) of about ``size_mb``."""
    hidden, ffn = 2048, 5632
    r = np.random.default_rng(seed)
    per_layer = 4 * hidden * hidden + 3 * hidden * ffn
    vocab = 8000
    layers = max(1, round((size_mb * 2**20 / 4 - 2 * vocab * hidden) / per_layer))
    t = {"model.embed_tokens.weight": r.standard_normal((vocab, hidden), np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden, hidden)),
                            ("self_attn.v_proj", (hidden, hidden)), ("self_attn.o_proj", (hidden, hidden)),
                            ("mlp.gate_proj", (ffn, hidden)), ("mlp.up_proj", (ffn, hidden)), ("mlp.down_proj", (hidden, ffn))):
            t[p + name + ".weight"] = r.standard_normal(shape, np.float32) * np.float32(0.02)
        t[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    t["model.norm.weight"] = np.ones(hidden, np.float32)
    t["lm_head.weight"] = r.standard_normal((vocab, hidden), np.float32) * np.float32(0.02)
    return t


def write_cases(root: Path, size_mb: float) -> dict[str, tuple[Path, Path]]:
    """(A, B) folders per case, written once and reused."""
    import onnx_builders as ob
    from builders import write_model

    spec = {"size_mb": size_mb, "version": 2}
    marker = root / "spec.json"
    cases = {"safetensors": (root / "st-a", root / "st-b"), "onnx-fp32": (root / "onnx-a", root / "onnx-b"),
             "onnx-int8": (root / "onnx-a", root / "onnx-b8")}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return cases
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    a = _tensors(size_mb)
    write_model(root / "st-a", a)
    ob.save(ob.export_decoder(a), root / "onnx-a")
    r = np.random.default_rng(1)
    b = {k: (v + np.float32(0.1) * v.std() * r.standard_normal(v.shape, np.float32)).astype(np.float32) for k, v in a.items()}
    del a
    write_model(root / "st-b", b)
    ob.save(ob.export_decoder(b), root / "onnx-b")
    ob.save(ob.export_decoder(b, quant="dynamic", weight_type="int8", per_channel=True), root / "onnx-b8")
    marker.write_text(json.dumps(spec))
    return cases


# -- the two methods --------------------------------------------------------------------------------


def run_modelkin(a: Path, b: Path, threads: int) -> None:
    import modelkin

    res = modelkin.compare(a, b, threads=threads, hash_files=False)
    assert res.verdict == "related", res.verdict


def _onnx_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every weight of an ONNX file as float32 [out, in], loaded whole: initializers by numpy_helper,
    integer MatMul weights dequantised with their scale and zero point, [in, out] MatMul weights transposed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            out[node.input[1]] = inits[node.input[1]].T
        elif node.op_type == "MatMulInteger" and node.input[1] in inits:
            base = node.input[1][: -len("_quantized")]
            q = inits[node.input[1]].astype(np.float32) - inits[base + "_zero_point"].astype(np.float32)
            out[base] = (q * inits[base + "_scale"]).T
        elif node.op_type in ("Gather", "Mul") and node.input[0] in inits:
            out[node.input[0]] = inits[node.input[0]]
        elif node.op_type == "Mul" and node.input[1] in inits and inits[node.input[1]].ndim == 1 and not node.input[1].endswith("_scale"):
            out[node.input[1]] = inits[node.input[1]]
    return out


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    if (folder / "model.safetensors").exists():
        from safetensors.numpy import load_file

        return load_file(str(folder / "model.safetensors"))
    return _onnx_arrays(folder / "model.onnx")


def run_load_all(a: Path, b: Path, threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    arrays_a, arrays_b = _arrays(a), _arrays(b)
    order_a, order_b = list(arrays_a), list(arrays_b)  # same order: the i-th weight pairs with the i-th

    def stats(pair):
        x, y = (v.astype(np.float64).reshape(-1) for v in pair)
        with np.errstate(invalid="ignore", divide="ignore"):  # constant norm gains: Pearson undefined
            cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
            return cos, float(np.corrcoef(x, y)[0, 1]) if x.size > 1 else 0.0

    pairs = [(arrays_a[na], arrays_b[nb]) for na, nb in zip(order_a, order_b)]
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(stats, pairs))
    assert min(p for _, p in results if p == p) > 0.9


METHODS = {"modelkin": run_modelkin, "load-all": run_load_all}


# -- measuring ---------------------------------------------------------------------------------------------


def child_peak(method: str, a: Path, b: Path, threads: int) -> tuple[float | None, float | None]:
    """(peak RSS MB, wall s) of one method run alone in a child under /usr/bin/time -v."""
    time_bin = shutil.which("time", path="/usr/bin:/bin")
    if time_bin is None:
        return None, None
    cmd = [time_bin, "-v", sys.executable, str(Path(__file__).resolve()), "--child", method, str(a), str(b), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    w = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    if proc.returncode != 0:
        print(f"  {method}: child failed: {proc.stderr.strip().splitlines()[-1:]}")
    rss = int(m.group(1)) / 1024 if m else None
    wall = (int(w.group(1) or 0) * 3600 + int(w.group(2)) * 60 + float(w.group(3))) if w else None
    return rss, wall


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=600, help="size of model A (default 600 MB)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "modelkin-formats", help="where the files go (reused)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "A", "B"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        method, a, b = args.child
        METHODS[method](Path(a), Path(b), args.threads)
        return 0
    t0 = time.perf_counter()
    cases = write_cases(args.dir, args.size_mb)
    print(f"files ready in {time.perf_counter() - t0:.1f} s ({args.dir})")
    header = f"{'case':10} {'method':9} {'source MB':>9} {'time s':>7} {'MB/s':>7} {'peak RSS MB':>11} {'child wall s':>12}"
    print(header)
    rows = []
    for case, (a, b) in cases.items():
        mb = (_size(a) + _size(b)) / 2**20
        for method, run in METHODS.items():
            run(a, b, args.threads)  # warm-up: both files in the page cache
            t = time.perf_counter()
            run(a, b, args.threads)
            seconds = time.perf_counter() - t
            rss, wall = child_peak(method, a, b, args.threads)
            rows.append((case, method, mb, seconds, rss))
            print(f"{case:10} {method:9} {mb:9.0f} {seconds:7.2f} {mb / seconds:7.0f} {rss or float('nan'):11.0f} {wall or float('nan'):12.1f}")
    st = next(r for r in rows if r[0] == "safetensors" and r[1] == "modelkin")
    for case in cases:
        mk = next(r for r in rows if r[0] == case and r[1] == "modelkin")
        if case != "safetensors":
            print(f"{case}: modelkin reads it at {(mk[2] / mk[3]) / (st[2] / st[3]):.2f}x the MB/s it reads safetensors at")
        la = next(r for r in rows if r[0] == case and r[1] == "load-all")
        print(f"{case}: modelkin {la[3] / mk[3]:.1f}x the throughput of load-all, {la[4] / mk[4] if mk[4] and la[4] else float('nan'):.1f}x less peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
