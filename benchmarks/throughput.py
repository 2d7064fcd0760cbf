#!/usr/bin/env python3
"""How fast does modelkin read two models, against one fixed numpy baseline over the same bytes?

Writes (or reuses) a pair of synthetic LLM-shaped models per dtype (F32, BF16, F16; ~``--size-gb`` each;
model B is A plus noise, so the pair is "related"), then times, in one run:

* ``baseline``  THE one baseline, the same for every dtype: one thread, ``np.dot`` of A and B over chunks
  of 256 Ki elements of the memory-mapped bytes (BF16 and F16 widened to float32 chunk by chunk), warm
  page cache. Its GB/s is the denominator of every "vs base" figure.
* ``modelkin-numba``, ``modelkin-numpy``  the metric pass alone (``modelkin.metrics.stream_metrics`` over
  the aligned pairs: the six float64 sums behind cosine / Pearson / rel-L2 plus the identical-bytes check)
  with each kernel, ``--threads`` threads; ``...-1t`` the same on one thread. Opening and aligning the
  models is not timed, nor is loading numba (printed once in the header).
* ``load-all``  the naive way: load both models whole (``safetensors``), then cosine and Pearson per tensor.
* ``compare``   the whole ``modelkin.compare`` (statistics included): ``first`` with an empty digest cache
  (every file hashed with SHA-256), ``repeat`` with the digests cached; ``sha256`` hashes both files on
  one thread for reference.
* ``cold``      baseline and modelkin again after dropping both files from the page cache
  (``posix_fadvise(DONTNEED)``): there the disk bounds both.

Peak RSS comes from ``python -m modelkin compare A B`` in a child process (``--rss-sizes`` repeats it on
other model sizes to show it does not grow with the model).

Run: ``python benchmarks/throughput.py [--size-gb 1.0] [--dir DIR] [--threads 2] [--repeats 3]``.
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

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

DTYPES = ("F32", "BF16", "F16")
ITEMSIZE = {"F32": 4, "BF16": 2, "F16": 2}
BASELINE_CHUNK_ELEMS = 1 << 18  # the baseline's chunk, every dtype: 256 Ki elements (1 MiB once float32)
WRITE_CHUNK_ELEMS = 1 << 22
RSS_TARGET_MB = 512
RATIO_TARGET = 0.5
NOISE = 0.1  # B = A + NOISE * N(0, std(A)): Pearson ~0.995
HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


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
        "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype],
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
    if dtype == "F16":
        return x.astype("<f2").tobytes()
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
            for start in range(0, n, WRITE_CHUNK_ELEMS):
                m = min(WRITE_CHUNK_ELEMS, n - start)
                a = rng.standard_normal(m, dtype=np.float32) * std
                if std == 1.0:
                    a = 1.0 + 0.05 * a
                b = a + rng.standard_normal(m, dtype=np.float32) * (NOISE * std)
                fa.write(_encode(a, dtype))
                fb.write(_encode(b, dtype))
        for f in (fa, fb):
            f.flush()
            os.fsync(f.fileno())  # clean pages, so that posix_fadvise(DONTNEED) can drop them later
    for d in (a_dir, b_dir):
        os.replace(d / "model.safetensors.tmp", d / "model.safetensors")
        (d / "config.json").write_text(json.dumps(config, indent=2))
    marker.write_text(json.dumps(spec))
    print(f"  wrote {dtype} pair in {folder} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return a_dir, b_dir


def weights_file(model_dir: Path) -> Path:
    return model_dir / "model.safetensors"


def _parse(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


# -- the methods --------------------------------------------------------------------------------

STORE = {"F32": "<f4", "BF16": "<u2", "F16": "<f2"}


def run_baseline(a_dir: Path, b_dir: Path, threads: int = 1) -> dict[str, float]:
    """THE baseline (``threads`` is ignored: always one thread, BLAS included): memmap both files, one
    ``np.dot`` per chunk of 256 Ki elements; BF16/F16 chunks widened to float32 first."""
    fa, fb = weights_file(a_dir), weights_file(b_dir)
    (sa, ha), (sb, hb) = _parse(fa), _parse(fb)
    mm_a = np.memmap(fa, dtype=np.uint8, mode="r")
    mm_b = np.memmap(fb, dtype=np.uint8, mode="r")
    wa, wb = np.empty(BASELINE_CHUNK_ELEMS, np.uint32), np.empty(BASELINE_CHUNK_ELEMS, np.uint32)
    out: dict[str, float] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for name, ea in ha.items():
            eb, code = hb[name], ea["dtype"]
            va = mm_a[sa + ea["data_offsets"][0] : sa + ea["data_offsets"][1]].view(STORE[code])
            vb = mm_b[sb + eb["data_offsets"][0] : sb + eb["data_offsets"][1]].view(STORE[code])
            total = 0.0
            for c in range(0, len(va), BASELINE_CHUNK_ELEMS):
                x, y = va[c : c + BASELINE_CHUNK_ELEMS], vb[c : c + BASELINE_CHUNK_ELEMS]
                if code == "BF16":  # bfloat16 bits are the top half of a float32
                    x32, y32 = wa[: len(x)], wb[: len(y)]
                    np.copyto(x32, x)
                    np.copyto(y32, y)
                    x32 <<= 16
                    y32 <<= 16
                    x, y = x32.view(np.float32), y32.view(np.float32)
                elif code == "F16":
                    x32, y32 = wa[: len(x)].view(np.float32), wb[: len(y)].view(np.float32)
                    np.copyto(x32, x)
                    np.copyto(y32, y)
                    x, y = x32, y32
                total += float(np.dot(x, y))
            out[name] = total
    del mm_a, mm_b
    return out


_DOTS: dict[tuple, dict[str, float]] = {}


def base_dots(a_dir: Path, b_dir: Path) -> dict[str, float]:
    """The baseline's Σab per tensor (computed once per pair): what a pass that read every byte must match."""
    key = (a_dir, b_dir)
    if key not in _DOTS:
        _DOTS[key] = run_baseline(a_dir, b_dir)
    return _DOTS[key]


