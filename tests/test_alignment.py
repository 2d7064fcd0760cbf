import numpy as np

from modelkin.alignment import align_by_name
from modelkin.inventory import build_inventory
from modelkin.sources import open_model

from builders import qwen2_tensors, write_model


def _inv(folder):
    return build_inventory(open_model(folder))


def test_wrapper_prefixes_are_stripped(tmp_path):
    a = write_model(tmp_path / "a", qwen2_tensors(1, prefix="model."), {"model_type": "qwen2"})
    b = write_model(tmp_path / "b", qwen2_tensors(2, prefix="model.language_model."), {"model_type": "qwen2_5_vl"})
    al = align_by_name(_inv(a), _inv(b))
    assert len(al.pairs) == len(qwen2_tensors(1))
    assert al.unmatched == ()
    assert all(p.matched_by == "name" for p in al.pairs)


def test_unmatched_tensors_are_listed_with_reasons(tmp_path):
    ta = qwen2_tensors(1, layers=3)
    tb = qwen2_tensors(2, layers=2)
    tb["lm_head.weight"] = tb["lm_head.weight"][:200]  # vocabulary pruned: shape differs
    al = align_by_name(_inv(write_model(tmp_path / "a", ta, {"model_type": "qwen2"})), _inv(write_model(tmp_path / "b", tb, {"model_type": "qwen2"})))
    missing = {u.name: u for u in al.unmatched}
    assert "model.layers.2.mlp.up_proj.weight" in missing
    assert missing["model.layers.2.mlp.up_proj.weight"].side == "a"
    assert "shape" in missing["lm_head.weight"].reason
    assert {u.side for u in al.unmatched if u.name == "lm_head.weight"} == {"a", "b"}


def test_transposed_storage_pairs_with_linear_layout(tmp_path):
    r = np.random.default_rng(0)
    w = r.normal(size=(96, 32)).astype(np.float32)  # nn.Linear [out, in]
    a = write_model(tmp_path / "a", {"transformer.h.0.attn.c_attn.weight": np.ascontiguousarray(w.T)}, {"model_type": "gpt2"})
    b = write_model(tmp_path / "b", {"h.0.attn.c_attn.weight": np.ascontiguousarray(w.T)}, {"model_type": "gpt2"})
    al = align_by_name(_inv(a), _inv(b))
    assert len(al.pairs) == 1 and al.pairs[0].transpose_b is False


def test_renamed_tensors_pair_by_role(tmp_path):
    r = np.random.default_rng(0)
    q = r.normal(size=(64, 64)).astype(np.float32)
    a = write_model(tmp_path / "a", {"model.layers.0.self_attn.q_proj.weight": q}, {"model_type": "qwen2"})
    b = write_model(tmp_path / "b", {"bert.encoder.layer.0.attention.self.query.weight": q}, {"model_type": "bert"})
    al = align_by_name(_inv(a), _inv(b))
    assert [(p.a.role, p.matched_by) for p in al.pairs] == [("attn.q", "role")]
