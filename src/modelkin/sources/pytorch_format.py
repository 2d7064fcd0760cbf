"""Reading PyTorch checkpoints (``torch.save``: ``.bin``, ``.pt``, ``.pth``) without torch and without running code.

Two layouts exist. The zip layout (torch >= 1.6): a zip archive whose entries all sit in one top-level
folder ``<archive>/``: ``data.pkl`` (the pickled object), ``data/<key>`` (one raw storage per key, stored
uncompressed and 64-byte aligned) and small records (``version``, ``byteorder``). The legacy layout
(``_use_new_zipfile_serialization=False``, torch < 1.6): five pickles one after the other — a magic number,
the protocol version 1001, a ``sys_info`` dict, the object, the sorted list of storage keys — then, per
key in that order, an int64 element count and the storage's raw bytes.

A pickle is a program: ``pickle.load`` on an untrusted file can run anything (``os.system``, ``eval``).
Here a restricted unpickler (``_Unpickler``) resolves only the handful of globals a checkpoint of tensors
needs — tensor rebuild functions, storage types, dtypes, ``OrderedDict`` — to inert stand-ins defined in
this module (torch is never imported), and turns persistent ids into storage records. Any other global,
persistent id or opcode is refused with one FormatError naming the file and the offending global; nothing
of the file's runs. Before the C unpickler sees the bytes, ``pickletools.genops`` walks every opcode and
a model of the stack follows it: a truncated pickle, an extension-registry opcode, a memo index that would
make the unpickler allocate gigabytes (``LONG_BINPUT 0x3fffffff``) or tuples shared so deeply that hashing
them would take hours (a 200-byte pickle can do that) are refused there, in time linear in the pickle.
Error messages quote the pickle's values through a bounded repr.

Tensors become ``TensorInfo`` records pointing at absolute offsets in the file: zip entries are located
through the archive's central directory and local headers, read through the transport, so reads are
plain ranged reads (local files and HTTP alike) and nothing is loaded whole. A tensor stored as a strided
view of its storage (a transpose saved without ``.contiguous()``) is read by gathering from the span it
covers, up to ``MAX_STRIDED_BYTES``; larger ones are refused.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import FormatError, ModelkinError, UnsupportedError
from .dtypes import decode, lookup
from .tensors import TensorInfo
from .transport import LocalFile, Transport
from .weightfile import STREAM_PIECE_ELEMS, WeightFile

MAX_PICKLE_BYTES = 32 << 20  # a state_dict of 100,000 tensors pickles to ~15 MB; typical files to < 1 MB
MAX_CENTRAL_DIRECTORY_BYTES = 64 << 20  # zip: ~100 bytes per entry
MAX_RECORD_BYTES = 4096  # small zip records read whole (byteorder, version)
MAX_STRIDED_BYTES = 64 << 20  # storage span (and logical size) of a tensor stored as a strided view
GATHER_PIECE_ELEMS = 1 << 20  # elements of a strided tensor gathered per storage read
MAX_NAME_DEPTH = 64  # nesting of containers walked to find tensors
MAX_NAME_CHARS = 4096  # a tensor's dotted name (shared long keys could otherwise build huge names)
MAX_TUPLE_WEIGHT = 100_000  # nodes of one tuple tree (a tensor's rebuild arguments: ~15)
MAX_HASH_WORK = 100_000_000  # tuple nodes a pickle may make the unpickler hash (~20 per tensor; ~1 s)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
LEGACY_FIRST_READ = 64 << 10  # bytes read first to find the legacy pickles (grown x4 as needed)
MAX_INT = 1 << 63  # sizes, strides, offsets and counts are int64 in torch
ZIP_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature ... name length, extra length (30 bytes)

# torch storage classes -> modelkin dtype codes (None: a real torch type modelkin does not decode).
STORAGE_DTYPES: dict[str, str | None] = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
    "ComplexFloatStorage": None, "ComplexDoubleStorage": None, "QInt8Storage": None, "QUInt8Storage": None,
    "QInt32Storage": None, "QUInt4x2Storage": None, "QUInt2x4Storage": None,
}
# torch dtypes (pickled as globals ``torch.<name>``, e.g. by _rebuild_tensor_v3) -> dtype codes.
TORCH_DTYPES: dict[str, str | None] = {
    "float64": "F64", "double": "F64", "float32": "F32", "float": "F32", "float16": "F16", "half": "F16",
    "bfloat16": "BF16", "int64": "I64", "long": "I64", "int32": "I32", "int": "I32", "int16": "I16",
    "short": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16", "uint32": "U32",
    "uint64": "U64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "complex32": None, "complex64": None, "complex128": None, "cfloat": None, "cdouble": None,
    "float8_e4m3fnuz": None, "float8_e5m2fnuz": None, "float4_e2m1fn_x2": None, "qint8": None,
    "quint8": None, "qint32": None, "quint4x2": None, "quint2x4": None,
}
# Rebuild functions torch has for tensors that are not dense strided storages: named in the refusal.
UNSUPPORTED_REBUILDS = {
    "_rebuild_qtensor": "a quantized tensor", "_rebuild_sparse_tensor": "a sparse tensor",
    "_rebuild_sparse_csr_tensor": "a sparse tensor", "_rebuild_nested_tensor": "a nested tensor",
    "_rebuild_meta_tensor_no_storage": "a meta tensor (no data)", "_rebuild_wrapper_subclass": "a tensor subclass",
    "_rebuild_device_tensor_from_numpy": "a tensor pickled through numpy", "_rebuild_xla_tensor": "an XLA tensor",
    "_rebuild_mtia_tensor": "an MTIA tensor", "_rebuild_device_tensor_from_cpu_tensor": "a device tensor",
}
# Keys under which training scripts nest the state_dict inside a checkpoint dict (the first found is used).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params")
# Top-level keys of a training checkpoint whose tensors are not the model's (optimizer moments, ...).
IGNORED_KEYS = ("optimizer", "optimizer_state_dict", "optim", "lr_scheduler", "scheduler", "scaler")
# Opcodes refused outright: the extension registry maps codes to globals without find_class.
_BANNED_OPCODES = {"EXT1", "EXT2", "EXT4"}
_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}
_TUPLE_OPCODES = {"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"}
_INTO_OPCODES = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"}  # put items into the object below them
_CALL_OPCODES = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BUILD", "DICT", "FROZENSET"}  # may hash their operands
_MODULE_ALIASES = {"__builtin__": "builtins"}  # Python 2 pickles (protocol 2 from old torch)


def _short(value: object, limit: int = 80) -> str:
    """An untrusted value for an error message: one line, at most ``limit`` characters, in time bounded by
    ``limit`` (``repr`` of a pickled structure that shares sub-lists can be exponentially long)."""
    out: list[str] = []
    budget = [limit]

    def emit(text: str) -> None:
        out.append(text[: max(budget[0], 0)])
        budget[0] -= len(text)

    def walk(x: object, depth: int) -> None:
        if budget[0] <= 0:
            return
        if isinstance(x, (list, tuple, set, frozenset, dict)):
            if depth >= 3:
                return emit("...")
            emit({list: "[", tuple: "(", dict: "{"}.get(type(x), type(x).__name__ + "(["))
            for i, item in enumerate(x.items() if isinstance(x, dict) else x):
                if budget[0] <= 0:
                    break
                if i:
                    emit(", ")
                if isinstance(x, dict):
                    walk(item[0], depth + 1)
                    emit(": ")
                    item = item[1]
                walk(item, depth + 1)
            emit({list: "]", tuple: ",)" if len(x) == 1 else ")", dict: "}"}.get(type(x), "])"))
        elif isinstance(x, (str, bytes)):
            emit(repr(x[:limit]))
        elif isinstance(x, int) and not isinstance(x, bool):
            emit(str(x) if x.bit_length() <= 256 else f"<an integer of {x.bit_length()} bits>")
        elif x is None or isinstance(x, (bool, float, _Inert)):
            emit(repr(x))
        else:
            emit(f"<{type(x).__name__}>")

    walk(value, 0)
    text = "".join(out).replace("\n", " ")
    return text if budget[0] >= 0 else text[: limit - 3] + "..."


# -- inert stand-ins the unpickler hands out instead of torch objects ---------------------------------
class _Inert:
    """Base of the stand-ins. A pickle may BUILD (``__setstate__``) any object it holds; these refuse,
    so a record cannot change after it was checked. (Frozen slotted dataclasses would accept a state
    tuple, and plain ones an instance-dict update.) Their reprs are torch's names, for error messages."""

    def __setstate__(self, state: object) -> None:
        raise TypeError("the pickle tries to modify a rebuilt tensor, storage or dtype (BUILD); refused")


