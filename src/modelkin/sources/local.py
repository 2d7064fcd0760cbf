"""Finding the weights of a local model: one file, a folder, or a sharded folder with an index."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import FormatError, ShardIndexError, SourceNotFoundError
from .model import ModelSource
from .safetensors_format import SafetensorsFile
from .tensors import TensorInfo

INDEX_SUFFIX = ".safetensors.index.json"
PREFERRED_SINGLE = "model.safetensors"
SIDE_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json", "preprocessor_config.json")


def open_local(location: str | Path) -> ModelSource:
    path = Path(location)
    if not path.exists():
        raise SourceNotFoundError("no such file or folder", path)
    if path.is_file():
        if path.name.endswith(INDEX_SUFFIX):
            return _from_index(path.parent, path, str(location))
        if path.suffix != ".safetensors":
            raise SourceNotFoundError("not a .safetensors file or a model folder", path)
        files = (SafetensorsFile(path),)
        return _assemble(str(location), path, files, path.parent)
    indexes = sorted(path.glob("*" + INDEX_SUFFIX))
    if indexes:
        preferred = [p for p in indexes if p.name == PREFERRED_SINGLE + ".index.json"]
        if len(indexes) > 1 and not preferred:
            names = ", ".join(p.name for p in indexes)
            raise ShardIndexError(f"several shard indexes ({names}); give the one to use", path)
        return _from_index(path, (preferred or indexes)[0], str(location))
    single = path / PREFERRED_SINGLE
    candidates = [single] if single.is_file() else sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if not candidates:
        raise SourceNotFoundError("folder holds no weights (looked for *.safetensors and *.safetensors.index.json)", path)
    return _assemble(str(location), path, tuple(SafetensorsFile(p) for p in candidates), path)


def _from_index(folder: Path, index_path: Path, location: str) -> ModelSource:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ShardIndexError(f"cannot read shard index: {e}", index_path) from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ShardIndexError("shard index has no 'weight_map' object of tensor name -> file name", index_path)
    if not weight_map:
        raise ShardIndexError("shard index has an empty 'weight_map' (no tensors)", index_path)
    # Containment is checked on the names, not on resolved paths: shards are often symlinks to files
    # elsewhere (the Hugging Face cache links snapshots/<rev>/*.safetensors to ../../blobs/<sha>).
    root = Path(os.path.abspath(folder))
    shards: dict[str, SafetensorsFile] = {}
    for shard_name in dict.fromkeys(weight_map.values()):
        shard = Path(os.path.normpath(root / shard_name))
        if not shard_name or Path(shard_name).is_absolute() or shard == root or not shard.is_relative_to(root):
            raise ShardIndexError(f"shard {shard_name!r} lies outside the model folder", index_path)
        if not shard.is_file():
            raise ShardIndexError(f"shard {shard_name!r} named in the index does not exist", index_path)
        shards[shard_name] = SafetensorsFile(shard)
    for name, shard_name in weight_map.items():
        if name not in shards[shard_name].tensors:
            raise ShardIndexError(f"index puts tensor {name!r} in {shard_name!r}, whose header lacks it", index_path)
    return _assemble(location, folder, tuple(shards.values()), folder)


def _assemble(location: str, root: Path, files: tuple[SafetensorsFile, ...], folder: Path) -> ModelSource:
    tensors: dict[str, TensorInfo] = {}
    for f in files:
        for name, info in f.tensors.items():
            if name in tensors:
                raise FormatError(f"tensor {name!r} appears in both {os.path.basename(tensors[name].file)} and {os.path.basename(f.name)}", folder)
            tensors[name] = info
    config, config_path = None, folder / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise FormatError(f"config.json is not valid JSON: {e}", config_path) from None
        if not isinstance(config, dict):
            raise FormatError("config.json is not a JSON object", config_path)
    else:
        config_path = None
    extra = {name: folder / name for name in SIDE_FILES if (folder / name).is_file()}
    return ModelSource(location, root, files, tensors, config, config_path, extra)
