"""Fuzz target: the PyTorch checkpoint reader (zip directory, restricted unpickler, legacy layout, reads).

``fuzz_one(data)`` opens ``data`` as a ``.bin`` file from memory and reads a little of every tensor; bad
input may raise only ``ModelkinError``. ``SEEDS`` are small valid files of both layouts, built byte by byte
(no torch), with a strided view, a nested checkpoint and every storage type.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator, Sequence

import ml_dtypes
import numpy as np

from modelkin.errors import FormatError
from modelkin.sources.pytorch_format import PytorchFile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch_files as tf  # noqa: E402  (tests/torch_files.py: the byte-level builders)

from modelkin.sources.transport import MemoryFile  # noqa: E402

MAX_READ_ELEMS = 4096


class BytesTransport(MemoryFile):
    """This target's in-memory file (``MemoryFile`` under the target's file name)."""

    def __init__(self, data: bytes, name: str = 'fuzz.bin'):
        super().__init__(data, name)


def fuzz_one(data: bytes) -> None:
    f = PytorchFile(BytesTransport(data))
    for info in list(f.tensors.values())[:32]:
        n = min(info.numel, MAX_READ_ELEMS)
        f.read_elements(info, 0, n)
        if info.numel > n:
            f.read_elements(info, info.numel - 1, 1)
        for _ in f.stream_raw(info, piece_elems=MAX_READ_ELEMS):
            break


def _seeds() -> list[bytes]:
    import tempfile

    arrays = {
        "w": np.arange(12, dtype="<f4").reshape(3, 4),
        "h": np.ones((2, 2), "<f2"),
        "b": np.array([1.5, 2.0], ml_dtypes.bfloat16),
        "n": np.array(3, "<i8"),
        "m": np.array([True, False]),
        "q": np.arange(4, dtype="i1"),
    }
    views = {"t": tf.T("0", "FloatStorage", 12, 0, (4, 3), (1, 4)), "c": tf.T("0", "FloatStorage", 12, 1, (3, 2), (4, 1))}
    storage = np.arange(12, dtype="<f4").tobytes()
    nested = tf.Ops().raw(b"}").mark().text("model")
    tf.emit_state_dict(nested, {"x": tf.T("0", "FloatStorage", 12, 0, (12,), (1,))}).text("epoch").int(1)
    out = []
    with tempfile.TemporaryDirectory() as d:
        paths = [
            tf.zip_checkpoint(Path(d) / "a.bin", arrays),
            tf.legacy_checkpoint(Path(d) / "b.pth", arrays),
            tf.zip_checkpoint(Path(d) / "c.bin", pickle_bytes=tf.state_dict_pickle(views), storages={"0": storage}),
            tf.legacy_checkpoint(Path(d) / "d.pth", pickle_bytes=tf.state_dict_pickle(views, legacy=True), storages={"0": (12, storage)}),
            tf.zip_checkpoint(Path(d) / "e.pt", pickle_bytes=nested.raw(b"u").stop(), storages={"0": storage}),
        ]
        out = [p.read_bytes() for p in paths]
    return out


SEEDS: list[bytes] = _seeds()
