"""Every architecture family checked against real Hugging Face tensor names.

Each case builds a tiny random model with ``transformers`` from a config written here, saves it as
safetensors and runs the inventory on it: the family must be the expected one, no tensor may be left
unassigned, every tensor must land in the expected component, layer and expert indices must be set where
the name carries them, and a few role mappings that matter (fused projections, MLA, routers) are pinned.

Checkpoints published before transformers v5 sometimes use other layouts (Meta/Mistral reference names,
``vision_tower.vision_model.`` in Gemma 3, DeepSeek/GLM multi-token-prediction layers that transformers
drops when loading); those are checked from hand-written name lists, each with its source.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from modelkin.alignment import align_by_name
from modelkin.inventory import build_inventory
from modelkin.sources import open_model

from builders import write_model

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

T = transformers
LM = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
          vocab_size=128, max_position_embeddings=64)
ENC = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
           max_position_embeddings=64)
SIGLIP_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
CLIP_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128,
                 max_position_embeddings=16)
MROPE = {"type": "mrope", "mrope_section": [1, 1, 2]}
MOE = dict(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=16,
           first_k_dense_replace=1, n_group=1, topk_group=1)


def _qwen2_vl():
    vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3)
    return T.Qwen2VLForConditionalGeneration(T.Qwen2VLConfig(text_config=dict(**LM, rope_scaling=MROPE), vision_config=vision))


def _qwen2_5_vl():
    vision = dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1], window_size=56)
    return T.Qwen2_5_VLForConditionalGeneration(T.Qwen2_5_VLConfig(text_config=dict(**LM, rope_scaling=MROPE), vision_config=vision))


def _qwen2_audio():
    audio = dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, num_mel_bins=16, max_source_positions=32)
    return T.Qwen2AudioForConditionalGeneration(T.Qwen2AudioConfig(text_config=dict(model_type="qwen2", **LM), audio_config=audio))


def _whisper():
    return T.WhisperForConditionalGeneration(T.WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, vocab_size=128, max_source_positions=32,
        max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2))


def _gemma3():
    # Gemma 3 releases have vision_use_head=false: no attention-pool head in the tower
    vision = dict(SIGLIP_VISION, vision_use_head=False)
    return T.Gemma3ForConditionalGeneration(T.Gemma3Config(text_config=dict(**LM, head_dim=8), vision_config=vision, mm_tokens_per_image=4))


# name prefix -> component, first match wins; the last entry is the default
TEXT = [("", "text")]
CASES = {
    # family: (builder, expected family, component map, spot checks {name suffix: role})
    "llama": (lambda: T.LlamaForCausalLM(T.LlamaConfig(**LM)), TEXT, {"layers.1.self_attn.q_proj.weight": "attn.q"}),
    "mistral": (lambda: T.MistralForCausalLM(T.MistralConfig(**LM)), TEXT, {"layers.0.mlp.gate_proj.weight": "mlp.gate"}),
    "mixtral": (lambda: T.MixtralForCausalLM(T.MixtralConfig(**LM, num_local_experts=4, num_experts_per_tok=2)), TEXT,
                {"layers.0.block_sparse_moe.gate.weight": "router", "layers.1.block_sparse_moe.experts.3.w1.weight": "mlp.gate",
                 "layers.1.block_sparse_moe.experts.3.w3.weight": "mlp.up", "layers.1.block_sparse_moe.experts.3.w2.weight": "mlp.down"}),
    "qwen2": (lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**LM)), TEXT, {"layers.0.self_attn.k_proj.bias": "attn.k"}),
    "qwen2_moe": (lambda: T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
        **LM, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=32,
        decoder_sparse_step=1, mlp_only_layers=[1])), TEXT,
        {"layers.0.mlp.gate.weight": "router", "layers.0.mlp.shared_expert_gate.weight": "router",
         "layers.0.mlp.shared_expert.up_proj.weight": "mlp.up", "layers.1.mlp.up_proj.weight": "mlp.up"}),
    "qwen3": (lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**LM, head_dim=8)), TEXT, {"layers.0.self_attn.q_norm.weight": "norm"}),
    "qwen3_moe": (lambda: T.Qwen3MoeForCausalLM(T.Qwen3MoeConfig(**LM, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                                                  moe_intermediate_size=16)), TEXT,
                  {"layers.1.mlp.gate.weight": "router", "layers.1.mlp.experts.2.down_proj.weight": "mlp.down"}),
    "qwen2_vl": (_qwen2_vl, [("visual.merger.", "projector"), ("visual.", "vision"), ("", "text")],
                 {"visual.blocks.1.attn.qkv.weight": "attn.qkv", "visual.patch_embed.proj.weight": "patch_embed"}),
    "qwen2_5_vl": (_qwen2_5_vl, [("visual.merger.", "projector"), ("visual.", "vision"), ("", "text")],
                   {"visual.blocks.1.mlp.gate_proj.weight": "mlp.gate", "visual.merger.mlp.0.weight": "mlp.up"}),
    "qwen2_audio": (_qwen2_audio, [("audio_tower.", "audio"), ("multi_modal_projector.", "projector"), ("", "text")],
                    {"audio_tower.conv1.weight": "conv", "audio_tower.embed_positions.weight": "buffer",
                     "audio_tower.layers.1.fc1.weight": "mlp.up", "multi_modal_projector.linear.weight": "projector",
                     "language_model.lm_head.weight": "lm_head"}),
    "whisper": (_whisper, [("model.encoder.", "audio"), ("", "text")],
                {"model.encoder.embed_positions.weight": "buffer", "model.decoder.embed_positions.weight": "position_embedding",
                 "model.decoder.layers.1.encoder_attn.k_proj.weight": "attn.k"}),
    "glm4": (lambda: T.Glm4ForCausalLM(T.Glm4Config(**LM, head_dim=8, pad_token_id=0)), TEXT,
             {"layers.0.mlp.gate_up_proj.weight": "mlp.gate_up", "layers.0.post_mlp_layernorm.weight": "norm"}),
    "glm4_moe": (lambda: T.Glm4MoeForCausalLM(T.Glm4MoeConfig(**LM, head_dim=8, use_qk_norm=True, **MOE)), TEXT,
                 {"layers.1.mlp.gate.weight": "router", "layers.1.mlp.gate.e_score_correction_bias": "router",
                  "layers.1.mlp.shared_experts.down_proj.weight": "mlp.down", "layers.0.mlp.down_proj.weight": "mlp.down",
                  "layers.1.self_attn.k_norm.weight": "norm"}),
    "deepseek_v3": (lambda: T.DeepseekV3ForCausalLM(T.DeepseekV3Config(
        **LM, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, **MOE)), TEXT,
        {"layers.0.self_attn.q_a_proj.weight": "other", "layers.0.self_attn.q_b_proj.weight": "attn.q",
         "layers.0.self_attn.kv_a_proj_with_mqa.weight": "attn.k", "layers.0.self_attn.kv_b_proj.weight": "attn.v",
         "layers.0.self_attn.q_a_layernorm.weight": "norm", "layers.0.self_attn.kv_a_layernorm.weight": "norm",
         "layers.1.mlp.gate.e_score_correction_bias": "router", "layers.1.mlp.experts.0.gate_proj.weight": "mlp.gate",
         "layers.1.mlp.shared_experts.gate_proj.weight": "mlp.gate"}),
    "gemma2": (lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**LM, head_dim=8)), TEXT,
               {"layers.0.pre_feedforward_layernorm.weight": "norm", "layers.0.post_feedforward_layernorm.weight": "norm"}),
    "gemma3": (_gemma3, [("vision_tower.", "vision"), ("multi_modal_projector.", "projector"), ("", "text")],
               {"multi_modal_projector.mm_input_projection_weight": "projector",
                "multi_modal_projector.mm_soft_emb_norm.weight": "norm",
                "vision_tower.embeddings.patch_embedding.weight": "patch_embed",
                "vision_tower.encoder.layers.1.self_attn.out_proj.weight": "attn.o",
                "language_model.model.layers.1.self_attn.q_norm.weight": "norm"}),
    "phi3": (lambda: T.Phi3ForCausalLM(T.Phi3Config(**LM, pad_token_id=0)), TEXT,
             {"layers.0.self_attn.qkv_proj.weight": "attn.qkv", "layers.0.mlp.gate_up_proj.weight": "mlp.gate_up"}),
    "gpt2": (lambda: T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64)), TEXT,
             {"transformer.h.1.attn.c_attn.weight": "attn.qkv", "transformer.h.1.mlp.c_fc.weight": "mlp.up"}),
    "bert": (lambda: T.BertForMaskedLM(T.BertConfig(**ENC)), TEXT,
             {"bert.encoder.layer.1.attention.self.query.weight": "attn.q", "cls.predictions.transform.dense.weight": "head"}),
    "roberta": (lambda: T.RobertaForMaskedLM(T.RobertaConfig(**ENC)), TEXT,
                {"roberta.encoder.layer.1.attention.self.value.weight": "attn.v", "lm_head.dense.weight": "head",
                 "lm_head.layer_norm.weight": "norm"}),
    "vit": (lambda: T.ViTForImageClassification(T.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                            num_attention_heads=4, image_size=32, patch_size=8, num_labels=3)),
            [("classifier", "vision"), ("", "vision")],
            {"vit.embeddings.patch_embeddings.projection.weight": "patch_embed", "classifier.weight": "classifier"}),
    "clip": (lambda: T.CLIPModel(T.CLIPConfig(text_config=CLIP_TEXT, vision_config=SIGLIP_VISION, projection_dim=16)),
             [("vision_model.", "vision"), ("text_model.", "text"), ("visual_projection", "projector"),
              ("text_projection", "projector"), ("", "other")],
             {"vision_model.embeddings.patch_embedding.weight": "patch_embed", "logit_scale": "scalar"}),
    # transformers v5 writes standalone towers without the `vision_model.` prefix
    "siglip_vision_model": (lambda: T.SiglipVisionModel(T.SiglipVisionConfig(**SIGLIP_VISION)), [("", "vision")],
                            {"head.attention.in_proj_weight": "attn.qkv", "encoder.layers.1.mlp.fc2.weight": "mlp.down"}),
    "clip_vision_model": (lambda: T.CLIPVisionModel(T.CLIPVisionConfig(**SIGLIP_VISION)), [("", "vision")],
                          {"embeddings.class_embedding": "position_embedding", "pre_layrnorm.weight": "norm"}),
    "siglip": (lambda: T.SiglipModel(T.SiglipConfig(text_config=CLIP_TEXT, vision_config=SIGLIP_VISION)),
               [("vision_model.", "vision"), ("text_model.", "text"), ("", "other")],
               {"vision_model.head.attention.in_proj_weight": "attn.qkv", "vision_model.head.probe": "other",
                "text_model.head.weight": "projector", "logit_bias": "scalar"}),
}

# one family file covers Qwen2-VL and Qwen2.5-VL; standalone towers belong to their dual-encoder family
EXPECTED_FAMILY = {"qwen2_vl": "qwen2_5_vl", "siglip_vision_model": "siglip", "clip_vision_model": "clip"}
LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")
EXPERT = re.compile(r"\.experts\.(\d+)\.")


def _expected_component(name: str, table: list[tuple[str, str]]) -> str:
    return next(c for prefix, c in table if name.startswith(prefix))


def _save(model, folder) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder, safe_serialization=True)


def check_inventory(inv, expected_family: str, components: list[tuple[str, str]], spot: dict[str, str]) -> None:
    assert inv.family == expected_family
    assert inv.unassigned == ()
    wrong = []
    for t in inv.tensors:
        want = _expected_component(t.name, components)
        if t.component != want:  # norms and buffers too: they sit in their tower like the weights
            wrong.append(f"{t.name}: component {t.component}, expected {want}")
        m = LAYER.search(t.name)
        if (None if m is None else int(m.group(1))) != t.layer:
            wrong.append(f"{t.name}: layer {t.layer}")
        m = EXPERT.search(t.name)
        if (None if m is None else int(m.group(1))) != t.expert:
            wrong.append(f"{t.name}: expert {t.expert}")
    assert not wrong, "\n".join(wrong)
    for suffix, role in spot.items():
        hits = [t for t in inv.tensors if t.name == suffix or t.name.endswith("." + suffix)]
        assert len(hits) == 1, f"{suffix}: {[t.name for t in hits]}"
        assert hits[0].role == role, f"{hits[0].name}: role {hits[0].role}, expected {role}"


@pytest.fixture(scope="module", autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.mark.parametrize("family", sorted(CASES))
def test_hf_model_names_are_fully_assigned(family, tmp_path):
    build, components, spot = CASES[family]
    _save(build(), tmp_path / family)
    model_type = json.loads((tmp_path / family / "config.json").read_text())["model_type"]
    inv = build_inventory(open_model(tmp_path / family))
    assert model_type == family
    check_inventory(inv, EXPECTED_FAMILY.get(family, family), components, spot)


def test_gpt2_conv1d_weights_are_transposed(tmp_path):
    _save(CASES["gpt2"][0](), tmp_path / "g")
    inv = build_inventory(open_model(tmp_path / "g"))
    by = inv.by_name
    assert by["transformer.h.0.attn.c_attn.weight"].transposed and by["transformer.h.0.mlp.c_proj.weight"].transposed
    assert not by["transformer.wte.weight"].transposed


def test_gemma3_vision_tower_aligns_with_a_siglip_vision_model(tmp_path):
    """Provenance of a VLM's tower: its keys (wrapper `vision_tower.` stripped) are a SigLIP model's keys."""
    _save(_gemma3(), tmp_path / "g")
    _save(T.SiglipVisionModel(T.SiglipVisionConfig(**SIGLIP_VISION, vision_use_head=False)), tmp_path / "s")
    inv_g, inv_s = (build_inventory(open_model(tmp_path / n)) for n in ("g", "s"))
    al = align_by_name(inv_g, inv_s)
    tower = {t.name for t in inv_g.tensors if t.component == "vision"}
    assert {p.a.name for p in al.pairs} == tower
    assert all(p.matched_by == "name" and p.a.name == "vision_tower." + p.b.name for p in al.pairs)
    assert not [u for u in al.unmatched if u.side == "b"]


# --------------------------------------------------------------------------- layouts transformers v5 does not write

HAND_WRITTEN = {
    # Meta's reference Llama checkpoints (consolidated.00.pth / original/ folder of meta-llama repos) and
    # Mistral's consolidated.safetensors (mistralai/Mistral-7B-v0.3): no config.json, family from names.
    "mistral_consolidated": (None, {"mistral", "llama"}, TEXT, [
        "tok_embeddings.weight", "norm.weight", "output.weight",
        "layers.0.attention.wq.weight", "layers.0.attention.wk.weight", "layers.0.attention.wv.weight",
        "layers.0.attention.wo.weight", "layers.0.attention_norm.weight", "layers.0.ffn_norm.weight",
        "layers.0.feed_forward.w1.weight", "layers.0.feed_forward.w2.weight", "layers.0.feed_forward.w3.weight",
    ]),
    # Mixtral consolidated.safetensors (module names of mistral-inference's MoeLayer: feed_forward.gate / .experts.N)
    "mixtral_consolidated": ("mixtral", {"mixtral"}, TEXT, [
        "tok_embeddings.weight", "layers.1.attention.wq.weight", "layers.1.attention_norm.weight",
        "layers.1.feed_forward.gate.weight", "layers.1.feed_forward.experts.7.w1.weight",
        "layers.1.feed_forward.experts.7.w2.weight", "layers.1.feed_forward.experts.7.w3.weight", "output.weight",
    ]),
    # google/gemma-3-4b-it model.safetensors.index.json (transformers 4.50 layout: vision_tower.vision_model.)
    "gemma3_hub": ("gemma3", {"gemma3"}, [("vision_tower.", "vision"), ("multi_modal_projector.", "projector"), ("", "text")], [
        "language_model.model.embed_tokens.weight", "language_model.model.norm.weight",
        "language_model.model.layers.0.self_attn.q_proj.weight", "language_model.model.layers.0.self_attn.q_norm.weight",
        "language_model.model.layers.0.pre_feedforward_layernorm.weight",
        "multi_modal_projector.mm_input_projection_weight", "multi_modal_projector.mm_soft_emb_norm.weight",
        "vision_tower.vision_model.embeddings.patch_embedding.weight", "vision_tower.vision_model.embeddings.patch_embedding.bias",
        "vision_tower.vision_model.embeddings.position_embedding.weight",
        "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", "vision_tower.vision_model.encoder.layers.0.layer_norm1.weight",
        "vision_tower.vision_model.post_layernorm.weight",
    ]),
    # transformers 4.52+ in-memory layout, written by save_pretrained before v5
    "gemma3_model_prefix": ("gemma3", {"gemma3"}, [("model.vision_tower.", "vision"), ("model.multi_modal_projector.", "projector"), ("", "text")], [
        "model.language_model.embed_tokens.weight", "model.language_model.layers.0.mlp.down_proj.weight",
        "model.multi_modal_projector.mm_input_projection_weight",
        "model.vision_tower.vision_model.encoder.layers.0.self_attn.k_proj.weight", "lm_head.weight",
    ]),
    # deepseek-ai/DeepSeek-V3 model.safetensors.index.json: FP8 block scales and the MTP layer 61
    # (transformers ignores model.layers.61.* on load, so a saved tiny model never has it)
    "deepseek_v3_hub": ("deepseek_v3", {"deepseek_v3"}, TEXT, [
        "model.layers.3.self_attn.q_a_proj.weight", "model.layers.3.self_attn.q_a_proj.weight_scale_inv",
        "model.layers.3.mlp.experts.7.down_proj.weight_scale_inv", "model.layers.3.mlp.gate.e_score_correction_bias",
        "model.layers.61.embed_tokens.weight", "model.layers.61.enorm.weight", "model.layers.61.hnorm.weight",
        "model.layers.61.eh_proj.weight", "model.layers.61.shared_head.norm.weight", "model.layers.61.shared_head.head.weight",
        "model.layers.61.self_attn.kv_b_proj.weight", "model.layers.61.mlp.experts.0.up_proj.weight",
    ]),
    # zai-org/GLM-4.5-Air model.safetensors.index.json: MTP layer 46, attention biases
    "glm4_moe_hub": ("glm4_moe", {"glm4_moe"}, TEXT, [
        "model.layers.46.eh_proj.weight", "model.layers.46.enorm.weight", "model.layers.46.hnorm.weight",
        "model.layers.46.shared_head.norm.weight", "model.layers.46.embed_tokens.weight",
        "model.layers.46.self_attn.q_proj.bias", "model.layers.46.mlp.shared_experts.up_proj.weight",
    ]),
    # Qwen/Qwen2-Audio-7B-Instruct model.safetensors.index.json (same layout v5 writes; plus the lm_head path)
    "qwen2_audio_hub": ("qwen2_audio", {"qwen2_audio"}, [("audio_tower.", "audio"), ("multi_modal_projector.", "projector"), ("", "text")], [
        "audio_tower.layers.31.self_attn.k_proj.weight", "audio_tower.layer_norm.weight",
        "language_model.lm_head.weight", "language_model.model.layers.0.self_attn.q_proj.bias",
        "multi_modal_projector.linear.weight",
    ]),
}


def _tensor(name: str) -> np.ndarray:
    one_d = any(s in name for s in ("norm", "bias", "e_score"))
    return np.zeros(8 if one_d else (8, 8), np.float32)


@pytest.mark.parametrize("case", sorted(HAND_WRITTEN))
def test_hand_written_hub_names(case, tmp_path):
    model_type, families, components, names = HAND_WRITTEN[case]
    write_model(tmp_path / case, {n: _tensor(n) for n in names}, None if model_type is None else {"model_type": model_type})
    inv = build_inventory(open_model(tmp_path / case))
    assert inv.family in families
    check_inventory(inv, inv.family, components, {})


def test_mla_and_mtp_roles(tmp_path):
    write_model(tmp_path / "d", {n: _tensor(n) for n in HAND_WRITTEN["deepseek_v3_hub"][3]}, {"model_type": "deepseek_v3"})
    by = build_inventory(open_model(tmp_path / "d")).by_name
    assert by["model.layers.3.self_attn.q_a_proj.weight_scale_inv"].param == "weight_scale_inv"
    assert by["model.layers.61.eh_proj.weight"].role == "other"
    assert by["model.layers.61.shared_head.head.weight"].role == "lm_head"
    assert by["model.layers.61.embed_tokens.weight"].role == "embedding"
    bias = by["model.layers.3.mlp.gate.e_score_correction_bias"]
    assert (bias.role, bias.param, bias.evidence) == ("router", "e_score_correction_bias", False)


# --------------------------------------------------------------------------- cross-family renaming

def _llama_tensors(tmp_path) -> dict[str, np.ndarray]:
    _save(CASES["llama"][0](), tmp_path / "llama")
    from safetensors.numpy import load_file

    return load_file(str(tmp_path / "llama" / "model.safetensors"))


def test_renamed_llama_aligns_with_its_original(tmp_path):
    tensors = _llama_tensors(tmp_path)
    inv_a = build_inventory(open_model(tmp_path / "llama"))
    assert inv_a.family == "llama"

    # Qwen2 names are Llama names: every tensor pairs by name
    inv_q = build_inventory(open_model(write_model(tmp_path / "as_qwen2", tensors, {"model_type": "qwen2"})))
    assert inv_q.family == "qwen2" and inv_q.unassigned == ()
    al = align_by_name(inv_a, inv_q)
    assert al.unmatched == ()
    assert len(al.pairs) == len(tensors) and all(p.matched_by == "name" and p.a.name == p.b.name for p in al.pairs)

    # BERT names for the attention projections, under a BERT config: the renamed q/k/v/o pair by role
    bert_names = {"q_proj": "attention.self.query", "k_proj": "attention.self.key", "v_proj": "attention.self.value",
                  "o_proj": "attention.output.dense"}
    renamed, expected = {}, {}
    for name, value in tensors.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.self_attn\.(\w_proj)\.weight", name)
        new = f"bert.encoder.layer.{m.group(1)}.{bert_names[m.group(2)]}.weight" if m else name
        renamed[new] = value
        expected[name] = new
    inv_b = build_inventory(open_model(write_model(tmp_path / "as_bert", renamed, {"model_type": "bert"})))
    assert inv_b.family == "bert" and inv_b.unassigned == ()
    al = align_by_name(inv_a, inv_b)
    assert al.unmatched == ()
    got = {p.a.name: p.b.name for p in al.pairs}
    assert got == expected
    by_role = {p.a.name for p in al.pairs if p.matched_by == "role"}
    assert by_role == {n for n in tensors if ".self_attn." in n}
    assert all(not p.transpose_b for p in al.pairs)