@dataclass(frozen=True)
class _StorageType(_Inert):
    """``torch.FloatStorage`` and friends; ``code`` None for types modelkin does not decode."""

    name: str
    code: str | None
    untyped: bool = False

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass(frozen=True)
class _DTypeRef(_Inert):
    name: str
    code: str | None

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass(frozen=True)
class _TypeMarker(_Inert):
    """``torch.Tensor`` / ``torch.nn.parameter.Parameter`` as passed to ``_rebuild_from_type_v2``."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, repr=False)
class _Storage(_Inert):
    key: str
    type: _StorageType
    numel: int  # elements of the storage type (bytes when untyped)

    @property
    def n_bytes(self) -> int | None:
        if self.type.untyped:
            return self.numel
        dtype = lookup(self.type.code) if self.type.code else None
        return None if dtype is None else self.numel * dtype.bits // 8

    def __repr__(self) -> str:
        return f"<storage {self.key!r}: {self.numel} x {self.type!r}>"


@dataclass(frozen=True, repr=False)
class _Tensor(_Inert):
    storage: _Storage
    offset: int  # in elements of ``code``
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype_name: str
    code: str | None

    def __repr__(self) -> str:
        return f"<tensor {self.shape} of {self.dtype_name}>"


class _PickledDict(dict):
    """``collections.OrderedDict`` / ``Counter`` as unpickled: a plain dict. A state_dict's pickled
    attributes (``_metadata``, applied by BUILD) are dropped; no instance dict exists to set them on."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        pass


