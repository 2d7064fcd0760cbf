"""The ground-truth zoo: manifest structure, saved format, and that derivations are what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.zoo

KINDS = {"finetune_short", "finetune_long", "continued_pretraining", "lora_merged", "quant_int8", "quant_4bit",
         "cast_fp16", "cast_bf16", "depth_pruning", "depth_upscaling", "width_pruning", "vocab_extension",
         "vocab_pruning", "permutation", "rotation", "rescaling", "merge", "moe_upcycling", "component_graft",
         "shared_init", "independent_seed", "independent_data", "independent_tokenizer", "independent_family",
         "independent_long", "independent_distilled", "distillation_init", "shared_embedding_init",
         "width_growth", "cnn_permute_prune", "independent_width"}


def _manifest(zoo: Path) -> dict:
    return json.loads((zoo / "manifest.json").read_text())


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def _pair(m: dict, kind: str) -> dict:
    return next(p for p in m["pairs"] if p["kind"] == kind)


def test_manifest_structure(smoke_zoo):
    m = _manifest(smoke_zoo)
    assert m["modelkin_zoo"] == 1 and m["size"] == "smoke"
    kinds = {p["kind"] for p in m["pairs"]}
    assert {"finetune_short", "permutation", "quant_int8", "component_graft", "depth_pruning",
            "independent_seed", "width_growth", "cnn_permute_prune", "independent_width"} <= kinds <= KINDS
    assert len({m["models"][p["a"].split("/", 1)[1]]["family"] for p in m["pairs"]}) >= 2
    for p in m["pairs"]:
        assert set(p) >= {"id", "a", "b", "kind", "label", "strength", "components", "family"}
        assert p["label"] == ("independent" if p["kind"].startswith("independent") else "related")
        assert p["components"] and set(p["components"].values()) <= {"related", "independent"}
    graft = _pair(m, "component_graft")
    assert graft["components"]["vision"] == "related" and graft["components"]["text"] == "independent"
    for entry in m["models"].values():
        assert set(entry) >= {"path", "family", "seed", "parent", "derivation", "train_steps", "data"}


def test_saved_format(smoke_zoo):
    m = _manifest(smoke_zoo)
    for p in m["pairs"]:
        for side in (p["a"], p["b"]):
            folder = smoke_zoo / side
            assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
            has_text = m["models"][side.split("/", 1)[1]]["family"] != "resnet"
            assert (folder / "tokenizer.json").exists() == has_text
    base = smoke_zoo / _pair(m, "finetune_short")["a"]
    cfg = json.loads((base / "config.json").read_text())
    assert cfg["model_type"] == "qwen2"
    t = _tensors(base)
    H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    assert t["model.embed_tokens.weight"].shape == (V, H) and t["lm_head.weight"].shape == (V, H)
    assert t["model.layers.0.mlp.gate_proj.weight"].shape == (cfg["intermediate_size"], H)  # [out, in]
    assert "model.layers.0.self_attn.q_proj.bias" in t and f"model.layers.{L - 1}.mlp.down_proj.weight" in t
    vlm = smoke_zoo / _pair(m, "component_graft")["a"]
    vcfg = json.loads((vlm / "config.json").read_text())
    assert vcfg["model_type"] == "qwen2_5_vl" and "vision_config" in vcfg
    vt = _tensors(vlm)
    vc = vcfg["vision_config"]
    assert vt["visual.patch_embed.proj.weight"].shape == (vc["hidden_size"], 3, 2, vc["patch_size"], vc["patch_size"])
    assert vt["visual.blocks.0.attn.qkv.weight"].shape == (3 * vc["hidden_size"], vc["hidden_size"])
    assert vt["visual.merger.mlp.2.weight"].shape[0] == vcfg["hidden_size"]
    for f in smoke_zoo.glob("models/*/model.safetensors"):
        assert all(v.flags.c_contiguous for v in _tensors(f.parent).values())


def test_models_were_trained(smoke_zoo):
    m = _manifest(smoke_zoo)
    trained = [e for e in m["models"].values() if e["train_steps"]]
    assert len(trained) >= 8
    for e in trained:
        assert e["final_loss"] < e["initial_loss"], e["path"]
    for e in m["models"].values():
        if e["parent"] is None:  # from-scratch models must have learnt a lot
            assert e["final_loss"] < 0.75 * e["initial_loss"], e["path"]


def test_quantised_child_is_on_the_int8_grid(smoke_zoo):
    m = _manifest(smoke_zoo)
    p = _pair(m, "quant_int8")
    a, b = _tensors(smoke_zoo / p["a"]), _tensors(smoke_zoo / p["b"])
    w, q = a["model.layers.0.mlp.up_proj.weight"], b["model.layers.0.mlp.up_proj.weight"]
    assert not np.array_equal(w, q) and np.abs(w - q).max() <= np.abs(w).max() / 127
    steps = q / (np.abs(q).max(1, keepdims=True) / 127)  # per-row scale: values are integers
    assert np.allclose(steps, np.round(steps), atol=1e-3)


def test_permutation_child_differs_bytewise(smoke_zoo):
    m = _manifest(smoke_zoo)
    p = _pair(m, "permutation")
    a, b = _tensors(smoke_zoo / p["a"]), _tensors(smoke_zoo / p["b"])
    assert a.keys() == b.keys()
    for name in a:
        if a[name].ndim == 2:
            assert not np.array_equal(a[name], b[name]), name
    assert (smoke_zoo / p["a"] / "model.safetensors").read_bytes() != (smoke_zoo / p["b"] / "model.safetensors").read_bytes()


@pytest.mark.parametrize("kind", ["permutation", "rotation", "rescaling"])
def test_function_preserving_transforms(smoke_zoo, kind):
    """Re-apply the transform to the saved parent: logits match, weights do not."""
    import torch

    from modelkin.zoo import derive
    from modelkin.zoo.io import load_model

    m = _manifest(smoke_zoo)
    p = _pair(m, kind)
    meta = m["models"][p["b"].split("/", 1)[1]]
    assert meta["preservation_error"] < 1e-3
    parent, _, _ = load_model(smoke_zoo / p["a"])
    seed = meta["recipe"]["seed"]
    child = {"permutation": lambda: derive.permute(parent, seed), "rotation": lambda: derive.rotate(parent, seed),
             "rescaling": lambda: derive.rescale(parent, seed, meta["recipe"]["strength"])}[kind]()
    ids = torch.randint(3, 500, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = parent(ids), child(ids)
    assert (ref - out).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    w0 = parent.state_dict()["model.layers.0.self_attn.v_proj.weight"]
    assert not torch.allclose(w0, child.state_dict()["model.layers.0.self_attn.v_proj.weight"])


def test_graft_vision_copied_then_trained(smoke_zoo):
    m = _manifest(smoke_zoo)
    p = _pair(m, "component_graft")
    donor, graft = _tensors(smoke_zoo / p["a"]), _tensors(smoke_zoo / p["b"])

    def corr(name):
        return np.corrcoef(donor[name].ravel(), graft[name].ravel())[0, 1]

    vision = [n for n in donor if n.startswith("visual.") and not n.startswith("visual.merger.") and donor[n].ndim >= 2]
    assert vision
    for name in vision:
        assert not np.array_equal(donor[name], graft[name]), name  # trained further...
        assert corr(name) > 0.5, name  # ...but still clearly the donor's tensor
    text = [n for n in donor if n.startswith("model.layers.") and donor[n].ndim == 2]
    for name in text:
        assert abs(corr(name)) < 0.2, name  # text tower trained from scratch


def test_depth_pruned_child_has_fewer_layers(smoke_zoo):
    m = _manifest(smoke_zoo)
    p = _pair(m, "depth_pruning")
    ca = json.loads((smoke_zoo / p["a"] / "config.json").read_text())
    cb = json.loads((smoke_zoo / p["b"] / "config.json").read_text())
    assert cb["num_hidden_layers"] < ca["num_hidden_layers"]
    assert len([k for k in _tensors(smoke_zoo / p["b"]) if k.endswith("o_proj.weight")]) == cb["num_hidden_layers"]


def test_manifest_rebuilds_from_folders(smoke_zoo, tmp_path):
    """The manifest is derived from the model folders' own metadata (resumability)."""
    import shutil

    from modelkin.zoo.build import write_manifest

    copy = tmp_path / "zoo"
    shutil.copytree(smoke_zoo / "models", copy / "models")
    assert write_manifest(copy, "smoke") == _manifest(smoke_zoo)


