"""Derivations: turn a parent model into a child (the "related" ground truth).

Weight surgery works on ``state_dict`` copies and returns a new module; anything that needs
training afterwards (healing, fine-tuning) is done by the caller with ``train.train``.  The
function-preserving transforms (permutation, rotation, rescaling) are checked numerically with
``max_logit_diff`` by the build and by the tests.

Decoder surgery understands the Qwen naming for text models (``CausalLM``) and for the text side
of a VLM (where the merger's last layer also writes into the residual stream).
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from .models import CausalLM, DecoderConfig, from_config

# ---------------------------------------------------------------------------------------------
# helpers


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def _rebuild(model: nn.Module, config: dict, state: dict) -> nn.Module:
    """New module from an edited HF config dict and state dict (strict: every tensor accounted for)."""
    new = from_config(config)
    new.load_state_dict(state)
    new.eval()
    return new


def _layers(state: dict) -> int:
    return 1 + max(int(m.group(1)) for k in state if (m := re.match(r"model\.layers\.(\d+)\.", k)))


def _mlp_prefixes(state: dict, i: int) -> list[str]:
    """The SwiGLU blocks of layer i: the dense MLP, or every expert of a MoE layer."""
    p = f"model.layers.{i}.mlp."
    if p + "gate.weight" in state:
        n = state[p + "gate.weight"].shape[0]
        return [f"{p}experts.{e}." for e in range(n)]
    return [p]


def _readers(state: dict, i: int) -> tuple[list[str], list[str]]:
    """Weights of layer i that read the residual after input_layernorm / post_attention_layernorm."""
    a = [f"model.layers.{i}.self_attn.{x}_proj.weight" for x in "qkv"]
    m = [pre + x for pre in _mlp_prefixes(state, i) for x in ("gate_proj.weight", "up_proj.weight")]
    if f"model.layers.{i}.mlp.gate.weight" in state:
        m.append(f"model.layers.{i}.mlp.gate.weight")
    return a, m


def _writers(state: dict, i: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.o_proj.weight"] + [
        pre + "down_proj.weight" for pre in _mlp_prefixes(state, i)]


@torch.no_grad()
def max_logit_diff(a: nn.Module, b: nn.Module, probe: dict) -> float:
    """Largest absolute logit difference on a probe batch (``probe`` = forward kwargs)."""
    a.eval()
    b.eval()
    return (a(**probe) - b(**probe)).abs().max().item()


# ---------------------------------------------------------------------------------------------
# function-preserving transforms


@torch.no_grad()
def permute(model: nn.Module, seed: int, record: dict | None = None) -> nn.Module:
    """Permute residual dims, FFN units (and experts) and attention heads; outputs unchanged.

    ``record``, when given, receives ``expert_order``: per layer, the parent's expert now at index j.

    RMSNorm is permutation-equivariant, so a residual permutation only needs the gains permuted.
    Heads are moved as whole blocks (RoPE acts inside a head); with GQA the KV heads are permuted
    and the query heads move with their group (plus a shuffle inside each group).
    """
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    c = model.config
    H, hd = c.hidden_size, c.head_dim
    nq, nkv = c.num_attention_heads, c.num_key_value_heads
    rep = nq // nkv
    p = torch.randperm(H, generator=g)
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:, p]
    sd["lm_head.weight"] = sd["lm_head.weight"][:, p]
    sd["model.norm.weight"] = sd["model.norm.weight"][p]
    if "visual.merger.mlp.2.weight" in sd:
        sd["visual.merger.mlp.2.weight"] = sd["visual.merger.mlp.2.weight"][p]
        sd["visual.merger.mlp.2.bias"] = sd["visual.merger.mlp.2.bias"][p]
    for i in range(_layers(sd)):
        L = f"model.layers.{i}."
        for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            sd[L + n] = sd[L + n][p]
        reads_a, reads_m = _readers(sd, i)
        for k in reads_a + reads_m:
            sd[k] = sd[k][:, p]
        for k in _writers(sd, i):
            sd[k] = sd[k][p]
        # heads
        kv_perm = torch.randperm(nkv, generator=g)
        q_perm = torch.cat([kv_perm[j] * rep + torch.randperm(rep, generator=g) for j in range(nkv)])
        rows = lambda hp: (hp[:, None] * hd + torch.arange(hd)).reshape(-1)  # noqa: E731
        for x, hp in (("q", q_perm), ("k", kv_perm), ("v", kv_perm)):
            for suffix in ("weight", "bias"):
                k = f"{L}self_attn.{x}_proj.{suffix}"
                if k in sd:
                    sd[k] = sd[k][rows(hp)]
        o = L + "self_attn.o_proj.weight"
        sd[o] = sd[o][:, rows(q_perm)]
        # FFN units of every SwiGLU block, and the order of the experts
        for pre in _mlp_prefixes(sd, i):
            f = torch.randperm(sd[pre + "up_proj.weight"].shape[0], generator=g)
            sd[pre + "gate_proj.weight"] = sd[pre + "gate_proj.weight"][f]
            sd[pre + "up_proj.weight"] = sd[pre + "up_proj.weight"][f]
            sd[pre + "down_proj.weight"] = sd[pre + "down_proj.weight"][:, f]
        router = L + "mlp.gate.weight"
        if router in sd:
            e = torch.randperm(sd[router].shape[0], generator=g)
            if record is not None:
                record.setdefault("expert_order", {})[str(i)] = e.tolist()
            sd[router] = sd[router][e]
            old = {k: v for k, v in sd.items() if k.startswith(L + "mlp.experts.")}
            for new_idx, old_idx in enumerate(e.tolist()):
                for k, v in old.items():
                    if k.startswith(f"{L}mlp.experts.{old_idx}."):
                        sd[k.replace(f"experts.{old_idx}.", f"experts.{new_idx}.", 1)] = v
    return _rebuild(model, model.config_dict(), sd)


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed


@torch.no_grad()
def rotate(model: nn.Module, seed: int) -> nn.Module:
    """Rotate the residual stream by a random orthogonal Q (SliceGPT/QuaRot-style).

    RMSNorm commutes with rotations only when its gain is uniform, so the gains are first folded
    into the matrices that read the normalised stream and set to 1.  Then readers W -> W Q,
    writers W -> Q^T W (and their biases), embeddings E -> E Q.
    """
    sd = {k: v.double().clone() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}
    Q = random_orthogonal(model.config.hidden_size, seed)
    for i in range(_layers(sd)):
        L = f"model.layers.{i}."
        reads_a, reads_m = _readers(sd, i)
        for norm, readers in (("input_layernorm.weight", reads_a), ("post_attention_layernorm.weight", reads_m)):
            gain = sd[L + norm]
            for k in readers:
                sd[k] = sd[k] * gain[None, :] @ Q
            sd[L + norm] = torch.ones_like(gain)
        for k in _writers(sd, i):
            sd[k] = Q.T @ sd[k]
    sd["lm_head.weight"] = sd["lm_head.weight"] * sd["model.norm.weight"][None, :] @ Q
    sd["model.norm.weight"] = torch.ones_like(sd["model.norm.weight"])
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"] @ Q
    if "visual.merger.mlp.2.weight" in sd:
        sd["visual.merger.mlp.2.weight"] = Q.T @ sd["visual.merger.mlp.2.weight"]
        sd["visual.merger.mlp.2.bias"] = Q.T @ sd["visual.merger.mlp.2.bias"]
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    return _rebuild(model, model.config_dict(), sd)


@torch.no_grad()
def rescale(model: nn.Module, seed: int, strength: float) -> nn.Module:
    """Per-tensor rescaling that cancels exactly: q*c & k/c (the logits q.k are unchanged),
    v*c & o/c (attention is linear in v), up*c & down/c (SwiGLU is linear in the up branch).
    Factors are log-uniform in [1/strength, strength].  With q/k-norm (qwen3) the q/k pair is
    skipped: the norm would undo the scale, which is not the point of this derivation.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    span = torch.log(torch.tensor(float(strength)))
    factor = lambda: float(torch.exp((2 * torch.rand((), generator=g) - 1) * span))  # noqa: E731
    for i in range(_layers(sd)):
        A = f"model.layers.{i}.self_attn."
        pairs = [("v_proj", "o_proj")]
        if A + "q_norm.weight" not in sd:
            pairs.insert(0, ("q_proj", "k_proj"))
        for up, down in pairs:
            c = factor()
            sd[A + up + ".weight"] *= c
            if A + up + ".bias" in sd:
                sd[A + up + ".bias"] *= c
            if down == "o_proj":
                sd[A + "o_proj.weight"] /= c
            else:
                sd[A + down + ".weight"] /= c
                if A + down + ".bias" in sd:
                    sd[A + down + ".bias"] /= c
        for pre in _mlp_prefixes(sd, i):
            c = factor()
            sd[pre + "up_proj.weight"] *= c
            sd[pre + "down_proj.weight"] /= c
    return _rebuild(model, model.config_dict(), sd)


