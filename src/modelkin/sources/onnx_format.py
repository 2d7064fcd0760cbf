"""Reading ONNX models: initializers read lazily, int8/int4 weights dequantised, anonymous weights named.

**Reading without loading.** An ONNX file is one protobuf ``ModelProto``; its weights are ``TensorProto``
initializers whose bytes sit in ``raw_data`` (or packed ``float_data``/``double_data``) inside the file, or
in external files (``location``/``offset``/``length``). The protobuf wire format is walked here through the
transport, field by field, down to the tensors: every large data field is recorded as (offset, length)
and left out, so what remains — the graph's nodes, tensor names, dims and types — is small and is parsed
by the ``onnx`` package (``ModelProto``). Data is then read from its recorded place on demand, like any
other format's; memory stays bounded whatever the file size. External data paths must stay inside the
model's folder.

**What a tensor is.** Each initializer (and each ``Constant`` node's tensor) becomes one ``TensorInfo``.
Integer weights feeding ``DequantizeLinear`` (per-tensor, per-axis or blocked), ``MatMulInteger`` (scale
found on the Mul after it, as onnxruntime's dynamic quantisation writes it), ``QLinearMatMul`` or
``QLinearConv`` are dequantised on read, ``(q - zero_point) * scale``, so they compare with float weights;
their scales and zero points are folded in and not listed. onnxruntime's weight-only block quantisation
(``com.microsoft`` ``MatMulNBits``: 2/4/8-bit codes in blocks along K, per-block scales and packed or float
zero points) is decoded the same way, a bounded stretch of rows at a time, into the logical [N, K] weight
(the torch Linear's [out, in]); 3/5/6/7-bit codes and act-order ``g_idx`` are refused in one line.
``GatherBlockQuantized`` embeddings are not decoded (said "not read"). Graph constants that are not weights
(anonymous shape/axes integers, scalars) are not listed either.

**Names.** Exporters fold ``W.T`` of a ``Linear`` into an anonymous initializer (``onnx::MatMul_123``,
``val_17``, stored [in, out]). Such a weight is named, in order of trust, after (1) the parameter torch's
dynamo exporter records on its node (module scopes, confirmed by the FX node's ``%p_<path>_weight``),
(2) the named bias added to its product (``…query.bias`` -> ``…query.weight``), (3) its node's scope
(``/model/layers.0/mlp/up_proj/MatMul``, TorchScript exporter) when that scope lies under a module the
export names elsewhere, (4) its position in the graph: the MatMul/Gemm weights in topological order, laid
against a family's block layout (``_data/onnx/layouts.json``) and anchored on the named tensors;
otherwise it keeps its own name. An
anonymous matrix a MatMul consumes as [in, out] (or a Gemm with ``transB=0``) is presented transposed,
as the source model stored it; a named initializer is presented exactly as stored.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Iterator

import ml_dtypes
import numpy as np

from ..errors import FormatError, UnsupportedError
from .dtypes import DTYPES, DType, decode
from .tensors import TensorInfo
from .transport import LocalFile, Transport
from .weightfile import STREAM_PIECE_ELEMS, WeightFile

MAX_SKELETON_BYTES = 64 << 20  # graph structure without tensor data: real exports hold a few MB
MAX_WIRE_FIELDS = 4_000_000  # protobuf fields walked (a few per initializer and per node with metadata)
MAX_GRAPH_EDGES = 1_000_000  # node inputs + outputs of the main graph (torch exports: ~350 per decoder layer)
MAX_TRACE_STEPS = 4_000_000  # consumers visited while following weights through the graph
MAX_DEPTH = 32  # nested messages walked (model > graph > node > attribute > subgraph > ...)
MAX_RANK = 16
SMALL_MESSAGE_BYTES = 1 << 16  # messages this small cannot hold weights worth reading lazily: kept whole
SMALL_NODE_BYTES = 512  # nodes this small hold no bulky metadata either (torch's stack traces): kept whole
WINDOW_BYTES = 1 << 16  # read-ahead of the wire walk
HOLD_BYTES = 256 << 20  # a transposed matrix up to this size stays mapped while a thread reads it
PANEL_ELEMS = 1 << 22  # larger ones (and remote ones) are read by cached panels of this many elements
PANELS_PER_THREAD = 2
MIN_LISTED_ELEMS = 16  # anonymous constants smaller than this are graph constants, not weights

# -- element types --------------------------------------------------------------------------------


def _local(code: str, storage, bits: int, packed: bool = False) -> DType:
    return DType(code, np.dtype(storage), bits, np.dtype(np.float32), packed=packed)


_U4 = _local("U4", np.uint8, 4, packed=True)
_U2 = _local("U2", np.uint8, 2, packed=True)
_I4 = _local("I4", np.int8, 4, packed=True)
_F8_E4M3FNUZ = _local("F8_E4M3FNUZ", ml_dtypes.float8_e4m3fnuz, 8)
_F8_E5M2FNUZ = _local("F8_E5M2FNUZ", ml_dtypes.float8_e5m2fnuz, 8)

# TensorProto.DataType -> element type (codes of the shared table where it has one)
ELEMENT_TYPES: dict[int, DType] = {
    1: DTYPES["F32"], 2: DTYPES["U8"], 3: DTYPES["I8"], 4: DTYPES["U16"], 5: DTYPES["I16"], 6: DTYPES["I32"],
    7: DTYPES["I64"], 9: DTYPES["BOOL"], 10: DTYPES["F16"], 11: DTYPES["F64"], 12: DTYPES["U32"],
    13: DTYPES["U64"], 16: DTYPES["BF16"], 17: DTYPES["F8_E4M3"], 18: _F8_E4M3FNUZ, 19: DTYPES["F8_E5M2"],
    20: _F8_E5M2FNUZ, 21: _U4, 22: _I4, 23: DTYPES["F4"], 24: DTYPES["F8_E8M0"],
}
FLOAT_TYPES = frozenset({1, 10, 11, 16, 17, 18, 19, 20, 23, 24})
_F4_VALUES = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)


@cache
def _quantized(stored: DType) -> DType:
    """The dtype of a weight dequantised on read: stored as ``stored``, decoded with its scale."""
    return DType("Q" + stored.code, stored.storage, stored.bits, np.dtype(np.float32), exact=False, packed=stored.packed)


# -- the wire walk -----------------------------------------------------------------------------------

_LEN = 2  # wire type of length-delimited fields
# Message kinds walked, and for each the length-delimited fields holding a walked message.
_WALK: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "subgraph": {1: "node", 5: "tensor", 15: "sparse"},
    "training": {1: "subgraph", 2: "subgraph"},
    "function": {7: "node"},
    "node": {5: "attribute", 9: "metadata"},
    "attribute": {5: "tensor", 10: "tensor", 6: "subgraph", 11: "subgraph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
    "metadata": {},
}
_KEEP_WHOLE_IF_SMALL = frozenset({"node", "function", "sparse", "subgraph", "training"})
_DATA_FIELDS = {9: "raw_data", 4: "float_data", 10: "double_data"}  # TensorProto fields read lazily
# node metadata kept (torch's dynamo exporter: the module scopes and the FX node, naming the parameter);
# the rest (stack traces, class hierarchies) is dropped, so graph structure stays small
NODE_METADATA_KEPT = frozenset({"pkg.torch.onnx.name_scopes", "pkg.torch.onnx.fx_node"})


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _WireWalk:
    """One pass over the file's protobuf: returns the model without its tensor data ("skeleton") and
    where each left-out data field lies, keyed by ("init", i) (i-th initializer of the main graph) or
    ("attr", n, a) (tensor of attribute a of node n of the main graph)."""

    def __init__(self, transport: Transport, fail):
        self.transport = transport
        self.size = transport.size
        self.fail = fail
        self.buf = b""
        self.buf_at = 0
        self.fields = 0
        self.kept = 0
        self.records: dict[tuple, dict[str, tuple[int, int]]] = {}

    def _window(self, pos: int, n: int) -> tuple[bytes, int]:
        if pos < self.buf_at or pos + n > self.buf_at + len(self.buf):
            m = min(max(n, WINDOW_BYTES), self.size - pos)
            arr = np.empty(m, np.uint8)
            self.transport.read_into(pos, arr)
            self.buf, self.buf_at = arr.tobytes(), pos
        return self.buf, pos - self.buf_at

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        n = min(10, end - pos)
        if n <= 0:
            raise self.fail(f"protobuf field at byte {pos} is cut off (truncated file?)")
        buf, i = self._window(pos, n)
        value = shift = 0
        for k in range(n):
            b = buf[i + k]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, pos + k + 1
            shift += 7
        raise self.fail(f"malformed protobuf varint at byte {pos} (truncated or not an ONNX file)")

    def _bytes(self, pos: int, n: int) -> bytes:
        self.kept += n
        if self.kept > MAX_SKELETON_BYTES:
            raise self.fail(f"graph structure (without tensor data) exceeds {MAX_SKELETON_BYTES >> 20} MiB")
        if n <= WINDOW_BYTES:
            buf, i = self._window(pos, n)
            return buf[i : i + n]
        arr = np.empty(n, np.uint8)
        self.transport.read_into(pos, arr)
        return arr.tobytes()

    def _entry_key(self, start: int, end: int) -> str | None:
        """The key of a StringStringEntryProto (field 1), when short and first."""
        tag, p = self._varint(start, end)
        if tag != (1 << 3 | _LEN):
            return None
        n, body = self._varint(p, end)
        if n > 256 or body + n > end:
            return None
        buf, i = self._window(body, n)
        return buf[i : i + n].decode("utf-8", "replace")

    def message(self, start: int, end: int, kind: str, key: tuple | None = None, depth: int = 0) -> bytes:
        if depth > MAX_DEPTH:
            raise self.fail(f"protobuf messages nested more than {MAX_DEPTH} deep")
        walk = _WALK[kind]
        out: list[bytes] = []
        counts: dict[int, int] = {}
        pos = start
        while pos < end:
            self.fields += 1
            if self.fields > MAX_WIRE_FIELDS:
                raise self.fail(f"more than {MAX_WIRE_FIELDS} protobuf fields (not a plausible ONNX model)")
            tag, p = self._varint(pos, end)
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise self.fail(f"protobuf field number 0 at byte {pos} (not an ONNX file?)")
            if wire == 0:
                _, value_end = self._varint(p, end)
                body = p
            elif wire == 1:
                body, value_end = p, p + 8
            elif wire == 5:
                body, value_end = p, p + 4
            elif wire == _LEN:
                n, body = self._varint(p, end)
                value_end = body + n
            else:
                raise self.fail(f"protobuf wire type {wire} at byte {pos} (not an ONNX file?)")
            if value_end > end:
                where = "the end of the file" if end == self.size else "its enclosing message"
                raise self.fail(f"protobuf field {field} at byte {pos} runs {value_end - end} bytes past {where} (truncated?)")
            index = counts.get(field, 0)
            counts[field] = index + 1
            sub = walk.get(field) if wire == _LEN else None
            if kind == "tensor" and wire == _LEN and field in _DATA_FIELDS:
                if key is not None:
                    self.records.setdefault(key, {})[_DATA_FIELDS[field]] = (body, value_end - body)
            elif sub == "metadata":
                if self._entry_key(body, value_end) in NODE_METADATA_KEPT:
                    out.append(self._bytes(pos, value_end - pos))
            elif sub is None or (sub in _KEEP_WHOLE_IF_SMALL and value_end - body < (SMALL_NODE_BYTES if sub == "node" else SMALL_MESSAGE_BYTES)):
                out.append(self._bytes(pos, value_end - pos))
            else:
                if kind == "model" and sub == "graph" and index:
                    raise self.fail("the model holds two graphs")
                child_key = None
                if kind == "graph" and key == ("main",):
                    child_key = ("init", index) if field == 5 else ("node", index) if field == 1 else None
                elif kind == "node" and key is not None:
                    child_key = ("attr", key[1], index)
                elif kind == "attribute" and key is not None and field == 5:
                    child_key = key
                if kind == "model" and sub == "graph":
                    child_key = ("main",)
                inner = self.message(body, value_end, sub, child_key, depth + 1)
                out.append(_varint_bytes(tag) + _varint_bytes(len(inner)) + inner)
                self.kept += 12
            pos = value_end
        return b"".join(out)


# -- where a tensor's elements are -----------------------------------------------------------------


class _Memory:
    """Bytes held in memory (tensor data stored inline in the graph), read like a transport."""

    remote = False

    def __init__(self, name: str, data: bytes):
        self.name, self.data, self.size = name, data, len(data)

    def read_into(self, offset: int, out: np.ndarray) -> None:
        view = out.reshape(-1).view(np.uint8)
        view[:] = np.frombuffer(self.data, np.uint8, len(view), offset)

    def read_ranges(self, ranges) -> list[bytes]:
        return [self.data[o : o + n] for o, n in ranges]

    def stream(self, offset: int, n_bytes: int, piece_bytes: int) -> Iterator[np.ndarray]:
        for s in range(offset, offset + n_bytes, piece_bytes):
            yield np.frombuffer(self.data, np.uint8, min(piece_bytes, offset + n_bytes - s), s)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Param:
    """A scale or zero point: one value, one per index along ``axis``, or one per block along it (then
    shaped like the weight with ``axis`` cut into blocks)."""

    values: np.ndarray  # float32, flattened
    axis: int | None  # None: per tensor
    block: int  # 0: per axis; else elements per block along ``axis``
    shape: tuple[int, ...]  # its own shape

    def grid(self, rows: np.ndarray, c0: int, c1: int, stored: tuple[int, ...]) -> np.ndarray | np.float32:
        """Values for rows ``rows`` (of the weight seen as [prod(shape[:-1]), shape[-1]]), columns c0:c1,
        broadcastable to (len(rows), c1 - c0): index arithmetic per row and per column, never per element."""
        if self.axis is None:
            return self.values[0]
        rank = len(stored)
        if self.axis == rank - 1:
            if not self.block:
                return self.values[c0:c1][None, :]
            blocks = self.values.reshape(-1, self.shape[-1])  # one row of block values per weight row
            return blocks[rows][:, np.arange(c0, c1) // self.block]
        inner = math.prod(stored[self.axis + 1 : -1])  # weight rows per index along the axis
        dim = stored[self.axis]
        coord = (rows // inner) % dim
        if not self.block:
            return self.values[coord][:, None]
        outer = rows // (inner * dim)
        value_rows = (outer * self.shape[self.axis] + coord // self.block) * inner + rows % inner
        return self.values.reshape(-1, stored[-1])[value_rows][:, c0:c1]


@dataclass(frozen=True)
class _Quant:
    scale: _Param
    zero: _Param | None
    scheme: str  # for inspect: "DequantizeLinear I8 per-axis (axis 1)"

    def apply(self, values: np.ndarray, rows: np.ndarray, c0: int, c1: int, stored: tuple[int, ...]) -> np.ndarray:
        """Dequantise a (len(rows), c1 - c0) block of the weight seen as rows of its last axis."""
        v = values.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # a hostile scale gives inf, reported downstream
            if self.zero is not None:
                v -= self.zero.grid(rows, c0, c1, stored)
            v *= self.scale.grid(rows, c0, c1, stored)
        return v

    def apply_flat(self, values: np.ndarray, start: int, stored: tuple[int, ...]) -> np.ndarray:
        """Dequantise stored elements start.. (flattened): a partial first row, whole rows, a partial last row."""
        row_len = stored[-1] if stored else 1
        out = np.empty(len(values), np.float32)
        pos, flat = 0, start
        while pos < len(values):
            r, c = divmod(flat, row_len)
            if c or len(values) - pos < row_len:  # a part of one row
                n = min(row_len - c, len(values) - pos)
                out[pos : pos + n] = self.apply(values[pos : pos + n][None, :], np.array([r]), c, c + n, stored).reshape(-1)
            else:  # whole rows
                k = (len(values) - pos) // row_len
                n = k * row_len
                block = values[pos : pos + n].reshape(k, row_len)
                out[pos : pos + n] = self.apply(block, np.arange(r, r + k), 0, row_len, stored).reshape(-1)
            pos, flat = pos + n, flat + n
        return out


@dataclass(frozen=True)
class _Stored:
    """Where a tensor's elements are and how to turn them into its logical values."""

    source: object  # a Transport or _Memory
    offset: int
    n_bytes: int
    elem: DType
    shape: tuple[int, ...]  # as stored
    transposed: bool = False  # a 2-D matrix stored [in, out]: presented [out, in]
    quant: _Quant | None = None
    row_bytes: int = 0  # MatMulNBits: bytes per logical row (blocks padded to whole bytes); 0: rows packed back to back

    @property
    def plain(self) -> bool:
        return not self.transposed and self.quant is None and not self.elem.packed