def test_zoo_package_imports_without_torch_at_import_time():
    import subprocess
    import sys

    code = "import sys, modelkin.zoo; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_examples_are_small_and_complete():
    examples = Path(__file__).resolve().parents[1] / "examples"
    names = ["base", "finetuned", "independent", "vlm-donor", "vlm-graft"]
    if not all((examples / n).is_dir() for n in names):
        pytest.skip("examples/ not generated")
    total = sum(f.stat().st_size for f in examples.rglob("*") if f.is_file())
    assert total <= 5_000_000
    for n in names:
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f.name for f in (examples / n).iterdir()}


def test_zoo_seed_makes_a_fresh_instance_of_the_same_plan():
    from modelkin.zoo.recipes import SEED_STRIDE, plan

    p0, p3 = plan("smoke"), plan("smoke", 3)
    assert list(p0.models) == list(p3.models) and p0.pairs == p3.pairs  # same models, same labelled pairs
    for mid, r in p0.models.items():
        for key in ("seed", "batch_seed"):
            if r.get(key) is not None:
                assert p3.models[mid][key] == r[key] + 3 * SEED_STRIDE, (mid, key)
    assert {k: v for k, v in p3.models[next(iter(p3.models))].items() if k not in ("seed", "batch_seed")} == \
        {k: v for k, v in p0.models[next(iter(p0.models))].items() if k not in ("seed", "batch_seed")}