# -- the restricted unpickler -----------------------------------------------------------------------
class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a checkpoint of tensors needs, to the stand-ins above; refuses the rest.

    ``layout`` is "zip" or "legacy" (their persistent ids differ) or None (no persistent ids allowed).
    """

    def __init__(self, data: bytes, where: str, layout: str | None):
        super().__init__(io.BytesIO(data), encoding="latin1")  # Python 2 str: bytes, never a decode error
        self.where = where
        self.layout = layout
        self.storages: dict[str, _Storage] = {}
        self._rebuilders = {
            "_rebuild_tensor": self._rebuild_tensor,
            "_rebuild_tensor_v2": self._rebuild_tensor_v2,
            "_rebuild_tensor_v3": self._rebuild_tensor_v3,
            "_rebuild_parameter": self._rebuild_parameter,
            "_rebuild_parameter_with_state": self._rebuild_parameter_with_state,
        }
        self._globals: dict[str, object] = {
            "collections.OrderedDict": _PickledDict,
            "collections.Counter": _PickledDict,
            "builtins.set": set,
            "builtins.frozenset": frozenset,
            "_codecs.encode": self._encode,
            "torch.Size": self._size,
            "torch.device": self._device,
            "torch.Tensor": _TypeMarker("torch.Tensor"),
            "torch.nn.parameter.Parameter": _TypeMarker("torch.nn.parameter.Parameter"),
            "torch.storage.UntypedStorage": _StorageType("UntypedStorage", "U8", untyped=True),
            "torch.UntypedStorage": _StorageType("UntypedStorage", "U8", untyped=True),
            "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2,
        }
        self._globals.update({f"torch._utils.{k}": v for k, v in self._rebuilders.items()})

    def _fail(self, message: str) -> FormatError:
        return FormatError(message, self.where)

    # -- what globals resolve to --------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> object:
        written = f"{module}.{name}"
        module = _MODULE_ALIASES.get(module, module)
        full = f"{module}.{name}"
        if full in self._globals:
            return self._globals[full]
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        if module == "torch" and name in TORCH_DTYPES:
            return _DTypeRef(name, TORCH_DTYPES[name])
        if module == "torch._utils" and name in UNSUPPORTED_REBUILDS:
            raise UnsupportedError(f"holds {UNSUPPORTED_REBUILDS[name]} (torch._utils.{name}); modelkin reads dense tensors only", self.where)
        raise self._fail(
            f"refused to unpickle: the pickle asks for the global {_short(written)}, which is not a tensor, "
            "storage or plain container (a checkpoint that would run code or needs its own classes); nothing was run"
        )

    def persistent_load(self, pid: object) -> object:
        if not isinstance(pid, tuple) or not pid:
            raise self._fail(f"refused to unpickle: unknown persistent id {_short(pid)}")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise self._fail("refused to unpickle: it pickles a whole nn.Module (its class and source), not a state_dict of tensors")
        expected = {"zip": 5, "legacy": 6}.get(self.layout or "")
        if kind != "storage" or expected is None or len(pid) != expected:
            raise self._fail(f"refused to unpickle: unknown persistent id {_short(pid)}")
        storage_type, key, location, numel = pid[1:5]
        if self.layout == "legacy" and pid[5] is not None:
            raise UnsupportedError("holds a storage view (pre-1.0 torch.save of a storage slice); re-save the checkpoint with a recent torch", self.where)
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(location, str):
            raise self._fail(f"refused to unpickle: malformed storage id {_short(pid)}")
        if type(numel) is not int or not 0 <= numel < MAX_INT:
            raise self._fail(f"storage {_short(key)}: element count {_short(numel)} is not a non-negative integer")
        storage = _Storage(key, storage_type, numel)
        known = self.storages.setdefault(key, storage)
        if known != storage:
            raise self._fail(f"storage {_short(key)} is declared twice with different types or sizes")
        return known

    # -- callables the pickle may call ------------------------------------------------------------
    def _encode(self, text: object, encoding: object = "utf-8") -> bytes:
        """``_codecs.encode(str, 'latin1')``: how protocol 2 pickles ``bytes``; no other codec."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self._fail(f"refused to unpickle: _codecs.encode with {_short(encoding)} (only latin1 bytes are allowed)")
        return text.encode("latin1")

    def _size(self, dims: object = ()) -> tuple[int, ...]:
        return self._dims(dims, "torch.Size")

    def _device(self, *args: object) -> str:
        if not 1 <= len(args) <= 2 or not all(type(a) in (str, int) for a in args):
            raise self._fail(f"refused to unpickle: torch.device{_short(args)}")
        return ":".join(str(a) for a in args)

    def _dims(self, value: object, what: str) -> tuple[int, ...]:
        if not isinstance(value, (tuple, list)) or len(value) > 64 or not all(type(d) is int and -MAX_INT <= d < MAX_INT for d in value):
            raise self._fail(f"{what}: {_short(value)} is not a tuple of int64 values")
        return tuple(value)

    def _tensor(self, storage: object, offset: object, size: object, stride: object, dtype: _DTypeRef | None) -> _Tensor:
        if not isinstance(storage, _Storage):
            raise self._fail(f"refused to unpickle: a tensor rebuilt from {_short(storage)} instead of a storage")
        shape, strides = self._dims(size, "tensor size"), self._dims(stride, "tensor stride")
        if type(offset) is not int or not -MAX_INT <= offset < MAX_INT:
            raise self._fail(f"tensor storage offset {_short(offset)} is not an integer")
        if len(strides) != len(shape):
            raise self._fail(f"tensor of size {_short(shape)} has {len(strides)} strides")
        if dtype is None:
            if storage.type.untyped:
                raise self._fail(f"storage {_short(storage.key)} is untyped but its tensor names no dtype")
            return _Tensor(storage, offset, shape, strides, storage.type.name, storage.type.code)
        if not isinstance(dtype, _DTypeRef):
            raise self._fail(f"tensor dtype {_short(dtype)} is not a torch dtype")
        if not storage.type.untyped:
            raise self._fail(f"tensor of {dtype.name} is rebuilt from the typed storage {storage.type.name}")
        return _Tensor(storage, offset, shape, strides, f"torch.{dtype.name}", dtype.code)

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        return self._tensor(storage, storage_offset, size, stride, None)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
        return self._tensor(storage, storage_offset, size, stride, None)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
        return self._tensor(storage, storage_offset, size, stride, dtype)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None):
        if not isinstance(data, _Tensor):
            raise self._fail(f"refused to unpickle: a parameter made of {_short(data)} instead of a tensor")
        return data

    def _rebuild_parameter_with_state(self, data, requires_grad, backward_hooks, state):
        return self._rebuild_parameter(data)

    def _rebuild_from_type_v2(self, func, new_type, args, state=None):
        if func not in self._rebuilders.values() or not isinstance(new_type, _TypeMarker) or not isinstance(args, tuple):
            raise self._fail(f"refused to unpickle: _rebuild_from_type_v2 with {_short(func)}, {_short(new_type)}")
        return func(*args)