# -- the graph: weights, their quantisation and names ---------------------------------------------

_ANONYMOUS = re.compile(r"^(?:.*::.*|\d+|_?val_\d+|_v_\d+|/.*|)$")
_QUANT_SUFFIXES = ("_quantized", "_QuantizeLinear_Output", "_DequantizeLinear_Output")
_PASS_THROUGH = frozenset({"Identity", "Cast", "DequantizeLinear", "QuantizeLinear", "Transpose"})
_SCOPE_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.\d+)*$")
_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|\d+))*$")
# matrix products: op -> the input position of a right-hand operand (x @ W: W is stored [in, out])
_MATMUL_OPS = {"MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "Gemm": 1}
# integer ops: op -> (weight input, its scale input (None: on the Mul after the op), zero point input,
# the weight axis a 1-D scale or zero point runs along)
_INTEGER_OPS = {
    "MatMulInteger": (1, None, 3, -1),
    "QLinearMatMul": (3, 4, 5, -1),
    "QLinearConv": (3, 4, 5, 0),
    "ConvInteger": (1, None, 3, 0),
}
_BIAS_INPUTS = {"Gemm": 2, "Conv": 2, "ConvTranspose": 2, "QLinearConv": 8, "MatMulNBits": 5}  # ops that add their own bias
# ops whose anonymous constant inputs are weights worth listing (others hold folded graph constants)
_WEIGHT_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Gather", "MatMulInteger", "QLinearMatMul",
                         "QLinearConv", "ConvInteger", "LayerNormalization", "BatchNormalization",
                         "InstanceNormalization", "GroupNormalization", "SimplifiedLayerNormalization"})