def verify_pass(metrics, pairs, dots: dict[str, float]) -> str:
    """Proof that the timed pass read every element: per tensor, its element count is the tensor's and its
    Σab (cosine x |a| x |b|) equals the baseline's float32 dot product to 1e-4 (relative, both summed
    independently); raises otherwise, so a too-fast figure cannot be printed."""
    n_elems = 0
    for m, p in zip(metrics, pairs, strict=True):
        name = p.a.info.name
        if m.n != p.a.info.numel:
            raise AssertionError(f"{name}: the pass summed {m.n} of {p.a.info.numel} elements")
        sab = (m.cosine or 0.0) * m.norm_a * m.norm_b
        if abs(sab - dots[name]) > 1e-4 * max(abs(dots[name]), m.norm_a * m.norm_b * 1e-3):
            raise AssertionError(f"{name}: Σab {sab!r} but the baseline's dot is {dots[name]!r}")
        n_elems += m.n
    return f"checked: {len(dots)} tensors, {n_elems:,} elements, Σab = baseline's"


def _load(path: Path, dtype: str) -> dict[str, np.ndarray]:
    if dtype == "BF16":  # safetensors.numpy has no bfloat16: go through torch, keep the raw bits
        import torch
        from safetensors.torch import load_file as load_torch

        return {k: v.view(torch.int16).numpy().view(np.uint16) for k, v in load_torch(str(path)).items()}
    from safetensors.numpy import load_file

    return load_file(str(path))


