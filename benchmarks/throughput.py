#!/usr/bin/env python3
"""How fast does ``modelkin compare`` read two models, against what the hardware and numpy allow?

Writes (or reuses) two synthetic LLM-shaped models per dtype (BF16 and F32, ~``--size-gb`` each; model B is
A plus noise, so the pair is "related"), then times three ways of comparing every tensor of A with B:

* ``modelkin``  ``modelkin.compare(a, b, threads=N)``, the Python API; peak RSS from
  ``python -m modelkin compare A B --quiet --json /dev/null`` in a child under ``/usr/bin/time -v``.
* ``baseline``  bare numpy, one pass: ``np.memmap`` both files, one ``np.dot`` of A and B per tensor
  (BF16 widened to float32 by a uint16 -> uint32 shift, in chunks), chunks spread over N threads.
* ``load-all``  ``safetensors.numpy.load_file`` both models (``safetensors.torch`` for BF16, which
  safetensors.numpy cannot hold), then cosine and Pearson per tensor over N threads.

Each method runs once untimed to warm the page cache, then ``--repeats`` timed runs (best is reported): the
numbers are for files already in RAM, i.e. the decode/compute cost, not the disk. Throughput counts the
bytes of both models. Peak RSS ("Maximum resident set size") comes from a child process running the method
alone, and includes file-backed pages that the method maps (so the memmap baseline shows the files' size).

Run: ``python benchmarks/throughput.py [--size-gb 1.0] [--dir DIR] [--threads 2] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _early_blas_threads() -> str:
    """``--blas-threads N`` must reach OpenBLAS before numpy loads it, so it is read from argv here."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--blas-threads=") else argv[i + 1] if arg == "--blas-threads" and i + 1 < len(argv) else None
        if value is not None:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value  # children (RSS measurements, the modelkin CLI) inherit it
    return os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "library default"


BLAS_THREADS = _early_blas_threads()

import numpy as np  # noqa: E402  (after the BLAS thread setting)

DTYPES = ("BF16", "F32")
ITEMSIZE = {"BF16": 2, "F32": 4}
CHUNK_ELEMS = 1 << 22  # 4 Mi elements per piece of work in the baseline (F32) and when writing
BF16_CHUNK_ELEMS = 1 << 18  # BF16 is widened in place in a 1 MiB buffer that stays in cache
RSS_TARGET_MB = 512
RATIO_TARGET = 0.5
NOISE = 0.1  # B = A + NOISE * N(0, std(A)): Pearson ~0.995
HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


# -- synthetic models ---------------------------------------------------------------------------