_PARAM_INPUTS = {
    "DequantizeLinear": (1, 2), "QuantizeLinear": (1, 2), "MatMulInteger": (2, 3), "ConvInteger": (2, 3),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7), "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearAdd": (1, 2, 4, 5, 6, 7),
    "QLinearMul": (1, 2, 4, 5, 6, 7), "DynamicQuantizeLinear": (), "MatMulNBits": (2, 3, 4),
    "GatherBlockQuantized": (2, 3),
}
# block-quantised weights of onnxruntime's contrib ops, not decoded here (listed as not read)
_UNREAD_OPS = {"GatherBlockQuantized": 0}
# onnxruntime's weight-only block quantisation (com.microsoft MatMulNBits): B [N, n_blocks, blob] of packed
# codes, blocks along K; the logical weight is [N, K], the torch Linear's [out, in]
_NBITS_OP = "MatMulNBits"
_NBITS_INPUTS = {"B": 1, "scales": 2, "zero_points": 3, "g_idx": 4}
_NBITS_ELEMS = {2: _U2, 4: _U4, 8: DTYPES["U8"]}  # widths packed whole to a byte, low bits first
_NBITS_SUFFIX = re.compile(r"_Q[2-8]$")  # onnxruntime's quantiser names B after the weight it replaced


def anonymous(name: str) -> bool:
    """An exporter's made-up name (``onnx::MatMul_123``, ``1234``, ``val_7``, ``/model/Constant_output_0``)."""
    return bool(_ANONYMOUS.match(_clean(name)))


def _clean(name: str) -> str:
    for suffix in _QUANT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


@dataclass(frozen=True)
class _Layout:
    name: str
    root: str
    matrices: tuple[str, ...]
    after: tuple[tuple[str, ...], ...]
    regex: re.Pattern

    def matrix(self, prefix: str, layer: int, j: int) -> str:
        return f"{prefix}{self.root.format(layer=layer)}.{self.matrices[j]}.weight"


