"""modelkin.sources: resolving files / folders / shards, decoding every dtype exactly, ranged reads, digests."""

from __future__ import annotations

import hashlib
import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from modelkin.errors import ModelkinError
from modelkin.sources import ModelSource, open_model

try:  # tests/ may or may not become a package
    from . import hostile
except ImportError:
    import hostile


def _rng():
    return np.random.default_rng(1234)


# -- resolving ----------------------------------------------------------------------------------


def test_single_file(tmp_path):
    a = _rng().standard_normal((3, 5)).astype(np.float32)
    b = np.arange(7, dtype=np.int8)
    path = tmp_path / "weights.safetensors"
    save_file({"layer.a": a, "layer.b": b}, str(path), metadata={"format": "np"})
    with open_model(path) as m:
        assert isinstance(m, ModelSource)
        assert m.location == str(path)
        assert m.root == path
        assert [f.path for f in m.files] == [path]
        assert sorted(m.tensors) == ["layer.a", "layer.b"]
        ta, tb = m.tensors["layer.a"], m.tensors["layer.b"]
        assert (ta.dtype.code, ta.shape, ta.numel, ta.n_bytes) == ("F32", (3, 5), 15, 60)
        assert (tb.dtype.code, tb.shape, tb.numel, tb.n_bytes) == ("I8", (7,), 7, 7)
        assert m.files[0].metadata == {"format": "np"}
        assert m.n_bytes == 67
        np.testing.assert_array_equal(m.read(ta).reshape(3, 5), a)
        np.testing.assert_array_equal(m.read(tb), b.astype(np.float32))
        assert m.config is None and m.config_path is None


def test_folder_with_model_safetensors(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_file({"x": a}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4}))
    (tmp_path / "tokenizer.json").write_text("{}")
    m = open_model(tmp_path)
    assert m.root == tmp_path
    assert [f.path.name for f in m.files] == ["model.safetensors"]
    assert m.config == {"model_type": "llama", "hidden_size": 4}
    assert m.config_path == tmp_path / "config.json"
    assert m.extra_files == {"tokenizer.json": tmp_path / "tokenizer.json"}
    np.testing.assert_array_equal(m.read(m.tensors["x"]), a.ravel())
    m.close()