# ---------------------------------------------------------------------------------------------
# lossy weight edits


def _is_matrix(name: str, t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


@torch.no_grad()
def quantise(model: nn.Module, bits: int, group: int | None = None) -> nn.Module:
    """Round-trip every weight matrix through symmetric integer quantisation.

    ``group=None``: one scale per output row (int8 style); otherwise one scale per ``group``
    consecutive input elements of a row (4-bit group-wise, GPTQ/AWQ layout without the search).
    Norm gains and biases stay in full precision, as real quantisers leave them.
    """
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    qmax = 2 ** (bits - 1) - 1
    for k, w in sd.items():
        if not _is_matrix(k, w):
            continue
        flat = w.reshape(w.shape[0], -1)
        if group:
            cols = flat.shape[1]
            pad = (-cols) % group
            x = torch.nn.functional.pad(flat, (0, pad)).reshape(flat.shape[0], -1, group)
        else:
            x = flat[:, None, :]
        scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-12) / qmax
        x = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
        sd[k] = x.reshape(flat.shape[0], -1)[:, : flat.shape[1]].reshape(w.shape)
    return _rebuild(model, model.config_dict(), sd)


@torch.no_grad()
def merge(a: nn.Module, b: nn.Module, weight_a: float) -> nn.Module:
    """Linear weight averaging of two same-architecture models (model soups / task arithmetic)."""
    sb = b.state_dict()
    sd = {k: (weight_a * v + (1 - weight_a) * sb[k]) if v.is_floating_point() else v.clone()
          for k, v in a.state_dict().items()}
    return _rebuild(a, a.config_dict(), sd)