def run_load_all(a_dir: Path, b_dir: Path, threads: int) -> dict[str, tuple[float, float]]:
    """Load both models whole, then cosine and Pearson per tensor (float32 arithmetic)."""
    code = _parse(weights_file(a_dir))[1]["model.norm.weight"]["dtype"]
    A, B = _load(weights_file(a_dir), code), _load(weights_file(b_dir), code)

    def stats(name):
        x, y = A[name].ravel(), B[name].ravel()
        if x.dtype == np.uint16:
            x = (x.astype(np.uint32) << 16).view(np.float32)
            y = (y.astype(np.uint32) << 16).view(np.float32)
        x, y = x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)
        cos = float(np.dot(x, y) / np.sqrt(float(np.dot(x, x)) * float(np.dot(y, y))))
        xm, ym = x - x.mean(), y - y.mean()
        pearson = float(np.dot(xm, ym) / np.sqrt(float(np.dot(xm, xm)) * float(np.dot(ym, ym))))
        return name, (cos, pearson)

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as ex:
        return dict(ex.map(stats, list(A)))


class MetricPass:
    """The metric pass alone, on models opened and aligned once (not timed)."""

    def __init__(self, a_dir: Path, b_dir: Path):
        from modelkin.alignment import align_by_name
        from modelkin.inventory import build_inventory
        from modelkin.sources import open_model

        self.a, self.b = open_model(a_dir), open_model(b_dir)
        self.pairs = list(align_by_name(build_inventory(self.a), build_inventory(self.b)).pairs)

    def __call__(self, threads: int, kernel: str = "auto"):
        from modelkin.metrics import stream_metrics

        with threadpool_limits(limits=1, user_api="blas"):
            return stream_metrics(self.a, self.b, self.pairs, threads=threads, kernel=kernel)

    def kernel(self, kernel: str = "auto") -> str:
        from modelkin.metrics.streaming import kernel_name

        return kernel_name(kernel, sum(p.a.info.n_bytes + p.b.info.n_bytes for p in self.pairs))

    def close(self) -> None:
        self.a.close()
        self.b.close()


def run_metric_pass(a_dir: Path, b_dir: Path, threads: int):
    """(For the RSS child.)"""
    p = MetricPass(a_dir, b_dir)
    try:
        return p(threads)
    finally:
        p.close()


def run_compare(a_dir: Path, b_dir: Path, threads: int):
    import modelkin

    return modelkin.compare(str(a_dir), str(b_dir), threads=threads)


def sha256_both(a_dir: Path, b_dir: Path) -> None:
    import hashlib

    for d in (a_dir, b_dir):
        h = hashlib.sha256()
        with open(weights_file(d), "rb") as f:
            while block := f.read(8 << 20):
                h.update(block)


CHILD_METHODS = {"baseline": run_baseline, "load-all": run_load_all, "modelkin": run_metric_pass}


def drop_from_cache(*paths: Path) -> None:
    """Evict the files' pages from the page cache (they were fsynced when written, so they are clean)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_fraction(path: Path) -> float | None:
    """Fraction of the file's pages in the page cache (mincore), or None where it cannot be asked."""
    try:
        import ctypes
        import mmap

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        size = path.stat().st_size
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            rc = libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec)
            libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
        finally:
            os.close(fd)
        return None if rc != 0 else sum(v & 1 for v in vec) / pages
    except Exception:  # noqa: BLE001 - only informative
        return None


# -- measuring ----------------------------------------------------------------------------------


def timed(fn, *args, repeats: int, warm: bool = True) -> float:
    """Best of ``repeats`` runs, after one untimed run (warms the page cache, imports, compiled kernels)."""
    if warm:
        fn(*args)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


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
    full = [time_bin, "-v", *cmd] if time_bin else [sys.executable, "-c", _RUSAGE_WRAPPER, *cmd]
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


def cli_cmd(a_dir: Path, b_dir: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "modelkin", "compare", str(a_dir), str(b_dir), "--threads", str(threads), "--quiet", "--json", os.devnull]