def test_null_and_hard_plans():
    from modelkin.zoo.recipes import plan

    null = plan("null")
    assert len(null.pairs) == 300 and {p["label"] for p in null.pairs} == {"independent"}
    assert len(null.models) == 25
    hard = plan("hard")
    kinds = {p["kind"]: p["label"] for p in hard.pairs}
    assert kinds == {"independent_long": "independent", "independent_distilled": "independent",
                     "distillation_init": "related", "shared_embedding_init": "related"}
    long = [r for r in hard.models.values() if r.get("holdout")]
    assert long and all(r["steps"] >= 10 * plan("smoke").p["steps"] for r in long)  # >= 10x the usual training
    fams = {r.get("family") for r in long}
    assert {"qwen2", "qwen2_5_vl_vision", "qwen3_moe"} <= fams  # several families, incl. vision tower and MoE
    assert {r.get("hidden") for r in long if r["family"] == "qwen2"} == {None, 96}  # two widths


def test_validation_curve_and_plateau_are_recorded():
    import torch

    from modelkin.zoo.data import TokenStream
    from modelkin.zoo.models import CausalLM, DecoderConfig
    from modelkin.zoo.train import LMTask, Validation, train

    torch.set_num_threads(1)  # as the zoo builds: tiny models, and a shared machine
    torch.manual_seed(0)
    ids = (torch.arange(4000) % 17).tolist()  # a periodic stream: learnt quickly, then flat
    model = CausalLM(DecoderConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, intermediate_size=32,
                                   num_attention_heads=2, num_key_value_heads=1))
    stats = train(model, LMTask(TokenStream(ids), batch=4, length=16), 80, seed=1,
                  valid=Validation(LMTask(TokenStream(ids), batch=4, length=16), n_batches=2), valid_points=8)
    curve = stats["valid_curve"]
    assert [s for s, _ in curve] == [10, 20, 30, 40, 50, 60, 70, 80] and stats["valid_loss"] == curve[-1][1]
    assert curve[-1][1] < 0.5 * curve[0][1] and isinstance(stats["valid_plateau"], bool)


def test_a_folder_holds_one_zoo_seed(tmp_path):
    from modelkin.zoo.build import build_zoo

    (tmp_path / "manifest.json").write_text(json.dumps({"modelkin_zoo": 1, "size": "smoke", "zoo_seed": 0}))
    with pytest.raises(ValueError, match="another --seed"):
        build_zoo(tmp_path, "smoke", zoo_seed=2)


def test_cli_zoo_build_rejects_bad_size_and_seed(capsys):
    from modelkin.cli import main

    assert main(["zoo", "build", "/nonexistent-zoo", "--size", "huge"]) == 2
    assert "--size must be one of smoke, full, hard, null" in capsys.readouterr().err
    assert main(["zoo", "build", "/nonexistent-zoo", "--seed", "-1"]) == 2
    assert "--seed must be 0 or more" in capsys.readouterr().err


def test_dependencies_name_every_model_a_recipe_is_made_from():
    from modelkin.zoo.build import dependencies
    from modelkin.zoo.recipes import plan

    for size in ("smoke", "full", "hard"):
        recipes = plan(size).models
        deps = dependencies(recipes)
        order = list(recipes)
        for mid, r in recipes.items():
            expected = {r[k] for k in ("parent", "other", "embed_from") if r.get(k)}
            assert expected <= deps[mid], (size, mid)
            assert all(order.index(d) < order.index(mid) for d in deps[mid]), (size, mid)  # plan order is buildable
    full = dependencies(plan("full").models)
    assert any(len(d) == 2 for d in full.values())  # merges: both parents


