"""Tiny torch models whose ``state_dict`` names match what Hugging Face / torchvision save.

Families: Qwen2/Qwen3/Qwen3-MoE decoders (one class, flags), BERT masked-LM encoder, the
Qwen2.5-VL vision tower (+ classifier head, or + decoder = VLM), torchvision-style ResNet.
Module attribute names are chosen so that ``state_dict()`` keys are exactly the HF names;
``config_dict``/``from_config`` convert to and from HF-like ``config.json`` content.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * xf).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope_cos_sin(pos: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """HF-style rotary tables (the two halves of the head dim share frequencies)."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = pos.float()[:, None] * inv[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


# =============================================================================================
# Decoders: qwen2 (qkv bias), qwen3 (q/k norm, no bias), qwen3_moe (+ routed experts)


@dataclass
class DecoderConfig:
    vocab_size: int = 512
    hidden_size: int = 64
    num_hidden_layers: int = 2
    intermediate_size: int = 128
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = True
    qk_norm: bool = False
    num_experts: int = 0  # > 0 -> qwen3_moe
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 64

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def model_type(self) -> str:
        if self.num_experts:
            return "qwen3_moe"
        return "qwen3" if self.qk_norm else "qwen2"

    def hf_dict(self) -> dict:
        arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}
        d = {
            "architectures": [arch[self.model_type]],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "attention_bias": self.qkv_bias,
        }
        if self.num_experts:
            d.update(num_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok,
                     moe_intermediate_size=self.moe_intermediate_size, norm_topk_prob=True,
                     decoder_sparse_step=1, mlp_only_layers=[])
        return d

    @classmethod
    def from_hf(cls, d: dict) -> "DecoderConfig":
        mt = d["model_type"]
        return cls(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            num_hidden_layers=d["num_hidden_layers"], intermediate_size=d["intermediate_size"],
            num_attention_heads=d["num_attention_heads"], num_key_value_heads=d["num_key_value_heads"],
            max_position_embeddings=d.get("max_position_embeddings", 256),
            rope_theta=d.get("rope_theta", 10000.0), rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            qkv_bias=d.get("attention_bias", mt in ("qwen2", "qwen2_5_vl")),
            qk_norm=mt in ("qwen3", "qwen3_moe"),
            num_experts=d.get("num_experts", 0), num_experts_per_tok=d.get("num_experts_per_tok", 2),
            moe_intermediate_size=d.get("moe_intermediate_size", 64),
        )


