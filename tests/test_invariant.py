"""Models whose shapes differ, and copies whose units were moved: the shared-basis and channel tests, the
inferred channel graph, component coverage, and "independent" only with an invariant test's power."""

from __future__ import annotations

import numpy as np
import pytest

import modelkin
from modelkin.alignment.channels import infer_graph
from modelkin.inventory import build_inventory
from modelkin.sources import open_model
from modelkin.statistics.realigned import log10_sign_test
from modelkin.statistics.margins import MIN_UNITS, detectable_margin, sibling_margins, sign_flip_test, split_features

from builders import (perturb, permute_ffn_units, permute_prune_resnet, qwen2_tensors, resnet_tensors, widen_qwen2, write_model,
                      write_tokenizer)

TOKENS = [f"t{i}" for i in range(400)]


def _text(folder, tensors, tokens):
    write_model(folder, tensors, {"model_type": "qwen2"})
    write_tokenizer(folder, tokens)
    return folder


# -- margins and the sign-flip test ------------------------------------------------------------------


def test_margins_of_a_copy_are_positive_and_of_strangers_are_not():
    r = np.random.default_rng(0)
    basis = r.normal(size=(40, 128))  # 40 latent directions seen through 128 shared inputs
    parent = r.normal(size=(64, 40)) @ basis
    copy = parent[r.permutation(64)][:48] + 0.3 * r.normal(size=(48, 128))  # permuted, pruned, perturbed
    stranger = r.normal(size=(96, 40)) @ basis
    fit, score = split_features(128, r)
    groups = lambda n: np.zeros(n, int)  # noqa: E731
    m = sibling_margins(copy, groups(48), parent, groups(64), fit, score, np.random.default_rng(1))
    # Every unit finds its copy among all 64 parent units; the p-value's search sees only 47 of them (as many
    # as a unit has siblings), so about a quarter miss their copy there and get a negative margin.
    assert m.margin.size == 48 and m.counterpart.all()
    assert 0.6 < np.mean(m.margin > 0) < 0.9 and m.margin.mean() > 0.3
    z, log10_p, _ = sign_flip_test(m.margin)
    # The larger of Hoeffding's bound and the exact sign test (here 40 of 48 margins positive: the sign test).
    assert z > 5 and log10_p < -5 and log10_p == pytest.approx(max(-z * z / 2 / np.log(10), log10_sign_test(m.margin)))
    # All margins alike: z = sqrt(n); the sign test gives 2^-n, Hoeffding exp(-n/2), the larger is reported.
    z, log10_p, _ = sign_flip_test(np.full(20, 0.5))
    assert z == pytest.approx(np.sqrt(20)) and log10_p == pytest.approx(-10 / np.log(10))
    # Strangers drawn from the same latent directions are exchangeable with siblings: the null's boundary.
    m = sibling_margins(parent, groups(64), stranger, groups(96), fit, score, np.random.default_rng(1))
    z, log10_p, _ = sign_flip_test(m.margin)
    assert abs(m.margin.mean()) < 0.05 and log10_p > -1


def test_sign_flip_test_needs_enough_units():
    assert sign_flip_test(np.ones(MIN_UNITS - 1)) is None
    z, log10_p, sd = sign_flip_test(np.array([0.1, -0.1] * 10))
    assert z == 0 and log10_p == 0.0
    # Power: a weak shift is detectable only with enough units, and needs both the sign count and the sum.
    assert detectable_margin(0.2 / np.sqrt(800), 800, -6.0) < 0.1 < detectable_margin(0.2 / np.sqrt(100), 100, -6.0)


# -- the channel graph ---------------------------------------------------------------------------------


def _graph(tmp_path, tensors):
    src = open_model(write_model(tmp_path, tensors))
    return infer_graph(list(build_inventory(src).tensors))


