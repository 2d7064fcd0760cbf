"""Reading GGUF (llama.cpp's format): header parsed through the transport, tensors dequantised block by block.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, uint32 version, uint64 tensor count, uint64 metadata
count; the metadata as (string key, uint32 type, value) — strings are a uint64 length and UTF-8 bytes, arrays
a uint32 element type, a uint64 count and the elements; then per tensor its name, uint32 n_dims, n_dims uint64
dims (``ne0`` first: the fastest-varying axis), uint32 ggml type and a uint64 offset relative to the data
section, which starts at the next multiple of ``general.alignment`` (default 32). The header is read through
the ``Transport`` in bounded windows, so a remote GGUF opens with a few ranged reads; every count, length and
dimension is checked against the bytes that remain before anything is allocated, and any violation is one
``FormatError`` naming the file.

Values: the ``gguf`` package supplies the type table (``GGMLQuantizationType``, ``GGML_QUANT_SIZES``) and
the dequantisers (``gguf.quants.dequantize``: Q4_0…Q8_0, K-quants Q2_K…Q6_K, IQ1…IQ4, TQ1/TQ2, MXFP4,
NVFP4). A read dequantises only the blocks covering the requested elements, at most ``DEQUANT_BLOCK_ELEMS``
at a time. F32/F16/BF16/F64 and the integer types are plain element arrays read by ``WeightFile``. Shapes
are reported in numpy order (``ne`` reversed), which for a matrix is the source's ``[out, in]``.

Stacked experts (``blk.N.ffn_gate_exps.weight``, shape ``[n_expert, n_ff, n_embd]``) are listed one expert
at a time as ``blk.N.ffn_gate_exps.E.weight`` — each a contiguous slice of the stored tensor — so they pair
with a checkpoint's per-expert matrices.

What llama.cpp's ``convert_hf_to_gguf.py`` changes, per architecture (``_data/gguf.json`` holds the table):

* **Q/K row order, interleaved-RoPE architectures** (llama, mistral3, granite, granitemoe, deci, baichuan,
  internlm2, minicpm, smollm3, arcee): ``LlamaModel.permute`` reorders the rows of every head of
  ``attn_q``/``attn_k`` (weights, and biases in current converters) from Hugging Face's rotate-half order to
  interleaved pairs. Undone here, per head (``attention.head_count`` for Q, ``head_count_kv`` for K), so
  values come back in the Hugging Face order. Mistral's native checkpoints are interleaved already; undoing
  gives the Hugging Face order for them too. Llama 4 and the other architectures are stored unpermuted.
* **Gemma norms** (gemma, gemma2, gemma3, gemma-embedding): RMSNorm gains are stored as ``1 + w``. Undone
  (1 is subtracted from every text ``*norm.weight``). Not undone: the Gemma 3 projector's
  ``mm.soft_emb_norm`` (also ``1 + w``); Gemma 3n stores ``w``.
* **Experts** are stacked into one 3-D tensor per layer and matrix (Mixtral, Qwen-MoE, DeepSeek, …); some
  converters fuse gate and up (``ffn_gate_up_exps``). Listed per expert (above); fused parts are split by
  the alignment stage like any fused tensor.
* **Vision (mmproj files, architecture ``clip``)**: Qwen2-VL/2.5-VL's fused ``qkv`` is split into
  ``attn_q``/``attn_k``/``attn_v`` (the alignment stage splits the checkpoint's side to match), and its
  Conv3d patch embedding into two 2-D kernels ``v.patch_embd.weight`` and ``v.patch_embd.weight.1`` (not
  rejoined: these stay unpaired against a checkpoint). Projector layers become ``mm.N``.
* **Not undone**: DeepSeek MLA's ``kv_b_proj`` split into ``attn_k_b`` (transposed) and ``attn_v_b`` by
  newer converters; Mamba/Qwen3-Next ``A_log`` stored as ``-exp(A_log)``; tied embeddings (``output.weight``
  omitted when tied: nothing to undo); a vocabulary padded with ``[PAD…]`` tokens (the vocabulary map
  handles it). Architectures missing from the table are read as stored, with no ``model_type``.

Metadata: ``general.architecture`` and the hyper-parameters under ``<arch>.`` become ``embedded_config()``
in config.json's vocabulary (``model_type``, ``hidden_size``, …); per-layer arrays are kept only when every
layer agrees. ``tokenizer.ggml.tokens`` becomes ``embedded_vocab()``. ``metadata_used()`` lists the keys read.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from ..errors import FormatError, UnsupportedError
from .dtypes import DType, lookup
from .tensors import TensorInfo
from .transport import LocalFile, Transport
from .weightfile import STREAM_PIECE_ELEMS, WeightFile

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 (2023, uint32 lengths) is obsolete
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32
MAX_KEY_BYTES = 65_535
MAX_NAME_BYTES = 65_535
MAX_STRING_BYTES = 64 << 20  # a chat template is ~20 KB; nothing legitimate comes near this
MAX_ARRAY_ELEMS = 1 << 22  # vocabularies (<= 262k tokens) and merge lists stay far below
MAX_ENTRIES = 1 << 16  # metadata entries and tensors: real files have tens and a few thousand
MAX_EXPERTS = 1 << 12  # a stacked-expert tensor with more is listed whole
MAX_NUMEL = 1 << 62
HEADER_WINDOW = 1 << 16  # first header read (one ranged request over HTTP); doubles per refill
MAX_HEADER_WINDOW = 1 << 24
DEQUANT_BLOCK_ELEMS = 1 << 20  # elements dequantised per call: bounds the dequantisers' temporaries
KEEP_ARRAY_ELEMS = 64  # longer metadata arrays are summarised in ``metadata``
KEPT_STRING_ARRAYS = frozenset({"tokenizer.ggml.tokens"})  # other string arrays (merges…) are only walked

# value types of the metadata
_SCALAR = {code: np.dtype(spelling) for code, spelling in (
    (0, "<u1"), (1, "<i1"), (2, "<u2"), (3, "<i2"), (4, "<u4"), (5, "<i4"), (6, "<f4"), (7, "<u1"), (10, "<u8"), (11, "<i8"), (12, "<f8"),
)}
_F32, _BOOL, _STRING, _ARRAY = 6, 7, 8, 9
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, one dim, type, offset
_MIN_KV_BYTES = 8 + 4 + 1

_PLAIN = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})  # ggml types stored as element arrays
_EXPERTS = re.compile(r"(?P<stem>.+_(?:exps|chexps))\.(?P<param>[A-Za-z_]\w*)")
_QK = re.compile(r"blk\.(?P<layer>\d+)\.attn_(?P<which>[qk])\.(?:weight|bias)")
_TEXT_NORM = re.compile(r"(?:blk\.\d+\.)?[A-Za-z0-9_]*norm\.weight")


def _dtype_of(qtype: GGMLQuantizationType) -> DType:
    """The dtype table's entry for a plain ggml type; a block entry (decoded here) for a quantised one."""
    elems, n_bytes = GGML_QUANT_SIZES[qtype]
    if qtype.name in _PLAIN:
        return lookup(qtype.name)
    return DType(qtype.name, np.dtype(np.uint8), max(1, round(8 * n_bytes / elems)), np.dtype(np.float32),
                 block_elems=elems, block_bytes=n_bytes)


