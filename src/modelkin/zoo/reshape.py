"""Derivations that change a model's shape: width growth of a decoder, permuted and pruned ResNets.

Both start with a function-preserving step, checked numerically by the build (``max_logit_diff``):

* ``widen_decoder`` (Net2Net-style): a wider residual stream (new dimensions start at zero everywhere, norm
  gains rescaled so RMSNorm over the wider vector gives the same values), more attention heads (new heads'
  output columns start at zero), a wider FFN (units duplicated, each copy taking a share of the original's
  output weights: α and 1 − α, α random, so the sum is exact and the copies differ), and a new layer inserted
  in the middle whose output projections start at zero (an identity block). The caller then fine-tunes.
* ``permute_resnet``: every channel group of a ResNet permuted consistently — each stage's residual stream
  (stem, block outputs, shortcuts, BatchNorms, the classifier's inputs) and each block's inner channels.
  ``prune_resnet`` then removes a fraction of each block's inner channels by the L1 norm of their filters
  (Li et al., "Pruning Filters for Efficient ConvNets"); not function-preserving, healed by fine-tuning.
"""

from __future__ import annotations

import math

import torch

from .derive import _rebuild
from .models import CausalLM, DecoderConfig, ResNet

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@torch.no_grad()
def widen_decoder(model: CausalLM, hidden: int, intermediate: int, heads: int, kv_heads: int, insert_layer: bool,
                  seed: int) -> CausalLM:
    """A wider (and, with ``insert_layer``, one layer deeper) decoder computing the same function."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    hd = c.head_dim
    if hidden // heads != hd or heads % kv_heads or heads // kv_heads != c.num_attention_heads // c.num_key_value_heads:
        raise ValueError("widening keeps the head size and the query heads per key/value head")
    old = model.state_dict()
    H, H2, F, F2 = c.hidden_size, hidden, c.intermediate_size, intermediate
    gain = math.sqrt(H / H2)  # RMSNorm over H2 dims of which H are non-zero: rescale the gains to compensate
    noise = lambda *shape: 0.02 * torch.randn(*shape, generator=g)  # noqa: E731  (reads only zero dims, or unused)

    def reader(w: torch.Tensor, rows: int) -> torch.Tensor:  # [out, H] -> [rows, H2]: new inputs read zeros
        out = noise(rows, H2)
        out[: w.shape[0], :H] = w
        return out

    def writer(w: torch.Tensor, cols: int) -> torch.Tensor:  # [H, in] -> [H2, cols]: new dims and inputs zero
        out = torch.zeros(H2, cols)
        out[:H, : w.shape[1]] = w
        return out

    def norm(w: torch.Tensor) -> torch.Tensor:
        return torch.cat([w * gain, torch.full((H2 - H,), gain)])

    def bias(b: torch.Tensor, rows: int) -> torch.Tensor:
        return torch.cat([b, torch.zeros(rows - b.shape[0])])

    sd = {"model.embed_tokens.weight": torch.cat([old["model.embed_tokens.weight"], torch.zeros(c.vocab_size, H2 - H)], 1),
          "lm_head.weight": reader(old["lm_head.weight"], c.vocab_size), "model.norm.weight": norm(old["model.norm.weight"])}
    dup = torch.randperm(F, generator=g)[: F2 - F]  # FFN units that get a copy
    alpha = 0.25 + 0.5 * torch.rand(F2 - F, generator=g)
    layers = list(range(c.num_hidden_layers))
    if insert_layer:
        layers.insert(len(layers) // 2 + 1, None)
    for j, i in enumerate(layers):
        src, dst = f"model.layers.{i}.", f"model.layers.{j}."
        if i is None:  # a new identity block: random readers, zero writers
            for x, rows in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
                sd[f"{dst}self_attn.{x}_proj.weight"] = noise(rows, H2)
                if c.qkv_bias:
                    sd[f"{dst}self_attn.{x}_proj.bias"] = torch.zeros(rows)
            sd[f"{dst}self_attn.o_proj.weight"] = torch.zeros(H2, heads * hd)
            sd[f"{dst}mlp.gate_proj.weight"], sd[f"{dst}mlp.up_proj.weight"] = noise(F2, H2), noise(F2, H2)
            sd[f"{dst}mlp.down_proj.weight"] = torch.zeros(H2, F2)
            sd[f"{dst}input_layernorm.weight"] = torch.full((H2,), gain)
            sd[f"{dst}post_attention_layernorm.weight"] = torch.full((H2,), gain)
            if c.qk_norm:
                sd[f"{dst}self_attn.q_norm.weight"] = torch.ones(hd)
                sd[f"{dst}self_attn.k_norm.weight"] = torch.ones(hd)
            continue
        for x, rows in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
            sd[f"{dst}self_attn.{x}_proj.weight"] = reader(old[f"{src}self_attn.{x}_proj.weight"], rows)
            if f"{src}self_attn.{x}_proj.bias" in old:
                sd[f"{dst}self_attn.{x}_proj.bias"] = bias(old[f"{src}self_attn.{x}_proj.bias"], rows)
        sd[f"{dst}self_attn.o_proj.weight"] = writer(old[f"{src}self_attn.o_proj.weight"], heads * hd)
        for n in ("q_norm", "k_norm"):
            if f"{src}self_attn.{n}.weight" in old:
                sd[f"{dst}self_attn.{n}.weight"] = old[f"{src}self_attn.{n}.weight"].clone()
        for n in ("input_layernorm", "post_attention_layernorm"):
            sd[f"{dst}{n}.weight"] = norm(old[f"{src}{n}.weight"])
        for x in ("gate", "up"):
            w = old[f"{src}mlp.{x}_proj.weight"]
            sd[f"{dst}mlp.{x}_proj.weight"] = reader(torch.cat([w, w[dup]]), F2)
        down = old[f"{src}mlp.down_proj.weight"].clone()
        copies = down[:, dup] * (1 - alpha)
        down[:, dup] *= alpha
        sd[f"{dst}mlp.down_proj.weight"] = writer(torch.cat([down, copies], 1), F2)
    # RMSNorm's eps is added to the mean square, which the zero dimensions shrink by H / H2: shrink eps alike.
    cfg = DecoderConfig(**{**c.__dict__, "hidden_size": H2, "intermediate_size": F2, "num_attention_heads": heads,
                           "num_key_value_heads": kv_heads, "num_hidden_layers": len(layers),
                           "rms_norm_eps": c.rms_norm_eps * H / H2})
    return _rebuild(model, cfg.hf_dict(), sd)


def _stage_layout(model: ResNet) -> list[list[str]]:
    """Block prefixes per stage: [["layer1.0.", ...], ["layer2.0.", ...]]."""
    c = model.config
    return [[f"layer{k + 1}.{j}." for j in range(n)] for k, n in enumerate(c.blocks)]


@torch.no_grad()
def permute_resnet(model: ResNet, seed: int, record: dict | None = None) -> ResNet:
    """Permute every channel group consistently; ``record`` receives the permutations (ground truth)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    c = model.config

    def out_perm(prefix: str, p: torch.Tensor) -> None:  # a conv's output channels and the BatchNorm after it
        sd[prefix + "weight"] = sd[prefix + "weight"][p]
        bn = prefix.replace("conv", "bn") if "conv" in prefix else prefix[:-2] + "1."
        for k in BN_KEYS:
            sd[bn + k] = sd[bn + k][p]

    def in_perm(prefix: str, p: torch.Tensor) -> None:
        sd[prefix + "weight"] = sd[prefix + "weight"][:, p]

    streams = [torch.randperm(w, generator=g) for w in c.widths]
    out_perm("conv1.", streams[0])
    perms = {"stream": [s.tolist() for s in streams], "inner": [], "blocks": [b for stage in _stage_layout(model) for b in stage]}
    for k, blocks in enumerate(_stage_layout(model)):
        for j, b in enumerate(blocks):
            p_in = streams[k - 1] if (j == 0 and k > 0) else streams[k]
            inner = torch.randperm(c.inner_width(k, j), generator=g)
            perms["inner"].append(inner.tolist())
            in_perm(b + "conv1.", p_in)
            out_perm(b + "conv1.", inner)
            in_perm(b + "conv2.", inner)
            out_perm(b + "conv2.", streams[k])
            if b + "downsample.0.weight" in sd:
                in_perm(b + "downsample.0.", p_in)
                out_perm(b + "downsample.0.", streams[k])
    sd["fc.weight"] = sd["fc.weight"][:, streams[-1]]
    if record is not None:
        record["channel_permutation"] = perms
    return _rebuild(model, model.config_dict(), sd)


@torch.no_grad()
def prune_resnet(model: ResNet, fraction: float, record: dict | None = None) -> ResNet:
    """Remove ``fraction`` of each block's inner channels: those whose conv1 filters have the smallest L1 norm."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    inner = []
    kept = []
    for blocks in _stage_layout(model):
        row = []
        for b in blocks:
            w = sd[b + "conv1.weight"]
            n_keep = max(8, int(round(w.shape[0] * (1 - fraction))))
            keep = w.abs().sum((1, 2, 3)).topk(n_keep).indices.sort().values
            sd[b + "conv1.weight"] = w[keep]
            for key in BN_KEYS:
                sd[b + "bn1." + key] = sd[b + "bn1." + key][keep]
            sd[b + "conv2.weight"] = sd[b + "conv2.weight"][:, keep]
            row.append(n_keep)
            kept.append(keep.tolist())
        inner.append(row)
    cfg = model.config_dict()
    cfg["inner_sizes"] = inner
    if record is not None:
        record["kept_inner_channels"] = kept
    return _rebuild(model, cfg, sd)