def test_folder_prefers_model_safetensors_over_other_files(tmp_path):
    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "model.safetensors"))
    save_file({"y": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    with open_model(tmp_path) as m:
        assert list(m.tensors) == ["x"]


def test_folder_with_other_single_file(tmp_path):
    save_file({"y": np.ones(3, np.float16)}, str(tmp_path / "adapter.safetensors"))
    with open_model(tmp_path) as m:
        assert list(m.tensors) == ["y"]
        assert m.tensors["y"].dtype.code == "F16"


def _write_shards(tmp_path, prefix="pytorch_model", index_name="foo.safetensors.index.json"):
    rng = _rng()
    parts = [
        {"embed": rng.standard_normal((6, 4)).astype(np.float32), "l0.w": rng.standard_normal((4, 4)).astype(np.float32)},
        {"l1.w": rng.standard_normal((4, 4)).astype(np.float16), "head": rng.standard_normal((6, 4)).astype(np.float64)},
        {"norm": np.ones(4, np.float32)},
    ]
    weight_map, expected = {}, {}
    for i, part in enumerate(parts, 1):
        shard = f"{prefix}-{i:05d}-of-{len(parts):05d}.safetensors"
        save_file(part, str(tmp_path / shard))
        for k, v in part.items():
            weight_map[k] = shard
            expected[k] = v
    hostile.index_file(tmp_path / index_name, weight_map)
    return expected


@pytest.mark.parametrize("index_name", ["foo.safetensors.index.json", "model.safetensors.index.json"])
def test_sharded_folder_any_prefix(tmp_path, index_name):
    expected = _write_shards(tmp_path, index_name=index_name)
    # A stray non-indexed file in the folder must not be picked up.
    (tmp_path / "config.json").write_text('{"architectures": ["X"]}')
    with open_model(tmp_path) as m:
        assert sorted(m.tensors) == sorted(expected)
        assert sorted(f.path.name for f in m.files) == [
            "pytorch_model-00001-of-00003.safetensors",
            "pytorch_model-00002-of-00003.safetensors",
            "pytorch_model-00003-of-00003.safetensors",
        ]
        assert m.config == {"architectures": ["X"]}
        for name, arr in expected.items():
            info = m.tensors[name]
            assert info.shape == arr.shape
            assert m.file_of(info).name == info.file and info.name in m.file_of(info).tensors
            np.testing.assert_array_equal(m.read(info), arr.ravel().astype(info.dtype.decoded))


def test_index_file_given_directly(tmp_path):
    expected = _write_shards(tmp_path)
    with open_model(tmp_path / "foo.safetensors.index.json") as m:
        assert sorted(m.tensors) == sorted(expected)
        assert m.root == tmp_path


def test_sharded_folder_with_symlinked_shards(tmp_path):
    """Hugging Face cache layout: snapshots/<rev>/shard -> ../../blobs/<sha>. Must be accepted."""
    blobs = tmp_path / "blobs"
    snap = tmp_path / "snapshots" / "abc123"
    blobs.mkdir()
    snap.mkdir(parents=True)
    weight_map = {}
    for i, name in enumerate(["a", "b"], 1):
        shard = f"model-{i:05d}-of-00002.safetensors"
        save_file({name: np.full(3, i, np.float32)}, str(blobs / f"sha{i}"))
        os.symlink(f"../../blobs/sha{i}", snap / shard)
        weight_map[name] = shard
    hostile.index_file(snap / "model.safetensors.index.json", weight_map)
    with open_model(snap) as m:
        np.testing.assert_array_equal(m.read(m.tensors["b"]), [2, 2, 2])


def test_no_config(tmp_path):
    save_file({"x": np.zeros(1, np.float32)}, str(tmp_path / "model.safetensors"))
    with open_model(tmp_path) as m:
        assert m.config is None and m.config_path is None


# -- dtypes -------------------------------------------------------------------------------------


def _values(code: str) -> np.ndarray:
    """Every bit pattern for 8/16-bit formats (minus NaNs, compared separately), a spread for others."""
    dt = hostile.NP_DTYPES[code]
    if code in ("I8", "U8", "F8_E4M3", "F8_E5M2"):
        arr = np.arange(256, dtype=np.uint8).view(dt)
    elif code in ("F16", "BF16"):
        arr = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dt)
    elif code == "F32":
        arr = np.concatenate([
            _rng().standard_normal(1000).astype(np.float32),
            np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45], np.float32),
        ])
    else:
        arr = np.concatenate([_rng().standard_normal(1000), np.array([0.0, -0.0, np.inf, 1e308, 5e-324, np.pi])])
    return arr.astype(dt)