def test_resnet_graph_from_names_and_shapes(tmp_path):
    g = _graph(tmp_path, resnet_tensors(1, widths=(16, 32)))
    d = g.describe()
    assert d["input_readers"] == ["conv1"]
    axes = {tuple(a["writers"]): (a["readers"], a["output"]) for a in d["axes"]}
    assert axes == {  # the identity residual of layer1.0 ties its output to the stem; the shortcut to conv2
        ("conv1", "layer1.0.conv2"): (["layer1.0.conv1", "layer2.0.conv1", "layer2.0.downsample.0"], False),
        ("layer1.0.conv1",): (["layer1.0.conv2"], False),
        ("layer2.0.conv1",): (["layer2.0.conv2"], False),
        ("layer2.0.conv2", "layer2.0.downsample.0"): (["fc"], False),
        ("fc",): ([], True),  # classes: the output basis, aligned by construction
    }


def test_mlp_stack_and_depthwise_graph(tmp_path):
    r = np.random.default_rng(0)
    t = {"net.0.weight": r.normal(size=(64, 20)), "net.2.weight": r.normal(size=(48, 64)), "net.4.weight": r.normal(size=(5, 48)),
         "feat.0.weight": r.normal(size=(32, 3, 3, 3)), "feat.1.weight": r.normal(size=(32, 1, 3, 3)),
         "feat.2.weight": r.normal(size=(64, 32, 1, 1))}
    mlp = _graph(tmp_path / "m", {k: v.astype(np.float32) for k, v in t.items() if k.startswith("net")})
    assert [(n.key, n.in_axis is None) for n in mlp.nodes] == [("net.0", True), ("net.2", False), ("net.4", False)]
    assert [tuple(a["readers"]) for a in mlp.describe()["axes"]] == [("net.2",), ("net.4",), ()]
    cnn = _graph(tmp_path / "c", {k: v.astype(np.float32) for k, v in t.items() if k.startswith("feat")})
    dw = next(n for n in cnn.nodes if n.key == "feat.1")
    assert dw.depthwise and dw.in_axis == dw.out_axis == cnn.nodes[0].out_axis  # depthwise keeps channels


# -- different widths, depths and vocabularies: the shared-basis test --------------------------------


def test_width_grown_child_is_related_with_a_layer_map(tmp_path):
    base = qwen2_tensors(1, hidden=64, ffn=128, vocab=256, layers=2)
    a = _text(tmp_path / "a", base, TOKENS[:256])
    b = _text(tmp_path / "b", perturb(widen_qwen2(base, 96, 192), 0.3), TOKENS[:256])
    res = modelkin.compare(a, b)
    assert list(res.components) == ["text"] and res.verdict == "related"
    text = res.components["text"]
    assert text.n_tensors == 0 and text.log10_p < -40 and text.decided_by.startswith("shared-basis")
    assert text.layer_map["method"] == "shared-basis" and text.layer_map["pairs"] == [[0, 0], [1, 1]]
    test = text.invariant_tests[0]
    assert test["test"] == "shared-basis" and test["basis"] == "tokens" and test["n_counterparts"] == test["n_units"]
    assert {t["type"] for t in test["unit_types"]} == {"ffn", "attn.q", "attn.k", "attn.v", "residual"}
    assert all(t["smaller"] == "a" for t in test["unit_types"])
    assert any("shared-basis" in n for n in res.notes)


def test_independent_model_of_other_width_depth_and_vocabulary_is_independent(tmp_path):
    a = _text(tmp_path / "a", qwen2_tensors(1, hidden=64, ffn=128, vocab=256, layers=2), TOKENS[:256])
    b = _text(tmp_path / "b", qwen2_tensors(2, hidden=96, ffn=256, vocab=300, layers=3), TOKENS[100:400])
    res = modelkin.compare(a, b)
    assert list(res.components) == ["text"] and res.verdict == "independent"
    assert res.vocabulary["n_shared"] == 156
    test = res.components["text"].invariant_tests[0]
    assert test["ran"] and test["z"] < 0 and test["n_inputs"] == 156


