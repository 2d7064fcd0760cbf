"""Finding the weights of a local model: one file, a folder, or a sharded folder with an index.

Which files are weights is the format registry's business (``formats``); this module only walks the
file system, checks shard indexes and gathers config and tokenizer files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import FormatError, ShardIndexError, SourceNotFoundError
from .formats import FORMATS, Format, alternatives_message, format_of, index_format
from .model import ModelSource
from .tensors import TensorInfo
from .transport import LocalFile
from .weightfile import WeightFile

SIDE_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json", "preprocessor_config.json")


def _suffix_list() -> str:
    return ", ".join(s for f in FORMATS for s in f.suffixes)


def open_local(location: str | Path) -> ModelSource:
    path = Path(location)
    if not path.exists():
        raise SourceNotFoundError("no such file or folder", path)
    if path.is_file():
        if (fmt := index_format(path.name)) is not None:
            return _from_index(path.parent, path, str(location), fmt)
        if (fmt := format_of(path.name)) is None:
            raise SourceNotFoundError(f"not a weights file ({_suffix_list()}) or a model folder", path)
        if fmt.self_contained:
            return self_contained_source(str(location), path, fmt.opener(LocalFile(path)))
        return _assemble(str(location), path, (fmt.opener(LocalFile(path)),), path.parent)
    for fmt in FORMATS:
        found = _open_folder(path, str(location), fmt)
        if found is not None:
            return found
    raise SourceNotFoundError(f"folder holds no weights (looked for {_suffix_list()} files and their shard indexes)", path)


def _open_folder(path: Path, location: str, fmt: Format) -> ModelSource | None:
    if fmt.index_suffix:
        indexes = sorted(path.glob("*" + fmt.index_suffix))
        if indexes:
            preferred = [p for p in indexes if p.name in {n + ".index.json" for n in fmt.preferred}]
            if len(indexes) > 1 and not preferred:
                names = ", ".join(p.name for p in indexes)
                raise ShardIndexError(f"several shard indexes ({names}); give the one to use", path)
            return _from_index(path, (preferred or indexes)[0], location, fmt)
    singles = [path / n for n in fmt.preferred if (path / n).is_file()]
    candidates = singles[:1] or sorted(p for p in path.iterdir() if p.is_file() and fmt.weights_in_folder(p.name))
    if not candidates:
        return None
    if len(candidates) > 1 and fmt.whole_file:
        raise SourceNotFoundError(alternatives_message(fmt, [p.name for p in candidates], "give the path of the one to use"), path)
    return _assemble(location, path, tuple(fmt.opener(LocalFile(p)) for p in candidates), path)


def read_weight_map(index_path: Path) -> dict[str, str]:
    """The ``weight_map`` of a local shard index, validated."""
    try:
        data = index_path.read_bytes()
    except OSError as e:
        raise ShardIndexError(f"cannot read shard index: {e}", index_path) from None
    return parse_weight_map(data, index_path)


def _json_document(data: bytes | str, what: str, where, error: type[FormatError]) -> object:
    """A JSON file's content parsed; undecodable bytes and malformed or too deeply nested JSON -> ``error``.

    Takes bytes so every caller (local files, Hub downloads, HTTP bodies) gets the same UTF-8 handling;
    a caller decoding itself let UnicodeDecodeError escape (found by the fuzz harness)."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as e:
        raise error(f"{what} is not valid UTF-8 (byte {e.start})", where) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", where) from None
    except RecursionError:
        raise error(f"{what} is nested too deeply", where) from None


def parse_weight_map(data: bytes | str, index_path) -> dict[str, str]:
    """The ``weight_map`` of a shard index's content (tensor name -> shard file name), validated."""
    index = _json_document(data, "shard index", index_path, ShardIndexError)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ShardIndexError("shard index has no 'weight_map' object of tensor name -> file name", index_path)
    if not weight_map:
        raise ShardIndexError("shard index has an empty 'weight_map' (no tensors)", index_path)
    for shard_name in weight_map.values():
        if not shard_name or shard_name.startswith(("/", "\\")) or ".." in Path(shard_name).parts:
            raise ShardIndexError(f"shard {shard_name!r} lies outside the model folder", index_path)
    return weight_map


def check_weight_map(weight_map: dict[str, str], shards: dict[str, WeightFile], index_path) -> None:
    for name, shard_name in weight_map.items():
        if name not in shards[shard_name].tensors:
            raise ShardIndexError(f"index puts tensor {name!r} in {shard_name!r}, whose header lacks it", index_path)


def _from_index(folder: Path, index_path: Path, location: str, fmt: Format) -> ModelSource:
    weight_map = read_weight_map(index_path)
    # Containment is checked on the names, not on resolved paths: shards are often symlinks to files
    # elsewhere (the Hugging Face cache links snapshots/<rev>/*.safetensors to ../../blobs/<sha>).
    root = Path(os.path.abspath(folder))
    shards: dict[str, WeightFile] = {}
    for shard_name in dict.fromkeys(weight_map.values()):
        shard = Path(os.path.normpath(root / shard_name))
        if shard == root or not shard.is_relative_to(root):
            raise ShardIndexError(f"shard {shard_name!r} lies outside the model folder", index_path)
        if not shard.is_file():
            raise ShardIndexError(f"shard {shard_name!r} named in the index does not exist", index_path)
        shards[shard_name] = fmt.opener(LocalFile(shard))
    check_weight_map(weight_map, shards, index_path)
    return _assemble(location, folder, tuple(shards.values()), folder)


def gather_tensors(files: tuple[WeightFile, ...], where) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for name, info in f.tensors.items():
            if name in tensors:
                raise FormatError(f"tensor {name!r} appears in both {os.path.basename(tensors[name].file)} and {os.path.basename(f.name)}", where)
            tensors[name] = info
    return tensors


def read_config(config_path: Path) -> dict:
    try:
        data = config_path.read_bytes()
    except OSError as e:
        raise FormatError(f"cannot read config.json: {e.strerror or e}", config_path) from None
    return parse_config(data, config_path)


def parse_config(data: bytes | str, config_path) -> dict:
    """config.json's content as a dict (its values are checked where they are used)."""
    config = _json_document(data, "config.json", config_path, FormatError)
    if not isinstance(config, dict):
        raise FormatError("config.json is not a JSON object", config_path)
    return config


def _assemble(location: str, root: Path, files: tuple[WeightFile, ...], folder: Path) -> ModelSource:
    tensors = gather_tensors(files, folder)
    config_path = folder / "config.json"
    config = read_config(config_path) if config_path.is_file() else None
    if config is None:
        config = next((c for f in files if (c := f.embedded_config()) is not None), None)
        config_path = None
    extra = {name: folder / name for name in SIDE_FILES if (folder / name).is_file()}
    return ModelSource(location, root, files, tensors, config, config_path if config is not None else None, extra)


def self_contained_source(location: str, root, f: WeightFile) -> ModelSource:
    """A model in one file that carries its own config, vocabulary and provenance (a fingerprint)."""
    src = ModelSource(location, root, (f,), dict(f.tensors), f.embedded_config(), None, {},
                      getattr(f, "source_revision", None))
    digests = f.source_digests() if hasattr(f, "source_digests") else None
    if digests is not None:
        src._digests = digests
    return src