@pytest.mark.parametrize("code", ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I8", "U8"])
def test_every_dtype_decodes_exactly(tmp_path, code):
    stored = _values(code)
    n = len(stored)
    shape = (n // 8, 8) if n % 8 == 0 else (n,)
    path = hostile.write_tensors(tmp_path / f"{code}.safetensors", {"t": stored.reshape(shape), "after": np.arange(3, dtype=np.uint8)})
    with open_model(path) as m:
        info = m.tensors["t"]
        assert info.dtype.code == code
        assert info.shape == shape
        raw = m.read_raw(info)
        assert raw.dtype == stored.dtype
        np.testing.assert_array_equal(raw.view(np.uint8), stored.view(np.uint8))  # storage bits identical
        got = m.read(info)
        want = stored.astype(np.float64 if code == "F64" else np.float32)  # ml_dtypes' exact widening
        assert got.dtype == want.dtype
        assert got.shape == (n,)
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan)
        # bitwise equality on the non-NaN values: catches -0.0 vs 0.0, and any rounding
        assert np.array_equal(got[~nan].view(np.uint64 if code == "F64" else np.uint32), want[~nan].view(np.uint64 if code == "F64" else np.uint32))
        # a slice in the middle decodes to the same values
        np.testing.assert_array_equal(m.read(info, 5, 17), got[5:22])
        np.testing.assert_array_equal(m.read(m.tensors["after"]), [0, 1, 2])


def test_bf16_decode_matches_ml_dtypes_known_values(tmp_path):
    vals = np.array([1.0, -2.5, 3.140625, 65280.0, -0.0, 1e-40], dtype=ml_dtypes.bfloat16)
    path = hostile.write_tensors(tmp_path / "b.safetensors", {"t": vals})
    with open_model(path) as m:
        got = m.read(m.tensors["t"])
    np.testing.assert_array_equal(got, vals.astype(np.float32))
    assert got[:4].tolist() == [1.0, -2.5, 3.140625, 65280.0]
    assert np.signbit(got[4])


def test_scalar_and_empty_tensors(tmp_path):
    path = hostile.write_tensors(
        tmp_path / "s.safetensors",
        {"scalar": np.array(3.5, np.float32), "empty": np.zeros((0, 4), np.float32), "v": np.arange(2, dtype=np.float32)},
    )
    with open_model(path) as m:
        assert m.tensors["scalar"].shape == () and m.tensors["scalar"].numel == 1
        assert m.read(m.tensors["scalar"]).tolist() == [3.5]
        assert m.tensors["empty"].numel == 0 and m.read(m.tensors["empty"]).shape == (0,)
        assert m.read(m.tensors["v"]).tolist() == [0.0, 1.0]


# -- ranged reads -------------------------------------------------------------------------------


@pytest.fixture(params=["F32", "BF16", "F8_E4M3"])
def matrix_model(tmp_path, request):
    code = request.param
    full = (np.arange(40 * 6, dtype=np.float32).reshape(40, 6) / 8).astype(hostile.NP_DTYPES[code])
    path = hostile.write_tensors(tmp_path / "m.safetensors", {"pre": np.ones(5, np.uint8), "m": full})
    with open_model(path) as m:
        yield m, m.tensors["m"], full.astype(np.float32)


@pytest.mark.parametrize(
    "rows",
    [
        [0],
        [39],
        [3, 4, 5, 6],  # adjacent, sorted: one read
        [7, 2, 30, 1],  # unsorted
        [6, 5, 4],  # adjacent but descending
        [10, 11, 2, 3, 12],  # two adjacent runs, interleaved
        [8, 8, 9],  # duplicates
        list(range(40))[::-1],
        [],
    ],
)
def test_read_rows(matrix_model, rows):
    m, info, full = matrix_model
    r = np.array(rows, dtype=np.int64)
    got = m.read_rows(info, r)
    assert got.shape == (len(rows), 6)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, full[r] if rows else np.zeros((0, 6), np.float32))


def test_read_rows_out_of_range(matrix_model):
    m, info, _ = matrix_model
    with pytest.raises(IndexError):
        m.read_rows(info, np.array([1, 40]))


@pytest.mark.parametrize("chunk", [1, 7, 60, 239, 240, 1000])
def test_iter_chunks_covers_tensor(matrix_model, chunk):
    m, info, full = matrix_model
    pieces = list(m.iter_chunks(info, chunk))
    starts = [s for s, _ in pieces]
    assert starts == list(range(0, 240, chunk))
    assert all(len(c) == min(chunk, 240 - s) for s, c in pieces)
    np.testing.assert_array_equal(np.concatenate([c for _, c in pieces]), full.ravel())


