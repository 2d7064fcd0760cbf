"""Fuzz target: reading ``config.json`` (``modelkin.sources.local.parse_config``) and what uses it.

``fuzz_one(data)`` parses ``data`` as a config.json and builds the inventory of a small fixed set of
tensors with it (the config's ``model_type`` picks the family; a hostile value must not break the rules'
matching). Bad input may raise only ``ModelkinError``. ``SEEDS`` are the configs of the repository's
examples (a Qwen2 LM and a Qwen2.5-VL with a nested ``vision_config``) and small Llama, GPT-2 and BERT ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelkin.inventory import build_inventory
from modelkin.sources.dtypes import lookup
from modelkin.sources.local import parse_config
from modelkin.sources.model import ModelSource
from modelkin.sources.tensors import TensorInfo

F32 = lookup("F32")
TENSORS = {
    name: TensorInfo(name, F32, shape, "fuzz.safetensors", 0, 4 * shape[0] * shape[-1])
    for name, shape in (
        ("model.embed_tokens.weight", (512, 64)),
        ("model.layers.0.self_attn.q_proj.weight", (64, 64)),
        ("model.layers.1.mlp.down_proj.weight", (64, 128)),
        ("visual.blocks.0.attn.qkv.weight", (192, 64)),
        ("transformer.h.0.attn.c_attn.weight", (64, 192)),
        ("model.norm.weight", (64,)),
    )
}


def fuzz_one(data: bytes) -> None:
    config = parse_config(data, "fuzz/config.json")
    build_inventory(ModelSource("fuzz", "fuzz", (), dict(TENSORS), config))


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS: list[bytes] = [
    (EXAMPLES / "base" / "config.json").read_bytes(),
    (EXAMPLES / "vlm-donor" / "config.json").read_bytes(),
    json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}).encode(),
    json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "architectures": ["GPT2LMHeadModel"]}).encode(),
    json.dumps({"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 1, "vocab_size": 512}, indent=1).encode(),
]