class _Node:
    """What the pre-scan knows of one object on the pickle's stack: the size of its tuple tree (tuples
    nest by reference, so ten opcodes can build a tuple whose hash visits 2**10 nodes) and the summed
    weight of the items put into it (lists, dicts, sets: what a call on it may hash)."""

    __slots__ = ("weight", "items")

    def __init__(self, weight: int = 1):
        self.weight = weight
        self.items = 0


_MARK = object()


def _pickle_end(data: bytes, start: int, where: str, more: bool = False) -> int:
    """Walk one pickle's opcodes from ``start`` without running any; return the offset after its STOP.

    Refuses what would make the C unpickler hang or allocate without bound: extension-registry opcodes,
    memo indices past the number of opcodes read (it sizes its memo table by the largest index:
    ``LONG_BINPUT 0x3fffffff`` would cost 16 GB), and hashing work — tuples built from shared tuples,
    used as dict keys or set items — past ``MAX_HASH_WORK``; to know that, the stack is emulated with
    the opcodes' documented stack effects, like ``pickletools.dis``.
    When the bytes end before STOP: ``_Truncated`` if ``more`` bytes could be read, else a FormatError.
    """
    stream = io.BytesIO(data)
    stream.seek(start)
    n_ops = work = 0
    model = _StackModel()
    try:
        for op, arg, _ in pickletools.genops(stream):
            n_ops += 1
            name = op.name
            if name in _BANNED_OPCODES:
                raise FormatError(f"refused to unpickle: opcode {name} (the extension registry) is never used by torch.save", where)
            if name in _PUT_OPCODES and not 0 <= arg <= n_ops:
                raise FormatError(f"refused to unpickle: memo index {_short(arg)} at opcode {n_ops} (would allocate a huge memo)", where)
            popped = model.pop(op)
            if name in _TUPLE_OPCODES:
                node = _Node(1 + sum(p.weight for p in popped))
                if node.weight > MAX_TUPLE_WEIGHT:
                    raise FormatError(f"refused to unpickle: a tuple of {node.weight} nested items (built to hang hashing)", where)
                model.stack.append(node)
                continue
            if name in _INTO_OPCODES:  # the target object sits below its items
                added = sum(p.weight for p in popped[1:])
                popped[0].items += added
                work += added
            elif name in _CALL_OPCODES:
                work += sum(p.weight + p.items for p in popped)
            if work > MAX_HASH_WORK:
                raise FormatError(f"refused to unpickle: it would hash more than {MAX_HASH_WORK} nested items", where)
            model.push(op, arg, popped)
    except ModelkinError:
        raise
    except Exception as e:
        if stream.tell() >= len(data):
            if more:
                raise _Truncated() from None
            raise FormatError("file ends inside its pickle (truncated?)", where) from None
        raise FormatError(f"not a valid pickle: {_short(str(e), 160)}", where) from None
    return stream.tell()


