import json
import subprocess
import sys

import numpy as np
import pytest

import modelkin
from modelkin.errors import UsageError

from builders import perturb, qwen2_tensors, write_model

REQUIRED_TENSOR_KEYS = {"a", "b", "role", "component", "layer_a", "layer_b", "shape", "cosine", "pearson", "rel_l2", "identical", "evidence"}


@pytest.fixture()
def trio(tmp_path):
    base = qwen2_tensors(1, hidden=96, ffn=192)
    a = write_model(tmp_path / "a", base, {"model_type": "qwen2"})
    child = write_model(tmp_path / "child", perturb(base, 1.5), {"model_type": "qwen2"})
    other = write_model(tmp_path / "other", qwen2_tensors(2, hidden=96, ffn=192), {"model_type": "qwen2"})
    return a, child, other


def test_related_and_independent(trio):
    a, child, other = trio
    rel = modelkin.compare(a, child)
    assert rel.verdict == "related"
    assert rel.components["text"].verdict == "related"
    assert rel.components["text"].log10_p < -50
    ind = modelkin.compare(a, other)
    assert ind.verdict == "independent"
    assert ind.components["text"].log10_p > -4


def test_norm_gain_cosine_is_never_evidence(tmp_path):
    # The Solar/GLM situation: norm gains near 1 (cosine ~0.99) and even identical, every matrix unrelated.
    ta, tb = qwen2_tensors(1), qwen2_tensors(2)
    for k in ta:
        if "layernorm" in k or k.endswith("norm.weight"):
            tb[k] = ta[k].copy()
    res = modelkin.compare(write_model(tmp_path / "a", ta, {"model_type": "qwen2"}), write_model(tmp_path / "b", tb, {"model_type": "qwen2"}))
    norms = [t for t in res.tensors if t.role == "norm"]
    assert norms and all(t.cosine > 0.99 and t.identical and not t.evidence for t in norms)
    assert res.verdict == "independent" and res.components["text"].verdict == "independent"


def test_only_non_evidence_is_inconclusive_not_independent(tmp_path):
    r = np.random.default_rng(0)
    ta = {"model.norm.weight": (1 + 0.01 * r.normal(size=64)).astype(np.float32)}
    tb = {"model.norm.weight": (1 + 0.01 * r.normal(size=64)).astype(np.float32)}
    res = modelkin.compare(write_model(tmp_path / "a", ta, {"model_type": "qwen2"}), write_model(tmp_path / "b", tb, {"model_type": "qwen2"}))
    assert res.components["text"].verdict == "inconclusive"
    assert "no informative tensors" in res.components["text"].reason


def test_tiny_models_are_inconclusive_rather_than_independent(tmp_path):
    ta = qwen2_tensors(1, hidden=16, ffn=16, vocab=16, layers=1)
    tb = qwen2_tensors(2, hidden=16, ffn=16, vocab=16, layers=1)
    res = modelkin.compare(write_model(tmp_path / "a", ta, {"model_type": "qwen2"}), write_model(tmp_path / "b", tb, {"model_type": "qwen2"}))
    assert res.components["text"].verdict == "inconclusive"


def test_json_schema_and_thread_independence(trio):
    a, child, _ = trio
    r1 = modelkin.compare(a, child, threads=1)
    r2 = modelkin.compare(a, child, threads=2)
    d1, d2 = r1.to_dict(), r2.to_dict()
    for d in (d1, d2):
        d.pop("seconds")
        d.pop("created")
    assert d1 == d2  # deterministic whatever the thread count
    doc = json.loads(r1.to_json())
    assert {"modelkin_version", "a", "b", "verdict", "log10_p", "components", "tensors", "unmatched"} <= set(doc)
    assert set(doc["a"]["files"]) == {"model.safetensors"} and len(doc["a"]["files"]["model.safetensors"]["sha256"]) == 64
    assert doc["a"]["files"]["model.safetensors"]["sha256_source"] == "hashed" and doc["a"]["revision"] is None
    comp = doc["components"]["text"]
    assert {"verdict", "log10_p", "n_tensors", "median_pearson", "median_cosine"} <= set(comp)
    assert all(REQUIRED_TENSOR_KEYS <= set(t) for t in doc["tensors"])


def test_component_filter_and_bad_options(trio):
    a, child, _ = trio
    res = modelkin.compare(a, child, components=("vision",))
    assert res.components == {} and res.verdict == "inconclusive"
    with pytest.raises(UsageError):
        modelkin.compare(a, child, components=("audio-tower",))
    with pytest.raises(UsageError):
        modelkin.compare(a, child, alpha=2.0)


