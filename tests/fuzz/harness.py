"""The fuzz harness shared by ``tests/test_fuzz.py`` (a short run) and ``benchmarks/fuzz.py`` (long runs).

Targets are the modules ``tests/fuzz/target_*.py``; each exposes ``fuzz_one(data: bytes) -> None`` and
``SEEDS: list[bytes]`` (small valid files). Inputs come from hypothesis strategies (``inputs``): a seed
put through one to four mutations — bit flips, byte sets, truncations, deletions, duplications, splices
of another seed, little-endian integer and protobuf varint edits with boundary values (lengths, counts,
offsets), and structural edits of the JSON the seed holds (safetensors headers, index, config and
tokenizer files), with the length prefix before it kept consistent or not — or plain random bytes, bare
or behind a seed's first bytes (its magic).

The invariant checked on every input: ``fuzz_one`` returns or raises a ``ModelkinError``. Anything else
is a *crash*; a call that runs past ``time_limit_s`` (interrupted by SIGALRM where Python code runs) is a
*hang*; one whose resident memory peaks more than ``memory_limit_bytes`` above where it stood before the
call is a *memory* finding (Linux: the peak, VmHWM, is reset before each input through
``/proc/self/clear_refs``). With ``trace_memory`` each input's own allocations are also measured with
``tracemalloc`` (numpy reports to it) against the same limit, at about four times the cost. A soft address-space limit
(RLIMIT_AS) during the run turns a runaway allocation into a MemoryError (a crash) instead of exhausting
the machine.

No home-made fuzzer: hypothesis draws every choice (seeded, or derandomized for the tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import resource
import signal
import struct
import sys
import time
import tracemalloc
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from modelkin.errors import ModelkinError

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"
TIME_LIMIT_S = 5.0
MEMORY_LIMIT_BYTES = 256 << 20  # per input, traced; inputs are at most a few hundred KB
ADDRESS_SPACE_HEADROOM = 4 << 30  # RLIMIT_AS above what the process already maps
RANDOM_MAX_BYTES = 4096
MAX_INPUT_BYTES = 1 << 20

# -- targets ---------------------------------------------------------------------------------------


def discover(folder: Path = HERE) -> dict[str, Path]:
    """Target name ("gguf", "pytorch", ...) -> module file, for every ``target_*.py`` in ``folder``."""
    return {p.stem.removeprefix("target_"): p for p in sorted(folder.glob("target_*.py"))}


def load(name: str, folder: Path = HERE) -> ModuleType:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module(f"target_{name}")
    assert callable(module.fuzz_one) and module.SEEDS and all(isinstance(s, bytes) for s in module.SEEDS), name
    return module


# -- inputs ----------------------------------------------------------------------------------------

INTERESTING_INTS = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                    0x80000000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)
INTERESTING_JSON = (None, True, False, 0, -1, 1, 2**31, 2**63, 2**64 + 1, -(2**63), 10**400, 1e308, -0.0,
                    "", "x", "F32", "../x", "/etc/passwd", "\u0000", "\udfff", [], {}, [0], [-1, 1],
                    [2**32, 2**32], [[[[[]]]]], {"": {}})


def _pos(draw, data: bytearray, end_ok: bool = False) -> int:
    return draw(st.integers(0, max(0, len(data) - (0 if end_ok else 1))))


def _flip(draw, data: bytearray, seeds) -> bytearray:
    if data:
        data[_pos(draw, data)] ^= 1 << draw(st.integers(0, 7))
    return data


def _set_byte(draw, data: bytearray, seeds) -> bytearray:
    if data:
        data[_pos(draw, data)] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
    return data


def _truncate(draw, data: bytearray, seeds) -> bytearray:
    return data[: _pos(draw, data, end_ok=True)]


def _delete(draw, data: bytearray, seeds) -> bytearray:
    i = _pos(draw, data, end_ok=True)
    del data[i : i + draw(st.integers(1, 256))]
    return data


def _duplicate(draw, data: bytearray, seeds) -> bytearray:
    i = _pos(draw, data, end_ok=True)
    piece = data[i : i + draw(st.integers(1, 256))]
    j = _pos(draw, data, end_ok=True)
    return data[:j] + piece * draw(st.integers(1, 4)) + data[j:]


def _splice(draw, data: bytearray, seeds) -> bytearray:
    other = draw(st.sampled_from(seeds))
    a = draw(st.integers(0, len(other)))
    piece = other[a : a + draw(st.integers(1, 512))]
    i = _pos(draw, data, end_ok=True)
    return data[:i] + piece + data[i + draw(st.integers(0, 512)) :]


def _int_field(draw, data: bytearray, seeds) -> bytearray:
    """A little-endian integer (a length, count, offset or dim) set to a boundary value or nudged."""
    width = draw(st.sampled_from((1, 2, 4, 8)))
    if len(data) < width:
        return data
    i = draw(st.integers(0, len(data) - width))
    old = int.from_bytes(data[i : i + width], "little")
    value = draw(st.sampled_from(INTERESTING_INTS + (len(data), len(data) + 1, len(data) - i))
                 | st.integers(-16, 16).map(lambda d: old + d) | st.integers(0, (1 << (8 * width)) - 1))
    data[i : i + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    return data


def _varint(draw, data: bytearray, seeds) -> bytearray:
    """A protobuf varint (ONNX, sentencepiece: field lengths and counts) replaced by a boundary value."""
    if not data:
        return data
    i = _pos(draw, data)
    j = i
    while j < len(data) and data[j] & 0x80 and j - i < 10:
        j += 1
    value = draw(st.sampled_from(INTERESTING_INTS + (len(data), len(data) - i)) | st.integers(0, 1 << 20))
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    return data[:i] + out + data[j + 1 :]


def _json_span(data: bytearray) -> tuple[int, int, object] | None:
    start = data.find(b"{", 0, 64)
    if start < 0:
        return None
    try:  # latin-1: one character per byte, so positions are byte offsets and bytes survive re-encoding
        doc, end = json.JSONDecoder().raw_decode(data[start:].decode("latin-1"))
    except (ValueError, RecursionError):
        return None
    return start, start + end, doc


def _nodes(doc, path=()):
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(doc, list):
        for k, v in enumerate(doc):
            yield from _nodes(v, path + (k,))


def _json_value(draw):
    return draw(st.sampled_from(INTERESTING_JSON) | st.integers() | st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=12))


def _json_edit(draw, data: bytearray, seeds) -> bytearray:
    """A structural edit of the JSON document in the data: drop, replace, retype, rename, duplicate or
    deepen a node. A little-endian u64 length right before the document (safetensors) follows the edit
    unless the draw says otherwise."""
    found = _json_span(data)
    if found is None:
        return _flip(draw, data, seeds)
    start, end, doc = found
    nodes = list(_nodes(doc))[:4096]
    path, node = draw(st.sampled_from(nodes))
    action = draw(st.sampled_from(("replace", "drop", "rename", "add", "wrap", "copy", "deep", "dup_key")))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1] if path else None
    if action == "replace" and path:
        parent[key] = _json_value(draw)
    elif action == "drop" and path:
        del parent[key]
    elif action == "rename" and path and isinstance(parent, dict):
        parent[draw(st.sampled_from(("", "__metadata__", "dtype", "shape", "data_offsets", "weight_map", "model_type", "vocab", "merges", "added_tokens", "x")))] = parent.pop(key)
    elif action == "add" and isinstance(node, (dict, list)):
        if isinstance(node, dict):
            node[draw(st.text(max_size=8))] = _json_value(draw)
        else:
            node.insert(draw(st.integers(0, len(node))), _json_value(draw))
    elif action == "wrap" and path:
        parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
    elif action == "copy" and path:
        parent[key] = draw(st.sampled_from(nodes))[1]
    elif action == "deep" and path:
        parent[key] = DEEP  # replaced in the text: too deep for json.dumps
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=draw(st.sampled_from(((",", ":"), (", ", ": ")))))
    except (ValueError, RecursionError):
        return data
    if action == "dup_key" and isinstance(node, dict) and node:  # json.dumps cannot write a duplicate key
        k = json.dumps(next(iter(node)), ensure_ascii=False)
        text = text.replace(k + ":", k + ':0,' + k + ":", 1)
    if action == "deep":
        depth = draw(st.sampled_from((200, 3000, 20000)))
        deep = "[" * depth + "]" * depth if draw(st.booleans()) else '{"a":' * depth + "1" + "}" * depth
        text = text.replace(json.dumps(DEEP), deep, 1)
    new = text.encode("latin-1", errors="backslashreplace")
    out = data[:start] + new + data[end:]
    if start >= 8 and draw(st.integers(0, 3)):  # mostly keep the prefix consistent
        (n,) = struct.unpack("<Q", data[start - 8 : start])
        if start + n >= end and start + n <= len(data):
            out[start - 8 : start] = struct.pack("<Q", n + len(new) - (end - start))
    return out


DEEP = "\u0000deep\u0000"

MUTATIONS = (_flip, _set_byte, _truncate, _delete, _duplicate, _splice, _int_field, _int_field, _varint, _json_edit, _json_edit, _json_edit)


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(st.sampled_from(MUTATIONS))(draw, data, seeds)
    return bytes(data[:MAX_INPUT_BYTES])


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Mutated seeds (most inputs), random bytes behind a seed's magic, and plain random bytes."""
    magic = st.sampled_from(seeds).flatmap(lambda s: st.integers(0, min(len(s), 64)).map(lambda n: s[:n]))
    random_tail = st.binary(max_size=RANDOM_MAX_BYTES)
    return st.one_of(
        mutated(seeds), mutated(seeds), mutated(seeds), mutated(seeds),
        st.tuples(magic, random_tail).map(lambda t: t[0] + t[1]),
        random_tail,
    )