# ---------------------------------------------------------------------------------------------
# structural edits (the caller heals them with training)


@torch.no_grad()
def select_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """New decoder whose layer j is the parent's layer keep[j] (depth pruning and Solar-style
    depth up-scaling are both a choice of ``keep``)."""
    old = model.state_dict()
    sd = {k: v.clone() for k, v in old.items() if not k.startswith("model.layers.")}
    for j, src in enumerate(keep):
        pre = f"model.layers.{src}."
        for k, v in old.items():
            if k.startswith(pre):
                sd[f"model.layers.{j}." + k[len(pre):]] = v.clone()
    cfg = model.config_dict()
    cfg["num_hidden_layers"] = len(keep)
    return _rebuild(model, cfg, sd)


def drop_layers(model: nn.Module, n_drop: int) -> nn.Module:
    """Drop the ``n_drop`` layers just before the last one (the usual least-important block)."""
    n = model.config.num_hidden_layers
    drop = set(range(n - 1 - n_drop, n - 1))
    return select_layers(model, [i for i in range(n) if i not in drop])


def upscale_depth(model: nn.Module, overlap: int) -> nn.Module:
    """Solar DUS: layers [0, n-k) of one copy followed by layers [k, n) of another copy."""
    n = model.config.num_hidden_layers
    return select_layers(model, list(range(n - overlap)) + list(range(overlap, n)))