DTYPES: dict[int, DType] = {int(q): _dtype_of(q) for q in GGMLQuantizationType if q in GGML_QUANT_SIZES}
_QTYPE_OF = {d.code: GGMLQuantizationType(v) for v, d in DTYPES.items() if d.is_block}


@dataclass(frozen=True, slots=True)
class ArchInfo:
    model_type: str
    model_type_moe: str | None = None
    qk_permute: bool = False
    norm_offset: float | None = None


@cache
def _table() -> tuple[dict[str, ArchInfo], dict[str, str]]:
    """``_data/gguf.json``, strictly validated: architectures and the hyper-parameter key map."""
    where = "_data/gguf.json"
    data = json.loads((resources.files("modelkin") / "_data" / "gguf.json").read_text(encoding="utf-8"))
    if set(data) - {"description", "architectures", "hyperparameters"}:
        raise FormatError(f"unknown keys {sorted(set(data) - {'description', 'architectures', 'hyperparameters'})}", where)
    archs = {}
    for name, entry in data["architectures"].items():
        unknown = set(entry) - set(ArchInfo.__slots__)
        if unknown or not isinstance(entry.get("model_type"), str):
            raise FormatError(f"architecture {name!r}: needs 'model_type' and only the keys {list(ArchInfo.__slots__)}", where)
        archs[name] = ArchInfo(**entry)
    hp = data["hyperparameters"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in hp.items()):
        raise FormatError("hyperparameters must map config keys to GGUF keys", where)
    return archs, hp