class _StackModel:
    """The pickle machine's stack and memo with ``_Node`` stand-ins, driven by the opcodes' documented
    stack effects (``OpcodeInfo.stack_before`` / ``stack_after``, as ``pickletools.dis`` uses them)."""

    def __init__(self) -> None:
        self.stack: list = []
        self.marks: list[int] = []  # stack positions of the MARKs
        self.memo: dict[object, _Node] = {}

    def pop(self, op: pickletools.OpcodeInfo) -> list[_Node]:
        """What ``op`` consumes, bottom first (the items above the topmost MARK, if it takes a mark)."""
        before, stack = op.stack_before, self.stack
        n, taken = len(before), []
        if pickletools.markobject in before or (op.name == "POP" and stack and stack[-1] is _MARK):
            if not self.marks:
                raise ValueError(f"{op.name} without a MARK")
            pos = self.marks.pop()
            taken = stack[pos + 1 :]
            del stack[pos:]
            n = before.index(pickletools.markobject) if pickletools.markobject in before else 0
        if len(stack) < n or (n and self.marks and self.marks[-1] >= len(stack) - n):
            raise ValueError(f"{op.name} pops more than the stack holds")
        below = stack[len(stack) - n :] if n else []
        del stack[len(stack) - n :]
        return below + taken

    def push(self, op: pickletools.OpcodeInfo, arg: object, popped: list[_Node]) -> None:
        name, stack = op.name, self.stack
        if name in _PUT_OPCODES or name == "MEMOIZE":
            if not stack or stack[-1] is _MARK:
                raise ValueError(f"{name} with nothing to store")
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo.get(arg) or _Node())
        elif name == "DUP":
            stack.extend(popped * 2)
        elif name in _INTO_OPCODES:
            stack.append(popped[0])
        elif name == "MARK":
            self.marks.append(len(stack))
            stack.append(_MARK)
        else:
            stack.extend(_Node() for _ in op.stack_after)


class _Truncated(Exception):
    """A pickle ran past the bytes read so far."""


def _unpickle(data: bytes, where: str, layout: str | None) -> tuple[object, dict[str, _Storage]]:
    """The object of one complete pickle (validated by ``_pickle_end``) and the storages it named."""
    unpickler = _Unpickler(data, where, layout)
    try:
        obj = unpickler.load()
    except ModelkinError:
        raise
    except Exception as e:  # malformed structure: wrong argument counts, unhashable keys, bad BUILD, ...
        raise FormatError(f"not a valid checkpoint pickle: {type(e).__name__}: {_short(str(e), 160)}", where) from None
    return obj, unpickler.storages


# -- finding the tensors in the unpickled object ---------------------------------------------------
def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode("latin1")
    return _short(key, 200)  # int keys (optimizer state), tuples, ...


def _state_dict(obj: object) -> tuple[object, str | None]:
    """The state_dict inside a training checkpoint (``{"model": {...}, "optimizer": ...}``): the first
    ``STATE_DICT_KEYS`` entry holding tensors, else the checkpoint less the containers under its
    ``IGNORED_KEYS`` (a tensor of that name is kept: it is the model's)."""
    if not isinstance(obj, dict):
        return obj, None
    if not any(isinstance(v, _Tensor) for v in obj.values()):
        for key in STATE_DICT_KEYS:
            sub = obj.get(key)
            if isinstance(sub, dict) and any(isinstance(v, _Tensor) for v in sub.values()):
                return sub, key
    return {k: v for k, v in obj.items() if k not in IGNORED_KEYS or isinstance(v, _Tensor)}, None


def _collect_tensors(obj: object, where: str) -> dict[str, _Tensor]:
    """Every tensor reachable through dicts, lists and tuples, named by its dotted key path. Each
    container is walked once (shared or cyclic references cannot multiply the work)."""
    found: dict[str, _Tensor] = {}
    seen: set[int] = set()
    stack: list[tuple[str, object, int]] = [("", obj, 0)]
    while stack:
        name, value, depth = stack.pop()
        if isinstance(value, _Tensor):
            if name in found:
                raise FormatError(f"two tensors are both named {_short(name)}", where)
            found[name] = value
            continue
        if not isinstance(value, (dict, list, tuple)) or id(value) in seen:
            continue  # numbers, strings, dtypes, devices: not tensors; or a container already walked
        seen.add(id(value))
        if isinstance(value, dict):
            items = [(_key_text(k), v) for k, v in value.items()]
        else:
            items = [(str(i), v) for i, v in enumerate(value)]
        if depth >= MAX_NAME_DEPTH:
            raise FormatError(f"containers nested more than {MAX_NAME_DEPTH} deep", where)
        for k, v in reversed(items):
            full = f"{name}.{k}" if name else k
            if len(full) > MAX_NAME_CHARS:
                raise FormatError(f"a tensor name runs past {MAX_NAME_CHARS} characters ({_short(full)})", where)
            stack.append((full, v, depth + 1))
    return found


# -- zip archives through a transport --------------------------------------------------------------
class _TransportReader(io.RawIOBase):
    """A seekable file over a transport for ``zipfile`` (central directory only); no read over ``limit``."""

    def __init__(self, transport: Transport, fail: Callable[[str], FormatError], limit: int):
        super().__init__()
        self._t = transport
        self._fail = fail
        self._limit = limit
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._t.size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the file")
        self._pos = base + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        available = max(0, self._t.size - self._pos)
        n = available if n is None or n < 0 else min(n, available)
        if n > self._limit:
            raise self._fail(f"zip directory claims {n} bytes, over the limit of {self._limit} (not a torch.save archive)")
        buf = np.empty(n, np.uint8)
        if n:
            self._t.read_into(self._pos, buf)
        self._pos += n
        return buf.tobytes()

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    flag_bits: int