@torch.no_grad()
def prune_ffn(model: nn.Module, fraction: float) -> nn.Module:
    """Remove the FFN units with the smallest |gate|*|up|*|down| magnitude from every layer."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    inter = model.config.intermediate_size
    keep_n = max(8, int(round(inter * (1 - fraction))))
    for i in range(_layers(sd)):
        pre = f"model.layers.{i}.mlp."
        score = (sd[pre + "gate_proj.weight"].norm(dim=1) * sd[pre + "up_proj.weight"].norm(dim=1)
                 * sd[pre + "down_proj.weight"].norm(dim=0))
        keep = score.topk(keep_n).indices.sort().values
        sd[pre + "gate_proj.weight"] = sd[pre + "gate_proj.weight"][keep]
        sd[pre + "up_proj.weight"] = sd[pre + "up_proj.weight"][keep]
        sd[pre + "down_proj.weight"] = sd[pre + "down_proj.weight"][:, keep]
    cfg = model.config_dict()
    cfg["intermediate_size"] = keep_n
    return _rebuild(model, cfg, sd)


@torch.no_grad()
def resize_vocab(model: nn.Module, old_ids: list[int] | None, n_new: int, seed: int) -> nn.Module:
    """Gather embedding / lm_head rows by ``old_ids`` (pruning with re-indexing), then append
    ``n_new`` rows initialised at the mean row plus small noise (vocabulary extension)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        w = sd[k] if old_ids is None else sd[k][torch.tensor(old_ids)]
        if n_new:
            new = w.mean(0, keepdim=True) + w.std() * 0.1 * torch.randn(n_new, w.shape[1], generator=g)
            w = torch.cat([w, new])
        sd[k] = w
    cfg = model.config_dict()
    cfg["vocab_size"] = sd["lm_head.weight"].shape[0]
    return _rebuild(model, cfg, sd)


@torch.no_grad()
def upcycle(dense: CausalLM, num_experts: int, top_k: int, seed: int) -> CausalLM:
    """Sparse upcycling: a qwen3 dense decoder becomes qwen3_moe; each expert starts as a copy of
    the dense MLP (tiny noise breaks the symmetry), the router is new."""
    g = torch.Generator().manual_seed(seed)
    c = dense.config
    moe_cfg = DecoderConfig(**{**c.__dict__, "num_experts": num_experts, "num_experts_per_tok": top_k,
                               "moe_intermediate_size": c.intermediate_size})
    moe = CausalLM(moe_cfg)
    old = dense.state_dict()
    sd = moe.state_dict()
    for k, v in old.items():
        m = re.match(r"(model\.layers\.\d+\.mlp\.)(.*)", k)
        if not m:
            sd[k] = v.clone()
            continue
        for e in range(num_experts):
            sd[f"{m.group(1)}experts.{e}.{m.group(2)}"] = v + 1e-3 * v.std() * torch.randn(v.shape, generator=g)
    for i in range(c.num_hidden_layers):
        sd[f"model.layers.{i}.mlp.gate.weight"] = 0.02 * torch.randn(num_experts, c.hidden_size, generator=g)
    moe.load_state_dict(sd)
    moe.eval()
    return moe


@torch.no_grad()
def graft_vision(donor: nn.Module, target: nn.Module, with_projector: bool) -> nn.Module:
    """Copy the donor's vision tower (and optionally the merger) into ``target``."""
    out = clone(target)
    sd = out.state_dict()
    for k, v in donor.state_dict().items():
        if k.startswith("visual.") and (with_projector or not k.startswith("visual.merger.")):
            sd[k] = v.clone()
    out.load_state_dict(sd)
    return out


# ---------------------------------------------------------------------------------------------
# LoRA


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update B @ A (B starts at zero)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features, generator=gen) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale


def lora_wrap(model: nn.Module, rank: int, seed: int, targets=("q_proj", "k_proj", "v_proj", "o_proj",
              "gate_proj", "up_proj", "down_proj")) -> list[nn.Parameter]:
    """Replace target Linears in place; freeze everything else; return the LoRA parameters."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                lora = LoRALinear(child, rank, alpha=2.0 * rank, gen=gen)
                setattr(parent, name, lora)
                params += [lora.A, lora.B]
    return params


@torch.no_grad()
def lora_merge(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight and restore plain Linears."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                child.base.weight += (child.B @ child.A) * child.scale
                setattr(parent, name, child.base)
    for p in model.parameters():
        p.requires_grad_(True)
    return model
