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


def widen_qwen2(tensors: dict[str, np.ndarray], hidden: int, ffn: int, seed: int = 3) -> dict[str, np.ndarray]:
    """Net2Net-style growth of ``qwen2_tensors``: residual dims appended at zero, FFN units duplicated (the
    copies share the original's output weights), new query/key/value rows appended. Names are kept."""
    r = np.random.default_rng(seed)
    out = {}
    for k, v in tensors.items():
        h = v.shape[-1]
        if k.endswith(("embed_tokens.weight",)):
            out[k] = np.hstack([v, np.zeros((v.shape[0], hidden - h), np.float32)])
        elif k.endswith(("layernorm.weight", "norm.weight")):
            out[k] = np.concatenate([v, np.ones(hidden - v.shape[0], np.float32)])
        elif k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "lm_head.weight")):
            rows = v.shape[0] if k.endswith("lm_head.weight") else v.shape[0] * hidden // h
            w = 0.02 * r.normal(size=(rows, hidden)).astype(np.float32)
            w[: v.shape[0], :h] = v
            out[k] = w
        elif k.endswith("q_proj.bias"):
            out[k] = np.concatenate([v, np.zeros(v.shape[0] * hidden // h - v.shape[0], np.float32)])
        elif k.endswith("o_proj.weight"):
            w = np.zeros((hidden, hidden), np.float32)
            w[:h, :h] = v
            out[k] = w
        else:
            out[k] = v
    layers = {k.split(".layers.")[1].split(".")[0] for k in tensors if ".layers." in k}
    for layer in sorted(layers):
        p = f"model.layers.{layer}.mlp."
        up = tensors[p + "up_proj.weight"]
        dup = r.choice(up.shape[0], ffn - up.shape[0], replace=False)
        for name in ("gate_proj.weight", "up_proj.weight"):
            w = tensors[p + name]
            grown = np.vstack([w, w[dup]])
            out[p + name] = np.hstack([grown, 0.02 * r.normal(size=(ffn, hidden - w.shape[1]))]).astype(np.float32)
        down = tensors[p + "down_proj.weight"].copy()
        alpha = r.uniform(0.3, 0.7, size=len(dup)).astype(np.float32)
        copies = down[:, dup] * (1 - alpha)
        down[:, dup] *= alpha
        out[p + "down_proj.weight"] = np.vstack([np.hstack([down, copies]), np.zeros((hidden - down.shape[0], ffn), np.float32)])
    return out


def resnet_tensors(seed: int, widths=(48, 96), classes: int = 10) -> dict[str, np.ndarray]:
    """Random torchvision-named BasicBlock ResNet weights (one block per stage), BatchNorms included."""
    r = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {}

    def conv(name, cout, cin, k=3):
        t[name + ".weight"] = r.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k)

    def bn(name, c):
        t[name + ".weight"], t[name + ".bias"] = 1 + 0.1 * r.normal(size=c), 0.1 * r.normal(size=c)
        t[name + ".running_mean"], t[name + ".running_var"] = r.normal(size=c), r.uniform(0.5, 2, size=c)

    conv("conv1", widths[0], 3)
    bn("bn1", widths[0])
    cin = widths[0]
    for s, w in enumerate(widths, start=1):
        b = f"layer{s}.0."
        conv(b + "conv1", w, cin)
        bn(b + "bn1", w)
        conv(b + "conv2", w, w)
        bn(b + "bn2", w)
        if cin != w:
            conv(b + "downsample.0", w, cin, 1)
            bn(b + "downsample.1", w)
        cin = w
    t["fc.weight"], t["fc.bias"] = r.normal(size=(classes, cin)) / np.sqrt(cin), np.zeros(classes)
    return {k: v.astype(np.float32) for k, v in t.items()}


def permute_prune_resnet(t: dict[str, np.ndarray], seed: int, fraction: float = 0.2):
    """Permute every channel group of ``resnet_tensors`` consistently, then drop ``fraction`` of each block's
    inner channels (smallest L1 filters). Returns (tensors, truth): truth maps a kept channel map's first
    module to the parent channel of each child channel."""
    r = np.random.default_rng(seed)
    out = dict(t)
    stages = sorted({k.split(".")[0] for k in t if k.startswith("layer")})
    widths = [t[f"{s}.0.conv2.weight"].shape[0] for s in stages]
    streams = [r.permutation(w) for w in widths]

    def out_perm(conv, bn, p):
        out[conv + ".weight"] = out[conv + ".weight"][p]
        for x in ("weight", "bias", "running_mean", "running_var"):
            out[f"{bn}.{x}"] = out[f"{bn}.{x}"][p]

    out_perm("conv1", "bn1", streams[0])
    truth = {"conv1": streams[0]}
    for i, s in enumerate(stages):
        b = f"{s}.0."
        p_in = streams[max(i - 1, 0)]
        inner = r.permutation(out[b + "conv1.weight"].shape[0])
        out[b + "conv1.weight"] = out[b + "conv1.weight"][:, p_in]
        out_perm(b + "conv1", b + "bn1", inner)
        out[b + "conv2.weight"] = out[b + "conv2.weight"][:, inner]
        out_perm(b + "conv2", b + "bn2", streams[i])
        if b + "downsample.0.weight" in out:
            out[b + "downsample.0.weight"] = out[b + "downsample.0.weight"][:, p_in]
            out_perm(b + "downsample.0", b + "downsample.1", streams[i])
        w = out[b + "conv1.weight"]
        keep = np.sort(np.argsort(-np.abs(w).sum((1, 2, 3)))[: int(round(w.shape[0] * (1 - fraction)))])
        out[b + "conv1.weight"] = w[keep]
        for x in ("weight", "bias", "running_mean", "running_var"):
            out[f"{b}bn1.{x}"] = out[f"{b}bn1.{x}"][keep]
        out[b + "conv2.weight"] = out[b + "conv2.weight"][:, keep]
        truth[b + "conv1"] = inner[keep]
        truth[b + "conv2"] = streams[i]
    out["fc.weight"] = out["fc.weight"][:, streams[-1]]
    return out, truth


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