def test_component_with_no_same_shape_tensor_is_listed(tmp_path):
    # A grafted text tower of another width inside a VLM-named model: nothing pairs by shape, yet the
    # component is there, judged by the shared-basis test.
    base = qwen2_tensors(1, hidden=64, ffn=128, vocab=256, layers=2)
    a = _text(tmp_path / "a", base, TOKENS[:256])
    other = qwen2_tensors(3, hidden=96, ffn=192, vocab=256, layers=2, prefix="model.language_model.")
    b = write_model(tmp_path / "b", other, {"model_type": "qwen2_5_vl"})
    write_tokenizer(b, TOKENS[:256])
    res = modelkin.compare(a, b)
    assert set(res.components) == {"text"}
    assert res.components["text"].verdict == "independent" and res.components["text"].n_tensors == 0


# -- whole networks without a family's structure: the channel test ---------------------------------------


def test_permuted_and_pruned_resnet_is_related_and_channels_recovered(tmp_path):
    parent = resnet_tensors(1)
    child, truth = permute_prune_resnet(parent, 5)
    a, b = write_model(tmp_path / "a", parent), write_model(tmp_path / "b", perturb(child, 0.3))
    res = modelkin.compare(a, b)
    vision = res.components["vision"]
    assert list(res.components) == ["vision"] and vision.verdict == "related" and vision.log10_p < -40
    # Same-index tests on the unpruned tensors see nothing: the channel test decides.
    assert all(t.log10_p > -3 for t in res.tensors if t.evidence)
    assert vision.decided_by.startswith("channels")
    test = vision.invariant_tests[0]
    maps = {m["modules"][0]: m for m in test["channel_maps"]}
    assert set(maps) == {"conv1", "layer1.0.conv1", "layer2.0.conv1", "layer2.0.conv2"}
    for first, m in maps.items():
        assert m["units_b"] == len(truth[first]) and len(m["pairs"]) == m["units_b"]
        assert all(truth[first][j] == i for i, j in m["pairs"])  # every channel back to its parent channel
    assert maps["layer1.0.conv1"]["units_a"] == 48 and maps["layer1.0.conv1"]["units_b"] == 38


def test_independent_resnets_are_independent_by_the_channel_test(tmp_path):
    res = modelkin.compare(write_model(tmp_path / "a", resnet_tensors(1)), write_model(tmp_path / "b", resnet_tensors(2)))
    assert res.verdict == "independent"
    assert "channels test" in res.components["vision"].reason


def test_unknown_mlp_stack_with_permuted_hidden_units(tmp_path):
    r = np.random.default_rng(4)
    t = {"net.0.weight": r.normal(size=(96, 50)), "net.2.weight": r.normal(size=(64, 96)), "net.4.weight": r.normal(size=(10, 64))}
    p1, p2 = r.permutation(96), r.permutation(64)
    child = {"net.0.weight": t["net.0.weight"][p1], "net.2.weight": t["net.2.weight"][p2][:, p1],
             "net.4.weight": t["net.4.weight"][:, p2]}
    f32 = lambda d: {k: v.astype(np.float32) for k, v in d.items()}  # noqa: E731
    res = modelkin.compare(write_model(tmp_path / "a", f32(t)), write_model(tmp_path / "b", perturb(f32(child), 0.3)))
    other = res.components["other"]
    assert other.verdict == "related" and other.decided_by.startswith("channels")
    maps = other.invariant_tests[0]["channel_maps"]
    assert [m["modules"] for m in maps] == [["net.0"], ["net.2"]]
    assert all(p1[j] == i for i, j in maps[0]["pairs"]) and all(p2[j] == i for i, j in maps[1]["pairs"])


# -- coverage and the rule for "independent" ----------------------------------------------------------