def child_cmd(method: str, a_dir: Path, b_dir: Path, threads: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", method, str(a_dir), str(b_dir), "--threads", str(threads)]


def kernel_name() -> str:
    try:
        from modelkin.metrics import streaming

        t0 = time.perf_counter()
        name = streaming.kernel_name("numba")
        return "numpy (reference) and, when installed, numba (compare picks it for passes >= %d MiB, A+B); here: %s, loaded in %.2f s" % (
            streaming.NUMBA_MIN_BYTES >> 20, name, time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001
        return f"? ({type(e).__name__})"


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0, help="size of each synthetic model (default 1.0)")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "modelkin-bench", help="where the models go (reused)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="modelkin's threads (default 2); the baseline always uses one")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up; the best is reported")
    ap.add_argument("--hidden", type=int, default=2048, help="hidden width (5632 = 11/4 of it for the MLP); smaller for quick checks")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated subset of F32,BF16,F16")
    ap.add_argument("--methods", default="baseline,modelkin-numba,modelkin-numba-1t,modelkin-numpy,modelkin-numpy-1t,load-all,compare,cold", help="comma-separated subset")
    ap.add_argument("--no-rss", action="store_true", help="skip the child processes that measure peak RSS")
    ap.add_argument("--rss-sizes", default="", help="also measure the CLI's peak RSS on BF16 pairs of these sizes in GB (e.g. 0.25,2)")
    ap.add_argument("--child", choices=sorted(CHILD_METHODS), help=argparse.SUPPRESS)
    ap.add_argument("models", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:  # one run of one method, for peak-RSS measurement by the parent
        CHILD_METHODS[args.child](args.models[0], args.models[1], args.threads)
        return 0

    methods = [m for m in args.methods.split(",") if m]
    blas = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas"]
    digest_dir = Path(tempfile.mkdtemp(prefix="modelkin-bench-digests-"))
    os.environ["MODELKIN_CACHE"] = str(digest_dir)  # compare's digest cache: emptied before each "first"
    print(f"modelkin throughput benchmark: {args.size_gb:g} GB per model, modelkin threads {args.threads}, {os.cpu_count()} cores, python {sys.version.split()[0]}, numpy {np.__version__}")
    kernel_note = kernel_name()
    have_numba = "numba" in kernel_note.split(": ")[-1].split(" (")[0]
    print(f"BLAS: {'; '.join(blas)}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    print(f"modelkin kernels: {kernel_note}")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes skew timings: compare rows of one run only)")
    rows: list[tuple] = []  # (dtype, method, seconds, note)
    totals: dict[str, int] = {}
    rss_rows: list[tuple] = []
    for dtype in [d for d in args.dtypes.split(",") if d]:
        a_dir, b_dir = write_pair(args.dir / dtype, args.size_gb, dtype, args.hidden)
        fa, fb = weights_file(a_dir), weights_file(b_dir)
        total = totals[dtype] = fa.stat().st_size + fb.stat().st_size
        print(f"  {dtype} pair: {a_dir} , {b_dir}: 2 x {total / 2e9:.2f} GB, {len(_parse(fa)[1])} tensors each", flush=True)

        def row(method: str, secs: float, note: str = "") -> None:
            rows.append((dtype, method, secs, note))
            print(f"  {dtype} {method}: {secs:.3f} s  {note}", flush=True)

        if "baseline" in methods:
            row("baseline", timed(run_baseline, a_dir, b_dir, repeats=args.repeats), "1 thread, np.dot per 256 Ki chunk")
        mp = None
        if any(m.startswith("modelkin") for m in methods) or "cold" in methods or "compare" in methods:
            mp = MetricPass(a_dir, b_dir)
            for kernel in ("numba", "numpy"):
                for threads in (args.threads, 1):
                    method = f"modelkin-{kernel}" + ("-1t" if threads == 1 else "")
                    if method not in methods:
                        continue
                    if kernel == "numba" and not have_numba:
                        print(f"  {dtype} {method}: skipped ({kernel_note})", flush=True)
                        continue
                    secs = timed(mp, threads, kernel, repeats=args.repeats)
                    check = verify_pass(mp(threads, kernel), mp.pairs, base_dots(a_dir, b_dir))
                    row(method.replace("-", " "), secs, f"metric pass, {threads} thread{'s' if threads > 1 else ''}; {check}")
        if "load-all" in methods:
            row("load-all", timed(run_load_all, a_dir, b_dir, args.threads, repeats=1), f"{args.threads} threads")
        if "compare" in methods:
            for f in digest_dir.glob("*"):
                f.unlink()
            run_compare(a_dir, b_dir, args.threads)  # warms everything but the digest cache ...
            for f in digest_dir.glob("*"):
                f.unlink()
            t0 = time.perf_counter()
            result = run_compare(a_dir, b_dir, args.threads)  # ... so this one hashes both files
            picks = f"metric pass: {mp.kernel('auto')}" if mp is not None else ""
            row("compare first", time.perf_counter() - t0, f"digests hashed; {picks}; verdict {result.verdict}")
            row("compare repeat", timed(run_compare, a_dir, b_dir, args.threads, repeats=args.repeats, warm=False), f"digests cached; {picks}")
            row("sha256", timed(sha256_both, a_dir, b_dir, repeats=1, warm=False), "both files, 1 thread (reference)")
        if "cold" in methods:
            cold_kernel = "numba" if have_numba else "numpy"
            for name, fn in (("cold baseline", lambda: run_baseline(a_dir, b_dir)), (f"cold modelkin {cold_kernel}", lambda: mp(args.threads, cold_kernel))):
                drop_from_cache(fa, fb)
                frac = cached_fraction(fa)
                t0 = time.perf_counter()
                fn()
                row(name, time.perf_counter() - t0, f"after posix_fadvise(DONTNEED); cached before: {frac if frac is None else f'{frac:.0%}'}")
        if mp is not None:
            mp.close()
        if not args.no_rss:
            rss, wall, problem = child_peak(cli_cmd(a_dir, b_dir, args.threads))
            rss_rows.append((dtype, args.size_gb, rss, wall, problem))

    for size in [float(s) for s in args.rss_sizes.split(",") if s]:
        a_dir, b_dir = write_pair(args.dir / f"rss-{size:g}", size, "BF16", args.hidden)
        rss, wall, problem = child_peak(cli_cmd(a_dir, b_dir, args.threads))
        rss_rows.append(("BF16", size, rss, wall, problem))

    print()
    base = {(r[0], r[1].startswith("cold")): totals[r[0]] / r[2] / 1e9 for r in rows if r[1] in ("baseline", "cold baseline")}
    head = f"{'dtype':<6}{'method':<21}{'time s':>8}{'GB/s':>8}{'vs base':>9}        notes"
    print(head)
    print("-" * (len(head) + 30))
    for dtype, method, secs, note in rows:
        gbs = totals[dtype] / secs / 1e9
        key = (dtype, method.startswith("cold"))  # cold rows against the cold baseline
        ratio = gbs / base[key] if key in base and not method.startswith(("compare", "sha256")) else None
        flag = ""
        if method.startswith(("modelkin", "cold modelkin")) and ratio is not None:
            flag = "PASS" if ratio >= RATIO_TARGET else "FAIL"
        ratio_s = f"{ratio:9.2f}" if ratio is not None else f"{'-':>9}"
        print(f"{dtype:<6}{method:<21}{secs:8.3f}{gbs:8.2f}{ratio_s} {flag:<6} {note}")
    if rss_rows:
        print()
        print(f"peak RSS of `python -m modelkin compare A B --threads {args.threads}` (child; /usr/bin/time -v or getrusage)")
        for dtype, size, rss, wall, problem in rss_rows:
            flag = "" if rss is None else ("PASS" if rss <= RSS_TARGET_MB else "FAIL")
            rss_s = "-" if rss is None else f"{rss:.0f} MB"
            wall_s = "-" if wall is None else f"{wall:.2f} s"
            print(f"  {dtype:<5} 2 x {size:g} GB: {rss_s:>8} {flag:<5} wall {wall_s}  {problem}")
    print()
    print(f"targets: modelkin metric pass >= {RATIO_TARGET} x baseline (GB/s of both files, warm cache), CLI peak RSS <= {RSS_TARGET_MB} MB")
    print("baseline: one thread, np.dot per 256 Ki-element chunk of the memory-mapped files, BF16/F16 widened to float32 per chunk")
    shutil.rmtree(digest_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