class DecoderAttention(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * hd, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * hd, c.hidden_size, bias=False)
        if c.qk_norm:
            self.q_norm = RMSNorm(hd, c.rms_norm_eps)
            self.k_norm = RMSNorm(hd, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        c, hd = self.c, self.c.head_dim
        q = self.q_proj(x).view(b, t, c.num_attention_heads, hd)
        k = self.k_proj(x).view(b, t, c.num_key_value_heads, hd)
        v = self.v_proj(x).view(b, t, c.num_key_value_heads, hd)
        if c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        rep = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoE(nn.Module):
    """Qwen3-MoE block: softmax router, top-k experts with renormalised weights."""

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.k = c.num_experts_per_tok
        self.gate = nn.Linear(c.hidden_size, c.num_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(c.hidden_size, c.moe_intermediate_size) for _ in range(c.num_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(self.gate(x).float(), dim=-1)
        topv, topi = probs.topk(self.k, dim=-1)
        topv = topv / topv.sum(-1, keepdim=True)
        weights = torch.zeros_like(probs).scatter(-1, topi, topv).to(x.dtype)
        # Tiny models: running every expert densely is simpler and fast enough.
        return sum(weights[..., e : e + 1] * exp(x) for e, exp in enumerate(self.experts))


class DecoderLayer(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = DecoderAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = SparseMoE(c) if c.num_experts else SwiGLU(c.hidden_size, c.intermediate_size)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderBody(nn.Module):
    """What HF saves under ``model.``."""

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        cos, sin = _rope_cos_sin(torch.arange(h.shape[1]), self.c.head_dim, self.c.rope_theta)
        for layer in self.layers:
            h = layer(h, cos, sin)
        return self.norm(h)


def _init_weights(module: nn.Module, std: float = 0.02) -> None:
    """HF-style init: normal(0, 0.02) matrices, zero biases, unit norm gains."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class CausalLM(nn.Module):
    family = "decoder"

    def __init__(self, c: DecoderConfig):
        super().__init__()
        self.config = c
        self.model = DecoderBody(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        _init_weights(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(self.model.embed_tokens(ids)))

    def config_dict(self) -> dict:
        return self.config.hf_dict()


# =============================================================================================
# Qwen2.5-VL vision tower


@dataclass
class VisionConfig:
    depth: int = 2
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    patch_size: int = 4
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    out_hidden_size: int = 64
    in_chans: int = 3
    image_size: int = 32

    def hf_dict(self) -> dict:
        d = asdict(self)
        d.update(model_type="qwen2_5_vl", hidden_act="silu", window_size=self.image_size,
                 fullatt_block_indexes=list(range(self.depth)))
        return d

    @classmethod
    def from_hf(cls, d: dict) -> "VisionConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.heads = c.num_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size, bias=True)
        self.proj = nn.Linear(c.hidden_size, c.hidden_size, bias=True)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class VisionBlock(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(c.hidden_size)
        self.attn = VisionAttention(c)
        self.norm2 = RMSNorm(c.hidden_size)
        self.mlp = SwiGLU(c.hidden_size, c.intermediate_size, bias=True)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        k = (c.temporal_patch_size, c.patch_size, c.patch_size)
        self.proj = nn.Conv3d(c.in_chans, c.hidden_size, kernel_size=k, stride=k, bias=False)


class PatchMerger(nn.Module):
    """Concatenate each 2x2 window of patch features, then MLP to the text width (HF layout)."""

    def __init__(self, c: VisionConfig):
        super().__init__()
        self.ln_q = RMSNorm(c.hidden_size)
        wide = c.hidden_size * c.spatial_merge_size**2
        self.mlp = nn.Sequential(nn.Linear(wide, wide), nn.GELU(), nn.Linear(wide, c.out_hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return self.mlp(self.ln_q(x).reshape(b, t // 4, 4 * d))


class VisionTower(nn.Module):
    """Saved under ``visual.``: patch_embed, blocks, merger."""

    def __init__(self, c: VisionConfig):
        super().__init__()
        self.c = c
        self.patch_embed = PatchEmbed(c)
        self.blocks = nn.ModuleList(VisionBlock(c) for _ in range(c.depth))
        self.merger = PatchMerger(c)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c = self.c
        # A still image is fed as two identical frames (Qwen2.5-VL's temporal patch of 2).
        x = self.patch_embed.proj(images.unsqueeze(2).expand(-1, -1, c.temporal_patch_size, -1, -1))
        b, d, _, gh, gw = x.shape
        m = c.spatial_merge_size
        # Order patches window by window so the merger groups 2x2 neighbours, as the HF processor does.
        x = x.view(b, d, gh // m, m, gw // m, m).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, d)
        rows = torch.arange(gh).view(gh // m, m, 1, 1).expand(-1, -1, gw // m, m)
        cols = torch.arange(gw).view(1, 1, gw // m, m).expand(gh // m, m, -1, -1)
        rows, cols = rows.permute(0, 2, 1, 3).reshape(-1), cols.permute(0, 2, 1, 3).reshape(-1)
        # 2-D rotary: half of each head's dims rotate with the row, half with the column.
        hd = d // c.num_heads
        cr, sr = _rope_cos_sin(rows, hd // 2, 10000.0)
        cc, sc = _rope_cos_sin(cols, hd // 2, 10000.0)
        cos, sin = self._interleave(cr, cc), self._interleave(sr, sc)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.merger(x)

    @staticmethod
    def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Arrange so that rotate_half pairs row-dims with row-dims and col-dims with col-dims.
        a1, a2 = a.chunk(2, -1)
        b1, b2 = b.chunk(2, -1)
        return torch.cat((a1, b1, a2, b2), -1)


class VisionClassifier(nn.Module):
    family = "vision"

    def __init__(self, c: VisionConfig, num_classes: int):
        super().__init__()
        self.config = c
        self.num_classes = num_classes
        self.visual = VisionTower(c)
        self.classifier = nn.Linear(c.out_hidden_size, num_classes)
        _init_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.visual(images).mean(1))

    def config_dict(self) -> dict:
        return {"architectures": ["Qwen2_5_VisionTransformerPretrainedModel"], "model_type": "qwen2_5_vl",
                "num_labels": self.num_classes, "vision_config": self.config.hf_dict()}


class VLM(nn.Module):
    """Qwen2.5-VL layout: ``visual.*``, ``model.*`` (text decoder) and ``lm_head``."""

    family = "vlm"

    def __init__(self, text: DecoderConfig, vision: VisionConfig):
        super().__init__()
        assert vision.out_hidden_size == text.hidden_size
        self.config, self.vision_config = text, vision
        self.visual = VisionTower(vision)
        self.model = DecoderBody(text)
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        _init_weights(self)

    def forward(self, ids: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        h = self.model.embed_tokens(ids)
        if images is not None:
            h = torch.cat((self.visual(images), h), dim=1)
        return self.lm_head(self.model(h))

    def config_dict(self) -> dict:
        d = self.config.hf_dict()
        d.update(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
                 vision_config=self.vision_config.hf_dict())
        return d


# =============================================================================================
# BERT masked-LM encoder (post-LayerNorm, GELU)


@dataclass
class BertConfig:
    vocab_size: int = 512
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 256
    max_position_embeddings: int = 128
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def hf_dict(self) -> dict:
        d = asdict(self)
        d.update(architectures=["BertForMaskedLM"], model_type="bert", hidden_act="gelu")
        return d

    @classmethod
    def from_hf(cls, d: dict) -> "BertConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class _Dense(nn.Module):
    def __init__(self, i: int, o: int, ln: bool = False, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(i, o)
        if ln:
            self.LayerNorm = nn.LayerNorm(o, eps=eps)


class BertSelf(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)


class BertAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = BertSelf(c)
        self.output = _Dense(c.hidden_size, c.hidden_size, ln=True, eps=c.layer_norm_eps)


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.c = c
        self.attention = BertAttention(c)
        self.intermediate = _Dense(c.hidden_size, c.intermediate_size)
        self.output = _Dense(c.intermediate_size, c.hidden_size, ln=True, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        nh = self.c.num_attention_heads
        s = self.attention.self
        q, k, v = (m(x).view(b, t, nh, d // nh).transpose(1, 2) for m in (s.query, s.key, s.value))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        ao = self.attention.output
        x = ao.LayerNorm(x + ao.dense(y))
        h = F.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(x + self.output.dense(h))


class BertEmbeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        # Older HF checkpoints persist this fixed buffer; the engine must cope with it.
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings).unsqueeze(0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        h = self.word_embeddings(ids) + self.position_embeddings(self.position_ids[:, :t])
        h = h + self.token_type_embeddings(torch.zeros_like(ids))
        return self.LayerNorm(h)


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))


class BertInner(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = _Dense(c.hidden_size, c.hidden_size)


class BertPredictions(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.transform = _Dense(c.hidden_size, c.hidden_size, ln=True, eps=c.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))


class BertHeads(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.predictions = BertPredictions(c)


class BertMLM(nn.Module):
    family = "bert"

    def __init__(self, c: BertConfig):
        super().__init__()
        self.config = c
        self.bert = BertInner(c)
        self.cls = BertHeads(c)
        _init_weights(self)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.bert.embeddings(ids)
        for layer in self.bert.encoder.layer:
            h = layer(h)
        t = self.cls.predictions.transform
        h = t.LayerNorm(F.gelu(t.dense(h)))
        # Decoder tied to the word embeddings (HF does not save cls.predictions.decoder.weight).
        return h @ self.bert.embeddings.word_embeddings.weight.T + self.cls.predictions.bias

    def config_dict(self) -> dict:
        return self.config.hf_dict()


# =============================================================================================
# torchvision-style ResNet (BasicBlock)


@dataclass
class ResNetConfig:
    widths: list[int] = field(default_factory=lambda: [64, 128])
    blocks: list[int] = field(default_factory=lambda: [1, 1])
    num_classes: int = 16
    # Channels inside each block (between its two convs), per stage and block; None: the stage width.
    # Structured pruning narrows them (zoo.reshape.permute_prune_resnet).
    inner: list[list[int]] | None = None

    def inner_width(self, stage: int, block: int) -> int:
        return self.inner[stage][block] if self.inner else self.widths[stage]

    def hf_dict(self) -> dict:
        d = {"architectures": ["ResNet"], "model_type": "resnet", "hidden_sizes": self.widths,
             "depths": self.blocks, "num_labels": self.num_classes, "num_channels": 3,
             "layer_type": "basic", "hidden_size": self.widths[-1]}
        if self.inner:
            d["inner_sizes"] = self.inner
        return d

    @classmethod
    def from_hf(cls, d: dict) -> "ResNetConfig":
        return cls(widths=list(d["hidden_sizes"]), blocks=list(d["depths"]), num_classes=d["num_labels"],
                   inner=d.get("inner_sizes"))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    family = "resnet"

    def __init__(self, c: ResNetConfig):
        super().__init__()
        self.config = c
        # Small images (32x32): a 3x3 stem without max-pool, as in CIFAR ResNets.
        self.conv1 = nn.Conv2d(3, c.widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c.widths[0])
        cin = c.widths[0]
        for k, (w, n) in enumerate(zip(c.widths, c.blocks), start=1):
            blocks = [BasicBlock(cin if j == 0 else w, w, 1 if (k == 1 or j) else 2, c.inner_width(k - 1, j))
                      for j in range(n)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            cin = w
        self.fc = nn.Linear(cin, c.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for k in range(1, len(self.config.widths) + 1):
            x = getattr(self, f"layer{k}")(x)
        return self.fc(x.mean((2, 3)))

    def config_dict(self) -> dict:
        return self.config.hf_dict()


# =============================================================================================


def from_config(d: dict) -> nn.Module:
    """Rebuild an (untrained) module from a saved ``config.json`` dict."""
    mt = d["model_type"]
    if mt == "bert":
        return BertMLM(BertConfig.from_hf(d))
    if mt == "resnet":
        return ResNet(ResNetConfig.from_hf(d))
    if mt == "qwen2_5_vl":
        vc = VisionConfig.from_hf(d["vision_config"])
        if "vocab_size" not in d:
            return VisionClassifier(vc, d["num_labels"])
        return VLM(DecoderConfig.from_hf(d), vc)
    return CausalLM(DecoderConfig.from_hf(d))


def component_of(name: str) -> str:
    """Ground-truth component of a tensor name (for tests and pair labels)."""
    if name.startswith("visual.merger."):
        return "projector"
    if name.startswith("visual.") or name.startswith("classifier."):
        return "vision"
    return "text"


__all__ = ["BertConfig", "BertMLM", "CausalLM", "DecoderConfig", "ResNet", "ResNetConfig",
           "VLM", "VisionClassifier", "VisionConfig", "component_of", "from_config"]
