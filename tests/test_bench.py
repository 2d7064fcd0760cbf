"""modelkin.bench: scoring functions on hand-checkable inputs, the baselines, and the harness on a fake zoo."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from safetensors.numpy import save_file

from modelkin.bench import run_bench, scoring
from modelkin.bench.baselines import layernorm_cosine, raw_pearson, std_profile
from modelkin.errors import FormatError, SourceNotFoundError
from modelkin.sources import open_model

HIDDEN, FFN, VOCAB, LAYERS = 64, 128, 96, 4
BASELINE_NAMES = ("layernorm_cosine", "std_profile", "raw_pearson", "model_tracing", "aligned_cka")
METHODS = ("modelkin", *BASELINE_NAMES)


# -- a fake zoo -------------------------------------------------------------------------------------


def _qwen2(seed: int) -> dict[str, np.ndarray]:
    """A small Qwen2-named model. Norm gains are 1 + small noise, and every layer's weight scale follows the
    same depth trend, as training makes them in real models of one architecture."""
    rng = np.random.default_rng(seed)

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def gain():
        return (1.0 + 0.05 * rng.standard_normal(HIDDEN)).astype(np.float32)

    t = {"model.embed_tokens.weight": mat(VOCAB, HIDDEN, 0.02)}
    for i in range(LAYERS):
        p, s = f"model.layers.{i}.", 0.02 * (1.0 + 0.25 * i)
        t[p + "input_layernorm.weight"] = gain()
        t[p + "self_attn.q_proj.weight"] = mat(HIDDEN, HIDDEN, s)
        t[p + "self_attn.k_proj.weight"] = mat(HIDDEN, HIDDEN, 1.3 * s)
        t[p + "self_attn.v_proj.weight"] = mat(HIDDEN, HIDDEN, 0.7 * s)
        t[p + "self_attn.o_proj.weight"] = mat(HIDDEN, HIDDEN, 0.5 * s)
        t[p + "post_attention_layernorm.weight"] = gain()
        t[p + "mlp.gate_proj.weight"] = mat(FFN, HIDDEN, s)
        t[p + "mlp.up_proj.weight"] = mat(FFN, HIDDEN, s)
        t[p + "mlp.down_proj.weight"] = mat(HIDDEN, FFN, s)
    t["model.norm.weight"] = gain()
    t["lm_head.weight"] = mat(VOCAB, HIDDEN, 0.02)
    return t


def _finetune(parent: dict[str, np.ndarray], seed: int, strength: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v + strength * v.std() * rng.standard_normal(v.shape)).astype(np.float32) for k, v in parent.items()}


def _save(root: Path, name: str, tensors: dict[str, np.ndarray]) -> str:
    d = root / "models" / name
    d.mkdir(parents=True)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "np"})
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": HIDDEN}))
    return f"models/{name}"


def make_fake_zoo(root: Path, broken: bool = False) -> Path:
    parent = _qwen2(0)
    a = _save(root, "parent", parent)
    ft = _save(root, "finetune", _finetune(parent, 1, 0.1))
    ft2 = _save(root, "finetune_far", _finetune(parent, 2, 0.5))
    other = _save(root, "other_seed", _qwen2(7))
    other2 = _save(root, "other_seed2", _qwen2(8))
    pairs = [
        {"id": "ft-near", "a": a, "b": ft, "kind": "finetune_short", "label": "related", "strength": 0.1,
         "components": {"text": "related"}, "family": "qwen2"},
        {"id": "ft-far", "a": a, "b": ft2, "kind": "finetune_long", "label": "related", "strength": 0.5,
         "components": {"text": "related"}, "family": "qwen2"},
        {"id": "indep-1", "a": a, "b": other, "kind": "independent_seed", "label": "independent", "strength": None,
         "components": {"text": "independent"}, "family": "qwen2"},
        {"id": "indep-2", "a": other, "b": other2, "kind": "independent_seed", "label": "independent",
         "strength": None, "components": {"text": "independent"}, "family": "qwen2"},
    ]
    if broken:
        pairs.append({"id": "broken", "a": a, "b": "models/does_not_exist", "kind": "finetune_short",
                      "label": "related", "strength": 0.1, "components": {"text": "related"}, "family": "qwen2"})
    models = {n: {"path": f"models/{n}", "family": "qwen2"}
              for n in ("parent", "finetune", "finetune_far", "other_seed", "other_seed2")}
    manifest = {"modelkin_zoo": 1, "size": "fake", "models": models, "pairs": pairs}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="module")
def fake_zoo(tmp_path_factory) -> Path:
    return make_fake_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def bench_run(fake_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "bench.json"
    console = Console(record=True, width=220)
    code = run_bench(fake_zoo, json_out=out, threads=2, console=console)
    return code, json.loads(out.read_text()), console.export_text()


def test_bench_in_processes_gives_the_same_records(bench_run, fake_zoo, tmp_path):
    """``--jobs 2``: pairs run in other processes, recorded in manifest order with the same results."""
    _, res1, _ = bench_run
    out = tmp_path / "j2.json"
    run_bench(fake_zoo, json_out=out, threads=1, jobs=2, console=Console(record=True, width=220))
    res2 = json.loads(out.read_text())
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [p["id"] for p in res2["pairs"]] == [p["id"] for p in res1["pairs"]]
    for a, b in zip(res1["pairs"], res2["pairs"]):
        assert (a["modelkin"]["verdict"], a["modelkin"]["log10_p"]) == (b["modelkin"]["verdict"], b["modelkin"]["log10_p"])
        assert {m: strip(d).get("score") for m, d in a["baselines"].items()} == \
               {m: strip(d).get("score") for m, d in b["baselines"].items()}


def _manifest_from(fake_zoo: Path, dest: Path, edit) -> Path:
    """A manifest in ``dest`` whose pairs point (by absolute path) at the fake zoo's models, edited."""
    manifest = json.loads((fake_zoo / "manifest.json").read_text())
    for p in manifest["pairs"]:
        p["a"], p["b"] = str(fake_zoo / p["a"]), str(fake_zoo / p["b"])
    edit(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


# -- scoring on hand-checkable inputs ---------------------------------------------------------------


def test_auc_hand_checked():
    assert scoring.auc([3, 4], [1, 2]) == 1.0
    assert scoring.auc([1, 2], [3, 4]) == 0.0
    # positives 2 and 4 vs negatives 1, 3: (2>1) + (4>1) + (4>3) = 3 of 4
    assert scoring.auc([2, 4], [1, 3]) == 0.75
    # ties count 1/2: 2 vs {2, 1} -> 0.5 + 1
    assert scoring.auc([2], [2, 1]) == 0.75
    assert scoring.auc([5, 5], [5, 5]) == 0.5
    assert scoring.auc([], [1]) is None and scoring.auc([1], []) is None


def test_auc_none_ranks_lowest_and_top_highest():
    assert scoring.auc([None], [-1e9]) == 0.0
    assert scoring.auc([-1e9], [None]) == 1.0
    assert scoring.auc([None], [None]) == 0.5
    assert scoring.auc([math.inf], [scoring.TOP]) == 0.0
    # 0.3 beats None, ties nothing, loses to 0.9: one of two
    assert scoring.auc([0.3], [None, 0.9]) == 0.5


def test_auc_matches_brute_force():
    rng = np.random.default_rng(3)
    pos = list(rng.integers(0, 5, 30).astype(float)) + [None]
    neg = list(rng.integers(0, 5, 20).astype(float)) + [None, None]
    key = lambda s: -1.0 if s is None else s  # noqa: E731
    brute = sum((key(p) > key(n)) + 0.5 * (key(p) == key(n)) for p in pos for n in neg) / (len(pos) * len(neg))
    assert scoring.auc(pos, neg) == pytest.approx(brute)


def test_rates():
    assert scoring.tpr(["related", "independent", "inconclusive", "related"]) == 0.5
    assert scoring.tpr(["error", "related"]) == 0.5
    assert scoring.fpr(["independent", "related", "inconclusive", "independent"]) == 0.25
    assert scoring.fpr(["error", "independent"]) == 0.5  # a failure is wrong on an independent pair too
    assert scoring.tpr([]) is None


def test_calibration_counts():
    lps = [-0.5, -1.4, -2.0, -3.5, None]  # p = 0.32, 0.04, 0.01, 3e-4, failed
    rows = scoring.calibration(lps, (0.05, 1e-3))
    assert [r["alpha"] for r in rows] == [0.05, 1e-3]
    assert rows[0]["false_positives"] == 4 and rows[0]["observed_fpr"] == pytest.approx(0.8)
    assert rows[1]["false_positives"] == 2 and rows[1]["observed_fpr"] == pytest.approx(0.4)
    assert scoring.false_positive_at(math.log10(0.05), 0.05)  # p = α exactly is a positive
    assert 0.4 < rows[1]["upper_95"] <= 1.0
    assert scoring.calibration([], (0.05,))[0]["observed_fpr"] is None


# -- baselines --------------------------------------------------------------------------------------


def test_baselines_on_fake_models(fake_zoo):
    m = lambda n: open_model(fake_zoo / "models" / n)  # noqa: E731
    with m("parent") as p, m("finetune") as f, m("other_seed") as o:
        ln_rel, ln_ind = layernorm_cosine(p, f), layernorm_cosine(p, o)
        sp_rel, sp_ind = std_profile(p, f), std_profile(p, o)
        rp_rel, rp_ind = raw_pearson(p, f), raw_pearson(p, o)
    # The known failure of norm-gain cosine: gains near 1 make any two models look alike.
    assert ln_ind.score > 0.99 and ln_ind.call == "related"
    assert ln_rel.call == "related"
    # The known failure of std profiles: a shared depth trend makes unrelated models correlate.
    assert sp_ind.score > 0.9 and sp_ind.call == "related"
    assert sp_rel.score > 0.99
    # Raw Pearson separates plain fine-tunes from other seeds.
    assert rp_rel.score > 0.9 and rp_rel.call == "related"
    assert abs(rp_ind.score) < 0.05 and rp_ind.call == "independent"


def test_std_profile_undefined_with_one_layer(tmp_path):
    full = _qwen2(0)
    one = {k: v for k, v in full.items() if not k.startswith("model.layers.") or k.startswith("model.layers.0.")}
    _save(tmp_path, "one", one)
    with open_model(tmp_path / "models" / "one") as a, open_model(tmp_path / "models" / "one") as b:
        s = std_profile(a, b)
    assert s.score is None and s.call == "inconclusive"


def test_std_profile_splits_fused_qkv(tmp_path):
    """A GPT-2 style model (fused c_attn, stored transposed): Q/K/V are split along the output columns."""
    rng = np.random.default_rng(0)
    t = {}
    for i in range(3):
        scale = np.array([1.0, 2.0, 3.0]) * (1 + i)
        qkv = np.concatenate([rng.standard_normal((32, 32)) * s for s in scale], axis=1)  # [in, 3*out]
        t[f"h.{i}.attn.c_attn.weight"] = qkv.astype(np.float32)
        t[f"h.{i}.attn.c_proj.weight"] = (rng.standard_normal((32, 32)) * (1 + i)).astype(np.float32)
    path = tmp_path / "g.safetensors"
    save_file(t, str(path))
    from modelkin.bench.baselines import _attn_stds
    from modelkin.inventory import build_inventory

    with open_model(path) as src:
        stds = _attn_stds(build_inventory(src))
    (comp,) = {c for c, _ in stds}
    q, k, v = (stds[(comp, 0)][r] for r in ("attn.q", "attn.k", "attn.v"))
    assert q == pytest.approx(1.0, rel=0.1) and k == pytest.approx(2.0, rel=0.1) and v == pytest.approx(3.0, rel=0.1)


# -- the harness on the fake zoo --------------------------------------------------------------------


def test_bench_json_structure(bench_run, fake_zoo):
    code, out, _ = bench_run
    assert code == 0
    assert Path(out["zoo"]) == fake_zoo
    assert [p["id"] for p in out["pairs"]] == ["ft-near", "ft-far", "indep-1", "indep-2"]
    for p in out["pairs"]:
        assert {"id", "a", "b", "kind", "label", "strength", "modelkin", "baselines", "seconds"} <= set(p)
        assert set(p["modelkin"]) >= {"verdict", "log10_p", "components"}
        assert set(p["modelkin"]["components"]) == {"text"}
        assert set(p["modelkin"]["components"]["text"]) >= {"verdict", "log10_p"}
        assert set(p["baselines"]) == set(BASELINE_NAMES)
        for b in p["baselines"].values():
            assert {"score", "call"} <= set(b)
        assert p["seconds"] > 0
    s = out["summary"]
    assert list(s) == ["finetune_short", "finetune_long", "independent"]
    for kind in ("finetune_short", "finetune_long"):
        for m in METHODS:
            assert set(s[kind][m]) >= {"tpr", "auc", "n"} and s[kind][m]["n"] == 1
    for m in METHODS:
        assert set(s["independent"][m]) >= {"fpr", "auc", "n"} and s["independent"][m]["n"] == 2
    assert [c["alpha"] for c in out["calibration"]] == [0.05, 1e-3]
    assert all(c["n"] == 2 for c in out["calibration"])
    assert out["total_seconds"] > 0


def test_bench_scores(bench_run):
    _, out, _ = bench_run
    pairs = {p["id"]: p for p in out["pairs"]}
    s = out["summary"]
    # modelkin finds the fine-tunes; the norm-gain baseline calls every independent pair related.
    assert pairs["ft-near"]["modelkin"]["verdict"] == "related"
    assert s["finetune_short"]["modelkin"]["tpr"] == 1.0
    assert s["finetune_short"]["modelkin"]["component_accuracy"] == 1.0
    assert all(pairs[i]["baselines"]["layernorm_cosine"]["call"] == "related" for i in ("indep-1", "indep-2"))
    assert s["independent"]["layernorm_cosine"]["fpr"] == 1.0
    assert s["independent"]["raw_pearson"]["fpr"] == 0.0
    assert s["finetune_short"]["raw_pearson"]["auc"] == 1.0
    # Hand-checked: both fine-tunes are far more significant than both independent pairs, neither of which is
    # called related (log10 p > -4), so the AUCs are 1, the FPR 0, and no false positive at any level.
    assert pairs["ft-far"]["modelkin"]["log10_p"] < -20
    assert all(pairs[i]["modelkin"]["log10_p"] > -2 for i in ("indep-1", "indep-2"))
    assert s["finetune_long"]["modelkin"]["auc"] == 1.0 and s["finetune_short"]["modelkin"]["auc"] == 1.0
    assert s["independent"]["modelkin"]["fpr"] == 0.0
    assert [row["false_positives"] for row in out["calibration"]] == [0, 0]


def test_bench_prints_tables(bench_run):
    _, _, text = bench_run
    for word in ("finetune_short", "finetune_long", "independent", "modelkin", "layernorm_cosine", "std_profile",
                 "raw_pearson", "model_tracing", "aligned_cka", "TPR/FPR", "AUC", "component", "s / pair",
                 "Calibration", "FP at α = 1e-4", "FP at 1e-3", "FP at 0.05", "same-index test alone"):
        assert word in text


def test_labels_come_from_manifest(fake_zoo, tmp_path):
    def edit(m):
        m["pairs"] = m["pairs"][:3]
        m["pairs"][0]["label"] = "independent"  # a true fine-tune, labelled independent in the manifest
        m["pairs"][2]["label"] = "related"  # an independent pair, labelled related
        m["pairs"][2]["kind"] = "merge"

    zoo = _manifest_from(fake_zoo, tmp_path, edit)
    run_bench(zoo, json_out=tmp_path / "o.json")
    out = json.loads((tmp_path / "o.json").read_text())
    labels = {p["id"]: p["label"] for p in out["pairs"]}
    assert labels == {"ft-near": "independent", "ft-far": "related", "indep-1": "related"}
    assert set(out["summary"]) == {"finetune_long", "merge", "independent"}
    assert out["summary"]["independent"]["modelkin"]["n"] == 1
    # The mislabelled fine-tune is modelkin's false positive; the mislabelled independent pair its miss.
    assert out["summary"]["independent"]["modelkin"]["fpr"] == 1.0
    assert out["summary"]["merge"]["raw_pearson"]["tpr"] == 0.0
    assert out["calibration"][0]["false_positives"] == 1


def test_broken_pair_recorded_and_counted_wrong(fake_zoo, tmp_path):
    def edit(m):
        near, indep = m["pairs"][0], m["pairs"][2]
        broken = dict(near, id="broken", b=str(fake_zoo / "models" / "does_not_exist"))
        broken_indep = dict(indep, id="broken-indep", b=str(fake_zoo / "models" / "does_not_exist"))
        m["pairs"] = [near, broken, indep, broken_indep]

    zoo = _manifest_from(fake_zoo, tmp_path, edit)
    code = run_bench(zoo, json_out=tmp_path / "o.json")
    out = json.loads((tmp_path / "o.json").read_text())
    broken = next(p for p in out["pairs"] if p["id"] == "broken")
    assert code == 1
    assert "does_not_exist" in broken["error"]
    assert broken["modelkin"]["verdict"] == "error"
    assert all(b["call"] == "error" and b["score"] is None for b in broken["baselines"].values())
    s = out["summary"]
    assert s["finetune_short"]["modelkin"]["n"] == 2
    # Counted wrong: a miss among related pairs, a false positive among independent ones.
    for m in METHODS:
        if m != "aligned_cka":
            assert s["finetune_short"][m]["tpr"] == 0.5
    # aligned_cka's null is measured on independent pairs, and one that ran is too few: no call at all.
    near = next(p for p in out["pairs"] if p["id"] == "ft-near")["baselines"]["aligned_cka"]
    assert near["call"] == "inconclusive" and near["null"]["n"] == 1 and s["finetune_short"]["aligned_cka"]["tpr"] == 0.0
    assert s["independent"]["raw_pearson"]["fpr"] == 0.5
    assert s["independent"]["modelkin"]["fpr"] == 0.5
    assert s["finetune_short"]["modelkin"]["component_accuracy"] == 0.5
    assert out["calibration"][0]["false_positives"] >= 1


def test_missing_manifest(tmp_path):
    with pytest.raises(SourceNotFoundError, match="no manifest.json"):
        run_bench(tmp_path)
    with pytest.raises(SourceNotFoundError):
        run_bench(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError):
        run_bench(tmp_path)


def test_cli(fake_zoo, tmp_path):
    def edit(m):
        m["pairs"] = [m["pairs"][0], m["pairs"][2]]

    zoo = _manifest_from(fake_zoo, tmp_path, edit)
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # pytest sets COLUMNS=80; the table is wider
    r = subprocess.run([sys.executable, "-m", "modelkin", "bench", str(zoo), "--json", str(out)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "raw_pearson" in r.stdout and "Calibration" in r.stdout
    res = json.loads(out.read_text())
    assert set(res["summary"]) == {"finetune_short", "independent"}
    assert [p["id"] for p in res["pairs"]] == ["ft-near", "indep-1"]


def test_cli_missing_manifest(tmp_path, capsys):
    from modelkin.cli import main

    assert main(["bench", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "Traceback" not in err


# -- the real smoke zoo (built by tests/conftest.py with torch) -------------------------------------


@pytest.mark.zoo
def test_bench_on_smoke_zoo(request, tmp_path):
    if importlib.util.find_spec("torch") is None:  # checked without importing torch (slow)
        pytest.skip("torch is not installed")
    try:
        zoo = request.getfixturevalue("smoke_zoo")
    except pytest.FixtureLookupError:
        pytest.skip("no smoke_zoo fixture in tests/conftest.py")
    out = tmp_path / "smoke.json"
    run_bench(zoo, json_out=out, jobs=2, threads=1, fingerprints=True)
    res = json.loads(out.read_text())
    manifest = json.loads((Path(zoo) / "manifest.json").read_text())
    assert [p["id"] for p in res["pairs"]] == [str(p.get("id", i)) for i, p in enumerate(manifest["pairs"])]
    assert [p["label"] for p in res["pairs"]] == [p["label"] for p in manifest["pairs"]]
    for kind, row in res["summary"].items():
        for m in METHODS:
            assert ("fpr" if kind == "independent" else "tpr") in row[m]
            assert {"auc", "n"} <= set(row[m])
    assert [c["alpha"] for c in res["calibration"]] == [0.05, 1e-3]
    # Accuracy: every smoke pair, and every component of it, gets the manifest's label.
    for p in res["pairs"]:
        assert p["modelkin"]["verdict"] == p["label"], p["id"]
        assert {c: v["verdict"] for c, v in p["modelkin"]["components"].items()} == p["component_labels"], p["id"]
    assert all(row["modelkin"]["component_accuracy"] == 1.0 for row in res["summary"].values())
    # Depth pruning's truth comes from the recipe (the dropped layer is fixed by zoo.derive.drop_layers).
    depth = [p for p in res["pairs"] if p["kind"] == "depth_pruning"]
    assert depth and all(p["structure"]["ok"] for p in depth)
    assert res["structure"]["depth_pruning"] == {"n": len(depth), "correct": len(depth)}
    # Sampled reads (every tensor cut to 32 rows) give the full verdicts on every pair, reading less.
    assert res["sampled"]["agree"] == res["sampled"]["n"] == len(res["pairs"])
    assert all(p["sampled"]["agree"] for p in res["pairs"])
    assert res["sampled"]["mean_bytes_fraction"] < 0.9
    # Fingerprints give the model compare's verdicts on every pair; search finds every related model.
    fp = res["fingerprints"]
    assert fp["agree"] == fp["pairs"] == len(res["pairs"]) and not fp["disagreements"]
    n_related = sum(p["label"] == "related" for p in res["pairs"])
    assert fp["found"] == fp["related_pairs"] == n_related and not fp["missed"] and not fp["false_hits"]
    assert all(p["search"]["rank"] is not None for p in res["pairs"] if p["label"] == "related")
    assert fp["found_in_top"] == n_related  # the smoke families are small: every relative fits in a top 10
    # No false positive at any level, for the verdicts and for every test alone.
    assert all(row["false_positives"] == 0 for row in res["calibration_by_level"])
    # The two strongest published methods, as their mechanics predict.
    calls = {p["kind"]: {m: p["baselines"][m] for m in ("model_tracing", "aligned_cka")} for p in res["pairs"]
             if p["label"] == "related"}
    for kind in ("finetune_short", "quant_int8", "rescaling", "depth_pruning", "component_graft"):
        assert calls[kind]["model_tracing"]["call"] == "related", kind  # units keep their order
    assert calls["permutation"]["model_tracing"]["call"] == "independent"  # the matching is not the identity
    for kind in ("finetune_short", "quant_int8", "rescaling", "depth_pruning", "permutation"):
        assert calls[kind]["aligned_cka"]["call"] == "related", kind  # embedding alignment undoes permutations
    assert calls["rotation"]["aligned_cka"]["raw"] < 0.5  # but not a rotation of the residual stream
    assert calls["component_graft"]["aligned_cka"]["call"] == "independent"  # it reads the text tower only
    width = lambda rel: json.loads((Path(zoo) / rel / "config.json").read_text()).get("hidden_size")  # noqa: E731
    for p in res["pairs"]:
        if p["label"] == "independent" and width(p["a"]) != width(p["b"]):
            # Models of different widths (issue 10's pairs): both methods need same-shape matrices.
            assert all(p["baselines"][m]["call"] == "inconclusive" for m in ("model_tracing", "aligned_cka")), p["id"]
        elif p["label"] == "independent":
            assert all(p["baselines"][m]["call"] == "independent" for m in ("model_tracing", "aligned_cka")), p["id"]
            assert p["baselines"]["aligned_cka"]["null"]["n"] >= 3


def test_expected_structure_follows_the_recipes(tmp_path):
    from modelkin.bench.truth import expected_structure

    for name, cfg in (("p", {"num_hidden_layers": 4, "intermediate_size": 128}), ("c", {"intermediate_size": 96})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    manifest = {"models": {"c": {"recipe": {"op": "drop_layers", "n_drop": 1}}}}
    pair = {"a": "p", "b": "c", "kind": "depth_pruning"}
    assert expected_structure(tmp_path, manifest, pair) == {"layer_pairs": [[0, 0], [1, 1], [3, 2]]}
    manifest["models"]["c"]["recipe"] = {"op": "upscale_depth", "overlap": 1}
    assert expected_structure(tmp_path, manifest, {**pair, "kind": "depth_upscaling"}) == {
        "layer_pairs": [[0, 0], [1, 1], [2, 2], [1, 3], [2, 4], [3, 5]]}
    assert expected_structure(tmp_path, manifest, {**pair, "kind": "width_pruning"}) == {"kept_unit_fraction": 0.75}
    assert expected_structure(tmp_path, manifest, {**pair, "kind": "finetune_short"}) is None


def test_std_profile_splits_grouped_query_qkv_by_heads():
    from modelkin.bench.baselines import _qkv_sizes

    assert _qkv_sizes({"num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 64}, 64 + 16 + 16) == (64, 16, 16)
    assert _qkv_sizes({}, 96) == (32, 32, 32)
    assert _qkv_sizes({}, 97) is None


def test_expected_expert_map_comes_from_the_recorded_permutation(tmp_path):
    from modelkin.bench.truth import expected_structure

    manifest = {"models": {"c": {"recipe": {"op": "permute"}, "expert_order": {"0": [2, 0, 1]}}}}
    pair = {"a": "p", "b": "c", "kind": "permutation"}
    # B's expert 0 is A's expert 2, so A's expert 2 went to B's expert 0, and so on.
    assert expected_structure(tmp_path, manifest, pair) == {"experts": {"0": [[0, 1], [1, 2], [2, 0]]}}


# -- calibration stated as the pairs show it ----------------------------------------------------------


def test_calibration_by_level_on_the_fake_zoo(bench_run):
    _, out, text = bench_run
    rows = {r["what"]: r for r in out["calibration_by_level"]}
    assert list(rows) == ["pair verdict", "component verdict", "same-index test alone", "anchored test alone",
                          "realigned test alone", "shared-basis test alone", "channels test alone"]
    assert rows["shared-basis test alone"]["n"] == 2 and rows["shared-basis test alone"]["false_positives"] == 0
    assert rows["channels test alone"]["n"] == 0  # no network without an embedding in the fake zoo
    pair = rows["pair verdict"]
    # 0 of 2 independent pairs: the one-sided 95 % Clopper–Pearson bound is 1 - 0.05 ** (1 / 2) = 0.776.
    assert (pair["n"], pair["false_positives"]) == (2, 0)
    assert pair["upper_95"] == pytest.approx(0.7764, abs=1e-4) and pair["rule_of_three"] == 1.5
    assert rows["component verdict"]["n"] == 2  # the text component of each independent pair
    same = rows["same-index test alone"]
    assert same["n"] == 2 and same["false_positives"] == 0 and same["most_significant"]["margin_decades"] > 2
    assert same["uniformity"]["n"] > 20  # per-tensor p-values of both pairs
    assert -5 < same["largest_z"]["z"] < 5 and same["largest_z"]["where"] in ("indep-1", "indep-2")
    assert "Clopper–Pearson" in text and "rule of three" in text


def test_uniformity_statistics_hand_checked():
    from modelkin.bench.calibration import ks_uniform

    u = ks_uniform([math.log10(0.01), math.log10(0.5)])
    # ECDF steps to 1/2 at 0.01 and to 1 at 0.5: D+ = max(0.5 - 0.01, 1 - 0.5) = 0.5; D- = max(0.01, 0) .
    assert u["d_plus"] == pytest.approx(0.5) and u["d"] == pytest.approx(0.5) and u["n"] == 2
    assert u["qq"] == {"0.01": 0.5, "0.05": 0.5, "0.5": 1.0}
    assert ks_uniform([])["d"] is None
    assert scoring.rule_of_three(300) == 0.01 and scoring.rule_of_three(0) is None


def test_per_test_p_values_are_bonferroni_over_tensors_and_components():
    from types import SimpleNamespace as NS

    from modelkin.bench.calibration import per_test

    t = lambda comp, tests: NS(component=comp, tests=tests)  # noqa: E731
    result = NS(components={"text": None, "vision": None}, tensors=[
        t("text", {"same-index": {"log10_p": -3.0, "z": 3.3}, "anchored": {"log10_p": -1.0, "z": 1.6}}),
        t("text", {"same-index": {"log10_p": -0.5, "z": -0.6}}),
        t("vision", {"same-index": {"log10_p": -2.0, "z": 2.6}}),
        t("vision", None),  # not evidence
    ])
    got = per_test(result)
    # text: same-index 2 x 1e-3 -> -3 + log10 2; then 2 components: -3 + 2 log10 2.
    assert got["components"]["text"]["same-index"] == pytest.approx(-3 + math.log10(2))
    assert got["pair"]["same-index"] == pytest.approx(-3 + 2 * math.log10(2))
    assert got["pair"]["anchored"] == pytest.approx(-1 + math.log10(2))
    assert "realigned" not in got["pair"] and got["tensors"]["same-index"] == [-3.0, -0.5, -2.0]
    assert got["z_max"] == {"same-index": 3.3, "anchored": 1.6}


# -- the two strongest published methods ----------------------------------------------------------------


def test_model_tracing_on_fake_models(fake_zoo):
    from modelkin.bench.baselines import model_tracing

    m = lambda n: open_model(fake_zoo / "models" / n)  # noqa: E731
    with m("parent") as p, m("finetune_far") as f, m("other_seed") as o:
        rel, ind = model_tracing(p, f), model_tracing(p, o)
    # 128 matched units per layer, 4 layers: a fine-tune keeps the identity matching (rho = 1, z = sqrt(127)).
    assert rel.call == "related" and rel.score > 100 and "4 MLP layers" in rel.detail
    assert ind.call == "independent" and ind.score < 3


def test_fisher_and_spearman_tails_hand_checked():
    from scipy.stats import chi2

    from modelkin.bench.baselines import _ln_fisher, _ln_p_spearman_identity

    assert _ln_fisher([math.log(0.05), math.log(0.5)]) == pytest.approx(chi2.logsf(-2 * math.log(0.025), 4))
    far = _ln_fisher([-800.0] * 3)  # beyond float64: the large-y expansion, no -inf
    assert math.isfinite(far) and -800 * 3 < far < -790 * 3
    assert _ln_p_spearman_identity(np.arange(50)) == pytest.approx(math.log(2) + float(__import__("scipy").special.log_ndtr(-7.0)))
    assert _ln_p_spearman_identity(np.arange(50)[::-1]) == _ln_p_spearman_identity(np.arange(50))  # two-sided


def test_unbiased_cka_hand_checked():
    from modelkin.bench.baselines import unbiased_linear_cka

    r = np.random.default_rng(0)
    x = r.normal(size=(200, 30))
    q = np.linalg.qr(r.normal(size=(30, 30)))[0]
    assert unbiased_linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)  # invariant to rotating and scaling features
    assert abs(unbiased_linear_cka(x, r.normal(size=(200, 30)))) < 0.05  # unbiased: near 0, not near 30/200


def test_aligned_cka_undoes_a_hidden_permutation_with_sign_flips(tmp_path):
    from builders import qwen2_tensors, write_model

    from modelkin.bench.baselines import aligned_cka

    base = qwen2_tensors(1, hidden=64, ffn=128)
    r = np.random.default_rng(5)
    perm, signs = r.permutation(64), r.choice([-1.0, 1.0], 64)
    moved = {k: (v[:, perm] * signs if ("embed_tokens" in k or "q_proj.weight" in k or "k_proj.weight" in k) else v)
             for k, v in base.items()}
    a = write_model(tmp_path / "a", base, {"model_type": "qwen2"})
    b = write_model(tmp_path / "b", {k: v.astype(np.float32) for k, v in moved.items()}, {"model_type": "qwen2"})
    c = write_model(tmp_path / "c", qwen2_tensors(2, hidden=64, ffn=128), {"model_type": "qwen2"})
    with open_model(a) as sa, open_model(b) as sb, open_model(c) as sc:
        same, other = aligned_cka(sa, sb), aligned_cka(sa, sc)
    assert same.score == pytest.approx(1.0, abs=1e-6) and abs(other.score) < 0.2
    assert same.call == "inconclusive" and "measured null" in same.detail  # the call waits for the null


def test_measured_null_gives_z_against_other_independent_pairs():
    from modelkin.bench.harness import apply_measured_nulls

    def rec(i, label, raw, family="qwen2"):
        return {"id": str(i), "label": label, "family": family,
                "baselines": {"aligned_cka": {"score": raw, "call": "inconclusive", "detail": ""}}}

    negatives = [rec(i, "independent", v) for i, v in enumerate((0.1, 0.2, 0.3, 0.4))]
    positive, lonely = rec(9, "related", 0.9), rec(10, "related", 0.9, family="bert")
    records = negatives + [positive, lonely]
    apply_measured_nulls(records)
    # The related pair: null = all four (mean 0.25, sd 0.1291): z = 0.65 / 0.1291 = 5.03 > 3.72.
    d = positive["baselines"]["aligned_cka"]
    assert d["score"] == pytest.approx(0.65 / np.std([0.1, 0.2, 0.3, 0.4], ddof=1)) and d["call"] == "related"
    assert d["null"]["n"] == 4 and d["null"]["scope"] == "family qwen2"
    # An independent pair is left out of its own null: 0.4 against (0.1, 0.2, 0.3): z = 0.2 / 0.1 = 2.
    n4 = negatives[3]["baselines"]["aligned_cka"]
    assert n4["score"] == pytest.approx(2.0) and n4["call"] == "independent" and n4["null"]["n"] == 3
    # No bert null: the pooled one.
    assert lonely["baselines"]["aligned_cka"]["null"]["scope"] == "all families"


def test_expected_shared_part_of_a_shared_embedding_pair(tmp_path):
    from types import SimpleNamespace as NS

    from modelkin.bench.truth import expected_structure, observed_structure

    pair = {"a": "p", "b": "c", "kind": "shared_embedding_init"}
    want = expected_structure(tmp_path, {}, pair)
    assert want == {"matching_roles_within": ["embedding", "lm_head"]}
    got = lambda roles: observed_structure(NS(components={"text": NS(matching_roles=roles)}, tensors=[]), want)  # noqa: E731
    assert got(["embedding"])["ok"] and got(["embedding", "lm_head"])["ok"]
    assert not got(["attn.q", "embedding"])["ok"]  # a layer matches: more than the embedding is shared
    assert not got(["lm_head"])["ok"] and not got([])["ok"]


def test_versus_best_other_method():
    from modelkin.bench.harness import versus_best

    def row(mk, **others):
        base = {m: {"tpr": 0.0, "auc": 0.5} for m in BASELINE_NAMES}
        base.update({m: {"tpr": t, "auc": a} for m, (t, a) in others.items()})
        return {"modelkin": {"tpr": mk[0], "auc": mk[1]}, **base}

    clean = {m: {"fpr": 0.0} for m in ("modelkin", *BASELINE_NAMES)}
    assert versus_best(row((1.0, 1.0), raw_pearson=(0.5, 0.9)), clean)["best"] == "raw_pearson"
    assert versus_best(row((1.0, 1.0), raw_pearson=(0.5, 0.9)), clean)["outcome"] == "ahead"
    assert versus_best(row((1.0, 1.0), aligned_cka=(1.0, 1.0)), clean)["outcome"] == "tied"
    assert versus_best(row((0.5, 0.9), model_tracing=(1.0, 0.8)), clean)["outcome"] == "behind"
    # Calling everything related (TPR 1, FPR 1) is balanced accuracy 0.5: it does not beat a method with
    # TPR 0.8 and FPR 0 (0.9).
    noisy = dict(clean, layernorm_cosine={"fpr": 1.0})
    v = versus_best(row((1.0, 1.0), layernorm_cosine=(1.0, 1.0), std_profile=(0.8, 0.9)), noisy)
    assert v == {"best": "std_profile", "balanced_accuracy": 0.9, "modelkin": 1.0, "outcome": "ahead"}
