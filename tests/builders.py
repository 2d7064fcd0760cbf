"""Tiny numpy models for the engine's tests (the torch-trained zoo lives in modelkin.zoo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def qwen2_tensors(seed: int, hidden: int = 64, ffn: int = 128, vocab: int = 256, layers: int = 2, prefix: str = "model.") -> dict[str, np.ndarray]:
    """Random Qwen2-named weights; norm gains near 1 as in trained models."""
    r = np.random.default_rng(seed)
    t = {f"{prefix}embed_tokens.weight": r.normal(size=(vocab, hidden))}
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        for name, shape in [
            ("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden // 2, hidden)),
            ("self_attn.v_proj", (hidden // 2, hidden)), ("self_attn.o_proj", (hidden, hidden)),
            ("mlp.gate_proj", (ffn, hidden)), ("mlp.up_proj", (ffn, hidden)), ("mlp.down_proj", (hidden, ffn)),
        ]:
            t[p + name + ".weight"] = r.normal(size=shape) / np.sqrt(shape[1])
        t[p + "self_attn.q_proj.bias"] = r.normal(size=hidden) * 0.01
        t[p + "input_layernorm.weight"] = 1 + 0.02 * r.normal(size=hidden)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.02 * r.normal(size=hidden)
    t[f"{prefix}norm.weight"] = 1 + 0.02 * r.normal(size=hidden)
    t["lm_head.weight"] = r.normal(size=(vocab, hidden))
    return {k: v.astype(np.float32) for k, v in t.items()}


def perturb(tensors: dict[str, np.ndarray], noise: float, seed: int = 99) -> dict[str, np.ndarray]:
    """A 'fine-tuned child': every tensor plus noise relative to its own scale."""
    r = np.random.default_rng(seed)
    return {k: (v + noise * v.std() * r.normal(size=v.shape)).astype(v.dtype) for k, v in tensors.items()}


def write_model(folder: Path, tensors: dict[str, np.ndarray], config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder
