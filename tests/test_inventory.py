import json

import pytest

from modelkin.errors import FormatError
from modelkin.inventory import ROLES, build_inventory, families
from modelkin.inventory.families import _load_family
from modelkin.sources import open_model

from builders import qwen2_tensors, write_model


def test_every_family_file_loads_and_uses_known_roles():
    fams = families()
    assert {"llama", "qwen2", "qwen3", "qwen2_5_vl", "bert", "gpt2", "vit", "clip", "siglip", "whisper"} <= set(fams)
    for fam in fams.values():
        assert fam.rules, fam.name
        assert all(r.role in ROLES for r in fam.rules)


def test_unknown_key_in_family_file_is_an_error():
    with pytest.raises(FormatError, match="unknown keys"):
        _load_family("x", {"family": "x", "rules": [], "layer_count_key": "n"})
    with pytest.raises(FormatError, match="unknown role"):
        _load_family("x", {"family": "x", "rules": [{"pattern": "a", "role": "attention"}]})
    with pytest.raises(FormatError, match="file name"):
        _load_family("x", {"family": "y", "rules": []})


def test_qwen2_roles_layers_and_evidence(tmp_path):
    write_model(tmp_path / "m", qwen2_tensors(1), {"model_type": "qwen2"})
    inv = build_inventory(open_model(tmp_path / "m"))
    assert inv.family == "qwen2"
    assert inv.unassigned == ()
    by = inv.by_name
    q = by["model.layers.1.self_attn.q_proj.weight"]
    assert (q.role, q.component, q.layer, q.param, q.evidence) == ("attn.q", "text", 1, "weight", True)
    assert by["model.layers.0.input_layernorm.weight"].evidence is False
    assert "norm gains" in by["model.layers.0.input_layernorm.weight"].non_evidence_reason
    assert by["model.layers.0.self_attn.q_proj.bias"].evidence is False
    assert by["lm_head.weight"].role == "lm_head"
    assert by["model.embed_tokens.weight"].key == "embed_tokens.weight"


def test_family_detected_from_names_without_config(tmp_path):
    write_model(tmp_path / "m", qwen2_tensors(1))
    inv = build_inventory(open_model(tmp_path / "m"))
    assert inv.family in {"llama", "qwen2", "qwen3"}
    assert inv.unassigned == ()


def test_vlm_components_and_wrapper_prefixes(tmp_path):
    import numpy as np

    t = qwen2_tensors(1, prefix="model.language_model.")
    r = np.random.default_rng(0)
    t["model.visual.blocks.0.attn.qkv.weight"] = r.normal(size=(96, 32)).astype(np.float32)
    t["model.visual.blocks.0.norm1.weight"] = np.ones(32, np.float32)
    t["model.visual.merger.mlp.0.weight"] = r.normal(size=(128, 128)).astype(np.float32)
    t["model.visual.patch_embed.proj.weight"] = r.normal(size=(32, 3, 2, 14, 14)).astype(np.float32)
    write_model(tmp_path / "m", t, {"model_type": "qwen2_5_vl"})
    inv = build_inventory(open_model(tmp_path / "m"))
    by = inv.by_name
    assert by["model.visual.blocks.0.attn.qkv.weight"].component == "vision"
    assert by["model.visual.blocks.0.attn.qkv.weight"].key == "visual.blocks.0.attn.qkv.weight"
    assert by["model.visual.merger.mlp.0.weight"].component == "projector"
    assert by["model.visual.patch_embed.proj.weight"].role == "patch_embed"
    assert by["model.language_model.layers.0.mlp.up_proj.weight"].key == "layers.0.mlp.up_proj.weight"
    assert by["model.language_model.layers.0.mlp.up_proj.weight"].component == "text"
    assert inv.unassigned == ()


def test_unknown_architecture_still_counts_2d_tensors(tmp_path):
    import numpy as np

    r = np.random.default_rng(0)
    write_model(tmp_path / "m", {"net.w1": r.normal(size=(32, 32)).astype(np.float32), "net.s": np.ones(32, np.float32)})
    inv = build_inventory(open_model(tmp_path / "m"))
    assert inv.unassigned == ("net.s", "net.w1") or set(inv.unassigned) == {"net.s", "net.w1"}
    assert inv.by_name["net.w1"].evidence is True
    assert inv.by_name["net.s"].evidence is False


def test_gpt2_conv1d_is_marked_transposed(tmp_path):
    import numpy as np

    r = np.random.default_rng(0)
    write_model(tmp_path / "m", {"transformer.h.0.attn.c_attn.weight": r.normal(size=(32, 96)).astype(np.float32),
                                 "transformer.h.0.attn.bias": np.ones((1, 1, 8, 8), np.float32)}, {"model_type": "gpt2"})
    inv = build_inventory(open_model(tmp_path / "m"))
    e = inv.by_name["transformer.h.0.attn.c_attn.weight"]
    assert (e.role, e.transposed, e.layer) == ("attn.qkv", True, 0)
    assert inv.by_name["transformer.h.0.attn.bias"].role == "buffer"
