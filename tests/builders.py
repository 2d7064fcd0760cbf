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


READS_RESIDUAL = ("embed_tokens", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "lm_head")
WRITES_RESIDUAL = ("o_proj", "down_proj")


def transform_residual(tensors: dict[str, np.ndarray], q: np.ndarray) -> dict[str, np.ndarray]:
    """Apply an orthogonal (or permutation) matrix q to the residual stream; norm gains are folded first
    so the transformed model computes the same function (RMSNorm commutes with orthogonal maps)."""
    out = {}
    gains = {}
    for k, v in tensors.items():
        if k.endswith("layernorm.weight") or k.endswith("model.norm.weight"):
            gains[k] = v
            out[k] = np.ones_like(v)
    for k, v in tensors.items():
        if k in out:
            continue
        if v.ndim == 2 and any(s in k for s in READS_RESIDUAL):
            g = 1.0
            layer = k.split(".layers.")[1].split(".")[0] if ".layers." in k else None
            if layer is not None and any(s in k for s in ("q_proj", "k_proj", "v_proj")):
                g = gains[f"model.layers.{layer}.input_layernorm.weight"]
            elif layer is not None:
                g = gains[f"model.layers.{layer}.post_attention_layernorm.weight"]
            elif "lm_head" in k:
                g = gains["model.norm.weight"]
            out[k] = ((v * g) @ q.T).astype(np.float32)
        elif v.ndim == 2 and any(s in k for s in WRITES_RESIDUAL):
            out[k] = (q @ v).astype(np.float32)
        else:
            out[k] = v
    return out


def permute_ffn_units(tensors: dict[str, np.ndarray], seed: int = 5) -> dict[str, np.ndarray]:
    """Reorder every layer's FFN units (rows of gate/up, columns of down): the function is unchanged."""
    r = np.random.default_rng(seed)
    out = dict(tensors)
    layers = {k.split(".layers.")[1].split(".")[0] for k in tensors if ".layers." in k}
    for layer in layers:
        p = f"model.layers.{layer}.mlp."
        perm = r.permutation(tensors[p + "up_proj.weight"].shape[0])
        out[p + "gate_proj.weight"] = tensors[p + "gate_proj.weight"][perm]
        out[p + "up_proj.weight"] = tensors[p + "up_proj.weight"][perm]
        out[p + "down_proj.weight"] = tensors[p + "down_proj.weight"][:, perm]
    return out


def write_tokenizer(folder: Path, tokens: list[str]) -> None:
    """A word-level tokenizer.json whose id i is tokens[i]."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    Tokenizer(WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0])).save(str(folder / "tokenizer.json"))


def vlm_tensors(seed: int, hidden: int = 64, ffn: int = 128, vocab: int = 256, layers: int = 2,
                v_hidden: int = 64, v_ffn: int = 128, v_depth: int = 2, patch: int = 14) -> dict[str, np.ndarray]:
    """Random Qwen2.5-VL-named weights: a qwen2 text tower, a vision tower and its merger."""
    r = np.random.default_rng(seed + 1000)
    t = qwen2_tensors(seed, hidden, ffn, vocab, layers)
    t["visual.patch_embed.proj.weight"] = r.normal(size=(v_hidden, 3, 2, patch, patch)) / 24
    for i in range(v_depth):
        p = f"visual.blocks.{i}."
        for name, shape in [("attn.qkv", (3 * v_hidden, v_hidden)), ("attn.proj", (v_hidden, v_hidden)),
                            ("mlp.gate_proj", (v_ffn, v_hidden)), ("mlp.up_proj", (v_ffn, v_hidden)),
                            ("mlp.down_proj", (v_hidden, v_ffn))]:
            t[p + name + ".weight"] = r.normal(size=shape) / np.sqrt(shape[1])
        t[p + "norm1.weight"] = 1 + 0.02 * r.normal(size=v_hidden)
        t[p + "norm2.weight"] = 1 + 0.02 * r.normal(size=v_hidden)
    t["visual.merger.ln_q.weight"] = 1 + 0.02 * r.normal(size=v_hidden)
    t["visual.merger.mlp.0.weight"] = r.normal(size=(4 * v_hidden, 4 * v_hidden)) / np.sqrt(4 * v_hidden)
    t["visual.merger.mlp.2.weight"] = r.normal(size=(hidden, 4 * v_hidden)) / np.sqrt(4 * v_hidden)
    return {k: v.astype(np.float32) for k, v in t.items()}


def vlm_config(hidden: int, ffn: int, vocab: int, layers: int, v_hidden: int, v_ffn: int, v_depth: int, patch: int = 14) -> dict:
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "intermediate_size": ffn,
        "num_attention_heads": max(1, hidden // 64), "num_key_value_heads": max(1, hidden // 128),
        "vision_config": {"depth": v_depth, "hidden_size": v_hidden, "intermediate_size": v_ffn,
                          "num_heads": max(1, v_hidden // 64), "patch_size": patch, "temporal_patch_size": 2,
                          "spatial_merge_size": 2, "out_hidden_size": hidden, "in_chans": 3},
    }