def test_parallel_build_equals_the_sequential_one(smoke_zoo, tmp_path):
    """``--jobs 2`` builds each model once its parents exist, in other processes, to the same bytes."""
    from modelkin.cli import main
    from modelkin.zoo.recipes import plan

    leaf = [m for m in plan("smoke").models if m.startswith("resnet")]  # a parent and its child, seconds to train
    assert len(leaf) == 2
    outs = {}
    for jobs in (1, 2):
        root = tmp_path / f"j{jobs}"
        (root / "models").mkdir(parents=True)
        for m in plan("smoke").models:
            if m not in leaf:  # every other model from the cached zoo
                (root / "models" / m).symlink_to(smoke_zoo / "models" / m)
        assert main(["zoo", "build", str(root), "--jobs", str(jobs)]) == 0
        outs[jobs] = {m: (root / "models" / m / "model.safetensors").read_bytes() for m in leaf}
        assert len(json.loads((root / "manifest.json").read_text())["pairs"]) == len(plan("smoke").pairs)
    assert outs[1] == outs[2]
    assert main(["zoo", "build", str(tmp_path / "x"), "--jobs", "0"]) == 2


def _load_pair(zoo: Path, kind: str):
    from modelkin.zoo.io import load_model

    m = _manifest(zoo)
    p = _pair(m, kind)
    return m["models"][p["b"].split("/", 1)[1]], load_model(zoo / p["a"]), load_model(zoo / p["b"])


def test_width_growth_is_function_preserving_then_fine_tuned(smoke_zoo):
    """Widening (residual 64 -> 96, FFN 128 -> 192, heads 4 -> 6, one layer inserted) keeps the logits."""
    import torch

    from modelkin.zoo import reshape

    meta, (parent, _, _), (child, _, _) = _load_pair(smoke_zoo, "width_growth")
    r = meta["recipe"]
    assert meta["preservation_error"] < 1e-3 and meta["train_steps"] == r["steps"] > 0
    grown = reshape.widen_decoder(parent, r["hidden"], r["intermediate"], r["heads"], r["kv_heads"], r["insert_layer"], r["seed"])
    ids = torch.randint(3, 500, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = parent(ids), grown(ids)
    assert (ref - out).abs().max().item() <= 1e-3 * ref.abs().max().item()
    c, pc = child.config, parent.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers) == (
        int(1.5 * pc.hidden_size), int(1.5 * pc.intermediate_size), 6, pc.num_hidden_layers + 1)
    sd = child.state_dict()  # fine-tuned after the growth: the copies are no longer exact
    assert not torch.allclose(sd["model.embed_tokens.weight"][:, :64], parent.state_dict()["model.embed_tokens.weight"])


def test_cnn_permute_prune_recipe(smoke_zoo):
    """Every channel group permuted consistently (logits kept), then 20 % of each block's inner channels pruned."""
    import torch

    from modelkin.zoo import reshape

    meta, (parent, _, _), (child, _, _) = _load_pair(smoke_zoo, "cnn_permute_prune")
    assert meta["preservation_error"] < 1e-3
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    permuted = reshape.permute_resnet(parent, meta["recipe"]["seed"])
    with torch.no_grad():
        ref, out = parent(x), permuted(x)
    assert (ref - out).abs().max().item() <= 1e-4 * ref.abs().max().item()
    widths = parent.config.widths
    assert child.config.inner == [[max(8, round(0.8 * w))] for w in widths]
    assert meta["channel_permutation"]["stream"] and len(meta["kept_inner_channels"]) == len(widths)
    assert child.state_dict()["conv1.weight"].shape == parent.state_dict()["conv1.weight"].shape


def test_independent_width_differs_in_every_shape(smoke_zoo):
    import json

    m = _manifest(smoke_zoo)
    p = _pair(m, "independent_width")
    ca, cb = (json.loads((smoke_zoo / s / "config.json").read_text()) for s in (p["a"], p["b"]))
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"):
        assert ca[key] != cb[key], key
    from tokenizers import Tokenizer

    va, vb = (set(Tokenizer.from_file(str(smoke_zoo / s / "tokenizer.json")).get_vocab()) for s in (p["a"], p["b"]))
    assert len(va & vb) >= 128  # overlapping tokenizers: the shared basis of the test