def test_read_raw_bounds_and_out_buffer(matrix_model):
    m, info, full = matrix_model
    with pytest.raises(IndexError):
        m.read_raw(info, 200, 41)
    with pytest.raises(IndexError):
        m.read_raw(info, -1, 2)
    buf = np.empty(100, dtype=info.dtype.storage)
    out = m.read_raw(info, 12, 30, out=buf)
    assert out.base is buf or out is buf or np.shares_memory(out, buf)
    np.testing.assert_array_equal(out.astype(np.float32), full.ravel()[12:42])


# -- identity -----------------------------------------------------------------------------------


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_digests_single(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": _rng().standard_normal(1000).astype(np.float32)}, str(path))
    with open_model(path) as m:
        assert m.file_digests() == {"w.safetensors": _sha(path)}
        assert m.file_records() is m.file_records()  # computed once


def test_file_digests_sharded(tmp_path):
    _write_shards(tmp_path)
    with open_model(tmp_path) as m:
        d = m.file_digests()
    shards = sorted(tmp_path.glob("pytorch_model-*.safetensors"))
    assert d == {p.name: _sha(p) for p in shards}


def test_file_digests_multi_block(tmp_path, monkeypatch):
    import modelkin.sources.digests as digests_mod

    monkeypatch.setattr(digests_mod, "HASH_BLOCK_BYTES", 1000)  # force several blocks
    path = tmp_path / "model.safetensors"
    save_file({"x": _rng().standard_normal(5000).astype(np.float32)}, str(path))
    with open_model(tmp_path) as m:
        assert m.file_digests(use_cache=False) == {"model.safetensors": _sha(path)}


def test_file_digest_cache_is_keyed_by_stat(tmp_path, monkeypatch):
    import os

    import modelkin.sources.digests as digests_mod

    monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "w.safetensors"
    save_file({"x": np.zeros(10, np.float32)}, str(path))
    first = digests_mod.sha256_file(path)
    assert first == _sha(path) and (tmp_path / "cache" / "sha256.json").is_file()
    import hashlib
    from types import SimpleNamespace

    calls = []
    monkeypatch.setattr(digests_mod, "hashlib", SimpleNamespace(sha256=lambda: calls.append(1) or hashlib.sha256()))
    assert digests_mod.sha256_file(path) == first and calls == []  # served from the cache
    save_file({"x": np.ones(10, np.float32)}, str(path))  # same size, new content and mtime
    os.utime(path, ns=(1, 10**18))
    assert digests_mod.sha256_file(path) == _sha(path) != first and calls == [1]  # re-hashed
    assert digests_mod.sha256_file(path, use_cache=False) == _sha(path) and calls == [1, 1]


def test_blob_named_by_a_sha256_is_hashed_not_trusted(tmp_path):
    """A file under blobs/<64 hex> may hold anything: its digest is computed, never read off its name."""
    from modelkin.sources.digests import sha256_file

    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"not what the name claims")
    assert sha256_file(blob, use_cache=False) == _sha(blob) != "ab" * 32


def test_file_records_say_how_the_digest_was_obtained(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": np.arange(4, dtype=np.float32)}, str(path))
    with open_model(path) as m:
        rec = m.file_records()["w.safetensors"]
    assert (rec.sha256, rec.sha256_source, rec.size) == (_sha(path), "hashed", path.stat().st_size)


def test_errors_are_modelkin_errors(tmp_path):
    with pytest.raises(ModelkinError):
        open_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):  # also the natural built-in
        open_model(tmp_path / "nope")


# -- dtypes beyond the common floats ----------------------------------------------------------------