def test_scalar_only_component_does_not_make_the_overall_verdict_inconclusive(tmp_path):
    ta, tb = qwen2_tensors(1, hidden=96, ffn=192), qwen2_tensors(2, hidden=96, ffn=192)
    ta["logit_scale"], tb["logit_scale"] = np.array([2.6], np.float32), np.array([2.6], np.float32)
    res = modelkin.compare(write_model(tmp_path / "a", ta, {"model_type": "qwen2"}), write_model(tmp_path / "b", tb, {"model_type": "qwen2"}))
    assert set(res.components) == {"text", "other"}
    assert res.components["other"].verdict == "inconclusive" and not res.components["other"].counted
    assert "not counted" in res.components["other"].reason and res.components["text"].counted
    assert res.verdict == "independent"


def test_same_index_evidence_alone_never_says_independent(tmp_path):
    # Projector tensors without a vision tower: they pair by shape and the same-index tests find nothing,
    # but no test that a permuted copy cannot fool can run (its input is another part's hidden stream).
    def model(seed):
        r = np.random.default_rng(seed)
        t = qwen2_tensors(seed, hidden=96, ffn=192)
        t["visual.merger.mlp.0.weight"] = r.normal(size=(128, 128)).astype(np.float32)
        t["visual.merger.mlp.2.weight"] = r.normal(size=(96, 128)).astype(np.float32)
        return t

    res = modelkin.compare(write_model(tmp_path / "a", model(1), {"model_type": "qwen2_5_vl"}),
                           write_model(tmp_path / "b", model(2), {"model_type": "qwen2_5_vl"}))
    proj = res.components["projector"]
    assert proj.n_evidence == 2 and proj.log10_p > -2
    assert proj.verdict == "inconclusive" and "no input basis shared" in proj.reason
    assert "permuted or rotated copy would go unseen" in proj.reason
    assert res.components["text"].verdict == "independent" and res.verdict == "inconclusive"


def test_no_channel_test_when_the_input_layer_cannot_be_identified(tmp_path):
    # Square layers only: every input width is produced inside the network, so which layer reads the input
    # (and which axis is a basis both models share) cannot be told from shapes. No "independent" then.
    r = np.random.default_rng(2)
    net = lambda: {f"blocks.{i}.w": r.normal(size=(64, 64)).astype(np.float32) for i in range(3)}  # noqa: E731
    res = modelkin.compare(write_model(tmp_path / "a", net()), write_model(tmp_path / "b", net()))
    other = res.components["other"]
    assert other.verdict == "inconclusive" and "could not be identified" in other.reason
    assert res.verdict == "inconclusive"


def test_bench_counts_missing_components_and_related_called_independent():
    from modelkin.bench.harness import summarize

    def rec(label, labels, got, invariant=None):
        return {"id": label, "kind": "k" if label == "related" else "independent_seed", "label": label,
                "component_labels": labels, "seconds": 0.0, "baselines": {},
                "modelkin": {"verdict": "related", "log10_p": -5.0, "tests": {},
                             "components": {c: {"verdict": v, "log10_p": 0.0} for c, v in got.items()},
                             "missing_components": sorted(set(labels) - set(got)), "invariant": invariant or {}}}

    inv = {"text": {"test": "shared-basis", "ran": True, "z": -3.0, "mean_margin": -0.2, "log10_p": 0.0}}
    records = [rec("related", {"text": "related", "vision": "related"}, {"text": "independent"}),
               rec("independent", {"text": "independent"}, {"text": "independent"}, inv)]
    records[1]["modelkin"]["verdict"] = "independent"
    from modelkin.bench import baselines

    for r in records:
        r["baselines"] = {m: {"score": None, "call": "inconclusive", "seconds": 0.0} for m in baselines.BASELINES}
    out = summarize(records)
    assert out["missing_components"] == 1 and out["independent_on_related"] == 1
    assert out["invariant_margins"]["shared-basis"]["max_z"] == -3.0


