"""PyTorch checkpoints (.bin/.pt/.pth, zip and legacy layouts) read without torch and without running code.

Files are built byte by byte (``torch_files``) so everything but the round trips through torch runs
without torch; hostile pickles prove nothing ran (a payload that would create a file leaves none).
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import modelkin
from modelkin.errors import FormatError, ModelkinError, ShardIndexError, UnsupportedError
from modelkin.inventory import build_inventory
from modelkin.inventory.inventory import INTEGER_BUFFER
from modelkin.sources import open_model
from modelkin.sources.pytorch_format import MAX_PICKLE_BYTES, PytorchFile

try:
    from . import torch_files as tf
except ImportError:
    import torch_files as tf

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

ARRAYS = {
    "f32": np.arange(12, dtype="<f4").reshape(3, 4) / 7,
    "f16": (np.arange(6, dtype="<f2") - 3).reshape(2, 3),
    "bf16": np.array([1.5, -2.25, 3e38], dtype=ml_dtypes.bfloat16),
    "f64": np.array([[1e-300, 2.5]], dtype="<f8"),
    "i64": np.array(7, dtype="<i8"),
    "i32": np.array([-1, 2**31 - 1], dtype="<i4"),
    "i16": np.array([-300, 300], dtype="<i2"),
    "i8": np.array([-128, 127], dtype="i1"),
    "u8": np.array([0, 255], dtype="u1"),
    "mask": np.array([[True, False], [False, True]]),
}
CODES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64", "i64": "I64", "i32": "I32", "i16": "I16",
         "i8": "I8", "u8": "U8", "mask": "BOOL"}


def values(f: PytorchFile, name: str) -> np.ndarray:
    info = f.tensors[name]
    return f.read_elements(info, 0, info.numel).reshape(info.shape)


# -- valid files, byte-built ----------------------------------------------------------------------
@pytest.mark.parametrize("build", [tf.zip_checkpoint, tf.legacy_checkpoint], ids=["zip", "legacy"])
def test_every_dtype_reads_exactly(tmp_path, build):
    f = PytorchFile(build(tmp_path / "m.bin", ARRAYS))
    assert f.format_name == "pytorch"
    assert f.metadata["layout"] == ("zip" if build is tf.zip_checkpoint else "legacy")
    assert list(f.tensors) == list(ARRAYS)
    for name, a in ARRAYS.items():
        info = f.tensors[name]
        assert (info.dtype.code, info.shape) == (CODES[name], a.shape)
        assert f.read_raw(info, 0, info.numel).tobytes() == a.tobytes()
        np.testing.assert_array_equal(values(f, name), a.astype(np.float64))


def _views(storage_key: str = "0") -> dict[str, tf.T]:
    """Views of one 12-float storage: contiguous rows, a transpose, a column window, a broadcast."""
    return {
        "whole": tf.T(storage_key, "FloatStorage", 12, 0, (3, 4), (4, 1)),
        "rows": tf.T(storage_key, "FloatStorage", 12, 4, (2, 4), (4, 1)),
        "transposed": tf.T(storage_key, "FloatStorage", 12, 0, (4, 3), (1, 4)),
        "columns": tf.T(storage_key, "FloatStorage", 12, 1, (3, 2), (4, 1)),
        "broadcast": tf.T(storage_key, "FloatStorage", 12, 8, (3, 4), (0, 1)),
        "unit_axis": tf.T(storage_key, "FloatStorage", 12, 4, (1, 4), (99, 1)),  # any stride on a size-1 axis
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_of_one_storage_read_in_logical_order(tmp_path, legacy):
    base = np.arange(12, dtype="<f4") * 1.5
    views = _views()
    pkl = tf.state_dict_pickle(views, legacy=legacy)
    if legacy:
        path = tf.legacy_checkpoint(tmp_path / "v.pth", pickle_bytes=pkl, storages={"0": (12, base.tobytes())})
    else:
        path = tf.zip_checkpoint(tmp_path / "v.bin", pickle_bytes=pkl, storages={"0": base.tobytes()})
    with open_model(path) as src:
        for name, t in views.items():
            want = np.lib.stride_tricks.as_strided(base[t.offset:], t.shape, tuple(4 * s for s in t.stride))
            info = src.tensors[name]
            np.testing.assert_array_equal(src.read(info).reshape(t.shape), want)
            rows = np.array([t.shape[0] - 1, 0])
            np.testing.assert_array_equal(src.read_rows(info, rows), want[rows].reshape(2, -1))
            np.testing.assert_array_equal(src.read_raw(info, 1, 3), want.reshape(-1)[1:4])
            np.testing.assert_array_equal(np.concatenate(list(src.stream(info, 0, info.numel))), want.reshape(-1))
            f = src.file_of(info)
            assert b"".join(f.stream_raw(info, piece_elems=5)) == np.ascontiguousarray(want).tobytes()
        assert src.tensors["rows"].data_offset == src.tensors["whole"].data_offset + 16  # a plain offset read


def test_tensor_with_attributes_and_parameters(tmp_path):
    """``_rebuild_parameter`` (nn.Parameter) and ``_rebuild_from_type_v2`` (a tensor with Python attributes)."""
    t = tf.T("0", "FloatStorage", 4, 0, (4,), (1,))
    ops = tf.Ops().raw(b"}").mark()
    ops.text("param").glob("torch._utils", "_rebuild_parameter").mark()
    tf.emit_tensor(ops, t).raw(b"\x88").ordered_dict().tuple().reduce()
    ops.text("typed").glob("torch._tensor", "_rebuild_from_type_v2").mark().glob("torch._utils", "_rebuild_tensor_v2")
    ops.glob("torch", "Tensor").mark().mark().text("storage").glob("torch", "FloatStorage").text("0").text("cuda:0").int(4)
    ops.tuple().raw(b"Q").int(0).ints((2, 2)).ints((2, 1)).false().ordered_dict().tuple()
    ops.raw(b"}").text("note").text("hello").raw(b"s").tuple().reduce()
    ops.text("epoch").int(3).text("size").glob("torch", "Size").ints((2, 2)).raw(b"\x85").reduce()
    ops.text("dev").glob("torch", "device").text("cuda").int(0).raw(b"\x86").reduce()
    pkl = ops.raw(b"u").stop()
    f = PytorchFile(tf.zip_checkpoint(tmp_path / "p.pt", pickle_bytes=pkl, storages={"0": np.arange(4, dtype="<f4").tobytes()}))
    assert list(f.tensors) == ["param", "typed"]
    np.testing.assert_array_equal(values(f, "typed"), [[0, 1], [2, 3]])


def test_training_checkpoint_reads_the_model_not_the_optimizer(tmp_path):
    weights = {"w": tf.T("0", "FloatStorage", 4, 0, (2, 2), (2, 1))}
    moments = {"exp_avg": tf.T("1", "FloatStorage", 4, 0, (2, 2), (2, 1))}
    ops = tf.Ops().raw(b"}").mark().text("epoch").int(3).text("optimizer")
    tf.emit_state_dict(ops, moments).text("model")
    tf.emit_state_dict(ops, weights)
    pkl = ops.raw(b"u").stop()
    storages = {"0": np.ones(4, "<f4").tobytes(), "1": np.zeros(4, "<f4").tobytes()}
    f = PytorchFile(tf.zip_checkpoint(tmp_path / "ckpt.pt", pickle_bytes=pkl, storages=storages))
    assert list(f.tensors) == ["w"] and f.metadata["state_dict_key"] == "model"
    # No known key: the whole checkpoint is walked, less the optimizer.
    ops = tf.Ops().raw(b"}").mark().text("optimizer")
    tf.emit_state_dict(ops, moments).text("student")
    tf.emit_state_dict(ops, weights)
    f = PytorchFile(tf.zip_checkpoint(tmp_path / "ckpt2.pt", pickle_bytes=ops.raw(b"u").stop(), storages=storages))
    assert list(f.tensors) == ["student.w"]
    # Tensors at the top: still no optimizer moments; a tensor named like an ignored key is kept.
    sd = tf.state_dict_pickle(weights | {"scaler": weights["w"]},
                              extra=lambda ops: tf.emit_state_dict(ops.text("optimizer"), moments))
    f = PytorchFile(tf.zip_checkpoint(tmp_path / "ckpt3.pt", pickle_bytes=sd, storages=storages))
    assert list(f.tensors) == ["w", "scaler"]


def test_integer_buffers_are_not_evidence(tmp_path):
    arrays = {
        "model.embed_tokens.weight": np.random.default_rng(0).standard_normal((64, 8)).astype("<f4"),
        "model.norm.num_batches_tracked": np.array(100, "<i8"),
        "extra.position_ids": np.arange(512, dtype="<i8")[None, :],
        "extra.attention_mask": np.tril(np.ones((16, 16), bool)),
        "extra.counts": np.arange(256, dtype="<i4").reshape(16, 16),
        "extra.quantised": np.arange(128, dtype="i1").reshape(16, 8),
    }
    inv = build_inventory(open_model(tf.zip_checkpoint(tmp_path / "m.pt", arrays)))
    by = inv.by_name
    for name in ("extra.position_ids", "extra.attention_mask", "extra.counts"):
        assert (by[name].evidence, by[name].non_evidence_reason) == (False, INTEGER_BUFFER)
    assert not by["model.norm.num_batches_tracked"].evidence
    assert by["extra.quantised"].evidence and by["model.embed_tokens.weight"].evidence


def test_folder_scan_skips_trainer_files_and_prefers_pytorch_model_bin(tmp_path):
    arrays = {"w": np.ones((2, 2), "<f4")}
    tf.zip_checkpoint(tmp_path / "model.pt", arrays)
    tf.zip_checkpoint(tmp_path / "training_args.bin", pickle_bytes=_payload_pickle("os", "system", "true"))
    tf.zip_checkpoint(tmp_path / "optimizer.pt", pickle_bytes=_payload_pickle("os", "system", "true"))
    with open_model(tmp_path) as src:
        assert [Path(f.name).name for f in src.files] == ["model.pt"]
    tf.zip_checkpoint(tmp_path / "pytorch_model.bin", {"v": np.ones((2, 2), "<f4")})
    with open_model(tmp_path) as src:
        assert list(src.tensors) == ["v"]
    with pytest.raises(FormatError, match="os.system"):  # named explicitly, a file is opened whatever its name
        open_model(tmp_path / "training_args.bin")


def test_sharded_index(tmp_path):
    tf.zip_checkpoint(tmp_path / "pytorch_model-00001-of-00002.bin", {"a": np.ones((2, 2), "<f4")})
    tf.legacy_checkpoint(tmp_path / "pytorch_model-00002-of-00002.bin", {"b": np.zeros((2, 2), "<f4")})
    index = {"weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with open_model(tmp_path) as src:
        assert sorted(src.tensors) == ["a", "b"] and len(src.files) == 2
    index["weight_map"]["c"] = "pytorch_model-00001-of-00002.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(ShardIndexError, match="'c'"):
        open_model(tmp_path)


# -- hostile pickles: nothing runs -------------------------------------------------------------------
def _payload_pickle(module: str, name: str, arg: object, stack_global: bool = False) -> bytes:
    """``module.name(arg)`` as a pickle (GLOBAL + REDUCE): what ``pickle.load`` would run."""
    ops = tf.Ops(bytearray(b"\x80\x04")) if stack_global else tf.Ops()
    (ops.stack_global if stack_global else ops.glob)(module, name)
    if isinstance(arg, list):
        ops.raw(b"]").mark()
        for a in arg:
            ops.text(a)
        ops.raw(b"e")  # APPENDS
    else:
        ops.text(arg)
    return ops.raw(b"\x85").reduce().stop()


class Evil:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _payloads(marker: Path, legacy: bool = False) -> dict[str, bytes]:
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').write('pwned')"
    inst = tf.Ops().mark().text(touch).raw(b"ios\nsystem\n").stop()  # protocol 0/1 INST
    inside = tf.state_dict_pickle(
        {"w": tf.T("0", "FloatStorage", 4, 0, (2, 2), (2, 1))}, legacy=legacy,
        extra=lambda ops: ops.text("x").glob("os", "system").text(touch).raw(b"\x85").reduce(),
    )
    return {
        "os.system": _payload_pickle("os", "system", touch),
        "posix.system": _payload_pickle("posix", "system", touch),
        "builtins.eval": _payload_pickle("builtins", "eval", write),
        "builtins.exec": _payload_pickle("builtins", "exec", write),
        "__builtin__.eval": _payload_pickle("__builtin__", "eval", write),
        "subprocess.Popen": _payload_pickle("subprocess", "Popen", ["touch", str(marker)]),
        "subprocess.check_call": _payload_pickle("subprocess", "check_call", ["touch", str(marker)]),
        "stack_global os.system": _payload_pickle("os", "system", touch, stack_global=True),
        "__reduce__": pickle.dumps(Evil(touch), protocol=2),
        "INST os.system": inst,
        "inside a state_dict": inside,
        "torch.load": _payload_pickle("torch.serialization", "load", str(marker)),
        "numpy reconstruct": _payload_pickle("numpy.core.multiarray", "_reconstruct", "x"),
    }


GLOBAL_NAMED = {"__reduce__": "system", "INST os.system": "os.system", "stack_global os.system": "os.system",
                "inside a state_dict": "os.system", "torch.load": "torch.serialization.load", "numpy reconstruct": "numpy.core"}


def test_payloads_are_live(tmp_path):
    """The payloads below do run under plain pickle.loads (so the refusals are not vacuous)."""
    marker = tmp_path / "ran"
    for name in ("os.system", "builtins.eval", "__reduce__"):
        pickle.loads(_payloads(marker)[name])
        assert marker.exists(), name
        marker.unlink()


@pytest.mark.parametrize("name", list(_payloads(Path("x"))))
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_hostile_globals_are_refused_and_nothing_runs(tmp_path, name, layout):
    marker = tmp_path / "pwned"
    pkl = _payloads(marker, legacy=layout == "legacy")[name]
    storages = {"0": np.ones(4, "<f4").tobytes()}
    if layout == "zip":
        path = tf.zip_checkpoint(tmp_path / "evil.bin", pickle_bytes=pkl, storages=storages)
    else:
        path = tf.legacy_checkpoint(tmp_path / "evil.pth", pickle_bytes=pkl, storages={"0": (4, storages["0"])})
    with pytest.raises(FormatError) as err:
        PytorchFile(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert GLOBAL_NAMED.get(name, name) in message
    assert "refused" in message
    assert not marker.exists()


@pytest.mark.parametrize("state", ["tuple", "dict"])
def test_build_cannot_modify_a_checked_tensor(tmp_path, state):
    """BUILD would rewrite a frozen dataclass (slotted: from a state tuple; plain: its instance dict)."""
    t = tf.T("0", "FloatStorage", 4, 0, (4,), (1,))
    ops = tf.emit_tensor(tf.Ops().raw(b"}").mark().text("w"), t)
    if state == "tuple":
        ops.mark().int(0).text("not an offset").ints((2**40,)).tuple()
    else:
        ops.raw(b"}").text("offset").int(2**30).raw(b"s")
    ops.raw(b"b")  # BUILD
    with pytest.raises(FormatError, match="tries to modify a rebuilt tensor"):
        PytorchFile(tf.zip_checkpoint(tmp_path / "b.bin", pickle_bytes=ops.raw(b"u").stop(), storages={"0": bytes(16)}))


def test_quantized_tensors_are_named_unsupported(tmp_path):
    pkl = _payload_pickle("torch._utils", "_rebuild_qtensor", "x")
    with pytest.raises(UnsupportedError, match="quantized tensor"):
        PytorchFile(tf.zip_checkpoint(tmp_path / "q.bin", pickle_bytes=pkl))


def _pid_pickle(pid_ops) -> bytes:
    ops = tf.Ops().glob("torch._utils", "_rebuild_tensor_v2").mark()
    pid_ops(ops)
    return ops.raw(b"Q").int(0).ints((1,)).ints((1,)).false().ordered_dict().tuple().reduce().stop()


@pytest.mark.parametrize("pid, message", [
    (lambda o: o.mark().text("evil").text("x").tuple(), "unknown persistent id"),
    (lambda o: o.text("storage"), "unknown persistent id"),
    (lambda o: o.mark().text("module").glob("torch.nn", "Linear").text("src").tuple(), "refused"),
    (lambda o: o.mark().text("storage").text("FloatStorage").text("0").text("cpu").int(1).tuple(), "malformed storage id"),
    (lambda o: o.mark().text("storage").glob("torch", "FloatStorage").text("0").text("cpu").int(-1).tuple(), "element count"),
])
def test_bad_persistent_ids(tmp_path, pid, message):
    with pytest.raises(FormatError, match=message):
        PytorchFile(tf.zip_checkpoint(tmp_path / "p.bin", pickle_bytes=_pid_pickle(pid), storages={"0": b"\0" * 4}))


def test_memo_bomb_is_refused_in_bounded_memory_and_time(tmp_path):
    """``LONG_BINPUT 0x3fffffff`` would make the C unpickler allocate a 16 GB memo table."""
    pkl = b"\x80\x02N" + b"r" + struct.pack("<I", 0x3FFFFFFF) + b"."
    path = tf.zip_checkpoint(tmp_path / "memo.bin", pickle_bytes=pkl)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match="memo index"):
        PytorchFile(path)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def _shared_tuple(levels: int) -> bytes:
    """t = (); t = (t, t) ``levels`` times: 3 bytes per level, 2**levels nodes for a hash to visit."""
    return b")" + b"2\x86" * levels  # EMPTY_TUPLE, then DUP + TUPLE2


def _shared_list(levels: int) -> bytes:
    """L = []; L = [L, L] ``levels`` times (its repr is 2**levels long)."""
    out = b"]q\x000"  # EMPTY_LIST PUT POP
    for i in range(levels):
        out += b"(h" + bytes([i]) + b"h" + bytes([i]) + b"lq" + bytes([i + 1]) + b"0"  # MARK GET GET LIST PUT POP
    return out + b"h" + bytes([levels])


HANGS = {  # pickles of a few hundred bytes that would keep the C unpickler (or a repr) busy for hours
    "shared tuple as a dict key": (b"\x80\x02}" + _shared_tuple(60) + b"Ns.", "tuple of"),
    "shared tuple in a set": (b"\x80\x02c__builtin__\nset\n]" + _shared_tuple(60) + b"a\x85R.", "tuple of"),
    "many heavy keys": (b"\x80\x02}" + _shared_tuple(12) + b"q\x00(" + b"h\x00N" * 20_000 + b"u.", "would hash more than"),
    "shared list in a message": (b"\x80\x02ctorch\ndevice\n" + _shared_list(60) + b"\x85R.", "torch.device"),
}


@pytest.mark.parametrize("name", list(HANGS))
def test_pickles_built_to_hang_are_refused_quickly(tmp_path, name):
    pkl, message = HANGS[name]
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match=message) as err:
        PytorchFile(tf.zip_checkpoint(tmp_path / "hang.bin", pickle_bytes=pkl))
    assert time.perf_counter() - t0 < 2.0
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("pkl, message", [
    (b"\x80\x02\x82\x01.", "EXT1"),  # extension registry
    (b"\x80\x02\x8e" + struct.pack("<Q", 2**40) + b"abc.", "truncated"),  # BINBYTES8 claiming 1 TiB
    (b"\x80\x02}q\x00", "truncated"),  # no STOP
    (b"\x80\x02\xff.", "not a valid pickle"),
    (b"\x80\x02}}b.", "not a valid checkpoint pickle"),  # BUILD on a plain dict
    (b"\x80\x02N.junk", "after the end of its pickle"),
    (b"\x80\x02}X" + struct.pack("<I", 5000) + b"a" * 5000 + b"Ns.", "runs past 4096 characters"),  # a name
])
def test_malformed_pickles(tmp_path, pkl, message):
    with pytest.raises(FormatError, match=message):
        PytorchFile(tf.zip_checkpoint(tmp_path / "m.bin", pickle_bytes=pkl))


# -- hostile archives ----------------------------------------------------------------------------
def _good(tmp_path: Path, name: str = "g.bin") -> Path:
    return tf.zip_checkpoint(tmp_path / name, {"a": np.arange(16, dtype="<f4"), "b": np.arange(16, dtype="<f4")})


def _truncated_half(p: Path) -> Path:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p


def _truncated_head(p: Path) -> Path:
    p.write_bytes(p.read_bytes()[:100])
    return p


def _bomb(tmp_path: Path) -> Path:
    """A deflated data.pkl that inflates to MAX_PICKLE_BYTES + 1 MiB but declares 20 bytes."""
    path = tf.zip_file(tmp_path / "bomb.bin", {"archive/data.pkl": bytes(MAX_PICKLE_BYTES + (1 << 20))}, compress={"archive/data.pkl"})
    return tf.patch_entry(path, "archive/data.pkl", 24, "<I", 20)  # uncompressed size


ARCHIVES = {
    "truncated": (lambda t: _truncated_half(_good(t)), "not a readable zip archive"),
    "truncated to its head": (lambda t: _truncated_head(_good(t)), "not a readable zip archive"),
    "zip bomb": (_bomb, "inflates past"),
    "huge declared pickle": (lambda t: tf.patch_entry(tf.zip_file(t / "h.bin", {"archive/data.pkl": b"\x80\x02N."}, {"archive/data.pkl"}),
                                                     "archive/data.pkl", 24, "<I", 2**32 - 2), "declares"),
    "compressed storage": (lambda t: tf.zip_checkpoint(t / "c.bin", {"a": np.zeros(64, "<f4")}, compress={"data/0"}), "compressed"),
    "entry offset past the end": (lambda t: tf.patch_entry(_good(t), "archive/data/1", 42, "<I", 2**31), "past the end"),
    "entry size past the end": (lambda t: _sizes_past_end(t), "run past the end of the"),
    "overlapping storages": (lambda t: tf.patch_entry(_good(t), "archive/data/1", 42, "<I",
                                                      dict((n, o) for o, n in _local_offsets(t / "g.bin"))["archive/data/0"]), "overlap"),
    "dot-dot entry": (lambda t: tf.zip_file(t / "d.bin", {"archive/data.pkl": b"\x80\x02N.", "archive/../etc/passwd": b"x"}), "outside"),
    "absolute entry": (lambda t: tf.zip_file(t / "a.bin", {"/archive/data.pkl": b"\x80\x02N."}), "outside"),
    "entry outside the folder": (lambda t: tf.zip_file(t / "o.bin", {"archive/data.pkl": b"\x80\x02N.", "other/x": b""}), "outside the archive folder"),
    "duplicate entry": (lambda t: _duplicate(t), "twice"),
    "no data.pkl": (lambda t: tf.zip_file(t / "n.bin", {"archive/x": b""}), "no '<archive>/data.pkl'"),
    "torchscript": (lambda t: tf.zip_file(t / "ts.pt", {"archive/code/m.py": b"", "archive/constants.pkl": b""}), "TorchScript"),
    "missing storage": (lambda t: tf.zip_checkpoint(t / "m.bin", pickle_bytes=tf.state_dict_pickle(
        {"w": tf.T("7", "FloatStorage", 4, 0, (4,), (1,))})), "no entry"),
    "storage size mismatch": (lambda t: tf.zip_checkpoint(t / "s.bin", pickle_bytes=tf.state_dict_pickle(
        {"w": tf.T("0", "FloatStorage", 5, 0, (5,), (1,))}), storages={"0": bytes(16)}), "declares 20 bytes"),
    "tensor past its storage": (lambda t: _one_view(t, tf.T("0", "FloatStorage", 4, 2, (2, 2), (2, 1))), "needs more than"),
    "huge dims": (lambda t: _one_view(t, tf.T("0", "FloatStorage", 4, 0, (2**62, 2**62), (2**62, 1))), "needs more than"),
    "dims past int64": (lambda t: _one_view(t, tf.T("0", "FloatStorage", 4, 0, (2**64,), (1,))), "int64"),
    "negative stride": (lambda t: _one_view(t, tf.T("0", "FloatStorage", 4, 3, (4,), (-1,))), "negative"),
    "big-endian": (lambda t: _big_endian(t), "big-endian"),
    "not a checkpoint": (lambda t: _write(t / "x.bin", b"GGUF" + bytes(64)), "not a PyTorch checkpoint"),
    "empty": (lambda t: _write(t / "e.pt", b""), "empty"),
}


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _one_view(t: Path, view: tf.T) -> Path:
    return tf.zip_checkpoint(t / "v.bin", pickle_bytes=tf.state_dict_pickle({"w": view}), storages={"0": bytes(16)})


def _sizes_past_end(t: Path) -> Path:
    """A 2 GiB storage declared alike by the pickle and the zip directory, in a file of a few hundred bytes."""
    p = _one_view(t, tf.T("0", "FloatStorage", 2**29, 0, (4,), (1,)))
    return tf.patch_entry(tf.patch_entry(p, "archive/data/0", 20, "<I", 2**31), "archive/data/0", 24, "<I", 2**31)


def _local_offsets(p: Path) -> list[tuple[int, str]]:
    import zipfile

    return [(i.header_offset, i.filename) for i in zipfile.ZipFile(p).infolist()]


def _duplicate(t: Path) -> Path:
    import warnings
    import zipfile

    p = t / "dup.bin"
    with warnings.catch_warnings(), zipfile.ZipFile(p, "w") as z:
        warnings.simplefilter("ignore")
        z.writestr("archive/data.pkl", b"\x80\x02N.")
        z.writestr("archive/data.pkl", b"\x80\x02N.")
    return p


def _big_endian(t: Path) -> Path:
    p = _good(t)
    data = p.read_bytes().replace(b"little", b"big\0\0\0")
    return _write(p, data)


@pytest.mark.parametrize("name", list(ARCHIVES))
def test_hostile_archives(tmp_path, name):
    build, message = ARCHIVES[name]
    path = build(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(ModelkinError) as err:
        PytorchFile(path)
    assert time.perf_counter() - t0 < 2.0
    assert message in str(err.value) and str(path) in str(err.value)


def _legacy_good(t: Path, **kw) -> Path:
    a = np.arange(8, dtype="<f4")
    pkl = tf.state_dict_pickle({"w": tf.T("k", "FloatStorage", 8, 0, (2, 4), (4, 1))}, legacy=True)
    args = {"pickle_bytes": pkl, "storages": {"k": (8, a.tobytes())}} | kw
    return tf.legacy_checkpoint(t / "l.pth", **args)


LEGACY = {
    "bad magic": (lambda t: _legacy_good(t, magic=12345), "magic number"),
    "truncated storage": (lambda t: _write(t / "l.pth", _legacy_good(t).read_bytes()[:-5]), "runs past the end"),
    "truncated pickle": (lambda t: _write(t / "l.pth", _legacy_good(t).read_bytes()[:60]), "truncated"),
    "element count mismatch": (lambda t: _legacy_good(t, storages={"k": (9, bytes(32))}), "holds 9 elements"),
    "key list mismatch": (lambda t: _legacy_good(t, storages={"k": (8, bytes(32)), "j": (0, b"")}), "storage key list"),
    "tar format": (lambda t: _write(t / "old.pt", b"\x80" + bytes(256) + b"ustar" + bytes(300)), "tar-format"),
}


@pytest.mark.parametrize("name", list(LEGACY))
def test_hostile_legacy_files(tmp_path, name):
    build, message = LEGACY[name]
    path = build(tmp_path)
    with pytest.raises(ModelkinError, match=message):
        PytorchFile(path)


def test_legacy_reads_through_ranges(tmp_path):
    f = PytorchFile(_legacy_good(tmp_path))
    np.testing.assert_array_equal(values(f, "w"), np.arange(8).reshape(2, 4))


# -- the command line -----------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "modelkin", *args], capture_output=True, text=True, timeout=60, env=env)


def _one_line_exit_2(code: int, out: str, err: str, culprit: Path) -> None:
    assert code == 2, out + err
    assert "Traceback" not in out + err
    lines = err.strip().split("\n")
    assert len(lines) == 1 and lines[0].startswith("modelkin: error: ") and str(culprit) in lines[0], err


def test_cli_refuses_hostile_files_in_one_line(tmp_path, capsys):
    from modelkin.cli import main

    marker = tmp_path / "pwned"
    evil = tf.zip_checkpoint(tmp_path / "evil.bin", pickle_bytes=_payloads(marker)["os.system"])
    proc = _cli("inspect", str(evil))  # once end to end, in a fresh interpreter
    _one_line_exit_2(proc.returncode, proc.stdout, proc.stderr, evil)
    bomb = _bomb(tmp_path)
    past = tf.patch_entry(_good(tmp_path, "past.bin"), "archive/data/1", 42, "<I", 2**31)
    reduce_pth = tf.legacy_checkpoint(tmp_path / "evil.pth", pickle_bytes=_payloads(marker)["__reduce__"])
    for args, culprit in [
        (["inspect", bomb], bomb),
        (["compare", EXAMPLES / "base", past], past),
        (["compare", reduce_pth, EXAMPLES / "base"], reduce_pth),
    ]:
        code = main(list(map(str, args)))
        captured = capsys.readouterr()
        _one_line_exit_2(code, captured.out, captured.err, culprit)
    assert not marker.exists()


def test_cli_inspect_shows_format_and_dtypes(tmp_path, capsys):
    from modelkin.cli import main

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(EXAMPLES / "base" / "config.json", folder)
    tf.zip_checkpoint(folder / "pytorch_model.bin", {"model.embed_tokens.weight": np.ones((8, 4), ml_dtypes.bfloat16),
                                                      "model.norm.weight": np.ones(4, "<f4")})
    assert main(["inspect", str(folder / "pytorch_model.bin")]) == 0
    out = capsys.readouterr().out
    assert "pytorch_model.bin: format pytorch (layout zip" in out
    assert "stored types: BF16 (1), F32 (1)" in out
    assert main(["inspect", str(folder), "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {f["name"]: f["format"] for f in doc["files"]}["pytorch_model.bin"] == "pytorch"
    assert [t["dtype"] for t in doc["tensors"]] == ["BF16", "F32"]


# -- with torch: files torch writes, examples re-exported ------------------------------------------
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_byte_built_files_load_in_torch_identically(tmp_path, torch):
    for path in (tf.zip_checkpoint(tmp_path / "z.bin", ARRAYS), tf.legacy_checkpoint(tmp_path / "l.pth", ARRAYS)):
        loaded = torch.load(path, weights_only=True)
        for name, a in ARRAYS.items():
            assert tuple(loaded[name].shape) == a.shape
            np.testing.assert_array_equal(loaded[name].double().numpy(), a.astype(np.float64))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_files_torch_writes(tmp_path, torch, legacy):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    sd = {
        "f32": base, "f16": base.half(), "bf16": base.bfloat16(), "f64": base.double(), "i64": torch.arange(5),
        "i32": torch.arange(5, dtype=torch.int32), "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(4, dtype=torch.uint8), "bool": base > 0, "scalar": torch.tensor(2.5),
        "transposed": base.t(), "columns": base[:, 2:5], "rows": base[1:4], "tied": base, "expanded": base[0].expand(3, 8),
        "param": torch.nn.Parameter(base[:2].clone()), "empty": torch.zeros(0, 4),
    }
    if not legacy:  # torch itself cannot load float8 from a legacy file
        sd["f8"] = base.to(torch.float8_e4m3fn)
    path = tmp_path / ("m.pth" if legacy else "m.bin")
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    f = PytorchFile(path)
    assert sorted(f.tensors) == sorted(sd)
    for name, t in sd.items():
        want = t.detach().float().numpy() if t.dtype != torch.float64 else t.numpy()
        np.testing.assert_array_equal(values(f, name), want, err_msg=name)
    assert f.tensors["tied"].data_offset == f.tensors["f32"].data_offset  # one storage, read in place


def test_whole_module_pickles_are_refused(tmp_path, torch):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(4, 4), path)
    with pytest.raises(FormatError, match="torch.nn.modules.linear"):
        PytorchFile(path)


def test_batchnorm_counters_are_not_evidence(tmp_path, torch):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    inv = build_inventory(open_model(tmp_path / "net.pt"))
    assert inv.by_name["1.num_batches_tracked"].info.dtype.code == "I64"
    assert not inv.by_name["1.num_batches_tracked"].evidence


@pytest.fixture(scope="module")
def exported(tmp_path_factory, torch):
    """examples/base and examples/independent re-exported with torch.save: .bin (zip), .pth (legacy), sharded."""
    from safetensors.numpy import load_file

    root = tmp_path_factory.mktemp("exports")
    out = {}
    for model in ("base", "independent"):
        sd = {k: torch.from_numpy(v) for k, v in load_file(EXAMPLES / model / "model.safetensors").items()}
        for kind in ("bin", "pth", "sharded"):
            folder = root / f"{model}-{kind}"
            folder.mkdir()
            for side in ("config.json", "tokenizer.json"):
                shutil.copy(EXAMPLES / model / side, folder)
            if kind == "bin":
                torch.save(sd, folder / "pytorch_model.bin")
            elif kind == "pth":
                torch.save(sd, folder / "model.pth", _use_new_zipfile_serialization=False)
            else:
                names = list(sd)
                halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
                for shard, part in halves.items():
                    torch.save({n: sd[n] for n in part}, folder / shard)
                weight_map = {n: shard for shard, part in halves.items() for n in part}
                (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
            out[model, kind] = folder
    return out


@pytest.mark.parametrize("kind", ["bin", "pth", "sharded"])
def test_export_compares_with_its_source_as_related(exported, kind):
    res = modelkin.compare(EXAMPLES / "base", exported["base", kind])
    assert res.verdict == "related" and res.components["text"].verdict == "related"
    matrices = [t for t in res.tensors if len(t.shape) >= 2]
    assert len(matrices) >= 15 and not res.unmatched
    for t in matrices:
        assert t.pearson is not None and t.pearson >= 0.99, t.a
        assert t.identical, t.a


def test_independent_exports_compare_as_independent(exported):
    res = modelkin.compare(exported["base", "bin"], exported["independent", "pth"])
    assert res.verdict == "independent" and res.components["text"].verdict == "independent"


def test_fuzz_seeds_open_cleanly():
    """The fuzz target's seeds are valid files of both layouts (a harness mutates them)."""
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    import target_pytorch

    assert len(target_pytorch.SEEDS) >= 4
    for seed in target_pytorch.SEEDS:
        target_pytorch.fuzz_one(seed)
        assert PytorchFile(target_pytorch.BytesTransport(seed)).tensors


@pytest.mark.parametrize("build", [tf.zip_checkpoint, tf.legacy_checkpoint], ids=["zip", "legacy"])
def test_opening_reads_headers_only_through_the_transport(tmp_path, build):
    """Everything goes through the transport (as over HTTP): opening a 4 MB file reads a few KB."""
    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    from target_pytorch import BytesTransport

    class Remote(BytesTransport):
        remote = True
        n_bytes = 0

        def read_into(self, offset, out):
            Remote.n_bytes += out.nbytes
            super().read_into(offset, out)

    big = np.arange(1 << 20, dtype="<f4").reshape(1024, 1024)
    data = build(tmp_path / "big.bin", {"a": big, "b": big[:8]}).read_bytes()
    f = PytorchFile(Remote(data, "https://example.org/big.bin"))
    assert Remote.n_bytes < 70_000 < len(data) // 50
    f.prefetch([(f.tensors["a"], 0, 2048)])
    np.testing.assert_array_equal(f.read_elements(f.tensors["a"], 1024 * 1000, 1024), big[1000])