class PytorchFile(WeightFile):
    """One ``torch.save`` file (zip or legacy layout): tensors located, never loaded whole."""

    format_name = "pytorch"

    def __init__(self, source: str | Path | Transport):
        super().__init__(LocalFile(source) if isinstance(source, (str, Path)) else source)
        self._strided: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (storage byte offset, strides)
        size = self.transport.size
        head = self._read(0, min(size, 512))
        if head[:4] == b"PK\x03\x04":
            self._open_zip()
        elif len(head) >= 262 and head[257:262] == b"ustar":
            raise UnsupportedError("a tar-format checkpoint (torch.save before version 0.4); re-save it with a recent torch", self.name)
        elif head[:1] == b"\x80":
            self._open_legacy()
        elif size == 0:
            raise self._fail("file is empty")
        else:
            hint = " (it looks like a safetensors file: name it .safetensors)" if len(head) > 8 and head[8:9] == b"{" else ""
            raise self._fail("not a PyTorch checkpoint: neither a zip archive (torch >= 1.6) nor a pickle (legacy torch.save)" + hint)

    def _read(self, offset: int, n: int) -> bytes:
        buf = np.empty(n, np.uint8)
        if n:
            self.transport.read_into(offset, buf)
        return buf.tobytes()

    # -- zip layout ---------------------------------------------------------------------------------
    def _open_zip(self) -> None:
        entries = self._zip_entries()
        pkl = [e for e in entries.values() if e.name.endswith("/data.pkl") and e.name.count("/") == 1]
        if len(pkl) != 1:
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in entries):
                raise UnsupportedError("a TorchScript archive (torch.jit.save): it holds code; modelkin reads torch.save checkpoints", self.name)
            raise self._fail("zip archive has no '<archive>/data.pkl' (not a torch.save checkpoint)")
        prefix = pkl[0].name[: -len("data.pkl")]
        outside = next((n for n in entries if not n.startswith(prefix)), None)
        if outside is not None:
            raise self._fail(f"zip entry {_short(outside)} lies outside the archive folder {_short(prefix)}")
        byteorder = entries.get(prefix + "byteorder")
        if byteorder is not None and self._entry_bytes(byteorder, MAX_RECORD_BYTES) != b"little":
            raise UnsupportedError("stores big-endian tensors (byteorder record); modelkin reads little-endian checkpoints", self.name)
        data = self._entry_bytes(pkl[0], MAX_PICKLE_BYTES)
        if _pickle_end(data, 0, self.name) != len(data):
            raise self._fail(f"{pkl[0].name} has bytes after the end of its pickle")
        obj, storages = _unpickle(data, self.name, "zip")
        used = {k: entries.get(f"{prefix}data/{k}") for k in storages}
        missing = next((k for k, e in used.items() if e is None), None)
        if missing is not None:
            raise self._fail(f"the pickle names storage {_short(missing)}, but the archive has no entry {_short(prefix + 'data/' + missing)}")
        offsets = self._data_offsets({k: e for k, e in used.items() if e is not None}, storages)
        self.metadata = {"layout": "zip", "archive": prefix.rstrip("/")}
        self._add_tensors(obj, offsets)

    def _zip_entries(self) -> dict[str, _Entry]:
        reader = _TransportReader(self.transport, self._fail, MAX_CENTRAL_DIRECTORY_BYTES)
        try:
            infos = zipfile.ZipFile(reader).infolist()
        except ModelkinError:
            raise
        except Exception as e:  # zipfile raises BadZipFile, struct.error, ValueError, ... on hostile bytes
            raise self._fail(f"not a readable zip archive: {_short(str(e), 160)} (truncated or corrupt?)") from None
        entries: dict[str, _Entry] = {}
        for i in infos:
            name = i.filename
            if name in entries:
                raise self._fail(f"zip archive holds the entry {_short(name)} twice")
            if name.startswith("/") or "\\" in name or "\x00" in name or ".." in name.split("/"):
                raise self._fail(f"zip entry name {_short(name)} is a path outside the archive")
            entries[name] = _Entry(name, i.header_offset, i.compress_type, i.compress_size, i.file_size, i.flag_bits)
        return entries

    def _local_data_offsets(self, entries: list[_Entry]) -> list[int]:
        """Where each entry's bytes start: after its local header (read in one batch of ranges)."""
        size = self.transport.size
        for e in entries:
            if e.header_offset < 0 or e.header_offset + ZIP_LOCAL_HEADER.size > size:
                raise self._fail(f"zip entry {_short(e.name)} starts at byte {e.header_offset}, past the end of the {size}-byte file (truncated?)")
        headers = self.transport.read_ranges([(e.header_offset, ZIP_LOCAL_HEADER.size) for e in entries]) if entries else []
        out = []
        for e, raw in zip(entries, headers):
            fields = ZIP_LOCAL_HEADER.unpack(raw)
            if fields[0] != b"PK\x03\x04":
                raise self._fail(f"zip entry {_short(e.name)}: no local header at byte {e.header_offset} (corrupt archive)")
            name_len, extra_len = fields[-2], fields[-1]
            if name_len != len(e.name.encode("utf-8" if e.flag_bits & 0x800 else "cp437", "replace")):
                raise self._fail(f"zip entry {_short(e.name)}: local header disagrees with the central directory")
            start = e.header_offset + ZIP_LOCAL_HEADER.size + name_len + extra_len
            if start + e.compress_size > size:
                raise self._fail(f"zip entry {_short(e.name)}: bytes {start}..{start + e.compress_size} run past the end of the {size}-byte file (truncated?)")
            out.append(start)
        return out

    def _entry_bytes(self, e: _Entry, limit: int) -> bytes:
        """A small entry's bytes: stored, or deflated and inflated to at most ``limit`` bytes."""
        if e.flag_bits & 1:
            raise self._fail(f"zip entry {_short(e.name)} is encrypted")
        if e.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._fail(f"zip entry {_short(e.name)} is compressed with method {e.compress_type}; torch.save stores entries uncompressed")
        if e.file_size > limit or e.compress_size > limit or (e.compress_type == zipfile.ZIP_STORED and e.compress_size != e.file_size):
            raise self._fail(f"zip entry {_short(e.name)} declares {e.file_size} bytes (limit {limit}; not a torch.save archive)")
        (start,) = self._local_data_offsets([e])
        raw = self._read(start, e.compress_size)
        if e.compress_type == zipfile.ZIP_STORED:
            return raw
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error as err:
            raise self._fail(f"zip entry {_short(e.name)}: corrupt deflate data ({err})") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise self._fail(f"zip entry {_short(e.name)} inflates past {limit} bytes (a zip bomb?)")
        if len(out) != e.file_size:
            raise self._fail(f"zip entry {_short(e.name)} inflates to {len(out)} bytes, not the {e.file_size} it declares")
        return out

    def _data_offsets(self, used: dict[str, _Entry], storages: dict[str, _Storage]) -> dict[str, int]:
        """Absolute file offset of each storage's bytes; entries checked stored, sized and disjoint."""
        for key, e in used.items():
            if e.compress_type != zipfile.ZIP_STORED or e.flag_bits & 1:
                raise self._fail(f"storage entry {_short(e.name)} is compressed or encrypted; torch.save stores storages uncompressed (read in place)")
            want = storages[key].n_bytes
            if want is not None and e.file_size != want:
                raise self._fail(f"storage {_short(key)}: the pickle declares {want} bytes but its entry holds {e.file_size}")
            if e.compress_size != e.file_size:
                raise self._fail(f"storage entry {_short(e.name)}: stored sizes disagree ({e.compress_size} vs {e.file_size})")
        keys = list(used)
        starts = self._local_data_offsets([used[k] for k in keys])
        spans = sorted((s, s + used[k].file_size, k) for k, s in zip(keys, starts))
        for (_, end, k1), (begin, _, k2) in zip(spans, spans[1:]):
            if begin < end:
                raise self._fail(f"storages {_short(k1)} and {_short(k2)} overlap in the archive (crafted zip?)")
        return dict(zip(keys, starts))

    # -- legacy layout ------------------------------------------------------------------------------
    def _open_legacy(self) -> None:
        size = self.transport.size
        n = min(size, LEGACY_FIRST_READ)
        while True:
            data = self._read(0, n)
            try:
                ends = self._legacy_pickles(data)
                break
            except _Truncated:
                if n >= size:
                    raise self._fail("file ends inside its pickles (truncated?)") from None
                if n >= MAX_PICKLE_BYTES + LEGACY_FIRST_READ:
                    raise self._fail(f"legacy checkpoint pickles run past {n} bytes (limit {MAX_PICKLE_BYTES + LEGACY_FIRST_READ})") from None
                n = min(size, n * 4, MAX_PICKLE_BYTES + LEGACY_FIRST_READ)
        magic, _ = _unpickle(data[: ends[0]], self.name, None)
        if magic != LEGACY_MAGIC:
            raise self._fail("not a PyTorch checkpoint: a pickle that does not start with torch.save's magic number")
        version, _ = _unpickle(data[ends[0] : ends[1]], self.name, None)
        if version != LEGACY_PROTOCOL:
            raise UnsupportedError(f"legacy torch.save protocol {_short(version)} (modelkin reads {LEGACY_PROTOCOL})", self.name)
        sys_info, _ = _unpickle(data[ends[1] : ends[2]], self.name, None)
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise UnsupportedError("saved on a big-endian machine; modelkin reads little-endian checkpoints", self.name)
        obj, storages = _unpickle(data[ends[2] : ends[3]], self.name, "legacy")
        keys, _ = _unpickle(data[ends[3] : ends[4]], self.name, None)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            raise self._fail("the storage key list after the pickle is not a list of distinct strings")
        if set(keys) != set(storages):
            raise self._fail(f"the storage key list names {len(keys)} storages but the pickle uses {len(storages)}")
        self.metadata = {"layout": "legacy"}
        self._add_tensors(obj, self._legacy_offsets(keys, storages, ends[4]))

    def _legacy_pickles(self, data: bytes) -> list[int]:
        ends, pos = [], 0
        for _ in range(5):
            pos = _pickle_end(data, pos, self.name, more=len(data) < self.transport.size)
            ends.append(pos)
        return ends

    def _legacy_offsets(self, keys: list[str], storages: dict[str, _Storage], pos: int) -> dict[str, int]:
        """Storages follow the pickles in key order, each as int64 element count + raw bytes."""
        size = self.transport.size
        offsets, spans = {}, []
        for key in keys:
            st = storages[key]
            n_bytes = st.n_bytes
            if n_bytes is None:
                raise UnsupportedError(f"storage {_short(key)} is a {st.type.name}, which modelkin does not read", self.name)
            if pos + 8 + n_bytes > size:
                raise self._fail(f"storage {_short(key)} ({n_bytes} bytes at byte {pos + 8}) runs past the end of the {size}-byte file (truncated?)")
            spans.append((pos, 8))
            offsets[key] = pos + 8
            pos += 8 + n_bytes
        for key, raw in zip(keys, self.transport.read_ranges(spans) if spans else []):
            (numel,) = struct.unpack("<q", raw)
            if numel != storages[key].numel:
                raise self._fail(f"storage {_short(key)}: the file holds {numel} elements but the pickle declares {storages[key].numel}")
        return offsets

    # -- tensors ------------------------------------------------------------------------------------
    def _add_tensors(self, obj: object, offsets: dict[str, int]) -> None:
        state, key = _state_dict(obj)
        if key is not None:
            self.metadata["state_dict_key"] = key
        for name, t in _collect_tensors(state, self.name).items():
            self.tensors[name] = self._tensor_info(name, t, offsets[t.storage.key])

    def _tensor_info(self, name: str, t: _Tensor, storage_start: int) -> TensorInfo:
        dtype = lookup(t.code) if t.code else None
        if dtype is None:
            raise UnsupportedError(f"tensor {_short(name)} has dtype {t.dtype_name}, which modelkin does not read", self.name)
        item = dtype.bits // 8
        st_bytes = t.storage.n_bytes or 0
        if any(d < 0 for d in t.shape) or any(s < 0 for s in t.stride) or t.offset < 0:
            raise self._fail(f"tensor {_short(name)}: negative size, stride or offset ({_short(t.shape)}, {_short(t.stride)}, {_short(t.offset)})")
        numel = 1
        for d in t.shape:
            numel *= d
        last = t.offset + sum((d - 1) * s for d, s in zip(t.shape, t.stride)) if numel else t.offset - 1
        if (last + 1) * item > st_bytes:
            raise self._fail(
                f"tensor {_short(name)}: size {_short(t.shape)}, stride {_short(t.stride)} at offset {_short(t.offset)} "
                f"needs more than the {st_bytes} bytes of storage {_short(t.storage.key)}"
            )
        start = storage_start + t.offset * item
        if not _contiguous(t.shape, t.stride):
            span = max((last + 1 - t.offset) * item, numel * item)
            if span > MAX_STRIDED_BYTES:
                raise UnsupportedError(
                    f"tensor {_short(name)} is a strided view (size {_short(t.shape)}, stride {_short(t.stride)}) of {span} bytes; "
                    f"modelkin gathers strided tensors up to {MAX_STRIDED_BYTES} bytes: re-save with .contiguous()",
                    self.name,
                )
            self._strided[name] = (start, t.stride)
        return TensorInfo(name, dtype, t.shape, self.name, start, numel * item)

    # -- reads of strided tensors (the rest are plain arrays, read by WeightFile) -------------------------
    def _gather(self, info: TensorInfo, start: int, count: int) -> np.ndarray:
        """Elements [start, start+count) in logical (C) order, gathered piece by piece from the storage
        span each piece covers (at most the tensor's footprint, ``MAX_STRIDED_BYTES``)."""
        base, strides = self._strided[info.name]
        out = np.empty(count, info.dtype.storage)
        for s in range(start, start + count, GATHER_PIECE_ELEMS):
            n = min(GATHER_PIECE_ELEMS, start + count - s)
            index = np.arange(s, s + n, dtype=np.int64)
            pos = np.zeros(n, np.int64)
            for d, st in zip(reversed(info.shape), reversed(strides)):
                index, r = np.divmod(index, d)
                pos += r * st
            lo, hi = int(pos.min()), int(pos.max())
            span = np.empty(hi - lo + 1, info.dtype.storage)
            self.transport.read_into(base + lo * (info.dtype.bits // 8), span)
            out[s - start : s - start + n] = span[pos - lo]
        return out

    def read_raw(self, info: TensorInfo, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        if info.name not in self._strided:
            return super().read_raw(info, start, count, out)
        values = self._gather(info, start, count)
        if out is None:
            return values
        out = out[:count]
        out[...] = values
        return out

    def stream_elements(self, info: TensorInfo, start: int, count: int, scratch: np.ndarray | None = None) -> Iterator[np.ndarray]:
        if info.name not in self._strided:
            yield from super().stream_elements(info, start, count, scratch)
            return
        for s in range(start, start + count, STREAM_PIECE_ELEMS):
            yield decode(self._gather(info, s, min(STREAM_PIECE_ELEMS, start + count - s)), info.dtype)

    def stream_raw(self, info: TensorInfo, piece_elems: int = STREAM_PIECE_ELEMS) -> Iterator[bytes]:
        if info.name not in self._strided:
            yield from super().stream_raw(info, piece_elems)
            return
        for s in range(0, info.numel, piece_elems):
            yield self._gather(info, s, min(piece_elems, info.numel - s)).tobytes()

    def prefetch(self, spans: list[tuple[TensorInfo, int, int]]) -> None:
        super().prefetch([sp for sp in spans if sp[0].name not in self._strided])


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """C-contiguous: strides are the products of the later sizes (any stride on a size-1 axis)."""
    expected = 1
    for d, s in zip(reversed(shape), reversed(stride)):
        if d == 0:
            return True
        if d != 1 and s != expected:
            return False
        expected *= d
    return True