def layout(size_gb: float, dtype: str, hidden: int) -> tuple[list[tuple[str, tuple[int, ...]]], dict]:
    """Llama-like tensor list (TinyLlama widths by default) whose total is close to ``size_gb``."""
    inter = hidden * 11 // 4  # 2048 -> 5632
    budget = size_gb * 1e9 / ITEMSIZE[dtype]
    vocab = 32000 if budget > 4 * 32000 * hidden else max(64, int(budget * 0.25 / hidden))
    per_layer = 4 * hidden * hidden + 3 * inter * hidden + 2 * hidden
    layers = max(1, round((budget - vocab * hidden - hidden) / per_layer))
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + f"self_attn.{x}_proj.weight", (hidden, hidden)) for x in "qkvo"]
        shapes += [
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    shapes.append(("model.norm.weight", (hidden,)))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "num_key_value_heads": max(1, hidden // 64),
        "vocab_size": vocab,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16" if dtype == "BF16" else "float32",
    }
    return shapes, config


def _header(shapes, dtype: str) -> bytes:
    header, offset = {"__metadata__": {"format": "pt", "generator": "modelkin benchmarks/throughput.py"}}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    return text + b" " * (-(len(text) + 8) % 8)


def _encode(x: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return x.astype("<f4", copy=False).tobytes()
    import ml_dtypes

    return x.astype(ml_dtypes.bfloat16).tobytes()


def write_pair(folder: Path, size_gb: float, dtype: str, hidden: int, seed: int = 0) -> tuple[Path, Path]:
    """Stream models a/ and b/ to disk tensor by tensor (bounded memory). Reused when the spec matches."""
    shapes, config = layout(size_gb, dtype, hidden)
    spec = {"size_gb": size_gb, "dtype": dtype, "hidden": hidden, "seed": seed, "noise": NOISE, "version": 1}
    a_dir, b_dir = folder / "a", folder / "b"
    marker = folder / "bench-spec.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec and (a_dir / "model.safetensors").is_file() and (b_dir / "model.safetensors").is_file():
        return a_dir, b_dir
    shutil.rmtree(folder, ignore_errors=True)
    a_dir.mkdir(parents=True)
    b_dir.mkdir(parents=True)
    header = _header(shapes, dtype)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with open(a_dir / "model.safetensors.tmp", "wb") as fa, open(b_dir / "model.safetensors.tmp", "wb") as fb:
        for f in (fa, fb):
            f.write(struct.pack("<Q", len(header)) + header)
        for name, shape in shapes:
            n = int(np.prod(shape))
            std = 1.0 if name.endswith("layernorm.weight") or name == "model.norm.weight" else 0.02
            for start in range(0, n, CHUNK_ELEMS):
                m = min(CHUNK_ELEMS, n - start)
                a = rng.standard_normal(m, dtype=np.float32) * std
                if std == 1.0:
                    a = 1.0 + 0.05 * a
                b = a + rng.standard_normal(m, dtype=np.float32) * (NOISE * std)
                fa.write(_encode(a, dtype))
                fb.write(_encode(b, dtype))
    for d in (a_dir, b_dir):
        os.replace(d / "model.safetensors.tmp", d / "model.safetensors")
        (d / "config.json").write_text(json.dumps(config, indent=2))
    marker.write_text(json.dumps(spec))
    print(f"  wrote {dtype} pair in {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return a_dir, b_dir


def weights_file(model_dir: Path) -> Path:
    return model_dir / "model.safetensors"


# -- the three methods --------------------------------------------------------------------------


def _parse(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def run_baseline(a_dir: Path, b_dir: Path, threads: int) -> dict[str, float]:
    """Bare numpy: memmap both files, one dot product per tensor, chunks over ``threads`` threads."""
    fa, fb = weights_file(a_dir), weights_file(b_dir)
    (sa, ha), (sb, hb) = _parse(fa), _parse(fb)
    mm_a = np.memmap(fa, dtype=np.uint8, mode="r")
    mm_b = np.memmap(fb, dtype=np.uint8, mode="r")
    work = []
    for name, ea in ha.items():
        eb = hb[name]
        store = "<u2" if ea["dtype"] == "BF16" else "<f4"
        va = np.asarray(mm_a[sa + ea["data_offsets"][0] : sa + ea["data_offsets"][1]]).view(store)
        vb = np.asarray(mm_b[sb + eb["data_offsets"][0] : sb + eb["data_offsets"][1]]).view(store)
        step = BF16_CHUNK_ELEMS if ea["dtype"] == "BF16" else CHUNK_ELEMS
        for c in range(0, len(va), step):
            work.append((name, ea["dtype"], va[c : c + step], vb[c : c + step]))

    def dot(item):
        name, code, x, y = item
        if code == "BF16":  # bfloat16 bits are the top half of a float32
            x = x.astype(np.uint32)
            x <<= 16
            y = y.astype(np.uint32)
            y <<= 16
            x, y = x.view(np.float32), y.view(np.float32)
        return name, float(np.dot(x, y))

    out: dict[str, float] = {}
    with ThreadPoolExecutor(threads) as ex:
        for name, d in ex.map(dot, work):
            out[name] = out.get(name, 0.0) + d
    del mm_a, mm_b
    return out


def _load(path: Path, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "BF16":  # safetensors.numpy has no bfloat16: go through torch, keep the raw bits
        import torch
        from safetensors.torch import load_file as load_torch

        return {k: v.view(torch.int16).numpy().view(np.uint16) for k, v in load_torch(str(path)).items()}
    from safetensors.numpy import load_file

    return load_file(str(path))


def run_load_all(a_dir: Path, b_dir: Path, threads: int) -> dict[str, tuple[float, float]]:
    """Load both models whole, then cosine and Pearson per tensor."""
    code = _parse(weights_file(a_dir))[1]["model.norm.weight"]["dtype"]
    A, B = _load(weights_file(a_dir), code), _load(weights_file(b_dir), code)

    def stats(name):
        x, y = A[name].ravel(), B[name].ravel()
        if x.dtype == np.uint16:
            x = (x.astype(np.uint32) << 16).view(np.float32)
            y = (y.astype(np.uint32) << 16).view(np.float32)
        cos = float(np.dot(x, y) / np.sqrt(float(np.dot(x, x)) * float(np.dot(y, y))))
        xm, ym = x - x.mean(), y - y.mean()
        pearson = float(np.dot(xm, ym) / np.sqrt(float(np.dot(xm, xm)) * float(np.dot(ym, ym))))
        return name, (cos, pearson)

    with ThreadPoolExecutor(threads) as ex:
        return dict(ex.map(stats, list(A)))


def run_modelkin(a_dir: Path, b_dir: Path, threads: int):
    import modelkin

    return modelkin.compare(str(a_dir), str(b_dir), threads=threads)


METHODS = {"baseline": run_baseline, "load-all": run_load_all, "modelkin": run_modelkin}


def modelkin_available() -> str | None:
    """None when ``modelkin.compare`` exists, else why not."""
    try:
        import modelkin

        modelkin.compare  # noqa: B018
    except Exception as e:  # noqa: BLE001 - any failure means "not there yet"
        return f"{type(e).__name__}: {e}"
    return None


def describe(result) -> str:
    for attr in ("verdict", "label", "decision"):
        v = getattr(result, attr, None)
        if v is not None:
            return str(getattr(v, "value", v))
    return type(result).__name__


# -- measuring ----------------------------------------------------------------------------------


def timed(fn, *args, repeats: int) -> tuple[float, object]:
    fn(*args)  # warm the page cache (and imports)
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, result


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); r = subprocess.run(sys.argv[1:]); "
    "sys.stderr.write('\\nWRAPPER maxrss_kb=%d wall=%.3f\\n' % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "time.perf_counter() - t)); sys.exit(r.returncode)"
)


def child_peak(cmd: list[str]) -> tuple[float | None, float | None, str]:
    """(peak RSS in MB, wall seconds, error) of ``cmd`` run alone."""
    time_bin = shutil.which("time", path="/usr/bin:/bin") or ""
    if time_bin:
        full = [time_bin, "-v", *cmd]
    else:
        full = [sys.executable, "-c", _RUSAGE_WRAPPER, *cmd]
    proc = subprocess.run(full, capture_output=True, text=True, env=_child_env(), timeout=3600)
    err = proc.stderr
    if time_bin:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        w = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", err)
        rss = int(m.group(1)) / 1024 if m else None
        wall = (int(w.group(1) or 0) * 3600 + int(w.group(2)) * 60 + float(w.group(3))) if w else None
    else:
        m = re.search(r"WRAPPER maxrss_kb=(\d+) wall=([\d.]+)", err)
        rss, wall = (int(m.group(1)) / 1024, float(m.group(2))) if m else (None, None)
    problem = ""
    if proc.returncode != 0:
        tail = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("\t") and "Command exited" not in ln]
        problem = f"exit {proc.returncode}: {tail[-1][:120] if tail else ''}"
    return rss, wall, problem


