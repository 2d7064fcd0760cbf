#!/usr/bin/env python3
"""Reading each weights format: ``modelkin compare`` against loading the files whole with the format's own
library, in one run (issue 9). Cases: safetensors (the reference), GGUF F16, GGUF Q8_0, PyTorch zip
``.bin``, and ONNX fp32/int8 when the ONNX reader and its test writers are present.

For each case it writes (or reuses) a synthetic Llama-shaped model A whose file is at least ``--size-mb``
in that case's encoding (F32 for safetensors, .bin and ONNX; 2 bytes a weight for F16; 34 bytes per 32
for Q8_0), and a related model B (A plus noise of 10 % of each tensor's scale), then compares A with B
two ways:

* ``modelkin``  ``modelkin.compare(A, B)`` in this process (full reads, as for any local model; no file
  hashing) after one untimed warm-up run (page cache warm), and ``python -m modelkin compare A B --quiet
  --json /dev/null --no-hash`` in a child for peak RSS.
* ``load-all``  the format's own library loads both files whole, then cosine and Pearson per tensor: what
  a script without modelkin does. safetensors: ``safetensors.numpy.load_file``; GGUF: ``gguf.GGUFReader``
  and ``gguf.quants.dequantize`` of every tensor; ``.bin``: ``torch.load(weights_only=True)``; ONNX:
  ``onnx.load`` and ``onnx.numpy_helper.to_array`` (int8 MatMulInteger weights dequantised with numpy).
  Same warm-up, same child measurement.

Throughput is bytes of both source files / seconds. Peak RSS is "Maximum resident set size" of the child
from ``/usr/bin/time -v`` (it includes file pages a method maps). Files are written tensor by tensor
where the writer allows (GGUF), and GGUF B is written from A's values plus noise, generated again from
the same seeds, so writing never holds a whole model.

Run: ``python benchmarks/formats.py [--size-mb 600] [--cases safetensors,gguf-q8_0] [--dir DIR] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the writers the tests use

HIDDEN, FFN, VOCAB, HEADS = 2048, 5632, 8000, 16
NOISE = 0.1
SPEC_VERSION = 3

# -- the synthetic model, tensor by tensor -----------------------------------------------------------------


def _layout(n_layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """(Hugging Face name, shape) of a Llama-shaped model, in file order."""
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN)),
                (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                (p + "mlp.gate_proj.weight", (FFN, HIDDEN)), (p + "mlp.up_proj.weight", (FFN, HIDDEN)),
                (p + "mlp.down_proj.weight", (HIDDEN, FFN)),
                (p + "input_layernorm.weight", (HIDDEN,)), (p + "post_attention_layernorm.weight", (HIDDEN,))]
    return out + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def n_layers_for(size_mb: float, bytes_per_weight: float) -> int:
    """Layers so that the matrices alone take at least ``size_mb`` at ``bytes_per_weight``."""
    per_layer = 4 * HIDDEN * HIDDEN + 3 * HIDDEN * FFN
    fixed = 2 * VOCAB * HIDDEN
    need = size_mb * 2**20 / bytes_per_weight
    return max(1, int(np.ceil((need - fixed) / per_layer)))


def _tensor(index: int, name: str, shape: tuple[int, ...], related: bool) -> np.ndarray:
    """Tensor ``index`` of A (``related`` False) or of B = A + 10 % noise, from per-tensor seeds."""
    if len(shape) == 1:
        return np.ones(shape, np.float32)
    a = np.random.default_rng([0, index]).standard_normal(shape, np.float32)
    a *= np.float32(0.02)
    if related:
        noise = np.random.default_rng([1, index]).standard_normal(shape, np.float32)
        a += np.float32(NOISE * 0.02) * noise
    return a


def tensors(n_layers: int, related: bool) -> Iterator[tuple[str, np.ndarray]]:
    for i, (name, shape) in enumerate(_layout(n_layers)):
        yield name, _tensor(i, name, shape, related)


# -- writers, one per case -------------------------------------------------------------------------------


def write_safetensors(folder: Path, n_layers: int, related: bool) -> Path:
    from builders import write_model

    write_model(folder, dict(tensors(n_layers, related)))
    return folder / "model.safetensors"


def write_pytorch(folder: Path, n_layers: int, related: bool) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: torch.from_numpy(v) for k, v in tensors(n_layers, related)}, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
GGUF_LAYER = {"self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
              "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
              "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
              "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
              "post_attention_layernorm.weight": "ffn_norm.weight"}


def _gguf_name(hf: str) -> str:
    if hf in GGUF_TOP:
        return GGUF_TOP[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{GGUF_LAYER[rest]}"


def write_gguf(folder: Path, n_layers: int, related: bool, qtype: str) -> Path:
    """A llama GGUF as convert_hf_to_gguf.py writes one (matrices F16 or Q8_0, vectors F32), streamed."""
    import gguf

    Q = gguf.GGMLQuantizationType
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layers)
    w.add_context_length(2048)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type({"F16": 1, "Q8_0": 7}[qtype])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    layout = _layout(n_layers)
    for name, shape in layout:
        if len(shape) == 1:
            w.add_tensor_info(_gguf_name(name), shape, np.dtype(np.float32), 4 * shape[0])
        elif qtype == "F16":
            w.add_tensor_info(_gguf_name(name), shape, np.dtype(np.float16), 2 * shape[0] * shape[1])
        else:
            byte_shape = (shape[0], shape[1] // 32 * 34)
            w.add_tensor_info(_gguf_name(name), byte_shape, np.dtype(np.uint8), byte_shape[0] * byte_shape[1], raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for i, (name, shape) in enumerate(layout):
        x = _tensor(i, name, shape, related)
        if x.ndim == 1:
            w.write_tensor_data(x)
        elif qtype == "F16":
            w.write_tensor_data(x.astype(np.float16))
        else:
            w.write_tensor_data(gguf.quants.quantize(x, Q.Q8_0))
    w.close()
    return path


def write_onnx(folder: Path, n_layers: int, related: bool, quant: bool) -> Path:
    import onnx_builders as ob

    t = dict(tensors(n_layers, related))
    model = ob.export_decoder(t, quant="dynamic", weight_type="int8", per_channel=True) if quant else ob.export_decoder(t)
    ob.save(model, folder)
    return folder / "model.onnx"


# -- the format's own library, loading a file whole --------------------------------------------------------


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def load_gguf(path: Path) -> dict[str, np.ndarray]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}


def load_pytorch(path: Path) -> dict[str, np.ndarray]:
    import torch

    return {k: v.numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}


def load_onnx(path: Path) -> dict[str, np.ndarray]:
    """Every weight of an ONNX file as float32, loaded whole: initializers by numpy_helper, integer MatMul
    weights dequantised with their scale and zero point, [in, out] MatMul weights transposed."""
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


def _onnx_available() -> bool:
    try:
        import onnx_builders  # noqa: F401

        from modelkin.sources import onnx_format  # noqa: F401
    except ImportError:
        return False
    return True


# name -> (bytes per weight of its matrices, writer(folder, n_layers, related) -> file, whole-file loader)
CASES: dict[str, tuple[float, Callable[[Path, int, bool], Path], Callable[[Path], dict]]] = {
    "safetensors": (4, write_safetensors, load_safetensors),
    "gguf-f16": (2, lambda f, n, r: write_gguf(f, n, r, "F16"), load_gguf),
    "gguf-q8_0": (34 / 32, lambda f, n, r: write_gguf(f, n, r, "Q8_0"), load_gguf),
    "pytorch-bin": (4, write_pytorch, load_pytorch),
}
if _onnx_available():
    CASES["onnx-fp32"] = (4, lambda f, n, r: write_onnx(f, n, r, quant=False), load_onnx)
    CASES["onnx-int8"] = (4, lambda f, n, r: write_onnx(f, n, r, quant=r), load_onnx)  # A fp32, B int8


def write_cases(root: Path, size_mb: float, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """(A, B) weights files per case, written once and reused while the spec matches."""
    out = {}
    for name in names:
        bytes_per_weight, writer, _ = CASES[name]
        n_layers = n_layers_for(size_mb, bytes_per_weight)
        spec = {"size_mb": size_mb, "layers": n_layers, "version": SPEC_VERSION}
        folder = root / name
        marker = folder / "spec.json"
        done = json.loads(marker.read_text()) if marker.exists() else None
        files = done.get("files", []) if done else []
        if done and {k: done.get(k) for k in spec} == spec and all(Path(p).exists() for p in files):
            out[name] = tuple(Path(p) for p in files)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        a = writer(folder / "a", n_layers, False)
        b = writer(folder / "b", n_layers, True)
        marker.write_text(json.dumps({**spec, "files": [str(a), str(b)]}))
        print(f"  wrote {name}: {n_layers} layers, {a.stat().st_size / 2**20:.0f} + {b.stat().st_size / 2**20:.0f} MB "
              f"in {time.perf_counter() - t:.0f} s", flush=True)
        out[name] = (a, b)
    return out


# -- the two methods --------------------------------------------------------------------------------------


def run_modelkin(case: str, a: Path, b: Path, threads: int) -> None:
    import modelkin

    res = modelkin.compare(a, b, threads=threads, hash_files=False)
    assert res.verdict == "related", res.verdict


def run_load_all(case: str, a: Path, b: Path, threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    load = CASES[case][2]
    arrays_a, arrays_b = load(a), load(b)
    # Same order in both files: the i-th weight pairs with the i-th.
    pairs = list(zip(arrays_a.values(), arrays_b.values()))

    def stats(pair):
        x, y = (v.astype(np.float64).reshape(-1) for v in pair)
        with np.errstate(invalid="ignore", divide="ignore"):  # constant norm gains: Pearson undefined
            cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
            return cos, float(np.corrcoef(x, y)[0, 1]) if x.size > 1 else 0.0

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(stats, pairs))
    assert min(p for _, p in results if p == p) > 0.9


METHODS = {"modelkin": run_modelkin, "load-all": run_load_all}


# -- measuring ---------------------------------------------------------------------------------------------


def child_peak(method: str, case: str, a: Path, b: Path, threads: int) -> tuple[float | None, float | None]:
    """(peak RSS MB, wall s) of one method run alone in a child under /usr/bin/time -v."""
    time_bin = shutil.which("time", path="/usr/bin:/bin")
    if time_bin is None:
        return None, None
    if method == "modelkin":  # what a user runs
        cmd = [sys.executable, "-m", "modelkin", "compare", str(a), str(b), "--quiet", "--json", os.devnull, "--threads", str(threads), "--no-hash"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, case, str(a), str(b), "--threads", str(threads)]
    proc = subprocess.run([time_bin, "-v", *cmd], capture_output=True, text=True, timeout=3600)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    w = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    if proc.returncode != 0:
        print(f"  {method}: child failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-3:]}")
    rss = int(m.group(1)) / 1024 if m else None
    wall = (int(w.group(1) or 0) * 3600 + int(w.group(2)) * 60 + float(w.group(3))) if w else None
    return rss, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=600, help="least size of each model file, in its own encoding (default 600)")
    ap.add_argument("--cases", default="", help=f"comma-separated (default all: {','.join(CASES)})")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "modelkin-formats", help="where the files go (reused)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=4, metavar=("METHOD", "CASE", "A", "B"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        method, case, a, b = args.child
        METHODS[method](case, Path(a), Path(b), args.threads)
        return 0
    names = [c for c in args.cases.split(",") if c] or list(CASES)
    unknown = set(names) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; have {list(CASES)}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.threads} threads per method", flush=True)
    t0 = time.perf_counter()
    cases = write_cases(args.dir, args.size_mb, names)
    print(f"files ready in {time.perf_counter() - t0:.0f} s ({args.dir})")
    header = f"{'case':12} {'method':9} {'file MB':>7} {'both MB':>7} {'time s':>7} {'MB/s':>6} {'peak RSS MB':>11} {'child wall s':>12}"
    print(header)
    rows = {}
    for case, (a, b) in cases.items():
        mb = (a.stat().st_size + b.stat().st_size) / 2**20
        for method, run in METHODS.items():
            run(case, a, b, args.threads)  # warm-up: both files in the page cache
            t = time.perf_counter()
            run(case, a, b, args.threads)
            seconds = time.perf_counter() - t
            rss, wall = child_peak(method, case, a, b, args.threads)
            rows[case, method] = (mb, seconds, rss)
            print(f"{case:12} {method:9} {a.stat().st_size / 2**20:7.0f} {mb:7.0f} {seconds:7.2f} {mb / seconds:6.0f} "
                  f"{rss or float('nan'):11.0f} {wall or float('nan'):12.1f}", flush=True)
    print()
    for case in cases:
        mk_mb, mk_s, mk_rss = rows[case, "modelkin"]
        la_mb, la_s, la_rss = rows[case, "load-all"]
        line = f"{case}: modelkin at {la_s / mk_s:.2f}x the throughput of load-all"
        line += f", {la_rss / mk_rss:.1f}x less peak RSS" if mk_rss and la_rss else ""
        if "safetensors" in cases and case != "safetensors":
            st_mb, st_s, _ = rows["safetensors", "modelkin"]
            line += f"; {(mk_mb / mk_s) / (st_mb / st_s):.2f}x the MB/s modelkin reads safetensors at"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