def test_attention_heads_survive_rotations_inside_each_head(tmp_path):
    # Q and K rows of every head turned by the same orthogonal matrix (logits q.k unchanged): row-wise
    # fingerprints of Q and K no longer match, the heads' fingerprints (their attention logits) still do.
    base = qwen2_tensors(1, hidden=128, ffn=256, vocab=256, layers=2)  # 8 query heads, 4 key/value heads of 16
    child = dict(base)
    r = np.random.default_rng(9)
    for layer in range(2):
        q, k = f"model.layers.{layer}.self_attn.q_proj.", f"model.layers.{layer}.self_attn.k_proj."
        wq, wk, bq = base[q + "weight"].copy(), base[k + "weight"].copy(), base[q + "bias"].copy()
        for g in range(4):
            rot = np.linalg.qr(r.normal(size=(16, 16)))[0].astype(np.float32)
            wk[g * 16:(g + 1) * 16] = rot @ wk[g * 16:(g + 1) * 16]
            for h in (2 * g, 2 * g + 1):
                wq[h * 16:(h + 1) * 16] = rot @ wq[h * 16:(h + 1) * 16]
                bq[h * 16:(h + 1) * 16] = rot @ bq[h * 16:(h + 1) * 16]
        child[q + "weight"], child[k + "weight"], child[q + "bias"] = wq, wk, bq
    config = {"model_type": "qwen2", "num_attention_heads": 8, "num_key_value_heads": 4}
    a = write_model(tmp_path / "a", base, config)
    b = write_model(tmp_path / "b", perturb(child, 0.2), config)
    for m in (a, b):
        write_tokenizer(m, TOKENS[:256])
    types = {t["type"]: t for t in modelkin.compare(a, b).components["text"].invariant_tests[0]["unit_types"]}
    assert types["attn.head"]["tested"] == 16 and types["attn.head"]["counterparts"] == 16
    assert types["attn.head"]["mean_margin"] > 0.3
    assert types["attn.q"]["mean_margin"] < types["attn.head"]["mean_margin"] - 0.2


def test_vocabularies_without_enough_shared_tokens_give_no_basis(tmp_path):
    a = _text(tmp_path / "a", qwen2_tensors(1, hidden=64, ffn=128, vocab=200, layers=2), TOKENS[:200])
    b = _text(tmp_path / "b", qwen2_tensors(2, hidden=96, ffn=128, vocab=200, layers=2), TOKENS[190:390])
    res = modelkin.compare(a, b)
    text = res.components["text"]
    assert text.verdict == "inconclusive" and "too few token strings shared" in text.reason
    assert res.vocabulary["n_shared"] == 10


def test_sampled_units_cannot_rule_out_a_permuted_copy(tmp_path):
    """When the larger model's units are too many to fingerprint all (here 4,096 FFN units per layer, sampled
    at the read's key-seeded rows), a permuted copy's counterparts are mostly never looked at: the shared-basis
    test must not lend its power to an "independent" verdict (inconclusive, saying why), while a real
    permuted copy is still found related by the realigned test."""
    cfg = {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 4096, "num_hidden_layers": 2,
           "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512}
    a = qwen2_tensors(1, hidden=256, ffn=4096, vocab=512, layers=2)
    a_dir = write_model(tmp_path / "a", a, cfg)
    other = write_model(tmp_path / "other", qwen2_tensors(2, hidden=256, ffn=4096, vocab=512, layers=2), cfg)
    res = modelkin.compare(a_dir, other, hash_files=False)
    text = res.components["text"]
    assert res.verdict == "inconclusive" and text.verdict == "inconclusive"
    test = next(t for t in text.invariant_tests if t["test"] == "shared-basis")
    assert test["ran"] and test["partner_coverage"] < 0.05
    assert "fingerprinted only" in text.reason and "permuted copy" in text.reason
    copy = write_model(tmp_path / "copy", perturb(permute_ffn_units(a, seed=3), 0.05), cfg)
    assert modelkin.compare(a_dir, copy, hash_files=False).verdict == "related"