@cache
def _layouts() -> tuple[dict[str, str], tuple[_Layout, ...]]:
    where = "_data/onnx/layouts.json"
    data = json.loads((resources.files("modelkin") / "_data" / "onnx" / "layouts.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict) or set(data) - {"description", "bias_owners", "layouts"}:
        raise FormatError("must hold an object with only 'description', 'bias_owners', 'layouts'", where)
    out = []
    for i, raw in enumerate(data.get("layouts", [])):
        if not isinstance(raw, dict) or set(raw) != {"name", "layer_root", "matrices", "after"}:
            raise FormatError(f"layout {i} must have exactly 'name', 'layer_root', 'matrices', 'after'", where)
        root = raw["layer_root"]
        if root.count("{layer}") != 1:
            raise FormatError(f"layout {raw['name']!r}: 'layer_root' needs one {{layer}}", where)
        body = re.escape(root).replace(re.escape("{layer}"), r"(?P<layer>\d+)")
        out.append(_Layout(raw["name"], root, tuple(raw["matrices"]), tuple(tuple(a) for a in raw["after"]),
                           re.compile(rf"^(?P<prefix>(?:[^.]+\.)*?){body}\.(?P<rest>.+)$")))
    return dict(data.get("bias_owners", {})), tuple(out)


@dataclass(frozen=True)
class _Weight:
    """One listed tensor of the graph, before naming."""

    init: str  # value name of its initializer
    shape: tuple[int, ...]  # as stored
    endpoint: tuple[int, int] | None  # (topological node index, input position) of its first real consumer
    transposes: int  # Transpose nodes between the initializer and that consumer
    quant_node: tuple[int, str] | None  # (node index, how) of the node that dequantises it


class _Graph:
    """Producers and consumers of values; passes through Identity/Cast/(De)QuantizeLinear/Transpose."""

    def __init__(self, nodes: list, init_names: set[str], fail):
        self.fail = fail
        self.inits = init_names
        self.steps = 0
        self._forward: dict[str, list] = {}
        if sum(len(n.input) + len(n.output) for n in nodes) > MAX_GRAPH_EDGES:
            raise fail(f"the graph has more than {MAX_GRAPH_EDGES} node inputs and outputs")
        order = self._topological(nodes)
        self.nodes = [nodes[i] for i in order]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[tuple[int, int]]] = {}
        for k, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = k
            for pos, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((k, pos))

    def _topological(self, nodes: list) -> list[int]:
        """Kahn's order, ties broken by position in the file (so an already sorted graph keeps its order)."""
        import heapq

        producer = {}
        for i, node in enumerate(nodes):
            for out in node.output:
                if out:
                    producer[out] = i
        waiting = [0] * len(nodes)
        users: dict[int, list[int]] = {}
        for i, node in enumerate(nodes):
            deps = {producer[v] for v in node.input if v in producer and producer[v] != i}
            waiting[i] = len(deps)
            for d in deps:
                users.setdefault(d, []).append(i)
        ready = [i for i, w in enumerate(waiting) if w == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for u in users.get(i, ()):
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(nodes):
            raise self.fail(f"the graph has a cycle ({len(nodes) - len(order)} nodes never become ready)")
        return order

    def _step(self) -> None:
        self.steps += 1
        if self.steps > MAX_TRACE_STEPS:
            raise self.fail(f"following the weights through the graph took over {MAX_TRACE_STEPS} steps (a tangle of pass-through nodes)")

    def attr(self, k: int, name: str, default):
        for a in self.nodes[k].attribute:
            if a.name == name:
                return list(a.ints) if a.ints else a.i if a.type == 2 else a.f if a.type == 1 else default
        return default

    def forward(self, value: str, depth: int = 0) -> list[tuple[int, int, int, int | None, list[str]]]:
        """Real consumers of ``value``: (node, input position, transposes on the way, dequantising node,
        aliases (Identity outputs) on the way), in topological order."""
        if value in self._forward:
            return self._forward[value]
        found = []
        for k, pos in self.consumers.get(value, ()):
            self._step()
            node = self.nodes[k]
            op = node.op_type
            if op in _PASS_THROUGH and pos == 0 and depth < 8 and node.output and node.output[0]:
                perm = self.attr(k, "perm", None) if op == "Transpose" else None
                if op == "Transpose" and perm not in (None, [1, 0]):
                    found.append((k, pos, 0, None, []))
                    continue
                for c in self.forward(node.output[0], depth + 1):
                    t = c[2] + (op == "Transpose")
                    dq = k if op == "DequantizeLinear" else c[3]
                    aliases = ([node.output[0]] if op == "Identity" else []) + c[4]
                    found.append((c[0], c[1], t, dq, aliases))
            else:
                found.append((k, pos, 0, None, []))
        found.sort(key=lambda c: (c[0], c[1]))
        self._forward[value] = found
        return found

    def transposed_input(self, k: int) -> bool:
        """Whether node k's first input is a Transpose of its source (through Identity/Cast)."""
        value = self.nodes[k].input[0] if self.nodes[k].input else ""
        for _ in range(8):
            p = self.producer.get(value)
            if p is None or self.nodes[p].op_type not in ("Identity", "Cast", "Transpose"):
                return False
            if self.nodes[p].op_type == "Transpose":
                return True
            value = self.nodes[p].input[0] if self.nodes[p].input else ""
        return False

    def origin_name(self, value: str) -> str | None:
        """The first meaningful name walking back from ``value`` through pass-through nodes."""
        for _ in range(8):
            if not anonymous(value):
                return _clean(value)
            k = self.producer.get(value)
            if k is None or self.nodes[k].op_type not in _PASS_THROUGH or not self.nodes[k].input:
                return None
            value = self.nodes[k].input[0]
        return None

    def bias_of(self, k: int) -> str | None:
        """Name of the bias added to node k's product (its own bias input, or an Add a few nodes on)."""
        node = self.nodes[k]
        b = _BIAS_INPUTS.get(node.op_type)
        if b is not None and len(node.input) > b and node.input[b]:
            return self._bias_name(node.input[b])
        value = node.output[0] if node.output else ""
        for _ in range(4):
            users = self.consumers.get(value, [])
            if len(users) != 1:
                return None
            u, pos = users[0]
            user = self.nodes[u]
            if user.op_type == "Add" and len(user.input) == 2:
                return self._bias_name(user.input[1 - pos])
            if user.op_type == "QLinearAdd" and pos in (0, 3) and len(user.input) > 3:
                return self._bias_name(user.input[3 - pos])
            if user.op_type not in ("Cast", "Mul", "DequantizeLinear", "QuantizeLinear") or not user.output:
                return None
            value = user.output[0]
        return None

    def _bias_name(self, value: str) -> str | None:
        name = self.origin_name(value)
        return name if name is not None and name.endswith(".bias") else None

    def scope(self, k: int) -> str | None:
        """The module path in a node name like ``/model/layers.0/mlp/up_proj/MatMul``."""
        name = self.nodes[k].name
        if not name.startswith("/"):
            return None
        segments = name.strip("/").split("/")[:-1]
        if len(segments) < 2 or not all(_SCOPE_SEGMENT.match(s) for s in segments):
            return None
        return ".".join(segments)

    def torch_parameter(self, k: int) -> str | None:
        """The weight of node k as torch's dynamo exporter records it: the module in the node's
        ``name_scopes`` plus ``.weight``, confirmed by the parameter the FX node names (``%p_<path>_weight``)."""
        meta = {p.key: p.value for p in self.nodes[k].metadata_props if p.key in NODE_METADATA_KEPT}
        scopes = re.findall(r"'([^'\\]*)'", meta.get("pkg.torch.onnx.name_scopes", ""))
        params = set(re.findall(r"%(p_[A-Za-z0-9_]+)", meta.get("pkg.torch.onnx.fx_node", "")))
        for scope in reversed(scopes[:-1]):  # the last entry is the function ("linear"), not a module
            if scope and _MODULE_PATH.match(scope):
                name = scope + ".weight"
                return name if "p_" + name.replace(".", "_") in params else None
        return None

    def downstream_scale(self, k: int) -> str | None:
        """The weight scale of an integer MatMul/Conv: on a Mul after the (Cast of the) int32 product,
        alone or multiplied by the input's dynamic scale (onnxruntime's dynamic quantisation)."""
        frontier = [self.nodes[k].output[0]] if self.nodes[k].output else []
        for _ in range(3):
            nxt = []
            for value in frontier:
                for u, pos in self.consumers.get(value, ()):
                    user = self.nodes[u]
                    if user.op_type == "Cast" and user.output:
                        nxt.append(user.output[0])
                    elif user.op_type == "Mul" and len(user.input) == 2:
                        other = user.input[1 - pos]
                        if other in self.inits:
                            return other
                        p = self.producer.get(other)
                        if p is not None and self.nodes[p].op_type == "Mul":
                            found = [v for v in self.nodes[p].input if v in self.inits]
                            if len(found) == 1:
                                return found[0]
            frontier = nxt
        return None


# -- the file ----------------------------------------------------------------------------------------


class OnnxFile(WeightFile):
    """One ``.onnx`` model: initializers (and Constant tensors) as tensors, read lazily."""

    format_name = "onnx"

    def __init__(self, source: str | Path | Transport):
        super().__init__(LocalFile(source) if isinstance(source, (str, Path)) else source)
        self._stored: dict[str, _Stored] = {}
        self._external: dict[str, Transport] = {}
        self._local = threading.local()
        self._held: dict[int, tuple] = {}  # thread -> (stored matrix, its open mapping, the view)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- parsing ---------------------------------------------------------------------------------
    def _parse(self) -> None:
        try:
            import onnx
            from google.protobuf.message import DecodeError
        except ImportError:
            raise UnsupportedError("reading ONNX needs the 'onnx' package (pip install 'modelkin[onnx]')", self.name) from None
        if self.transport.size == 0:
            raise self._fail("file is empty (not an ONNX model)")
        walk = _WireWalk(self.transport, self._fail)
        skeleton = walk.message(0, self.transport.size, "model")
        model = onnx.ModelProto()
        try:
            model.ParseFromString(skeleton)
        except (DecodeError, ValueError, RuntimeError) as e:
            raise self._fail(f"not a valid ONNX protobuf: {e}") from None
        if not model.HasField("graph"):
            raise self._fail("no graph in the file (not an ONNX model?)")
        self._check_text(model)
        self._describe(model)
        tensors = self._tensor_protos(model.graph, walk.records)
        self._list_tensors(model.graph, tensors)

    def _check_text(self, model) -> None:
        """Names must be text: protobuf hands out bytes for a string field that is not valid UTF-8."""
        g = model.graph
        texts = [model.producer_name, model.producer_version, g.name]
        texts += [o.domain for o in model.opset_import] + [v for p in model.metadata_props for v in (p.key, p.value)]
        for t in g.initializer:
            texts.append(t.name)
            texts += [v for e in t.external_data for v in (e.key, e.value)]
        for n in g.node:
            texts += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
            texts += [v for p in n.metadata_props for v in (p.key, p.value)]
        if not all(isinstance(t, str) for t in texts):
            raise self._fail("a name or string in the graph is not valid UTF-8")

    def _describe(self, model) -> None:
        meta: dict[str, object] = {
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "ir_version": int(model.ir_version),
            "opset": ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import),
        }
        if model.graph.name:
            meta["graph"] = model.graph.name
        for p in model.metadata_props:
            meta[f"metadata.{p.key}"] = p.value
        self.metadata = meta

    def _tensor_protos(self, graph, records: dict) -> dict[str, tuple[object, dict]]:
        """Value name -> (TensorProto without its data, its left-out data fields)."""
        out: dict[str, tuple[object, dict]] = {}
        for i, t in enumerate(graph.initializer):
            if t.name:
                out[t.name] = (t, records.get(("init", i), {}))
        for n, node in enumerate(graph.node):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                for a, attr in enumerate(node.attribute):
                    if attr.name == "value" and attr.HasField("t"):
                        out.setdefault(node.output[0], (attr.t, records.get(("attr", n, a), {})))
        return out

    def _storage(self, name: str, proto, fields: dict) -> _Stored | None:
        """Where a tensor's bytes are, checked against its dims; None for types that hold no weights."""
        elem = ELEMENT_TYPES.get(proto.data_type)
        if elem is None:
            return None  # strings, complex numbers, 2- and 6-bit types
        dims = tuple(proto.dims)
        if len(dims) > MAX_RANK:
            raise self._fail(f"tensor {name!r} has {len(dims)} dimensions (more than {MAX_RANK})")
        if any(d < 0 for d in dims):
            raise self._fail(f"tensor {name!r} has a negative dimension {list(dims)}")
        numel = math.prod(dims)
        expected = -(-numel * elem.bits // 8)
        if proto.data_location == 1:  # EXTERNAL
            return self._external_storage(name, proto, elem, dims, expected)
        if len(fields) > 1 or (fields and self._typed_data(proto)):
            raise self._fail(f"tensor {name!r} stores its data twice ({', '.join(sorted(fields)) or 'typed fields'})")
        if fields:
            field, (offset, n) = next(iter(fields.items()))
            if field == "float_data" and proto.data_type != 1 or field == "double_data" and proto.data_type != 11:
                raise self._fail(f"tensor {name!r}: {field} holds data of type {elem.code}")
            if n != expected:
                raise self._fail(f"tensor {name!r}: dims {list(dims)} of {elem.code} need {expected} bytes but {field} holds {n}")
            return _Stored(self.transport, offset, n, elem, dims)
        data = self._inline(name, proto, elem, numel)
        if len(data) != expected:
            raise self._fail(f"tensor {name!r}: dims {list(dims)} of {elem.code} need {expected} bytes but its data holds {len(data)}")
        return _Stored(_Memory(name, data), 0, len(data), elem, dims)

    @staticmethod
    def _typed_data(proto) -> bool:
        return any(len(getattr(proto, f)) for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "raw_data"))

    def _inline(self, name: str, proto, elem: DType, numel: int) -> bytes:
        """Data stored in the graph itself (small tensors): raw bytes, or typed fields as little-endian bytes."""
        if proto.raw_data:
            return bytes(proto.raw_data)
        if elem.packed:  # 4-bit types in int32_data: one packed byte per entry
            return np.asarray(proto.int32_data, dtype=np.int64).astype(np.uint8).tobytes()
        from onnx import numpy_helper

        if numel > 2 * sum(len(getattr(proto, f)) for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")):
            raise self._fail(f"tensor {name!r}: dims {list(proto.dims)} need {numel} values but it holds fewer")
        try:
            arr = numpy_helper.to_array(proto)
        except Exception as e:  # the onnx helper's own size and type checks
            raise self._fail(f"tensor {name!r}: cannot decode its data: {e}") from None
        if arr.size != numel:
            raise self._fail(f"tensor {name!r}: dims {list(proto.dims)} need {numel} values but its data holds {arr.size}")
        return np.ascontiguousarray(arr).astype(elem.storage, copy=False).tobytes()

    def _external_storage(self, name: str, proto, elem: DType, dims: tuple, expected: int) -> _Stored:
        entries = {e.key: e.value for e in proto.external_data}
        if not all(isinstance(v, str) for kv in entries.items() for v in kv):
            raise self._fail(f"tensor {name!r}: external data entries are not valid UTF-8")
        location = entries.get("location", "")
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else expected
        except ValueError:
            raise self._fail(f"tensor {name!r}: external data offset/length are not integers") from None
        transport = self._external_file(name, location)
        if length != expected:
            raise self._fail(f"tensor {name!r}: dims {list(dims)} of {elem.code} need {expected} bytes but its external data length is {length}")
        if offset < 0 or offset + length > transport.size:
            raise self._fail(f"tensor {name!r}: external data [{offset}, {offset + length}) lies past the end of the {transport.size}-byte file {location!r}")
        return _Stored(transport, offset, length, elem, dims)

    def _external_file(self, name: str, location: str) -> Transport:
        if location in self._external:
            return self._external[location]
        pure = PurePosixPath(location)
        if not location or "\\" in location or "\x00" in location or pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", location):
            raise self._fail(f"tensor {name!r}: external data location {location!r} lies outside the model folder")
        if isinstance(self.transport, LocalFile):
            root = Path(os.path.abspath(self.transport.path)).parent
            target = Path(os.path.normpath(root / location))
            if target == root or not target.is_relative_to(root):
                raise self._fail(f"tensor {name!r}: external data location {location!r} lies outside the model folder")
            if not target.is_file():
                raise self._fail(f"tensor {name!r}: external data file {location!r} does not exist")
            transport: Transport = LocalFile(target)
        elif hasattr(self.transport, "sibling"):
            transport = self.transport.sibling(location)
        else:
            raise UnsupportedError(f"tensor {name!r}: external data ({location!r}) can only be read from local files", self.name)
        self._external[location] = transport
        return transport

    # -- which tensors, how stored, what names ----------------------------------------------------
    def _list_tensors(self, graph, protos: dict[str, tuple[object, dict]]) -> None:
        g = _Graph(list(graph.node), set(protos), self._fail)
        storage = {}
        for value, (proto, fields) in protos.items():
            st = self._storage(value, proto, fields)
            if st is not None:
                storage[value] = st
        weights, params = self._weights(g, storage)
        names, counts = self._names(g, weights, storage)
        quant_notes: dict[str, str] = {}
        for w in weights:
            st = storage[w.init]
            if w.quant_node is not None:
                st = self._dequantised(g, w, st, storage)
            if anonymous(w.init) and w.endpoint is not None and len(st.shape) == 2:
                st = _replace(st, transposed=self._stored_transposed(g, w))
            name = names[w.init]
            self._add(name, st)
            if st.quant is not None:
                quant_notes[name] = st.quant.scheme
            for alias in self._aliases(g, w.init):
                if alias != name and alias not in self.tensors and not anonymous(alias):
                    self._add(alias, st)
        if quant_notes:
            self.metadata["quantized"] = quant_notes
        self.metadata["names"] = ", ".join(f"{n} {how}" for how, n in counts.items() if n)
        skipped = len(protos) - len(weights) - len(params)
        if skipped:
            self.metadata["constants not listed"] = skipped

    def _add(self, name: str, st: _Stored) -> None:
        if name in self.tensors:
            return  # only in graphs that give two values one name; the first stays
        shape = st.shape[::-1] if st.transposed else st.shape
        dtype = _quantized(st.elem) if st.quant is not None else st.elem
        self._stored[name] = st
        self.tensors[name] = TensorInfo(name, dtype, shape, self.name, st.offset, st.n_bytes)

    @staticmethod
    def _aliases(g: _Graph, init: str) -> list[str]:
        out = []
        for c in g.forward(init):
            out.extend(c[4])
        return list(dict.fromkeys(out))

    def _weights(self, g: _Graph, storage: dict[str, _Stored]) -> tuple[list[_Weight], set[str]]:
        """The tensors to list (with their first real consumer and dequantising node) and the
        quantisation parameters folded into them (not listed)."""
        candidates, params, unread = [], set(), 0
        for value, st in storage.items():
            uses = g.forward(value)
            as_param = [u for u in uses if u[1] in _PARAM_INPUTS.get(g.nodes[u[0]].op_type, ())]
            if as_param and len(as_param) == len(uses):
                params.add(value)
                continue
            data_uses = [u for u in uses if u not in as_param]
            first = data_uses[0] if data_uses else None
            if first is not None and _UNREAD_OPS.get(g.nodes[first[0]].op_type) == first[1]:
                unread += 1
                params.add(value)  # not listed: its bytes are blocks only that op decodes
                continue
            quant = None
            if first is not None:
                k, pos, _, dq, _ = first
                op = g.nodes[k].op_type
                if dq is not None:
                    quant = (dq, "DequantizeLinear")
                elif op in _INTEGER_OPS and pos == _INTEGER_OPS[op][0]:
                    quant = (k, op)
                elif op == _NBITS_OP and pos == _NBITS_INPUTS["B"]:
                    quant = (k, op)
                elif op == "Gather" and pos == 0:
                    quant = self._dequantised_gather(g, k)
            floating = any(st.elem is ELEMENT_TYPES[t] for t in FLOAT_TYPES)
            if quant is None and not floating and anonymous(value):
                continue  # shape, axes and index constants
            if anonymous(value) and (len(st.shape) == 0 or math.prod(st.shape) < MIN_LISTED_ELEMS
                                     or quant is None and (first is None or g.nodes[first[0]].op_type not in _WEIGHT_OPS)):
                continue  # scalars and graph constants (eps, sqrt(d), folded rotary tables, ...)
            candidates.append(_Weight(value, st.shape, first[:2] if first else None, first[2] if first else 0, quant))
        for w in candidates:
            if w.quant_node is not None:
                params.update(v for v in self._quant_inputs(g, w)[:2] if v)
        weights = [w for w in candidates if w.init not in params]
        weights.sort(key=lambda w: (w.endpoint is None, w.endpoint or (0, 0), w.init))
        if unread:
            self.metadata["not read"] = f"{unread} block-quantised weights of {'/'.join(_UNREAD_OPS)} (not supported)"
        return weights, params

    @staticmethod
    def _dequantised_gather(g: _Graph, k: int) -> tuple[int, str] | None:
        """A quantised embedding: Gather of int8 rows, then DequantizeLinear of the gathered rows."""
        users = g.consumers.get(g.nodes[k].output[0], []) if g.nodes[k].output else []
        if len(users) == 1 and g.nodes[users[0][0]].op_type == "DequantizeLinear" and users[0][1] == 0:
            return users[0][0], "DequantizeLinear after Gather"
        return None

    def _stored_transposed(self, g: _Graph, w: _Weight) -> bool:
        """Whether an anonymous matrix is stored [in, out] (the exporter folded W.T into it)."""
        k, pos = w.endpoint
        op = g.nodes[k].op_type
        if op == "Gemm":
            consumer = bool(g.attr(k, "transA", 0)) if pos == 0 else not g.attr(k, "transB", 0)
        elif op in _MATMUL_OPS:
            consumer = pos == _MATMUL_OPS[op]
        else:
            return False
        return consumer != (w.transposes % 2 == 1)

    # -- dequantisation ---------------------------------------------------------------------------
    @staticmethod
    def _quant_inputs(g: _Graph, w: _Weight) -> tuple[str, str, object, object]:
        """(scale value, zero point value, axis, block size) of a quantised weight, in stored axes;
        an empty name when absent."""
        k, how = w.quant_node
        node = g.nodes[k]
        inputs = list(node.input)
        rank = len(w.shape)
        if node.op_type == _NBITS_OP:
            scale, zero = (inputs + ["", ""])[_NBITS_INPUTS["scales"] : _NBITS_INPUTS["zero_points"] + 1]
            return scale, zero, None, None
        if node.op_type == "DequantizeLinear":
            scale, zero = (inputs + ["", ""])[1:3]
            axis, block = g.attr(k, "axis", 1), g.attr(k, "block_size", 0)
            if how == "DequantizeLinear after Gather":
                axis = rank - 1  # only the embedding's own (last) axis survives the Gather
            elif rank == 2 and isinstance(axis, int) and g.transposed_input(k):
                axis = 1 - axis % 2  # the axis counts in the transposed matrix the node receives
            return scale, zero, axis, block
        _, s_pos, z_pos, axis = _INTEGER_OPS[node.op_type]
        scale = inputs[s_pos] if s_pos is not None and len(inputs) > s_pos else (g.downstream_scale(k) or "")
        zero = inputs[z_pos] if len(inputs) > z_pos else ""
        return scale, zero, axis % rank if rank else axis, 0

    def _dequantised(self, g: _Graph, w: _Weight, st: _Stored, storage: dict[str, _Stored]) -> _Stored:
        k, how = w.quant_node
        node = g.nodes[k]
        where = f"weight {w.init!r} ({node.op_type} node {node.name or k})"
        if node.op_type == _NBITS_OP:
            return self._nbits(g, k, where, st, storage)
        scale_name, zero_name, axis, block = self._quant_inputs(g, w)
        if not isinstance(axis, int) or not isinstance(block, int):
            raise self._fail(f"{where}: malformed axis or block_size attribute")
        missing = [what for what, v in (("scale", scale_name), ("zero point", zero_name)) if v and v not in storage]
        scale_name = scale_name if scale_name in storage else ""
        zero_name = zero_name if zero_name in storage else ""
        if scale_name:
            scale = self._param(where, "scale", scale_name, storage, st.shape, axis, block)
        else:
            scale = _Param(np.ones(1, np.float32), None, 0, ())
        zero = self._param(where, "zero point", zero_name, storage, st.shape, axis, block) if zero_name else None
        per = scale if scale.axis is not None else zero if zero is not None and zero.axis is not None else None
        if per is None:
            mode = "per-tensor"
        elif per.block:
            mode = f"blocked (axis {per.axis}, {per.block} per block)"
        else:
            mode = f"per-axis (axis {per.axis})"
        scheme = f"{how} {st.elem.code} {mode}"
        if missing:
            scheme += f" ({' and '.join(missing)} computed in the graph: not applied)"
        elif not scale_name:
            scheme += " (no scale found: not applied)"
        return _replace(st, quant=_Quant(scale, zero, scheme))

    def _param(self, where: str, what: str, value: str, storage: dict[str, _Stored], shape: tuple, axis: int, block: int) -> _Param:
        st = storage.get(value)
        if st is None:
            raise self._fail(f"{where}: its {what} {value!r} is not a stored tensor")
        numel = math.prod(st.shape)
        if numel > max(1, math.prod(shape)) or numel == 0:
            raise self._fail(f"{where}: its {what} has {numel} values for a weight of {math.prod(shape)}")
        values = np.asarray(self._read_flat(st, 0, numel, raw=False), dtype=np.float32).reshape(-1)
        rank = len(shape)
        if numel == 1:
            return _Param(values, None, 0, ())
        if not -rank <= axis < rank:
            raise self._fail(f"{where}: axis {axis} out of range for a {rank}-D weight")
        axis %= rank
        if block:
            fits = block > 0 and len(st.shape) == rank and all(
                st.shape[d] == (-(-shape[d] // block) if d == axis else shape[d]) for d in range(rank))
            if not fits:
                raise self._fail(f"{where}: {what} shape {list(st.shape)} does not fit weight {list(shape)} in blocks of {block} along axis {axis}")
            return _Param(values, axis, block, st.shape)
        if len(st.shape) != 1 or st.shape[0] != shape[axis]:
            raise self._fail(f"{where}: {what} shape {list(st.shape)} does not fit weight {list(shape)} along axis {axis}")
        return _Param(values, axis, 0, st.shape)

    def _nbits(self, g: _Graph, k: int, where: str, st: _Stored, storage: dict[str, _Stored]) -> _Stored:
        """A MatMulNBits weight: B uint8 [N, n_blocks, blob_size] of ``bits``-bit codes packed low bits first
        along K, blocks of ``block_size``; scales [N * n_blocks] or [N, n_blocks]; zero points packed the
        same way per row of N ([N * ceil(n_blocks * bits / 8)] uint8) or unpacked in the scales' float type,
        default 2^(bits-1); value = (code - zero point) * scale; presented as the logical [N, K]."""
        attrs = {a: g.attr(k, a, None) for a in ("K", "N", "bits", "block_size")}
        attrs["bits"] = 4 if attrs["bits"] is None else attrs["bits"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in attrs.values()):
            raise self._fail(f"{where}: attributes K, N and block_size must be positive integers (found {attrs})")
        n, kk, bits, block = attrs["N"], attrs["K"], attrs["bits"], attrs["block_size"]
        elem = _NBITS_ELEMS.get(bits)
        if elem is None:
            raise self._fail(f"{where}: {bits}-bit codes are not supported (2, 4 and 8 are)")
        if block * bits % 8:
            raise self._fail(f"{where}: block_size {block} of {bits}-bit codes does not fill whole bytes")
        n_blocks, blob = -(-kk // block), block * bits // 8
        if st.elem is not DTYPES["U8"] or st.shape != (n, n_blocks, blob):
            raise self._fail(f"{where}: B is {st.elem.code} {list(st.shape)} but K={kk}, N={n}, bits={bits}, block_size={block} "
                             f"need U8 [{n}, {n_blocks}, {blob}]")
        inputs = list(g.nodes[k].input) + [""] * 5
        names = {what: inputs[i] for what, i in _NBITS_INPUTS.items()}
        for what in ("scales", "zero_points", "g_idx"):
            if names[what] and names[what] not in storage:
                raise self._fail(f"{where}: its {what} {names[what]!r} is not a stored tensor")
        if not names["scales"]:
            raise self._fail(f"{where}: no scales input")
        scales = self._nbits_values(where, "scales", storage[names["scales"]], (n * n_blocks,), ((n * n_blocks,), (n, n_blocks)), floating=True)
        scale = _Param(scales, 1, block, (n, n_blocks))
        if names["g_idx"]:
            g_idx = storage[names["g_idx"]]
            if g_idx.shape != (kk,) or g_idx.elem is not DTYPES["I32"]:
                raise self._fail(f"{where}: g_idx is {g_idx.elem.code} {list(g_idx.shape)}, not I32 [{kk}]")
            if not np.array_equal(self._read_flat(g_idx, 0, kk, raw=True), np.arange(kk) // block):
                raise self._fail(f"{where}: g_idx reorders the blocks (act-order); such weights are not supported")
        zp = storage.get(names["zero_points"]) if names["zero_points"] else None
        if zp is None:
            zero = _Param(np.array([2 ** (bits - 1)], np.float32), None, 0, ())
            how = f"default zero point {2 ** (bits - 1)}"
        elif zp.elem is DTYPES["U8"]:
            per_row = -(-n_blocks * bits // 8)
            packed = self._nbits_values(where, "zero_points", zp, (n * per_row,), ((n * per_row,), (n, per_row)), floating=False)
            codes = _unpack(packed.astype(np.uint8).reshape(n, per_row), bits)[:, :n_blocks]
            zero = _Param(codes.astype(np.float32).reshape(-1), 1, block, (n, n_blocks))
            how = f"zero points packed {bits}-bit"
        else:
            values = self._nbits_values(where, "zero_points", zp, (n * n_blocks,), ((n * n_blocks,), (n, n_blocks)), floating=True)
            zero = _Param(values, 1, block, (n, n_blocks))
            how = f"zero points {zp.elem.code}"
        scheme = f"MatMulNBits {bits}-bit blocks of {block} along K, {how}"
        return _Stored(st.source, st.offset, st.n_bytes, elem, (n, kk), quant=_Quant(scale, zero, scheme), row_bytes=n_blocks * blob)

    def _nbits_values(self, where: str, what: str, st: _Stored, numel: tuple[int], shapes: tuple, floating: bool) -> np.ndarray:
        is_float = any(st.elem is ELEMENT_TYPES[t] for t in FLOAT_TYPES)
        if is_float != floating or st.shape not in shapes:
            want = " or ".join(str(list(s)) for s in shapes)
            raise self._fail(f"{where}: {what} is {st.elem.code} {list(st.shape)}, not {'float' if floating else 'U8'} {want}")
        return np.asarray(self._read_flat(st, 0, numel[0], raw=not floating), dtype=np.float32).reshape(-1)

    # -- names -------------------------------------------------------------------------------------
    def _names(self, g: _Graph, weights: list[_Weight], storage: dict[str, _Stored]) -> tuple[dict[str, str], dict[str, int]]:
        bias_owners, _ = _layouts()
        named = {_clean(v) for v in storage if not anonymous(v)} | {a for w in weights for a in self._aliases(g, w.init) if not anonymous(a)}
        ancestors = set()
        for n in named:
            parts = n.split(".")
            ancestors.update(".".join(parts[:i]) for i in range(2, len(parts)))
        names: dict[str, str] = {}
        counts = {"stored": 0, "from torch metadata": 0, "from their bias": 0, "from node scopes": 0, "by graph position": 0,
                  "left anonymous": 0}
        taken = set(named)

        def claim(w: _Weight, name: str | None, how: str) -> bool:
            if name is None or name in taken:
                return False
            names[w.init] = name
            taken.add(name)
            counts[how] += 1
            return True

        pending = []
        stored_names: set[str] = set()
        for w in weights:
            if not anonymous(w.init):
                name = _clean(w.init)
                if w.quant_node is not None and g.nodes[w.quant_node[0]].op_type == _NBITS_OP:
                    name = _NBITS_SUFFIX.sub("", name)
                names[w.init] = name if name not in stored_names else w.init  # x.weight and x.weight_quantized
                stored_names.add(names[w.init])
                counts["stored"] += 1
                continue
            if w.endpoint is not None:
                k = w.endpoint[0]
                op = g.nodes[k].op_type
                if claim(w, g.torch_parameter(k), "from torch metadata"):
                    continue
                bias = g.bias_of(k) if op in _MATMUL_OPS or op in _INTEGER_OPS or op in _BIAS_INPUTS else None
                if bias is not None and claim(w, bias_owners.get(bias, bias[: -len("bias")].rstrip(".")) + ".weight", "from their bias"):
                    continue
                scope = g.scope(k)
                if scope is not None and _under(scope, ancestors) and claim(w, scope + ".weight", "from node scopes"):
                    continue
            pending.append(w)
        slots = [w for w in weights if w.endpoint is not None and (
            g.nodes[w.endpoint[0]].op_type in _MATMUL_OPS and len(storage[w.init].shape) == 2
            or g.nodes[w.endpoint[0]].op_type == _NBITS_OP and w.endpoint[1] == _NBITS_INPUTS["B"])]
        for w, name in _positional(g, slots, names, storage, named).items():
            if w.init not in names:
                claim(w, name, "by graph position")
        for w in pending:
            if w.init not in names:
                names[w.init] = w.init
                counts["left anonymous"] += 1
        return names, counts

    # -- reading -----------------------------------------------------------------------------------
    def _read_flat(self, st: _Stored, start: int, count: int, raw: bool) -> np.ndarray:
        """Stored elements [start, start+count) of the flattened stored tensor: raw values (sub-byte
        types unpacked, one per element) or decoded and dequantised floats."""
        if st.row_bytes:
            return self._read_rows_of_blocks(st, start, count, raw)
        bits = st.elem.bits
        b0, b1 = start * bits // 8, -(-((start + count) * bits) // 8)
        buf = np.empty(b1 - b0, np.uint8)
        if b1 > b0:
            st.source.read_into(st.offset + b0, buf)
        if bits == 4:
            nib = np.empty(2 * len(buf), np.uint8)
            nib[0::2], nib[1::2] = buf & 0xF, buf >> 4
            vals = nib[start % 2 : start % 2 + count]
            if st.elem.code == "I4":
                vals = ((vals.astype(np.int8) ^ 8) - 8).astype(np.int8)
            if raw:
                return vals
            out = _F4_VALUES[vals] if st.elem.code == "F4" else vals.astype(np.float32)
        else:
            vals = buf.view(st.elem.storage)
            if raw:
                return vals
            out = decode(vals, st.elem)
        if st.quant is not None:
            out = st.quant.apply_flat(out, start, st.shape)
        return out

    def _read_rows_of_blocks(self, st: _Stored, start: int, count: int, raw: bool) -> np.ndarray:
        """Elements [start, start+count) of a MatMulNBits weight (logical [N, K]; each row ``row_bytes`` long,
        its last block padded): the covering bytes of one row, or the covering whole rows, read through the
        transport, unpacked, dequantised."""
        n_cols = st.shape[1]
        per_byte = 8 // st.elem.bits
        r_first, r_last = start // n_cols, (start + count - 1) // n_cols
        if r_first == r_last:
            c0 = start - r_first * n_cols
            b0, b1 = c0 // per_byte, -(-(c0 + count) // per_byte)
            buf = np.empty(b1 - b0, np.uint8)
            st.source.read_into(st.offset + r_first * st.row_bytes + b0, buf)
            codes = _unpack(buf[None, :], st.elem.bits).reshape(-1)[c0 - b0 * per_byte : c0 - b0 * per_byte + count]
        else:
            buf = np.empty((r_last - r_first + 1, st.row_bytes), np.uint8)
            st.source.read_into(st.offset + r_first * st.row_bytes, buf)
            s = start - r_first * n_cols
            codes = _unpack(buf, st.elem.bits)[:, :n_cols].reshape(-1)[s : s + count]
        if raw:
            return codes
        return st.quant.apply_flat(codes.astype(np.float32), start, st.shape)

    def _logical_block(self, st: _Stored, c0: int, c1: int, r0: int, r1: int, raw: bool) -> np.ndarray:
        """Logical rows r0:r1, columns c0:c1 of a matrix stored transposed (stored rows c0:c1, columns
        r0:r1), as a C-contiguous block.

        A local file is gathered from its memory map (only the touched pages are read, and dropped
        after); a remote one is read as one range per stored row; 4-bit types as one stretch of rows."""
        cols = st.shape[1]
        width = r1 - r0
        if st.elem.packed:
            flat = self._read_flat(st, c0 * cols + r0, (c1 - c0 - 1) * cols + width, raw=True)
            padded = np.empty((c1 - c0) * cols, flat.dtype)
            padded[: len(flat)] = flat
            vals = _transpose(padded.reshape(c1 - c0, cols)[:, :width])
        elif st.source.remote:
            isz = st.elem.storage.itemsize
            pieces = st.source.read_ranges([(st.offset + (c * cols + r0) * isz, width * isz) for c in range(c0, c1)])
            vals = _transpose(np.frombuffer(b"".join(pieces), st.elem.storage).reshape(c1 - c0, width))
        elif (held := self._held_view(st)) is not None:
            vals = _transpose(held[c0:c1, r0:r1])
        else:
            span = (c1 - c0) * cols * st.elem.storage.itemsize
            pieces = st.source.stream(st.offset + c0 * cols * st.elem.storage.itemsize, span, span)
            try:
                vals = _transpose(next(pieces).view(st.elem.storage).reshape(c1 - c0, cols)[:, r0:r1])
            finally:
                pieces.close()  # the transport drops the mapped pages
        if raw:
            return vals
        if st.elem.packed:
            out = _F4_VALUES[vals.view(np.uint8)] if st.elem.code == "F4" else vals.astype(np.float32)
        else:
            out = decode(vals.reshape(-1), st.elem).reshape(vals.shape)
        if st.quant is not None:  # dequantised in stored coordinates, seen transposed
            out = st.quant.apply(out.T, np.arange(c0, c1), r0, r1, st.shape).T
        return np.ascontiguousarray(out)

    def _held_view(self, st: _Stored) -> np.ndarray | None:
        """The whole stored matrix as a view of the transport's memory map, kept by this thread until it
        reads another one (then the pages are dropped): sampled rows and stream pieces of one matrix touch
        each page once. Local matrices up to HOLD_BYTES only."""
        if st.source.remote or st.elem.packed or st.n_bytes > HOLD_BYTES or not hasattr(st.source, "stream"):
            return None
        me = threading.get_ident()
        held = self._held.get(me)
        if held is not None and held[0] is st:
            return held[2]
        if held is not None:
            self._held.pop(me)[1].close()
        pieces = st.source.stream(st.offset, st.n_bytes, st.n_bytes)
        view = next(pieces).view(st.elem.storage).reshape(st.shape)
        self._held[me] = (st, pieces, view)
        return view

    def _panel(self, st: _Stored, c0: int, c1: int, row: int, raw: bool) -> tuple[int, np.ndarray]:
        """(first logical row, block) of the cached panel of logical rows holding ``row``, columns c0:c1
        (a thread keeps its last few panels: sampled rows and stream pieces fall into the same ones)."""
        rows = st.shape[1]
        height = max(1, min(rows, PANEL_ELEMS // max(c1 - c0, 1)))
        p0 = row - row % height
        key = (id(st), c0, c1, p0, raw)
        cache_ = getattr(self._local, "panels", None)
        if cache_ is None:
            cache_ = self._local.panels = OrderedDict()
        block = cache_.get(key)
        if block is None:
            block = self._logical_block(st, c0, c1, p0, min(rows, p0 + height), raw)
            cache_[key] = block
            while len(cache_) > PANELS_PER_THREAD:
                cache_.popitem(last=False)
        else:
            cache_.move_to_end(key)
        return p0, block

    def _read_logical(self, st: _Stored, start: int, count: int, raw: bool) -> np.ndarray:
        if not st.transposed:
            return self._read_flat(st, start, count, raw)
        cols = st.shape[0]  # logical row length
        r_first, r_last = start // cols, (start + count - 1) // cols
        if r_first == r_last:  # part of one logical row: a stretch of one stored column
            c0 = start - r_first * cols
            if self._held_view(st) is not None:
                return self._logical_block(st, c0, c0 + count, r_first, r_first + 1, raw).reshape(-1)
            p0, block = self._panel(st, c0, c0 + count, r_first, raw)
            return block[r_first - p0].copy()
        height = max(1, min(st.shape[1], PANEL_ELEMS // cols))
        if r_last - r_first + 1 >= height or self._held_view(st) is not None:
            block = self._logical_block(st, 0, cols, r_first, r_last + 1, raw).reshape(-1)
        else:
            parts, r = [], r_first
            while r <= r_last:
                p0, panel = self._panel(st, 0, cols, r, raw)
                upto = min(r_last + 1, p0 + len(panel))
                parts.append(panel[r - p0 : upto - p0].reshape(-1))
                r = upto
            block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        s = start - r_first * cols
        return block[s : s + count].copy()

    def _info_storage(self, info: TensorInfo) -> _Stored:
        return self._stored[info.name]

    def read_raw(self, info: TensorInfo, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Stored values in the tensor's logical order (sub-byte types: one unpacked value per element)."""
        st = self._info_storage(info)
        vals = self._read_logical(st, start, count, raw=True) if count else np.empty(0, st.elem.storage)
        if out is not None:
            out = out[: len(vals)]
            out[...] = vals
            return out
        return vals

    def read_elements(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        st = self._info_storage(info)
        if count <= 0:
            return np.empty(0, st.elem.decoded if st.quant is None else np.float32)
        return self._read_logical(st, start, count, raw=False)

    def stream_elements(self, info: TensorInfo, start: int, count: int, scratch: np.ndarray | None = None) -> Iterator[np.ndarray]:
        st = self._info_storage(info)
        if st.plain and hasattr(st.source, "stream"):
            isz = st.elem.storage.itemsize
            for piece in st.source.stream(st.offset + start * isz, count * isz, STREAM_PIECE_ELEMS * isz):
                yield decode(piece.view(st.elem.storage), st.elem, scratch)
            return
        for s in range(start, start + count, STREAM_PIECE_ELEMS):
            yield self.read_elements(info, s, min(STREAM_PIECE_ELEMS, start + count - s))

    def stream_raw(self, info: TensorInfo, piece_elems: int = STREAM_PIECE_ELEMS) -> Iterator[bytes]:
        for s in range(0, info.numel, piece_elems):
            yield self.read_raw(info, s, min(piece_elems, info.numel - s)).tobytes()

    def prefetch(self, spans: list[tuple[TensorInfo, int, int]]) -> None:
        """Hint for remote files: plain tensors of the main file only (others are read by their own
        pattern)."""
        plain = [(i, s, c) for i, s, c in spans if self._stored[i.name].plain and self._stored[i.name].source is self.transport]
        if plain:
            super().prefetch(plain)

    def data_transports(self) -> tuple[Transport, ...]:
        return (self.transport, *self._external.values())

    def metadata_used(self) -> dict[str, object]:
        """What the graph told modelkin: producer and opset, how weights were named, how they were
        dequantised (schemes with their counts; per tensor in ``metadata["quantized"]``)."""
        used = {k: self.metadata[k] for k in ("producer", "opset", "names", "not read") if self.metadata.get(k)}
        schemes: dict[str, int] = {}
        for scheme in self.metadata.get("quantized", {}).values():
            schemes[scheme] = schemes.get(scheme, 0) + 1
        if schemes:
            used["quantized"] = ", ".join(f"{s} ({n})" for s, n in sorted(schemes.items(), key=lambda kv: -kv[1]))
        return used

    def __enter__(self) -> "OnnxFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for _, pieces, _ in list(self._held.values()):
            pieces.close()
        self._held = {}
        for t in self._external.values():
            t.close()
        self._external = {}
        super().close()


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Rows of bytes holding ``bits``-bit codes low bits first -> rows of codes (8 // bits per byte)."""
    if bits == 8:
        return packed
    per = 8 // bits
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    out = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return out.reshape(*packed.shape[:-1], packed.shape[-1] * per)


def _transpose(a: np.ndarray, step: int = 64) -> np.ndarray:
    """``a.T`` made contiguous, a band of rows at a time (several times faster than one strided copy)."""
    if a.shape[0] <= step or a.shape[1] == 1:
        return np.ascontiguousarray(a.T)
    out = np.empty(a.shape[::-1], a.dtype)
    for i in range(0, a.shape[0], step):
        out[:, i : i + step] = a[i : i + step].T
    return out


def _replace(st: _Stored, **changes) -> _Stored:
    from dataclasses import replace

    return replace(st, **changes)


# -- naming by position --------------------------------------------------------------------------------


def _positional(g: _Graph, slots: list[_Weight], known: dict[str, str], storage: dict[str, _Stored], named: set[str]) -> dict[_Weight, str]:
    """Names for unnamed MatMul/Gemm weights from their place in the graph.

    The weights are taken in topological order of their consumers. For each repeated block the named
    tensors reveal (``{prefix}{layer_root}.…``, e.g. ``model.layers.3.input_layernorm.weight``), the block
    layout says which matrix comes at which place; weights already named (from a bias or a scope) must
    sit exactly where the layout puts them, and every block must repeat the same shapes — else nothing
    is named by position for that block.
    """
    _, layouts = _layouts()
    all_names = named | set(known.values())
    stacks = []
    for layout in layouts:
        found: dict[str, tuple[int, int, set[str]]] = {}
        for n in all_names:
            m = layout.regex.match(n)
            if m is None:
                continue
            prefix, layer, rest = m["prefix"], int(m["layer"]), m["rest"]
            n_layers, score, members = found.get(prefix, (0, 0, set()))
            members.add(n)
            found[prefix] = (max(n_layers, layer + 1), score + (_module(rest) in layout.matrices), members)
        for prefix, (n_layers, score, members) in found.items():
            stacks.append((score, layout, prefix, n_layers, members))
    stacks.sort(key=lambda s: -s[0])
    accepted, claimed = [], set()
    for score, layout, prefix, n_layers, members in stacks:
        rivals = [s for s in stacks if s[0] == score and s[4] == members and s[1] is not layout]
        if members & claimed or (rivals and score == 0):
            continue
        accepted.append((layout, prefix, n_layers, members))
        claimed |= members
    slot_names = [known.get(w.init) for w in slots]
    placed = []
    for layout, prefix, n_layers, members in accepted:
        base = _block_base(g, slots, slot_names, layout, prefix, n_layers, members)
        if base is not None:
            placed.append((base, layout, prefix, n_layers))
    placed.sort(key=lambda p: p[0])
    out: dict[_Weight, str] = {}
    for i, (base, layout, prefix, n_layers) in enumerate(placed):
        m = len(layout.matrices)
        for layer in range(n_layers):
            for j in range(m):
                w = slots[base + layer * m + j]
                if slot_names[base + layer * m + j] is None:
                    out[w] = layout.matrix(prefix, layer, j)
        end = base + n_layers * m
        limit = placed[i + 1][0] if i + 1 < len(placed) else len(slots)
        tail = [k for k in range(end, limit) if slot_names[k] is None]
        for option in layout.after:
            if len(option) == len(tail):
                for k, name in zip(tail, option):
                    out[slots[k]] = name.format(prefix=prefix) + ".weight"
                break
    return out


def _block_base(g: _Graph, slots: list[_Weight], slot_names: list[str | None], layout: _Layout, prefix: str, n_layers: int, members: set[str]) -> int | None:
    """Index in ``slots`` of the first matrix of layer 0, or None when the graph does not fit the layout."""
    m = len(layout.matrices)
    expected = {layout.matrix(prefix, layer, j): layer * m + j for layer in range(n_layers) for j in range(m)}
    bases = {k - expected[n] for k, n in enumerate(slot_names) if n in expected}
    if len(bases) > 1:
        return None
    if bases:
        base = bases.pop()
    else:  # no matrix named yet: the block starts at the first weight used after a layer-0 tensor
        first_uses = [g.consumers[v][0][0] for v in g.consumers if v in members and _layer_of(layout, prefix, v) == 0]
        if not first_uses:
            return None
        start = min(first_uses)
        base = next((k for k, w in enumerate(slots) if w.endpoint[0] > start), None)
        if base is None:
            return None
    if base < 0 or base + n_layers * m > len(slots):
        return None
    for layer in range(n_layers):
        for j in range(m):
            name = slot_names[base + layer * m + j]
            if name is not None and name != layout.matrix(prefix, layer, j):
                return None
    shapes = [slots[base + k].shape for k in range(n_layers * m)]
    if any(shapes[k] != shapes[k % m] for k in range(n_layers * m)):
        return None
    return base


def _under(scope: str, ancestors: set[str]) -> bool:
    """Whether a module path lies under a module (of at least two segments) the export names elsewhere."""
    parts = scope.split(".")
    return any(".".join(parts[:i]) in ancestors for i in range(2, len(parts)))


def _layer_of(layout: _Layout, prefix: str, name: str) -> int | None:
    m = layout.regex.match(name)
    return int(m["layer"]) if m and m["prefix"] == prefix else None


