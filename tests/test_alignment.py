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


def test_budgeted_layer_choice_is_flat_and_stable_in_depth():
    from modelkin.alignment.budget import plan_layers
    from modelkin.index.fingerprint import ShapeSource, llama_like
    from modelkin.inventory import build_inventory
    from modelkin.sampling import DEFAULT_SAMPLE, FINGERPRINT_SAMPLE

    def plan(layers, hidden=4096, ffn=11008, policy=FINGERPRINT_SAMPLE, vocab=32000):
        tensors, config = llama_like(hidden=hidden, layers=layers, ffn=ffn, vocab=vocab)
        return plan_layers(build_inventory(ShapeSource(tensors, config)).tensors, policy)

    full, pruned, deep = plan(32), plan(30), plan(80)
    assert plan(32, policy=DEFAULT_SAMPLE) is None  # the default sample reads every layer
    assert full.k == pruned.k == deep.k == 9 and len(full.chosen["text"]) == 9
    # A key-seeded order of layer indices, not of the depth: a pruned model keeps the choices below its depth.
    below = [x for x in full.chosen["text"] if x < 30]
    assert set(below) <= set(pruned.chosen["text"]) and len(below) >= 7
    assert plan(4, hidden=256, ffn=512, vocab=1000).chosen["text"] is None  # a model within the budget is read whole


def test_budgeted_row_blocks_of_a_wider_tensor_keep_the_narrower_ones():
    from modelkin.sampling import FINGERPRINT_SAMPLE, sample_rows

    narrow = set(sample_rows("mlp.gate_proj.weight", 11008, 11008 * 4096 * 2, FINGERPRINT_SAMPLE).tolist())
    wide = set(sample_rows("mlp.gate_proj.weight", 2 * 11008, 2 * 11008 * 4096 * 2, FINGERPRINT_SAMPLE).tolist())
    assert len(narrow) == len(wide) == 16
    assert {r for r in wide if r < 11008} <= narrow