def child_cmd(method: str, a_dir: Path, b_dir: Path, threads: int) -> list[str]:
    if method == "modelkin":
        return [sys.executable, "-m", "modelkin", "compare", str(a_dir), str(b_dir), "--quiet", "--json", "/dev/null"]
    return [sys.executable, str(Path(__file__).resolve()), "--child", method, str(a_dir), str(b_dir), "--threads", str(threads)]


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0, help="size of each synthetic model (default 1.0)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "modelkin-bench", help="where the models go (reused)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads for every method (default 2)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up; the best is reported")
    ap.add_argument("--hidden", type=int, default=2048, help="hidden width (5632 = 11/4 of it for the MLP); smaller for quick checks")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of BF16,F32")
    ap.add_argument("--methods", default="baseline,modelkin,load-all", help="comma-separated subset")
    ap.add_argument("--blas-threads", help="set OPENBLAS/OMP/MKL_NUM_THREADS for this run and its children (default: leave as is)")
    ap.add_argument("--no-rss", action="store_true", help="skip the child processes that measure peak RSS")
    ap.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    ap.add_argument("models", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:  # one run of one method, for peak-RSS measurement by the parent
        METHODS[args.child](args.models[0], args.models[1], args.threads)
        return 0

    methods = [m for m in args.methods.split(",") if m]
    why_not = modelkin_available() if "modelkin" in methods else None
    time_bin = shutil.which("time", path="/usr/bin:/bin")
    rss_how = (
        "/usr/bin/time -v 'Maximum resident set size'"
        if time_bin
        else "getrusage(RUSAGE_CHILDREN).ru_maxrss of a wrapper's child (/usr/bin/time not found)"
    )
    print(f"modelkin throughput benchmark: {args.size_gb:g} GB per model, {args.threads} threads, {os.cpu_count()} cores, python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"BLAS threads: {BLAS_THREADS}; load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes skew timings)")
    print("page cache: every method runs once untimed first (warm cache), then timed; numbers are for data already in RAM")
    print(f"peak RSS: child process per method, {rss_how}; includes file-backed mapped pages")
    if why_not:
        print(f"modelkin.compare not available ({why_not}): modelkin rows skipped")
    rows = []
    for dtype in [d for d in args.dtypes.split(",") if d]:
        a_dir, b_dir = write_pair(args.dir / dtype, args.size_gb, dtype, args.hidden)
        total = weights_file(a_dir).stat().st_size + weights_file(b_dir).stat().st_size
        n_tensors = len(_parse(weights_file(a_dir))[1])
        print(f"  {dtype} pair: {a_dir} , {b_dir}: 2 x {total / 2e9:.2f} GB, {n_tensors} tensors each", flush=True)
        for method in methods:
            if method == "modelkin" and why_not:
                continue
            try:
                secs, result = timed(METHODS[method], a_dir, b_dir, args.threads, repeats=args.repeats)
            except Exception as e:  # noqa: BLE001 - report and go on with the other methods
                rows.append((dtype, method, None, None, None, None, f"failed: {type(e).__name__}: {str(e)[:100]}"))
                print(f"  {dtype} {method}: failed: {type(e).__name__}: {e}", flush=True)
                continue
            note = ""
            if method == "modelkin":
                note = f"result: {describe(result)}"
            elif method == "load-all":
                cos = [c for c, _ in result.values()]
                note = f"cosine min {min(cos):.4f}"
            rss = wall = None
            if not args.no_rss:
                rss, wall, problem = child_peak(child_cmd(method, a_dir, b_dir, args.threads))
                if problem:
                    note = (note + "; " if note else "") + f"child {problem}"
            rows.append((dtype, method, secs, total / secs / 1e9, rss, wall, note))
            print(f"  {dtype} {method}: {secs:.2f} s", flush=True)

    print()
    base = {r[0]: r[3] for r in rows if r[1] == "baseline" and r[3]}
    head = f"{'dtype':<6}{'method':<10}{'time s':>8}{'GB/s':>8}{'vs base':>9}{'':6}{'peak RSS MB':>12}{'':6}{'child wall s':>13}  notes"
    print(head)
    print("-" * len(head))
    for dtype, method, secs, gbs, rss, wall, note in rows:
        if secs is None:
            print(f"{dtype:<6}{method:<10}{'-':>8}{'-':>8}{'-':>9}{'':6}{'-':>12}{'':6}{'-':>13}  {note}")
            continue
        ratio = gbs / base[dtype] if dtype in base else None
        ratio_s = f"{ratio:9.2f}" if ratio is not None else f"{'-':>9}"
        ratio_flag = ""
        rss_flag = ""
        if method == "modelkin":
            if ratio is not None:
                ratio_flag = "PASS" if ratio >= RATIO_TARGET else "FAIL"
            if rss is not None:
                rss_flag = "PASS" if rss <= RSS_TARGET_MB else "FAIL"
        rss_s = f"{rss:12.0f}" if rss is not None else f"{'-':>12}"
        wall_s = f"{wall:13.2f}" if wall is not None else f"{'-':>13}"
        print(f"{dtype:<6}{method:<10}{secs:8.2f}{gbs:8.2f}{ratio_s} {ratio_flag:<5}{rss_s} {rss_flag:<5}{wall_s}  {note}")
    print()
    print(f"targets (modelkin rows): throughput >= {RATIO_TARGET} x baseline, peak RSS <= {RSS_TARGET_MB} MB")
    print("GB/s = bytes of both models / timed seconds (in-process, warm cache); 'vs base' = GB/s / baseline GB/s of that dtype")
    print("child wall s = the child measured for RSS, including interpreter start-up and imports (torch for BF16 load-all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