def test_cli_compare_json_to_stdout(trio):
    a, child, _ = trio
    out = subprocess.run([sys.executable, "-m", "modelkin", "compare", str(a), str(child), "--json", "-"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "related"


def test_cli_inspect_json(trio):
    a, _, _ = trio
    out = subprocess.run([sys.executable, "-m", "modelkin", "inspect", str(a), "--json", "-"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["family"] == "qwen2" and doc["unassigned"] == []
    assert {"name", "role", "component", "layer", "expert", "shape", "dtype"} <= set(doc["tensors"][0])


@pytest.mark.parametrize("kind", ["rotation", "permutation"])
def test_residual_rotation_or_permutation_does_not_hide_a_copy(tmp_path, kind):
    from builders import transform_residual

    base = qwen2_tensors(1, hidden=96, ffn=192)
    r = np.random.default_rng(7)
    q = np.linalg.qr(r.normal(size=(96, 96)))[0] if kind == "rotation" else np.eye(96)[r.permutation(96)]
    child = perturb(transform_residual(base, q), 0.3)
    res = modelkin.compare(write_model(tmp_path / "a", base, {"model_type": "qwen2"}), write_model(tmp_path / "b", child, {"model_type": "qwen2"}))
    assert res.components["text"].verdict == "related"
    anchored = [t for t in res.tensors if t.test == "anchored"]
    assert anchored and min(t.log10_p for t in anchored) < -20
    # An independent model gets no such evidence from the anchored test.
    other = modelkin.compare(write_model(tmp_path / "a2", base, {"model_type": "qwen2"}), write_model(tmp_path / "c", qwen2_tensors(3, hidden=96, ffn=192), {"model_type": "qwen2"}))
    assert other.verdict == "independent"


def test_tied_duplicates_and_near_constant_tensors_are_labelled(tmp_path):
    ta = qwen2_tensors(1)
    ta["lm_head.weight"] = ta["model.embed_tokens.weight"].copy()  # tied embeddings
    ta["model.layers.0.mlp.up_proj.weight"][:] = 0.5  # a constant matrix
    tb = perturb(ta, 0.5)
    tb["model.layers.0.mlp.up_proj.weight"][:] = 0.5
    res = modelkin.compare(write_model(tmp_path / "a", ta, {"model_type": "qwen2"}), write_model(tmp_path / "b", tb, {"model_type": "qwen2"}))
    rows = {t.a: t for t in res.tensors}
    dup = [rows["lm_head.weight"], rows["model.embed_tokens.weight"]]
    assert sorted(r.evidence for r in dup) == [False, True]
    assert "tied duplicate" in next(r for r in dup if not r.evidence).non_evidence_reason
    assert not rows["model.layers.0.mlp.up_proj.weight"].evidence
    assert "near-constant" in rows["model.layers.0.mlp.up_proj.weight"].non_evidence_reason


def test_permuted_ffn_and_residual_copy_is_found_by_realignment(tmp_path):
    from builders import permute_ffn_units, transform_residual

    base = qwen2_tensors(1, hidden=96, ffn=192)
    q = np.eye(96)[np.random.default_rng(8).permutation(96)]
    child = perturb(permute_ffn_units(transform_residual(base, q)), 0.3)
    res = modelkin.compare(write_model(tmp_path / "a", base, {"model_type": "qwen2"}), write_model(tmp_path / "b", child, {"model_type": "qwen2"}))
    assert res.components["text"].verdict == "related"
    best = min((t for t in res.tensors if t.evidence), key=lambda t: t.log10_p)
    assert best.test == "realigned" and best.unit_cosine > 0.8


def test_depth_pruning_and_upscaling_give_a_layer_map(tmp_path):
    base = qwen2_tensors(1, hidden=64, ffn=128, layers=4)
    a = write_model(tmp_path / "a", base, {"model_type": "qwen2"})

    def relayer(order):  # B's layer j is A's layer order[j], lightly trained
        out = {k: v for k, v in base.items() if ".layers." not in k}
        for j, i in enumerate(order):
            for k, v in base.items():
                if f".layers.{i}." in k:
                    out[k.replace(f".layers.{i}.", f".layers.{j}.")] = v
        return perturb(out, 0.3)

    pruned = modelkin.compare(a, write_model(tmp_path / "p", relayer([0, 1, 3]), {"model_type": "qwen2"}))
    lm = pruned.components["text"].layer_map
    assert pruned.verdict == "related"
    assert lm["method"] == "similarity" and lm["pairs"] == [[0, 0], [1, 1], [3, 2]] and lm["dropped_a"] == [2]
    assert any(u.reason.startswith("layer dropped") for u in pruned.unmatched)

    upscaled = modelkin.compare(a, write_model(tmp_path / "u", relayer([0, 1, 2, 1, 2, 3]), {"model_type": "qwen2"}))
    lm = upscaled.components["text"].layer_map
    assert lm["pairs"] == [[0, 0], [1, 1], [2, 2], [1, 3], [2, 4], [3, 5]]
    assert lm["duplicated_a"] == [1, 2] and lm["reordered"] is True and lm["dropped_a"] == []
    # Every B layer was compared with its true origin: all layered evidence is strong.
    layered = [t for t in upscaled.tensors if t.evidence and t.layer_b is not None]
    assert all(t.pearson > 0.9 for t in layered)


def test_pruned_and_reindexed_vocabulary_is_aligned_by_token_string(tmp_path):
    from builders import write_tokenizer

    vocab = 256
    base = qwen2_tensors(1, hidden=64, ffn=128, vocab=vocab)
    tokens = ["<unk>"] + [f"tok{i}" for i in range(1, vocab)]
    a = write_model(tmp_path / "a", base, {"model_type": "qwen2"})
    write_tokenizer(a, tokens)

    r = np.random.default_rng(3)
    kept = np.sort(r.choice(vocab, 180, replace=False))  # prune 76 tokens...
    order = r.permutation(kept)  # ...and re-index the rest
    new_rows = r.normal(size=(20, 64)).astype(np.float32)  # then extend with 20 new tokens
    child = dict(base)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        child[name] = np.concatenate([base[name][order], new_rows])
    child = perturb(child, 0.3)
    b = write_model(tmp_path / "b", child, {"model_type": "qwen2"})
    write_tokenizer(b, [tokens[i] for i in order] + [f"new{i}" for i in range(20)])

    res = modelkin.compare(a, b)
    assert res.vocabulary == {"source": "tokenizer", "n_a": 256, "n_b": 200, "n_shared": 180, "remapped": True}
    emb = next(t for t in res.tensors if t.role == "embedding")
    assert emb.matched_by == "name+vocab" and emb.compared_shape == [180, 64]
    assert emb.pearson > 0.9 and emb.evidence and emb.log10_p < -20
    assert not any(u.name == "model.embed_tokens.weight" for u in res.unmatched)

    # Without the tokenizer files the rows cannot be matched: the embedding shows nothing, and says why.
    (b / "tokenizer.json").unlink()
    res2 = modelkin.compare(a, b)
    emb2 = next(t for t in res2.tensors if t.role == "embedding")
    assert abs(emb2.pearson) < 0.2
    assert any("leading ids" in n for n in res2.notes)


def test_width_pruning_is_matched_and_reports_kept_units(tmp_path):
    base = qwen2_tensors(1, hidden=96, ffn=192)
    keep = np.sort(np.random.default_rng(4).choice(192, 144, replace=False))  # 75 % of FFN units
    child = dict(base)
    for layer in range(2):
        p = f"model.layers.{layer}.mlp."
        child[p + "gate_proj.weight"] = base[p + "gate_proj.weight"][keep]
        child[p + "up_proj.weight"] = base[p + "up_proj.weight"][keep]
        child[p + "down_proj.weight"] = base[p + "down_proj.weight"][:, keep]
    res = modelkin.compare(write_model(tmp_path / "a", base, {"model_type": "qwen2"}), write_model(tmp_path / "b", perturb(child, 0.3), {"model_type": "qwen2"}))
    assert res.verdict == "related"
    up = next(t for t in res.tensors if t.a == "model.layers.0.mlp.up_proj.weight")
    assert up.matched_by == "name (width differs)" and up.kept_unit_fraction == pytest.approx(0.75)
    assert up.evidence and up.test == "realigned" and up.log10_p < -10 and up.pearson is None
    down = next(t for t in res.tensors if t.a == "model.layers.0.mlp.down_proj.weight")
    assert not down.evidence and "widths differ" in down.non_evidence_reason


def test_moe_upcycling_pairs_every_expert_with_the_dense_mlp(tmp_path):
    dense = qwen2_tensors(1, hidden=64, ffn=128)
    moe = {k: v for k, v in dense.items() if ".mlp." not in k}
    r = np.random.default_rng(5)
    for layer in range(2):
        moe[f"model.layers.{layer}.mlp.gate.weight"] = (0.02 * r.normal(size=(4, 64))).astype(np.float32)
        for e in range(4):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                moe[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"] = dense[f"model.layers.{layer}.mlp.{proj}.weight"]
    res = modelkin.compare(write_model(tmp_path / "a", dense, {"model_type": "qwen2"}), write_model(tmp_path / "b", perturb(moe, 0.3), {"model_type": "qwen3_moe"}))
    assert res.verdict == "related"
    upcycled = [t for t in res.tensors if t.matched_by == "expert~dense"]
    assert len(upcycled) == 2 * 4 * 3 and all(t.pearson > 0.9 for t in upcycled)


def test_fused_qkv_and_gate_up_are_compared_with_split_tensors(tmp_path):
    base = qwen2_tensors(1, hidden=64, ffn=128)  # q 64 rows, k and v 32 rows (grouped-query attention)
    fused = {}
    for k, v in perturb(base, 0.3).items():
        if ".self_attn.q_proj.weight" in k:
            p = k.replace("q_proj.weight", "")
            fused[p + "qkv_proj.weight"] = np.concatenate([v, perturb(base, 0.3)[p + "k_proj.weight"], perturb(base, 0.3)[p + "v_proj.weight"]])
        elif ".self_attn.k_proj.weight" in k or ".self_attn.v_proj.weight" in k or k.endswith("_proj.bias"):
            continue
        elif ".mlp.gate_proj.weight" in k:
            p = k.replace("gate_proj.weight", "")
            fused[p + "gate_up_proj.weight"] = np.concatenate([v, perturb(base, 0.3)[p + "up_proj.weight"]])
        elif ".mlp.up_proj.weight" in k:
            continue
        else:
            fused[k] = v
    res = modelkin.compare(write_model(tmp_path / "a", base, {"model_type": "qwen2"}), write_model(tmp_path / "b", fused, {"model_type": "phi3"}))
    assert res.verdict == "related"
    parts = {t.b: t for t in res.tensors if "[" in t.b}
    assert set(parts) >= {"model.layers.0.self_attn.qkv_proj.weight[attn.k]", "model.layers.1.mlp.gate_up_proj.weight[mlp.up]"}
    k = parts["model.layers.0.self_attn.qkv_proj.weight[attn.k]"]
    assert k.a == "model.layers.0.self_attn.k_proj.weight" and k.compared_shape == [32, 64] and k.pearson > 0.9
    assert not any("qkv_proj" in u.name or "gate_up" in u.name for u in res.unmatched)


def test_vision_tower_moved_under_another_familys_names_is_still_aligned(tmp_path):
    # A's tower in Qwen2.5-VL naming (fused qkv); B stores the same tower, lightly trained, in CLIP naming.
    r = np.random.default_rng(11)
    h, inner, layers = 64, 128, 2
    a, b = {}, {}
    for i in range(layers):
        q, k, v = (r.normal(size=(h, h)).astype(np.float32) for _ in range(3))
        o = r.normal(size=(h, h)).astype(np.float32)
        up = r.normal(size=(inner, h)).astype(np.float32)
        down = r.normal(size=(h, inner)).astype(np.float32)
        a[f"visual.blocks.{i}.attn.qkv.weight"] = np.concatenate([q, k, v])
        a[f"visual.blocks.{i}.attn.proj.weight"] = o
        a[f"visual.blocks.{i}.mlp.up_proj.weight"] = up
        a[f"visual.blocks.{i}.mlp.down_proj.weight"] = down
        a[f"visual.blocks.{i}.norm1.weight"] = np.ones(h, np.float32)
        p = f"vision_model.encoder.layers.{i}."
        b[p + "self_attn.q_proj.weight"], b[p + "self_attn.k_proj.weight"], b[p + "self_attn.v_proj.weight"] = q, k, v
        b[p + "self_attn.out_proj.weight"] = o
        b[p + "mlp.fc1.weight"] = up
        b[p + "mlp.fc2.weight"] = down
        b[p + "layer_norm1.weight"] = np.ones(h, np.float32)
    res = modelkin.compare(write_model(tmp_path / "a", a, {"model_type": "qwen2_5_vl"}), write_model(tmp_path / "b", perturb(b, 0.3), {"model_type": "clip"}))
    assert res.components["vision"].verdict == "related"
    by_b = {t.b: t for t in res.tensors}
    assert by_b["vision_model.encoder.layers.1.mlp.fc1.weight"].a == "visual.blocks.1.mlp.up_proj.weight"
    assert by_b["vision_model.encoder.layers.0.self_attn.k_proj.weight"].a == "visual.blocks.0.attn.qkv.weight[attn.k]"
    assert all(t.matched_by in ("name", "role") for t in res.tensors)


def test_malformed_tokenizer_is_one_clear_error(tmp_path):
    from modelkin.errors import FormatError

    a = write_model(tmp_path / "a", qwen2_tensors(1), {"model_type": "qwen2"})
    b = write_model(tmp_path / "b", qwen2_tensors(2), {"model_type": "qwen2"})
    (a / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    (b / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(FormatError, match="tokenizer"):
        modelkin.compare(a, b)
    out = subprocess.run([sys.executable, "-m", "modelkin", "compare", str(a), str(b)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("modelkin: error: ") and "tokenizer.json" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_unknown_architecture_is_judged_under_the_conservative_null(tmp_path):
    # A custom CNN with names no family file knows: conv kernels still count, tested over channels only.
    def cnn(seed):
        r = np.random.default_rng(seed)
        return {"stem.k": r.normal(size=(48, 3, 5, 5)), "body.k1": r.normal(size=(96, 48, 3, 3)),
                "body.k2": r.normal(size=(96, 96, 3, 3)), "head.w": r.normal(size=(10, 96)), "head.b": r.normal(size=10)}
    base = {k: v.astype(np.float32) for k, v in cnn(1).items()}
    a = write_model(tmp_path / "a", base)
    related = modelkin.compare(a, write_model(tmp_path / "b", perturb(base, 0.5)))
    independent = modelkin.compare(a, write_model(tmp_path / "c", {k: v.astype(np.float32) for k, v in cnn(2).items()}))
    assert related.components["other"].verdict == "related"
    # 48-96 channels over 3 kernels and a head: enough power to rule out a weak relationship.
    assert independent.components["other"].verdict == "independent" and independent.verdict == "independent"
    assert independent.components["other"].min_detectable_unit_cosine <= 0.1
    kernels = [t for t in related.tensors if len(t.shape) == 4 and t.evidence]
    assert kernels and all(t.test_axis in (0, 1) for t in kernels)  # channels, never the spatial taps
    assert not next(t for t in related.tensors if t.a == "head.b").evidence


def test_sentencepiece_vocabularies_are_read(tmp_path):
    import sentencepiece

    from modelkin.alignment import load_vocab
    from modelkin.sources import open_model

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(400)))
    a = write_model(tmp_path / "a", qwen2_tensors(1), {"model_type": "qwen2"})
    sentencepiece.SentencePieceTrainer.train(input=str(text), model_prefix=str(a / "tokenizer"), vocab_size=120,
                                             model_type="bpe", minloglevel=2)
    vocab = load_vocab(open_model(a))
    assert vocab is not None and len(vocab) == 120
    sp = sentencepiece.SentencePieceProcessor(model_file=str(a / "tokenizer.model"))
    assert all(vocab[sp.id_to_piece(i)] == i for i in range(120))


def test_reordered_experts_are_matched_back(tmp_path):
    base = {k: v for k, v in qwen2_tensors(1, hidden=64, ffn=64).items() if ".mlp." not in k}
    r = np.random.default_rng(9)
    for layer in range(2):
        base[f"model.layers.{layer}.mlp.gate.weight"] = r.normal(size=(4, 64)).astype(np.float32)
        for e in range(4):
            for proj, shape in (("gate_proj", (64, 64)), ("up_proj", (64, 64)), ("down_proj", (64, 64))):
                base[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"] = r.normal(size=shape).astype(np.float32)
    order = [2, 0, 3, 1]  # B's expert j is A's expert order[j]
    child = dict(base)
    for layer in range(2):
        p = f"model.layers.{layer}.mlp."
        child[p + "gate.weight"] = base[p + "gate.weight"][order]
        for j, i in enumerate(order):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                child[f"{p}experts.{j}.{proj}.weight"] = base[f"{p}experts.{i}.{proj}.weight"]
    res = modelkin.compare(write_model(tmp_path / "a", base, {"model_type": "qwen3_moe"}), write_model(tmp_path / "b", perturb(child, 0.3), {"model_type": "qwen3_moe"}))
    experts = res.components["text"].layer_map["experts"]
    assert experts == {"0": [[0, 1], [1, 3], [2, 0], [3, 2]], "1": [[0, 1], [1, 3], [2, 0], [3, 2]]}
    moved = [t for t in res.tensors if t.matched_by == "expert-map"]
    assert len(moved) == 2 * 4 * 3 and all(t.pearson > 0.9 for t in moved)


def test_depth_and_width_pruned_together(tmp_path):
    base = qwen2_tensors(1, hidden=96, ffn=192, layers=4)
    keep = np.sort(np.random.default_rng(4).choice(192, 144, replace=False))
    child = {k: v for k, v in base.items() if ".layers." not in k}
    for j, i in enumerate([0, 1, 3]):  # layer 2 dropped, FFNs narrowed to 75 %
        for k, v in base.items():
            if f".layers.{i}." not in k:
                continue
            nk = k.replace(f".layers.{i}.", f".layers.{j}.")
            if "gate_proj" in k or "up_proj" in k:
                v = v[keep]
            elif "down_proj" in k:
                v = v[:, keep]
            child[nk] = v
    res = modelkin.compare(write_model(tmp_path / "a", base, {"model_type": "qwen2"}), write_model(tmp_path / "b", perturb(child, 0.3), {"model_type": "qwen2"}))
    assert res.verdict == "related"
    assert res.components["text"].layer_map["pairs"] == [[0, 0], [1, 1], [3, 2]]
    ups = [t for t in res.tensors if t.role == "mlp.up"]
    assert len(ups) == 3 and all(t.kept_unit_fraction == pytest.approx(0.75) for t in ups)


def test_non_finite_tensors_and_empty_overlap_are_explained(tmp_path):
    ta = qwen2_tensors(1)
    tb = perturb(ta, 0.3)
    tb["model.layers.0.mlp.up_proj.weight"][3, 3] = np.nan
    res = modelkin.compare(write_model(tmp_path / "a", ta, {"model_type": "qwen2"}), write_model(tmp_path / "b", tb, {"model_type": "qwen2"}))
    up = next(t for t in res.tensors if t.a == "model.layers.0.mlp.up_proj.weight")
    assert not up.evidence and "NaN" in up.non_evidence_reason and up.pearson is None
    assert res.verdict == "related"  # the other tensors still speak

    other = write_model(tmp_path / "c", {"net.w": np.ones((4, 4), np.float32)})
    res2 = modelkin.compare(tmp_path / "a", other)
    assert res2.verdict == "inconclusive" and res2.components == {}
    assert any("nothing was compared" in n for n in res2.notes)


def test_gpt2_fused_c_attn_is_split_into_strided_parts(tmp_path):
    # GPT-2 stores c_attn as Conv1D [in, 3*out]; the same q, k, v kept separately as Linear [out, in].
    r = np.random.default_rng(12)
    h, layers = 64, 2
    a, b = {}, {}
    for i in range(layers):
        q, k, v = (r.normal(size=(h, h)).astype(np.float32) for _ in range(3))
        a[f"transformer.h.{i}.attn.c_attn.weight"] = np.ascontiguousarray(np.concatenate([q, k, v]).T)
        a[f"transformer.h.{i}.mlp.c_fc.weight"] = r.normal(size=(h, 4 * h)).astype(np.float32)
        b[f"model.layers.{i}.self_attn.q_proj.weight"], b[f"model.layers.{i}.self_attn.k_proj.weight"] = q, k
        b[f"model.layers.{i}.self_attn.v_proj.weight"] = v
        b[f"model.layers.{i}.mlp.up_proj.weight"] = np.ascontiguousarray(a[f"transformer.h.{i}.mlp.c_fc.weight"].T)
    res = modelkin.compare(write_model(tmp_path / "a", a, {"model_type": "gpt2"}), write_model(tmp_path / "b", perturb(b, 0.2), {"model_type": "llama"}))
    assert res.verdict == "related"
    k = next(t for t in res.tensors if t.a == "transformer.h.1.attn.c_attn.weight[attn.k]")
    assert k.b == "model.layers.1.self_attn.k_proj.weight" and k.compared_shape == [64, 64]
    assert k.pearson > 0.95 and k.evidence
    assert not res.unmatched
