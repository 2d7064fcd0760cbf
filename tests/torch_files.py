"""PyTorch checkpoints written byte by byte, without torch: valid ones and hostile ones.

A ``torch.save`` file is either a zip archive (``<archive>/data.pkl`` + ``<archive>/data/<key>`` raw
storages + small records) or the legacy layout (pickles of the magic number, protocol 1001 and sys_info,
then the object's pickle, the pickled list of storage keys, and per key an int64 element count followed by
the raw bytes). The object's pickle is emitted opcode by opcode here (``Ops``), exactly as torch's pickler
writes a state_dict (protocol 2), so tests can break any one rule — and, with torch installed, the valid
files are checked to load in ``torch.load(weights_only=True)`` to the same values.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_TYPES: dict[np.dtype, str] = {
    np.dtype("<f8"): "DoubleStorage",
    np.dtype("<f4"): "FloatStorage",
    np.dtype("<f2"): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype("<i8"): "LongStorage",
    np.dtype("<i4"): "IntStorage",
    np.dtype("<i2"): "ShortStorage",
    np.dtype("i1"): "CharStorage",
    np.dtype("u1"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


@dataclass
class Ops:
    """A pickle written opcode by opcode (protocol 2 unless told otherwise)."""

    out: bytearray = field(default_factory=lambda: bytearray(b"\x80\x02"))

    def raw(self, b: bytes) -> "Ops":
        self.out += b
        return self

    def glob(self, module: str, name: str) -> "Ops":
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> "Ops":  # protocol 4
        return self.text(module).text(name).raw(b"\x93")

    def text(self, s: str) -> "Ops":
        b = s.encode("utf-8")
        return self.raw(b"X" + struct.pack("<I", len(b)) + b)

    def int(self, n: int) -> "Ops":
        return self.raw(b"J" + struct.pack("<i", n)) if -(2**31) <= n < 2**31 else self.raw(pickle.dumps(n, 2)[2:-1])

    def ints(self, values) -> "Ops":
        self.mark()
        for v in values:
            self.int(v)
        return self.raw(b"t")

    def mark(self) -> "Ops":
        return self.raw(b"(")

    def tuple(self) -> "Ops":
        return self.raw(b"t")

    def reduce(self) -> "Ops":
        return self.raw(b"R")

    def none(self) -> "Ops":
        return self.raw(b"N")

    def false(self) -> "Ops":
        return self.raw(b"\x89")

    def ordered_dict(self) -> "Ops":
        return self.glob("collections", "OrderedDict").raw(b")").reduce()

    def stop(self) -> bytes:
        return bytes(self.out + b".")


@dataclass(frozen=True)
class T:
    """One tensor of a hand-written state_dict: a view (offset, shape, stride) of storage ``key``."""

    key: str
    storage: str  # e.g. "FloatStorage"
    numel: int  # storage elements
    offset: int
    shape: tuple
    stride: tuple


def contiguous_strides(shape) -> tuple:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def emit_storage(ops: Ops, t: T, legacy: bool) -> Ops:
    ops.mark().text("storage").glob("torch", t.storage).text(t.key).text("cpu").int(t.numel)
    if legacy:
        ops.none()
    return ops.tuple().raw(b"Q")  # BINPERSID


def emit_tensor(ops: Ops, t: T, legacy: bool = False) -> Ops:
    ops.glob("torch._utils", "_rebuild_tensor_v2").mark()
    emit_storage(ops, t, legacy)
    ops.int(t.offset).ints(t.shape).ints(t.stride).false().ordered_dict()
    return ops.tuple().reduce()


def emit_state_dict(ops: Ops, tensors: dict[str, T], legacy: bool = False, extra=None) -> Ops:
    """``OrderedDict(name -> tensor)`` as torch pickles it; ``extra(ops)`` may add items before SETITEMS."""
    ops.ordered_dict().mark()
    for name, t in tensors.items():
        emit_tensor(ops.text(name), t, legacy)
    if extra is not None:
        extra(ops)
    return ops.raw(b"u")


def state_dict_pickle(tensors: dict[str, T], legacy: bool = False, extra=None) -> bytes:
    return emit_state_dict(Ops(), tensors, legacy, extra).stop()


def layout(arrays: dict[str, np.ndarray]) -> tuple[dict[str, T], dict[str, bytes]]:
    """One storage per array (keys "0", "1", ...), each tensor contiguous over its whole storage."""
    tensors, storages = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        a = np.array(a, order="C")  # (ascontiguousarray would turn a 0-d array into 1-d)
        key = str(i)
        tensors[name] = T(key, STORAGE_TYPES[a.dtype], a.size, 0, a.shape, contiguous_strides(a.shape))
        storages[key] = a.tobytes()
    return tensors, storages


def zip_file(path: str | Path, records: dict[str, bytes], compress: set[str] = frozenset()) -> Path:
    """A zip archive of the given records (in order), stored unless named in ``compress``."""
    path = Path(path)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in records.items():
            z.writestr(zipfile.ZipInfo(name), data, zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)
    return path


def zip_checkpoint(path: str | Path, arrays: dict[str, np.ndarray] | None = None, *, pickle_bytes: bytes | None = None,
                   storages: dict[str, bytes] | None = None, archive: str = "archive", compress: set[str] = frozenset()) -> Path:
    """A torch.save zip file: of ``arrays`` (a state_dict), or of a given pickle and storages."""
    if arrays is not None:
        tensors, storages = layout(arrays)
        pickle_bytes = state_dict_pickle(tensors)
    records = {f"{archive}/data.pkl": pickle_bytes, f"{archive}/byteorder": b"little"}
    records.update({f"{archive}/data/{k}": v for k, v in (storages or {}).items()})
    records[f"{archive}/version"] = b"3\n"
    return zip_file(path, records, {f"{archive}/{n}" for n in compress})


def legacy_checkpoint(path: str | Path, arrays: dict[str, np.ndarray] | None = None, *, pickle_bytes: bytes | None = None,
                      storages: dict[str, tuple[int, bytes]] | None = None, keys: list | None = None, magic: int = LEGACY_MAGIC) -> Path:
    """A legacy (pre-1.6) torch.save file. ``storages``: key -> (element count written, raw bytes)."""
    if arrays is not None:
        tensors, raw = layout(arrays)
        pickle_bytes = state_dict_pickle(tensors, legacy=True)
        storages = {t.key: (t.numel, raw[t.key]) for t in tensors.values()}
    storages = storages or {}
    keys = sorted(storages) if keys is None else keys
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = io.BytesIO()
    for value in (magic, 1001, sys_info):
        out.write(pickle.dumps(value, protocol=2))
    out.write(pickle_bytes)
    out.write(pickle.dumps(keys, protocol=2))
    for k in keys:
        numel, data = storages[k]
        out.write(struct.pack("<q", numel) + data)
    Path(path).write_bytes(out.getvalue())
    return Path(path)


def central_directory(data: bytes) -> list[tuple[int, str]]:
    """(offset of the central directory header, entry name) for each entry of a small zip."""
    out, pos = [], data.find(b"PK\x01\x02")
    while pos != -1:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        out.append((pos, data[pos + 46 : pos + 46 + n].decode()))
        pos = data.find(b"PK\x01\x02", pos + 46 + n)
    return out


def patch_entry(path: Path, name: str, field_offset: int, fmt: str, value: int) -> Path:
    """Overwrite one field of ``name``'s central directory header (e.g. 42 '<I': local header offset)."""
    data = bytearray(path.read_bytes())
    pos = next(p for p, n in central_directory(bytes(data)) if n == name)
    struct.pack_into(fmt, data, pos + field_offset, value)
    path.write_bytes(bytes(data))
    return path