# -- running ---------------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by the alarm in a target that runs too long (a BaseException: targets catch Exception)."""


@dataclass
class Finding:
    target: str
    kind: str  # "crash", "hang" or "memory"
    signature: str  # exception type and innermost frame, or the kind alone
    detail: str
    data: bytes = field(repr=False)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.kind}-{hashlib.sha256(self.data).hexdigest()[:16]}.bin"
        path.write_bytes(self.data)
        return path


@dataclass
class Report:
    target: str
    inputs: int = 0
    crash_inputs: int = 0
    hang_inputs: int = 0
    memory_inputs: int = 0
    max_seconds: float = 0.0
    peak_input_bytes: int = 0  # the most one input raised resident (or, traced, allocated) memory
    rss_after_seeds: int = 0  # lifetime peak RSS of the process once the seeds ran (imports and all)
    findings: dict[str, Finding] = field(default_factory=dict)  # one (the smallest input) per signature

    def add(self, f: Finding) -> None:
        old = self.findings.get(f.signature)
        if old is None or len(f.data) < len(old.data):
            self.findings[f.signature] = f


def _signature(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    return f"{type(e).__name__} at {where}"


def peak_rss_bytes() -> int:
    """The process's lifetime peak RSS (not reset by ``_reset_rss_peak``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_rss_peak() -> int | None:
    """Reset VmHWM to the current RSS and return it; None where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_bytes("VmHWM")


def check_one(name: str, fuzz_one, data: bytes, time_limit_s: float = TIME_LIMIT_S,
              memory_limit_bytes: int = MEMORY_LIMIT_BYTES) -> tuple[Finding | None, float, int]:
    """Run one input; (finding or None, seconds, peak memory above the start in bytes). Call inside
    ``guarded``."""
    rss_before = _reset_rss_peak()
    tracing = tracemalloc.is_tracing()
    if tracing:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    finding = None
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    t = time.perf_counter()
    try:
        fuzz_one(data)
    except ModelkinError:
        pass
    except Hang:
        finding = Finding(name, "hang", "hang", f"interrupted after {time_limit_s} s", data)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - anything but ModelkinError is what we look for
        finding = Finding(name, "crash", _signature(e), "".join(traceback.format_exception_only(e)).strip()[:500], data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - t
    traced = tracemalloc.get_traced_memory()[1] - base if tracing else 0
    rise = _status_bytes("VmHWM") - rss_before if rss_before is not None else 0
    if finding is None and seconds > time_limit_s:
        finding = Finding(name, "hang", "hang", f"took {seconds:.1f} s (limit {time_limit_s} s)", data)
    if finding is None and max(traced, rise) > memory_limit_bytes:
        finding = Finding(name, "memory", "memory", f"allocated {max(traced, rise) / 2**20:.0f} MiB "
                          f"(limit {memory_limit_bytes / 2**20:.0f} MiB; {'traced' if traced > rise else 'resident'})", data)
    return finding, seconds, max(traced, rise)


def _mapped_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def guarded(trace_memory: bool = True, headroom_bytes: int = ADDRESS_SPACE_HEADROOM):
    """SIGALRM raises ``Hang``; an address-space ceiling; tracemalloc. All restored on exit."""

    def on_alarm(signum, frame):
        raise Hang()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _mapped_bytes() + headroom_bytes
    if hard == resource.RLIM_INFINITY or ceiling < hard:
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    started = trace_memory and not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, old_handler)


def run(name: str, module: ModuleType, n_inputs: int, *, seed: int | None = None, time_limit_s: float = TIME_LIMIT_S,
        memory_limit_bytes: int = MEMORY_LIMIT_BYTES, trace_memory: bool = False, budget_s: float | None = None,
        last_input: Path | None = None) -> Report:
    """Fuzz one target with ``n_inputs`` hypothesis-drawn inputs (after its seeds).

    ``seed`` None derandomizes (the same inputs every run: the test suite); an integer picks another
    deterministic stream. ``budget_s`` stops running inputs once spent (the rest are skipped, counted
    out). ``last_input`` gets each input before it runs, so a process that dies leaves its killer."""
    report = Report(name)

    def observe(data: bytes) -> None:
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            return
        if last_input is not None:
            last_input.write_bytes(data)
        finding, seconds, peak = check_one(name, module.fuzz_one, data, time_limit_s, memory_limit_bytes)
        report.inputs += 1
        report.max_seconds = max(report.max_seconds, seconds)
        report.peak_input_bytes = max(report.peak_input_bytes, peak)
        if finding is not None:
            setattr(report, f"{finding.kind}_inputs", getattr(report, f"{finding.kind}_inputs") + 1)
            report.add(finding)

    @settings(max_examples=max(1, n_inputs), database=None, deadline=None, derandomize=seed is None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False)
    @given(inputs(module.SEEDS))
    def fuzz(data: bytes) -> None:
        observe(data)

    if seed is not None:
        fuzz = hypothesis_seed(seed)(fuzz)
    t0 = time.perf_counter()
    with guarded(trace_memory):
        for s in module.SEEDS:
            observe(s)
        report.rss_after_seeds = peak_rss_bytes()
        if n_inputs > 0:
            fuzz()
    return report


def replay(name: str, module: ModuleType, data: bytes, time_limit_s: float = TIME_LIMIT_S) -> Finding | None:
    with guarded(trace_memory=True):
        return check_one(name, module.fuzz_one, data, time_limit_s)[0]