# -- header ----------------------------------------------------------------------------------------


class _Cursor:
    """Sequential reads of the header through the transport, a bounded window at a time."""

    def __init__(self, transport: Transport, fail):
        self.t = transport
        self.size = transport.size
        self.fail = fail
        self.pos = 0
        self._buf = b""
        self._buf_start = 0
        self._window = HEADER_WINDOW

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes, but the file ends at byte {self.size} (truncated?)")
        lo = self.pos - self._buf_start
        if lo < 0 or lo + n > len(self._buf):
            length = min(self.size - self.pos, max(n, self._window))
            self._window = min(2 * self._window, MAX_HEADER_WINDOW)
            buf = np.empty(length, np.uint8)
            self.t.read_into(self.pos, buf)
            self._buf, self._buf_start, lo = buf.tobytes(), self.pos, 0
        self.pos += n
        return self._buf[lo : lo + n]

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, limit: int, what: str, strict: bool = True) -> str:
        n = self.unpack("<Q", f"length of {what}")
        if n > limit:
            raise self.fail(f"{what} claims {n} bytes (limit {limit}): not a sane GGUF string")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8", "strict" if strict else "surrogateescape")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8 (byte {e.start})") from None

    def value(self, vtype: int, key: str):
        if vtype in _SCALAR:
            v = np.frombuffer(self.take(_SCALAR[vtype].itemsize, f"value of {key!r}"), _SCALAR[vtype])[0]
            if vtype == _F32:
                return float(str(v))  # the shortest decimal that is this float32 (1e-06, not 9.99999997e-07)
            return bool(v) if vtype == _BOOL else v.item()
        if vtype == _STRING:
            return self.string(MAX_STRING_BYTES, f"string value of {key!r}", strict=False)
        if vtype == _ARRAY:
            return self.array(key)
        raise self.fail(f"metadata {key!r} has unknown value type {vtype}")

    def array(self, key: str):
        etype = self.unpack("<I", f"array type of {key!r}")
        count = self.unpack("<Q", f"array length of {key!r}")
        if etype == _ARRAY:
            raise self.fail(f"metadata {key!r}: arrays of arrays are not supported")
        min_size = _SCALAR[etype].itemsize if etype in _SCALAR else 8 if etype == _STRING else None
        if min_size is None:
            raise self.fail(f"metadata {key!r}: array of unknown value type {etype}")
        if count > MAX_ARRAY_ELEMS or count * min_size > self.size - self.pos:
            raise self.fail(f"metadata {key!r}: array claims {count} elements, more than the {self.size - self.pos} bytes left in the file hold")
        if etype in _SCALAR:
            arr = np.frombuffer(self.take(count * min_size, f"array {key!r}"), _SCALAR[etype])
            return arr.astype(bool) if etype == _BOOL else arr
        return self.strings(count, key)

    def strings(self, count: int, key: str) -> list[str] | str:
        """An array of strings: kept for the vocabulary, walked over (and summarised) otherwise."""
        keep = key in KEPT_STRING_ARRAYS
        what = f"array {key!r}"
        out = []
        for _ in range(count):
            (n,) = struct.unpack("<Q", self.take(8, what))
            if n > MAX_STRING_BYTES:
                raise self.fail(f"an element of {what} claims {n} bytes (limit {MAX_STRING_BYTES})")
            raw = self.take(n, what)
            if keep:
                out.append(raw.decode("utf-8", "surrogateescape"))
        return out if keep else f"<array of {count} str>"


@dataclass(frozen=True, slots=True)
class _RawTensor:
    name: str
    dims: tuple[int, ...]  # ne0 first
    dtype: DType
    offset: int  # relative to the data section
    n_bytes: int


