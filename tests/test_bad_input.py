"""Hostile and broken inputs: every one must become one ModelkinError naming the file and the problem.

Each case is checked twice: at the API (``open_model`` raises the right subclass with a useful message) and
through the CLI (``python -m modelkin compare A B`` exits 2 with exactly one ``modelkin: error: ...`` line on
stderr naming the file, and no traceback).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import save_file

from modelkin.errors import FormatError, ModelkinError, ShardIndexError, SourceNotFoundError
from modelkin.sources import open_model

try:  # tests/ may or may not become a package
    from . import hostile
except ImportError:
    import hostile

from_entry = hostile.entry
F32 = np.dtype("<f4")


@dataclass
class Case:
    build: Callable[[Path], Path]  # tmp_path -> the path to hand to open_model / the CLI
    error: type[ModelkinError]
    fragments: tuple[str, ...]  # lowercase substrings the message must contain
    names: Callable[[Path], tuple[str, ...]] | None = None  # file names the message must contain (default: the path's name)


def _data(n_floats: int) -> bytes:
    return np.arange(n_floats, dtype=F32).tobytes()


# -- builders -----------------------------------------------------------------------------------


def missing(tmp: Path) -> Path:
    return tmp / "no_such_model.safetensors"


def missing_folder(tmp: Path) -> Path:
    return tmp / "no_such_folder"


def folder_without_weights(tmp: Path) -> Path:
    d = tmp / "empty_model_dir"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "tf_model.h5").write_bytes(b"\0" * 16)
    return d


def zeros_named_bin(tmp: Path) -> Path:
    d = tmp / "zeros_model_dir"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"\0" * 16)
    return d / "pytorch_model.bin"


def wrong_extension(tmp: Path) -> Path:
    p = tmp / "weights.h5"
    save_file({"x": np.zeros(2, np.float32)}, str(p))
    return p


def safetensors_named_bin(tmp: Path) -> Path:
    p = tmp / "weights.bin"
    save_file({"x": np.zeros(2, np.float32)}, str(p))
    return p


def empty_file(tmp: Path) -> Path:
    p = tmp / "empty.safetensors"
    p.write_bytes(b"")
    return p


def short_length_prefix(tmp: Path) -> Path:
    p = tmp / "five_bytes.safetensors"
    p.write_bytes(b"\x10\0\0\0\0")
    return p


def truncated(tmp: Path) -> Path:
    p = hostile.write_tensors(tmp / "truncated.safetensors", {"a": np.arange(16, dtype=F32), "b": np.arange(16, dtype=F32)})
    data = p.read_bytes()
    p.write_bytes(data[:-10])
    return p


def header_beyond_file(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "long_header.safetensors", b'{"a":1}', n_header=4096)


def header_over_limit(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "huge_header.safetensors", b"{}" + b" " * 64, n_header=100_000_001)


def header_length_max_u64(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "u64_header.safetensors", b"{}", n_header=2**64 - 1)


def header_not_json(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "not_json.safetensors", b'{"a": [1, 2,', b"")


def header_not_brace(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "no_brace.safetensors", b'["a", "b"]')


def header_not_object_after_brace_spaces(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "leading_space.safetensors", b' {"a":1}')


def header_not_utf8(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "latin1.safetensors", b'{"caf\xe9": 1}')


def overlapping(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "overlap.safetensors", hostile.two_tensor_header((0, 16), (8, 24)), _data(6))


def out_of_range(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "out_of_range.safetensors", hostile.two_tensor_header((0, 16), (16, 64)), _data(8))


def negative_offset(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "negative_offset.safetensors", {"a": from_entry("F32", [2], -8, 0)}, _data(2))


def reversed_offsets(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "reversed.safetensors", {"a": from_entry("F32", [0], 8, 0)}, _data(2))


def hole(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "hole.safetensors", hostile.two_tensor_header((0, 16), (24, 40)), _data(10))


def trailing_bytes(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "trailing.safetensors", {"a": from_entry("F32", [4], 0, 16)}, _data(6))


def size_mismatch(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "size_mismatch.safetensors", {"a": from_entry("F32", [3, 3], 0, 32)}, _data(8))


def dtype_mismatch(tmp: Path) -> Path:
    # 8 elements of BF16 are 16 bytes, not 32
    return hostile.raw_file(tmp / "dtype_mismatch.safetensors", {"a": from_entry("BF16", [8], 0, 32)}, _data(8))


def shape_overflow_64(tmp: Path) -> Path:
    # 2**32 * 2**32 = 2**64 wraps to 0 in uint64: a wrapping implementation would accept data_offsets [0, 0].
    return hostile.raw_file(
        tmp / "overflow.safetensors",
        {"a": from_entry("U8", [2**32, 2**32], 0, 0), "b": from_entry("F32", [2], 0, 8)},
        _data(2),
    )


def shape_overflow_huge(tmp: Path) -> Path:
    dims = [2**62, 2**62, 2**62, 7]
    return hostile.raw_file(tmp / "overflow_huge.safetensors", {"a": from_entry("F32", dims, 0, 8)}, _data(2))


def unknown_dtype(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "unknown_dtype.safetensors", {"a": from_entry("F12", [2], 0, 8)}, _data(2))


def dtype_not_string(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "dtype_number.safetensors", {"a": from_entry(32, [2], 0, 8)}, _data(2))


def negative_dim(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "negative_dim.safetensors", {"a": from_entry("F32", [-2, -1], 0, 8)}, _data(2))


def float_dim(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "float_dim.safetensors", {"a": from_entry("F32", [2.0], 0, 8)}, _data(2))


def string_dim(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "string_dim.safetensors", {"a": from_entry("F32", ["2"], 0, 8)}, _data(2))


def bool_dim(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "bool_dim.safetensors", {"a": from_entry("F32", [True, 2], 0, 8)}, _data(2))


def entry_not_object(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "entry_list.safetensors", {"a": [1, 2, 3]}, b"")


def bad_metadata(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "bad_meta.safetensors", {"__metadata__": {"n": 1}}, b"")


def header_deeply_nested(tmp: Path) -> Path:
    return hostile.raw_file(tmp / "deep.safetensors", b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def header_duplicate_key(tmp: Path) -> Path:
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    return hostile.raw_file(tmp / "dup_key.safetensors", header, _data(2))


def index_deeply_nested(tmp: Path) -> Path:
    d = _sharded(tmp, None)
    (d / "foo.safetensors.index.json").write_text('{"weight_map":' + "[" * 200_000 + "]" * 200_000 + "}")
    return d


def config_deeply_nested(tmp: Path) -> Path:
    d = tmp / "deep_config_model"
    d.mkdir()
    save_file({"x": np.zeros(2, np.float32)}, str(d / "model.safetensors"))
    (d / "config.json").write_text('{"a":' + "[" * 200_000 + "]" * 200_000 + "}")
    return d


def huge_claimed(tmp: Path) -> Path:
    # A well-formed header claiming a 2**40-byte tensor (1 TiB) in a file of a few hundred bytes.
    return hostile.raw_file(tmp / "huge_claimed.safetensors", {"a": from_entry("F32", [2**38], 0, 2**40)}, _data(4))


def _sharded(tmp: Path, weight_map: dict | None, write: tuple[str, ...] = ("model-00001-of-00002.safetensors",), index="foo.safetensors.index.json") -> Path:
    d = tmp / "sharded"
    d.mkdir()
    for i, name in enumerate(write):
        save_file({f"t{i}": np.zeros(2, np.float32)}, str(d / name))
    hostile.index_file(d / index, weight_map)
    return d


def shard_missing(tmp: Path) -> Path:
    return _sharded(tmp, {"t0": "model-00001-of-00002.safetensors", "t1": "model-00002-of-00002.safetensors"})


def shard_parent_path(tmp: Path) -> Path:
    save_file({"t1": np.zeros(2, np.float32)}, str(tmp / "x.safetensors"))  # exists, but outside the folder
    return _sharded(tmp, {"t0": "model-00001-of-00002.safetensors", "t1": "../x.safetensors"})


def shard_absolute_path(tmp: Path) -> Path:
    outside = tmp / "elsewhere.safetensors"
    save_file({"t1": np.zeros(2, np.float32)}, str(outside))
    return _sharded(tmp, {"t0": "model-00001-of-00002.safetensors", "t1": str(outside)})


def index_without_weight_map(tmp: Path) -> Path:
    return _sharded(tmp, None)


def index_weight_map_not_object(tmp: Path) -> Path:
    d = _sharded(tmp, None)
    (d / "foo.safetensors.index.json").write_text(json.dumps({"weight_map": ["model-00001-of-00002.safetensors"]}))
    return d


def index_empty_weight_map(tmp: Path) -> Path:
    return _sharded(tmp, {})


def index_not_json(tmp: Path) -> Path:
    d = _sharded(tmp, None)
    (d / "foo.safetensors.index.json").write_text("{weight_map: ")
    return d


def index_names_absent_tensor(tmp: Path) -> Path:
    return _sharded(tmp, {"t0": "model-00001-of-00002.safetensors", "ghost": "model-00001-of-00002.safetensors"})


def invalid_config(tmp: Path) -> Path:
    d = tmp / "bad_config_model"
    d.mkdir()
    save_file({"x": np.zeros(2, np.float32)}, str(d / "model.safetensors"))
    (d / "config.json").write_text('{"hidden_size": 4,')
    return d


def config_not_object(tmp: Path) -> Path:
    d = tmp / "list_config_model"
    d.mkdir()
    save_file({"x": np.zeros(2, np.float32)}, str(d / "model.safetensors"))
    (d / "config.json").write_text("[1, 2]")
    return d


def duplicate_across_shards(tmp: Path) -> Path:
    d = tmp / "dup"
    d.mkdir()
    save_file({"shared": np.zeros(2, np.float32), "a": np.zeros(1, np.float32)}, str(d / "part-1.safetensors"))
    save_file({"shared": np.ones(2, np.float32), "b": np.zeros(1, np.float32)}, str(d / "part-2.safetensors"))
    hostile.index_file(d / "model.safetensors.index.json", {"shared": "part-1.safetensors", "a": "part-1.safetensors", "b": "part-2.safetensors"})
    return d


def bad_shard_inside_index(tmp: Path) -> Path:
    d = _sharded(tmp, {"t0": "model-00001-of-00002.safetensors", "t1": "model-00002-of-00002.safetensors"})
    hostile.raw_file(d / "model-00002-of-00002.safetensors", b"not json at all")
    return d


def _index(p: Path) -> tuple[str, ...]:
    return ("foo.safetensors.index.json",)


CASES: dict[str, Case] = {
    "missing_path": Case(missing, SourceNotFoundError, ("no such file",)),
    "missing_folder": Case(missing_folder, SourceNotFoundError, ("no such file",)),
    "folder_without_weights": Case(folder_without_weights, SourceNotFoundError, ("no weights",)),
    "wrong_extension": Case(wrong_extension, SourceNotFoundError, (".safetensors",)),
    "zeros_named_bin": Case(zeros_named_bin, FormatError, ("not a pytorch checkpoint",)),
    "safetensors_named_bin": Case(safetensors_named_bin, FormatError, ("not a pytorch checkpoint", "safetensors file")),
    "empty_file": Case(empty_file, FormatError, ("0 bytes", "too short")),
    "short_length_prefix": Case(short_length_prefix, FormatError, ("5 bytes", "too short")),
    "truncated": Case(truncated, FormatError, ("past the end", "truncated")),
    "header_beyond_file": Case(header_beyond_file, FormatError, ("header length 4096", "past the end")),
    "header_over_limit": Case(header_over_limit, FormatError, ("100000001", "limit")),
    "header_length_max_u64": Case(header_length_max_u64, FormatError, (str(2**64 - 1), "limit")),
    "header_not_json": Case(header_not_json, FormatError, ("not valid json",)),
    "header_not_brace": Case(header_not_brace, FormatError, ("start with '{'",)),
    "header_leading_space": Case(header_not_object_after_brace_spaces, FormatError, ("start with '{'",)),
    "header_not_utf8": Case(header_not_utf8, FormatError, ("utf-8",)),
    "overlapping_offsets": Case(overlapping, FormatError, ("overlap", "'b'")),
    "out_of_range_offsets": Case(out_of_range, FormatError, ("past the end", "'b'")),
    "negative_offset": Case(negative_offset, FormatError, ("data_offsets",)),
    "reversed_offsets": Case(reversed_offsets, FormatError, ("invalid data_offsets",)),
    "hole_between_tensors": Case(hole, FormatError, ("hole", "'b'")),
    "trailing_bytes": Case(trailing_bytes, FormatError, ("trailing",)),
    "shape_size_mismatch": Case(size_mismatch, FormatError, ("needs 36 bytes", "span 32")),
    "dtype_size_mismatch": Case(dtype_mismatch, FormatError, ("bf16", "needs 16 bytes", "span 32")),
    "shape_overflows_u64": Case(shape_overflow_64, FormatError, ("'a'", f"needs {2**64} bytes")),
    "shape_overflows_huge": Case(shape_overflow_huge, FormatError, ("'a'", "needs")),
    "unknown_dtype": Case(unknown_dtype, FormatError, ("unknown dtype", "f12")),
    "dtype_not_string": Case(dtype_not_string, FormatError, ("unknown dtype",)),
    "negative_dims": Case(negative_dim, FormatError, ("shape", "non-negative")),
    "float_dims": Case(float_dim, FormatError, ("shape", "integers")),
    "string_dims": Case(string_dim, FormatError, ("shape", "integers")),
    "bool_dims": Case(bool_dim, FormatError, ("shape", "integers")),
    "entry_not_object": Case(entry_not_object, FormatError, ("'a'", "not a json object")),
    "bad_metadata": Case(bad_metadata, FormatError, ("__metadata__",)),
    "header_deeply_nested": Case(header_deeply_nested, FormatError, ("nested too deeply",)),
    "header_duplicate_key": Case(header_duplicate_key, FormatError, ("'a' twice",)),
    "index_deeply_nested": Case(index_deeply_nested, ShardIndexError, ("shard index",), _index),
    "config_deeply_nested": Case(config_deeply_nested, FormatError, ("config.json",), lambda p: ("config.json",)),
    "huge_claimed_2_40": Case(huge_claimed, FormatError, (str(2**40), "past the end")),
    "shard_missing": Case(shard_missing, ShardIndexError, ("does not exist",), lambda p: ("foo.safetensors.index.json", "model-00002-of-00002.safetensors")),
    "shard_parent_path": Case(shard_parent_path, ShardIndexError, ("outside",), lambda p: ("foo.safetensors.index.json", "../x.safetensors")),
    "shard_absolute_path": Case(shard_absolute_path, ShardIndexError, ("outside",), lambda p: ("foo.safetensors.index.json", "elsewhere.safetensors")),
    "index_without_weight_map": Case(index_without_weight_map, ShardIndexError, ("weight_map",), _index),
    "index_weight_map_not_object": Case(index_weight_map_not_object, ShardIndexError, ("weight_map",), _index),
    "index_empty_weight_map": Case(index_empty_weight_map, ShardIndexError, ("weight_map",), _index),
    "index_not_json": Case(index_not_json, ShardIndexError, ("shard index",), _index),
    "index_names_absent_tensor": Case(index_names_absent_tensor, ShardIndexError, ("ghost", "lacks"), _index),
    "invalid_config": Case(invalid_config, FormatError, ("config.json", "not valid json"), lambda p: ("bad_config_model", "config.json")),
    "config_not_object": Case(config_not_object, FormatError, ("config.json", "not a json object"), lambda p: ("config.json",)),
    "duplicate_across_shards": Case(
        duplicate_across_shards, FormatError, ("'shared'", "both"), lambda p: ("part-1.safetensors", "part-2.safetensors")
    ),
    "bad_shard_file": Case(bad_shard_inside_index, FormatError, ("start with '{'",), lambda p: ("model-00002-of-00002.safetensors",)),
}


def _names(case: Case, path: Path) -> tuple[str, ...]:
    return case.names(path) if case.names else (path.name,)


@pytest.fixture
def good_model(tmp_path) -> Path:
    d = tmp_path / "good_model"
    d.mkdir()
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, str(d / "model.safetensors"))
    return d


# -- API ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_api_raises(tmp_path, name):
    case = CASES[name]
    path = case.build(tmp_path)
    with pytest.raises(case.error) as info:
        open_model(path)
    e = info.value
    assert isinstance(e, ModelkinError)
    assert e.exit_code == 2
    line = e.one_line()
    assert line == str(e)
    assert "\n" not in line and line.strip() == line and line
    assert e.path is not None
    for n in _names(case, path):
        assert n in line, f"{n!r} not named in {line!r}"
    for frag in case.fragments:
        assert frag in line.lower(), f"{frag!r} not in {line!r}"
    # no chained cause leaks out as a second traceback section
    assert e.__cause__ is None


def test_subclass_relations():
    assert issubclass(SourceNotFoundError, FileNotFoundError)
    assert issubclass(FormatError, ValueError)
    assert issubclass(ShardIndexError, FormatError)


def test_huge_claimed_fails_fast_without_allocating(tmp_path):
    path = huge_claimed(tmp_path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FormatError):
            open_model(path)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 1 << 20, f"peak traced allocation {peak} bytes"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 64 * 1024  # KiB: < 64 MiB growth


def test_huge_header_length_does_not_allocate(tmp_path):
    path = hostile.raw_file(tmp_path / "claims_99MB.safetensors", b"{}", n_header=99_999_999)  # under the limit, past the file
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="past the end"):
            open_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_sparse_huge_file_opens_lazily(tmp_path):
    """A *valid* file whose tensor really is 2**40 bytes (sparse on disk) opens without reading the data."""
    path = tmp_path / "sparse_tib.safetensors"
    hostile.raw_file(path, {"a": from_entry("U8", [2**20, 2**20], 0, 2**40)})
    try:
        os.truncate(path, path.stat().st_size + 2**40)
    except OSError:
        pytest.skip("filesystem cannot hold a sparse 1 TiB file")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with open_model(path) as m:
            info = m.tensors["a"]
            assert info.n_bytes == 2**40
            assert m.read_raw(info, 2**39, 16).tolist() == [0] * 16
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 1 << 20


# -- CLI ----------------------------------------------------------------------------------------


def _run_cli(a: Path, b: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "modelkin", "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _check_cli(proc: subprocess.CompletedProcess, names: tuple[str, ...]) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    lines = proc.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"stderr must be one non-empty line, got {proc.stderr!r}"
    assert lines[0].startswith("modelkin: error: "), lines[0]
    for n in names:
        assert n in lines[0], f"{n!r} not named in {lines[0]!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_first(tmp_path, good_model, name):
    case = CASES[name]
    path = case.build(tmp_path)
    _check_cli(_run_cli(path, good_model), _names(case, path))


@pytest.mark.parametrize("name", ["missing_path", "truncated", "header_not_utf8", "shard_parent_path", "invalid_config"])
def test_cli_bad_second(tmp_path, good_model, name):
    case = CASES[name]
    path = case.build(tmp_path)
    _check_cli(_run_cli(good_model, path), _names(case, path))