def test_unsigned_scale_and_fp4_types_are_read(tmp_path):
    """U16/U32/U64, F8_E8M0 scales and packed F4 are read (decoded exactly), not rejected."""
    u16 = np.array([0, 1, 65535], np.uint16)
    u32 = np.array([0, 7, 2**32 - 1], np.uint32)
    u64 = np.array([0, 2**53 + 1], np.uint64)
    e8m0 = np.array([127, 128, 126], np.uint8)  # 2^0, 2^1, 2^-1
    f4 = np.array([0x21, 0xF7], np.uint8)  # low nibble first: 0.5, 1.0, 6.0, -6.0
    header = {
        "u16": {"dtype": "U16", "shape": [3], "data_offsets": [0, 6]},
        "u32": {"dtype": "U32", "shape": [3], "data_offsets": [6, 18]},
        "u64": {"dtype": "U64", "shape": [2], "data_offsets": [18, 34]},
        "e8m0": {"dtype": "F8_E8M0", "shape": [3], "data_offsets": [34, 37]},
        "f4": {"dtype": "F4", "shape": [4], "data_offsets": [37, 39]},
    }
    blob = json.dumps(header).encode()
    data = b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in (u16, u32, u64, e8m0, f4))
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + data)
    with open_model(path) as m:
        assert m.read(m.tensors["u16"]).tolist() == [0, 1, 65535]
        assert m.read(m.tensors["u32"]).tolist() == [0, 7, 2**32 - 1]
        assert m.read(m.tensors["e8m0"]).tolist() == [1.0, 2.0, 0.5]
        assert m.read(m.tensors["f4"]).tolist() == [0.5, 1.0, 6.0, -6.0]
        # 2^53 + 1 has no float64: the table says so instead of claiming exactness.
        assert not m.tensors["u64"].dtype.exact and m.tensors["u32"].dtype.exact
        assert m.read(m.tensors["u64"]).tolist() == [0.0, float(2**53)]


def test_bf16_decoding_reads_little_endian_bits_on_any_host():
    from modelkin.sources.dtypes import DTYPES, decode

    stored = np.frombuffer(bytes([0x80, 0x3F, 0x00, 0xC0]), dtype=DTYPES["BF16"].storage)  # 1.0, -2.0
    assert decode(stored, DTYPES["BF16"]).tolist() == [1.0, -2.0]
    swapped = stored.view(np.uint8).copy().view(np.dtype(DTYPES["BF16"].storage).newbyteorder(">"))
    # Whatever view the caller holds, the bytes are little-endian by the format's definition.
    assert decode(swapped, DTYPES["BF16"]).tolist() == [1.0, -2.0]


def test_digest_jobs_hash_every_file_of_several_models_on_widened_threads(tmp_path, monkeypatch):
    """The compare's hashing: one thread while the metric pass runs, more after; every file once, records
    per model by relative name, the cache filled by concurrent threads without losing an entry."""
    from modelkin.sources.digests import DigestJobs, sha256_file

    monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sharded").mkdir()
    _write_shards(tmp_path / "sharded")
    single = tmp_path / "single" / "model.safetensors"
    single.parent.mkdir()
    save_file({"x": _rng().standard_normal(3000).astype(np.float32)}, str(single))
    with open_model(tmp_path / "sharded") as a, open_model(single.parent) as b:
        jobs = DigestJobs((a, b), use_cache=True, workers=1)
        jobs.widen(3)
        rec_a, rec_b = jobs.result()
    shards = sorted((tmp_path / "sharded").glob("pytorch_model-*.safetensors"))
    assert {k: v.sha256 for k, v in rec_a.items()} == {p.name: _sha(p) for p in shards}
    assert {k: v.sha256 for k, v in rec_b.items()} == {"model.safetensors": _sha(single)}
    import modelkin.sources.digests as digests_mod

    monkeypatch.setattr(digests_mod, "hashlib", None)  # every file must now come from the cache
    assert all(sha256_file(p) == _sha(p) for p in [*shards, single])


def test_digest_jobs_report_a_failure(tmp_path):
    from modelkin.sources.digests import DigestJobs

    path = tmp_path / "w.safetensors"
    save_file({"x": np.zeros(10, np.float32)}, str(path))
    with open_model(path) as m:
        jobs = DigestJobs((m,), use_cache=False, workers=0)
        path.unlink()  # gone before it is hashed
        jobs.widen(2)
        with pytest.raises(FileNotFoundError):
            jobs.result()
