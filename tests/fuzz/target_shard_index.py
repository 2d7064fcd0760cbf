"""Fuzz target: shard index files (``*.safetensors.index.json``, ``pytorch_model.bin.index.json``).

``fuzz_one(data)`` parses ``data`` with ``modelkin.sources.local.parse_weight_map`` (the code path of local
folders, Hub repositories and URLs alike) and checks the map against stand-in shards whose headers list
the tensors of ``SHARDS`` (a shard name the seeds do not use has no tensors), as ``check_weight_map`` does
after opening real shards. Bad input may raise only ``ModelkinError``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from modelkin.sources.local import check_weight_map, parse_weight_map

SHARDS = {
    "model-00001-of-00002.safetensors": ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"],
    "model-00002-of-00002.safetensors": ["model.layers.0.mlp.up_proj.weight", "lm_head.weight"],
    "pytorch_model-00001-of-00001.bin": ["bert.embeddings.word_embeddings.weight"],
}


def fuzz_one(data: bytes) -> None:
    where = "fuzz/model.safetensors.index.json"
    weight_map = parse_weight_map(data, where)
    shards = {name: SimpleNamespace(tensors=dict.fromkeys(SHARDS.get(name, ()))) for name in set(weight_map.values())}
    check_weight_map(weight_map, shards, where)


def _index(names: list[str], total: int | None = 1234) -> bytes:
    doc: dict = {"metadata": {"total_size": total}} if total is not None else {}
    doc["weight_map"] = {t: n for n in names for t in SHARDS[n]}
    return json.dumps(doc, indent=2).encode()


SEEDS: list[bytes] = [
    _index(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]),
    _index(["pytorch_model-00001-of-00001.bin"], total=None),
    json.dumps({"metadata": {"total_size": 8, "format": "pt"}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}).encode(),
]