@dataclass(frozen=True, slots=True)
class _Unpermute:
    """Rows stored in interleaved-RoPE order, ``n_head`` heads: read back in rotate-half order."""

    n_head: int


@dataclass(frozen=True, slots=True)
class _Offset:
    """Values stored plus ``value``: read back minus it."""

    value: float


def _summary(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= KEEP_ARRAY_ELEMS else f"<array of {v.size} {v.dtype}>"
    if isinstance(v, list):
        return v if len(v) <= KEEP_ARRAY_ELEMS else f"<array of {len(v)} values>"
    return v


class GGUFFile(WeightFile):
    """One ``.gguf`` file: header and metadata parsed through the transport; values dequantised on read."""

    format_name = "gguf"

    def __init__(self, source: str | Path | Transport):
        super().__init__(LocalFile(source) if isinstance(source, (str, Path)) else source)
        self.version = 0
        self._tokens: list[str] | None = None
        self._vocab: dict[str, int] | None = None
        self._kv: dict[str, object] = {}
        self._transforms: dict[str, _Unpermute | _Offset] = {}
        raw, data_start = self._parse_header()
        parts = self._kv.get("split.count")
        if isinstance(parts, int) and not isinstance(parts, bool) and parts > 1:
            # later parts carry no architecture metadata, which undoing the converter's changes needs
            raise UnsupportedError(f"part {self._kv.get('split.no', 0) + 1 if isinstance(self._kv.get('split.no'), int) else '?'} of a "
                                   f"GGUF split in {parts} files: split GGUFs are not supported yet (merge them with "
                                   "llama-gguf-split --merge FIRST-PART OUT.gguf)", self.name)
        self.architecture = self._kv.get("general.architecture") if isinstance(self._kv.get("general.architecture"), str) else None
        self.arch = _table()[0].get(self.architecture or "")
        self._add_tensors(raw, data_start)
        self._find_transforms()
        self._config, self._used = self._read_config()

    # -- header -----------------------------------------------------------------------------------
    def _parse_header(self) -> tuple[list[_RawTensor], int]:
        c = _Cursor(self.transport, self._fail)
        if self.transport.size < 24:
            raise self._fail(f"file is {self.transport.size} bytes, too short for a GGUF header (truncated?)")
        magic = c.take(4, "magic")
        if magic != MAGIC:
            raise self._fail(f"does not start with the GGUF magic (found {magic!r}): not a GGUF file")
        self.version = c.unpack("<I", "version")
        if self.version not in VERSIONS:
            swapped = struct.unpack(">I", struct.pack("<I", self.version))[0]
            hint = " (a big-endian GGUF: not supported)" if swapped in VERSIONS else ""
            raise self._fail(f"GGUF version {self.version} is not supported (readable: {VERSIONS}){hint}")
        n_tensors = c.unpack("<Q", "tensor count")
        n_kv = c.unpack("<Q", "metadata count")
        left = self.transport.size - c.pos
        if n_kv > MAX_ENTRIES or n_tensors > MAX_ENTRIES:
            raise self._fail(f"header claims {n_kv} metadata entries and {n_tensors} tensors (limit {MAX_ENTRIES} each): not a sane GGUF file")
        if n_kv * _MIN_KV_BYTES > left:
            raise self._fail(f"header claims {n_kv} metadata entries, more than the {left} bytes after it can hold")
        for i in range(n_kv):
            key = c.string(MAX_KEY_BYTES, f"key of metadata entry {i}")
            if key in self._kv:
                raise self._fail(f"metadata key {key!r} appears twice")
            vtype = c.unpack("<I", f"value type of {key!r}")
            value = c.value(vtype, key)
            if key == "tokenizer.ggml.tokens" and isinstance(value, list) and all(isinstance(t, str) for t in value):
                self._tokens = value
            self._kv[key] = value
            self.metadata[key] = _summary(value)
        left = self.transport.size - c.pos
        if n_tensors * _MIN_TENSOR_INFO_BYTES > left:
            raise self._fail(f"header claims {n_tensors} tensors, more than the {left} bytes after the metadata can hold")
        raw = [self._tensor_info(c, i) for i in range(n_tensors)]
        alignment = self._kv.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
            raise self._fail(f"general.alignment must be a positive power of two, got {alignment!r}")
        data_start = -(-c.pos // alignment) * alignment
        self._check_spans(raw, data_start, alignment)
        return raw, data_start

    def _tensor_info(self, c: _Cursor, i: int) -> _RawTensor:
        name = c.string(MAX_NAME_BYTES, f"name of tensor {i}")
        n_dims = c.unpack("<I", f"dimension count of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self._fail(f"tensor {name!r}: {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
        dims = struct.unpack(f"<{n_dims}Q", c.take(8 * n_dims, f"dimensions of tensor {name!r}"))
        code = c.unpack("<I", f"type of tensor {name!r}")
        offset = c.unpack("<Q", f"offset of tensor {name!r}")
        dtype = DTYPES.get(code)
        if dtype is None:
            raise self._fail(f"tensor {name!r}: unknown ggml type {code}")
        numel = 1
        for d in dims:  # Python ints: a product that would wrap a uint64 is caught, not wrapped
            numel *= d
            if numel > MAX_NUMEL:
                raise self._fail(f"tensor {name!r}: dimensions {list(dims)} multiply past 2^62 elements")
        if dims[0] % dtype.block_elems:
            raise self._fail(f"tensor {name!r}: row length {dims[0]} is not a multiple of {dtype.code}'s block of {dtype.block_elems}")
        return _RawTensor(name, dims, dtype, offset, dtype.n_bytes(numel))

    def _check_spans(self, raw: list[_RawTensor], data_start: int, alignment: int) -> None:
        data_len = self.transport.size - data_start
        seen: set[str] = set()
        for t in raw:
            if t.name in seen:
                raise self._fail(f"tensor {t.name!r} appears twice")
            seen.add(t.name)
            if t.offset % alignment:
                raise self._fail(f"tensor {t.name!r}: offset {t.offset} is not a multiple of the alignment {alignment}")
            if t.offset + t.n_bytes > data_len:
                raise self._fail(
                    f"tensor {t.name!r}: data [{t.offset}, {t.offset + t.n_bytes}) runs past the end of the "
                    f"{max(data_len, 0)}-byte data section (truncated file?)"
                )
        end, prev = 0, None
        for t in sorted(raw, key=lambda t: t.offset):
            if t.offset < end and t.n_bytes:
                raise self._fail(f"tensor {t.name!r}: data at offset {t.offset} overlaps tensor {prev!r} (ends at {end})")
            if t.n_bytes:
                end, prev = t.offset + t.n_bytes, t.name

    def _add_tensors(self, raw: list[_RawTensor], data_start: int) -> None:
        for t in raw:
            shape = tuple(reversed(t.dims))
            m = _EXPERTS.fullmatch(t.name)
            if m is None or len(shape) < 2 or not 0 < shape[0] <= MAX_EXPERTS or not t.n_bytes:
                self.tensors[t.name] = TensorInfo(t.name, t.dtype, shape, self.name, data_start + t.offset, t.n_bytes)
                continue
            per = t.n_bytes // shape[0]
            for e in range(shape[0]):
                name = f"{m['stem']}.{e}.{m['param']}"
                self.tensors[name] = TensorInfo(name, t.dtype, shape[1:], self.name, data_start + t.offset + e * per, per)

    # -- converter transforms ---------------------------------------------------------------------
    def _per_layer(self, key: str, layer: int) -> int | None:
        v = self._kv.get(f"{self.architecture}.{key}")
        if isinstance(v, np.ndarray) and v.ndim == 1 and layer < v.size:
            v = v[layer].item()
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def _find_transforms(self) -> None:
        if self.arch is None:
            return
        for name, info in self.tensors.items():
            m = _QK.fullmatch(name) if self.arch.qk_permute else None
            if m:
                layer = int(m["layer"])
                n_head = self._per_layer("attention.head_count", layer)
                if m["which"] == "k":
                    n_head = self._per_layer("attention.head_count_kv", layer) or n_head
                if not n_head or info.shape[0] % (2 * n_head):
                    raise self._fail(
                        f"tensor {name!r}: {info.shape[0]} rows cannot be {n_head} heads of interleaved RoPE pairs "
                        "(attention.head_count / head_count_kv missing or wrong)"
                    )
                self._transforms[name] = _Unpermute(n_head)
            elif self.arch.norm_offset is not None and _TEXT_NORM.fullmatch(name):
                self._transforms[name] = _Offset(self.arch.norm_offset)

    # -- config and vocabulary --------------------------------------------------------------------
    def _read_config(self) -> tuple[dict | None, dict[str, object]]:
        """config.json's vocabulary from the metadata, and the metadata entries it came from."""
        used = {k: self._kv[k] for k in ("general.architecture", "general.name", "general.file_type", "general.alignment") if k in self._kv}
        arch = self.architecture
        if arch is None or arch == "clip":  # a projector file: the language model's file carries the config
            return None, used
        config: dict[str, object] = {}
        if self.arch is not None:
            moe = self.arch.model_type_moe and self._kv.get(f"{arch}.expert_count")
            config["model_type"] = self.arch.model_type_moe if moe else self.arch.model_type
        for key, suffix in _table()[1].items():
            gkey = f"{arch}.{suffix}"
            if gkey in self._kv:
                used[gkey] = _summary(self._kv[gkey])
                value = self._kv[gkey]
                if isinstance(value, np.ndarray):  # per-layer values: kept only when every layer agrees
                    if value.ndim != 1 or value.size == 0 or not (value == value[0]).all():
                        continue
                    value = value[0].item()
                config[key] = value
        self._add_derived(config, used)
        return config, used

    def _add_derived(self, config: dict, used: dict) -> None:
        """Config entries that come from the tensors, RoPE scaling and the tokenizer; transforms undone."""
        arch = self.architecture
        if "vocab_size" not in config:
            if "token_embd.weight" in self.tensors:
                config["vocab_size"] = self.tensors["token_embd.weight"].shape[0]
            elif self._tokens is not None:
                config["vocab_size"] = len(self._tokens)
        if "token_embd.weight" in self.tensors:
            config["tie_word_embeddings"] = "output.weight" not in self.tensors
        kind, factor = self._kv.get(f"{arch}.rope.scaling.type"), self._kv.get(f"{arch}.rope.scaling.factor")
        if isinstance(kind, str) and kind != "none":
            config["rope_scaling"] = {"rope_type": kind, "factor": factor}
            used[f"{arch}.rope.scaling.type"], used[f"{arch}.rope.scaling.factor"] = kind, factor
        if self._tokens is not None:
            used["tokenizer.ggml.tokens"] = f"<{len(self._tokens)} tokens>"
            if "tokenizer.ggml.model" in self._kv:
                used["tokenizer.ggml.model"] = self._kv["tokenizer.ggml.model"]
        if self._transforms:
            used["converter transforms undone"] = sorted(
                {"Q/K rows: interleaved RoPE order -> rotate-half" if isinstance(t, _Unpermute) else f"norm gains stored as {t.value:g} + w"
                 for t in self._transforms.values()})

    def embedded_config(self) -> dict | None:
        return None if self._config is None else dict(self._config)

    def embedded_vocab(self) -> dict[str, int] | None:
        if self._tokens is None:
            return None
        if self._vocab is None:  # a repeated token keeps its first id
            self._vocab = {t: i for i, t in reversed(list(enumerate(self._tokens)))}
        return self._vocab

    def metadata_used(self) -> dict[str, object]:
        return dict(self._used)

    # -- values -----------------------------------------------------------------------------------
    def read_raw(self, info: TensorInfo, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Stored bytes of whole blocks [start, start+count) (block types), else as ``WeightFile``."""
        if not info.dtype.is_block:
            return super().read_raw(info, start, count, out)
        b = info.dtype.block_elems
        if start % b or count % b:
            raise ValueError(f"{info.name}: elements [{start}, {start + count}) are not whole {info.dtype.code} blocks")
        n = count // b * info.dtype.block_bytes
        buf = np.empty(n, np.uint8) if out is None else out.reshape(-1).view(np.uint8)[:n]
        if n:
            self.transport.read_into(info.data_offset + start // b * info.dtype.block_bytes, buf)
        return buf

    def _dequantized(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        qtype = _QTYPE_OF[info.dtype.code]
        b, nb = info.dtype.block_elems, info.dtype.block_bytes
        out = np.empty(count, np.float32)
        first, end = start // b, -(-(start + count) // b)
        step = max(1, DEQUANT_BLOCK_ELEMS // b)
        pos = 0
        for b0 in range(first, end, step):
            b1 = min(end, b0 + step)
            raw = np.empty((b1 - b0) * nb, np.uint8)
            self.transport.read_into(info.data_offset + b0 * nb, raw)
            try:
                with np.errstate(all="ignore"):  # non-finite scales decode to inf/nan: reported downstream
                    values = dequantize(raw, qtype).reshape(-1)
            except NotImplementedError:
                raise UnsupportedError(f"tensor {info.name!r} is stored as {info.dtype.code}, which the gguf package cannot dequantize", self.name) from None
            lo, hi = max(start, b0 * b) - b0 * b, min(start + count, b1 * b) - b0 * b
            out[pos : pos + hi - lo] = values[lo:hi]
            pos += hi - lo
        return out

    def _stored(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Elements [start, start+count) in stored order, decoded."""
        if info.dtype.is_block:
            return self._dequantized(info, start, count)
        return super().read_elements(info, start, count)

    def _stored_rows(self, info: TensorInfo, n_head: int, r0: int, r1: int) -> np.ndarray:
        """Stored row of each logical (rotate-half order) row r0..r1-1: the inverse of ``LlamaModel.permute``,
        which moved row ``h*hd + j*hd/2 + i`` to ``h*hd + 2*i + j``."""
        hd = info.shape[0] // n_head
        head, within = np.divmod(np.arange(r0, r1), hd)
        j, i = np.divmod(within, hd // 2)
        return head * hd + 2 * i + j

    def _unpermuted(self, info: TensorInfo, n_head: int, start: int, count: int) -> np.ndarray:
        row_len = info.numel // info.shape[0]
        r0, r1 = start // row_len, -(-(start + count) // row_len)
        stored = self._stored_rows(info, n_head, r0, r1)
        s0, s1 = int(stored.min()), int(stored.max()) + 1
        block = self._stored(info, s0 * row_len, (s1 - s0) * row_len).reshape(s1 - s0, row_len)
        values = block[stored - s0].reshape(-1)
        off = start - r0 * row_len
        return values[off : off + count]

    def read_elements(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        t = self._transforms.get(info.name)
        if t is None or count == 0:
            return self._stored(info, start, count)
        if isinstance(t, _Offset):
            return self._stored(info, start, count) - np.float32(t.value)
        return self._unpermuted(info, t.n_head, start, count)

    def stream_elements(self, info: TensorInfo, start: int, count: int, scratch: np.ndarray | None = None) -> Iterator[np.ndarray]:
        if info.name not in self._transforms:
            yield from super().stream_elements(info, start, count, scratch)
            return
        for s in range(start, start + count, STREAM_PIECE_ELEMS):
            yield self.read_elements(info, s, min(STREAM_PIECE_ELEMS, start + count - s))

    def _covering_bytes(self, info: TensorInfo, start: int, count: int) -> tuple[int, int]:
        t = self._transforms.get(info.name)
        if isinstance(t, _Unpermute):  # whole heads around the rows asked for
            row_len = info.numel // info.shape[0]
            hd = info.shape[0] // t.n_head
            r0, r1 = start // row_len, -(-(start + count) // row_len)
            h0, h1 = r0 // hd, (r1 - 1) // hd + 1
            start, count = h0 * hd * row_len, (h1 - h0) * hd * row_len
        d = info.dtype
        if d.is_block:
            b0, b1 = start // d.block_elems, -(-(start + count) // d.block_elems)
            return info.data_offset + b0 * d.block_bytes, (b1 - b0) * d.block_bytes
        return info.data_offset + start * d.bits // 8, count * d.bits // 8

    def prefetch(self, spans: list[tuple[TensorInfo, int, int]]) -> None:
        if self.transport.remote:
            ranges = sorted(self._covering_bytes(i, s, c) for i, s, c in spans if c > 0)
            if ranges:
                self.transport.read_ranges(ranges)
