"""Fingerprints (.mkfp), the fingerprint index, search and audit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelkin
from modelkin.cli import main
from modelkin.errors import FormatError, UsageError
from modelkin.index.fingerprint import make_fingerprint, write_safetensors
from modelkin.index.search import audit, search
from modelkin.index.store import Index
from modelkin.sampling import SamplePolicy
from modelkin.sources import open_model
from modelkin.sources.fingerprint_format import MAGIC_KEY

# The default fingerprint policy keeps the zoo's tiny models whole (they fit its byte budget). This budgeted policy
# samples every tensor however small, in 2 layers per component: the regime of a large model's fingerprint.
BUDGET = SamplePolicy(fraction=0.0, min_rows=32, block_rows=16, small_bytes=0, max_layers=2, whole_bytes=0)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _verdicts(r) -> dict[str, str]:
    return {n: c.verdict for n, c in r.components.items()}


def _pairs(smoke_zoo, repo_root):
    manifest = json.loads((smoke_zoo / "manifest.json").read_text())
    pairs = [(smoke_zoo / p["a"], smoke_zoo / p["b"], p) for p in manifest["pairs"]]
    ex = repo_root / "examples"
    pairs += [(ex / "base", ex / b, None) for b in ("finetuned", "independent")] + [(ex / "vlm-donor", ex / "vlm-graft", None)]
    return pairs


def _fingerprints(smoke_zoo, repo_root, out, policy=None):
    fps = {}
    for a, b, _ in _pairs(smoke_zoo, repo_root):
        for m in (a, b):
            if m not in fps:
                kw = {} if policy is None else {"policy": policy}
                fps[m] = Path(make_fingerprint(m, out / f"{m.parent.name}-{m.name}.mkfp", **kw).path)
    return fps


@pytest.fixture(scope="module")
def zoo_fps(smoke_zoo, repo_root, tmp_path_factory):
    """Fingerprints with the default policy."""
    return _fingerprints(smoke_zoo, repo_root, tmp_path_factory.mktemp("fps"))


@pytest.fixture(scope="module")
def budget_fps(smoke_zoo, repo_root, tmp_path_factory):
    """Fingerprints that hold samples only (``BUDGET``)."""
    return _fingerprints(smoke_zoo, repo_root, tmp_path_factory.mktemp("bfps"), BUDGET)


def test_fingerprint_compare_gives_the_models_verdicts(zoo_fps, smoke_zoo, repo_root):
    for a, b, _ in _pairs(smoke_zoo, repo_root):
        full = modelkin.compare(a, b, read_mode="full")
        fp = modelkin.compare(zoo_fps[a], zoo_fps[b])
        mixed = modelkin.compare(zoo_fps[a], b)
        assert _verdicts(fp) == _verdicts(full) and fp.verdict == full.verdict, (a.name, b.name)
        assert _verdicts(mixed) == _verdicts(full), (a.name, b.name)
        assert not fp.reads.left_out and fp.reads.mode == "sampled"


def test_sampled_fingerprints_compare_exactly_as_the_models_sampled_alike(budget_fps, smoke_zoo, repo_root):
    """A fingerprint holding samples gives the numbers of the models compared with its policy; against the full
    compare it may lose power (inconclusive), never flip related and independent."""
    sampled_any = 0
    for a, b, _ in _pairs(smoke_zoo, repo_root):
        full = modelkin.compare(a, b, read_mode="full")
        sampled = modelkin.compare(a, b, read_mode="sampled", sample_policy=BUDGET)
        fp = modelkin.compare(budget_fps[a], budget_fps[b])
        mixed = modelkin.compare(a, budget_fps[b])
        for r in (fp, mixed):
            assert _verdicts(r) == _verdicts(sampled), (a.name, b.name)
            for c in r.components:
                assert r.components[c].log10_p == pytest.approx(sampled.components[c].log10_p, abs=1e-9)
            assert not any("does not hold" in n for n in r.notes), (a.name, b.name, r.notes)
        for c, v in _verdicts(fp).items():
            assert v in (full.components[c].verdict, "inconclusive"), (a.name, b.name, c)
        sampled_any += fp.reads.planned_bytes < fp.reads.full_bytes
    assert sampled_any >= 10


def test_fingerprint_records_provenance_and_is_small(budget_fps, repo_root, tmp_path):
    base = repo_root / "examples/base"
    zoo_fps = budget_fps
    src = open_model(zoo_fps[base])
    with src:
        assert src.config["model_type"] == "qwen2" and src.embedded_vocab()
        rec = src.file_records()["model.safetensors"]
        assert rec.sha256 == open_model(base).file_records()["model.safetensors"].sha256
        shapes = {n: i.shape for n, i in src.tensors.items()}
    with open_model(base) as m:
        assert shapes == {n: i.shape for n, i in m.tensors.items()}  # original shapes, not the samples'
    assert zoo_fps[base].stat().st_size < (base / "model.safetensors").stat().st_size


def test_fingerprint_is_sampled_only(zoo_fps, repo_root):
    base = repo_root / "examples/base"
    with pytest.raises(UsageError, match="sampled rows only"):
        modelkin.compare(zoo_fps[base], base, read_mode="full")
    other = make_fingerprint(base, Path(zoo_fps[base]).parent / "other-policy.mkfp", policy=BUDGET)
    with pytest.raises(UsageError, match="different sample policies"):
        modelkin.compare(zoo_fps[base], other.path)


# -- hostile fingerprints ----------------------------------------------------------------------------


def _rewrite(src: Path, dest: Path, edit) -> Path:
    """A copy of a fingerprint with its header edited by ``edit(header_dict)``."""
    f = open_model(src).files[0]
    header = json.loads(json.dumps(f.header))
    payload = f._payload
    entries, blobs, off = {}, [], 0
    import numpy as np

    for name, info in payload.tensors.items():
        data = payload.read_raw(info, 0, info.numel).view(np.uint8).reshape(-1)
        entries[name] = {"dtype": info.dtype.code, "shape": list(info.shape), "data_offsets": [off, off + data.size]}
        blobs.append(data)
        off += data.size
    edit(header)
    write_safetensors(dest, entries, blobs, {MAGIC_KEY: json.dumps(header)})
    return dest


def _first(h):
    return next(iter(h["tensors"].values()))


def _first_sampled(h):
    return next(t for t in h["tensors"].values() if t["rows"])


HOSTILE = {
    "version": (lambda h: h.update(version=99), "version 99 is not supported"),
    "format": (lambda h: h.update(format="other"), "expected 'modelkin-fingerprint'"),
    "unknown key": (lambda h: h.update(extra=1), "unknown keys"),
    "rows out of range": (lambda h: _first_sampled(h).update(rows=[[10**9, 32]]), "outside the tensor"),
    "rows unsorted": (lambda h: _first_sampled(h).update(rows=[[32, 16], [0, 16]]), "sorted"),
    "rows vs payload": (lambda h: _first_sampled(h).update(rows=[[0, 1]]), "does not hold 1 rows"),
    "payload missing": (lambda h: _first(h).update(payload="nope"), "is not in the file"),
    "huge shape": (lambda h: _first(h).update(shape=[2**62, 2**62]), "shape must be"),
    "bad policy": (lambda h: h["policy"].update(fraction=-1), "out of range"),
    "bad vocab": (lambda h: h.update(vocab={"a": -5}), "vocab"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_fingerprints_fail_in_one_line(case, budget_fps, repo_root, tmp_path, capsys):
    edit, message = HOSTILE[case]
    bad = _rewrite(budget_fps[repo_root / "examples/base"], tmp_path / "bad.mkfp", edit)
    with pytest.raises(FormatError, match=message):
        open_model(bad)
    assert main(["compare", str(bad), str(repo_root / "examples/base")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelkin: error: ") and "bad.mkfp" in err and len(err.strip().splitlines()) == 1


def test_truncated_and_foreign_files_are_not_fingerprints(zoo_fps, repo_root, tmp_path):
    good = zoo_fps[repo_root / "examples/base"].read_bytes()
    (tmp_path / "t.mkfp").write_bytes(good[: len(good) // 2])
    with pytest.raises(FormatError):
        open_model(tmp_path / "t.mkfp")
    shutil.copy(repo_root / "examples/base/model.safetensors", tmp_path / "plain.mkfp")
    with pytest.raises(FormatError, match="not a modelkin fingerprint"):
        open_model(tmp_path / "plain.mkfp")


# -- the index -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_index(zoo_fps, tmp_path_factory):
    db = tmp_path_factory.mktemp("index") / "index.sqlite"
    with Index(db) as ix:
        for m, fp in zoo_fps.items():
            ix.add(fp, name=m.name)
    return db


def test_search_recalls_every_related_zoo_pair(zoo_index, zoo_fps, smoke_zoo, repo_root):
    with Index(zoo_index) as ix:
        assert len(ix.models()) == len(zoo_fps)
        for a, b, p in _pairs(smoke_zoo, repo_root):
            truth = p["components"] if p else None
            res = search(ix, str(zoo_fps[b]), top=50)
            assert b.name not in {h.name for h in res.hits}  # the query's own fingerprint is not its relative
            hit = next((h for h in res.hits if h.name == a.name), None)
            full = modelkin.compare(a, b, read_mode="full")
            if hit is None:  # pruned by the sketches: only a model the compare finds unrelated may be
                assert full.verdict != "related" and (truth is None or "related" not in truth.values()), (a.name, b.name)
                continue
            assert {c: x["verdict"] for c, x in hit.components.items()} == _verdicts(full), (a.name, b.name)
            if truth:
                for comp, label in truth.items():
                    if label == "related":
                        assert hit.components[comp]["verdict"] == "related", (a.name, b.name, comp)
            ranks = [h.name for h in res.hits]
            assert ranks == sorted(ranks, key=lambda n: next(
                (h.verdict != "related", h.log10_p) for h in res.hits if h.name == n))


def test_a_search_leaves_the_process_blas_setting_as_it_found_it(zoo_index, zoo_fps, repo_root):
    """A search compares candidates on two threads, each compare limiting BLAS to one thread: the limit is set and
    lifted by the search's own thread (limits set and restored on the workers left BLAS at one thread for good)."""
    import numpy  # noqa: F401  (loads the BLAS library)
    from threadpoolctl import threadpool_info

    def blas():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    before = blas()
    if not before or max(before) < 2:
        pytest.skip("no BLAS library running more than one thread")
    with Index(zoo_index) as ix:
        for _ in range(3):
            res = search(ix, str(zoo_fps[repo_root / "examples/finetuned"]), threads=2)
            assert res.n_confirmed >= 2 and blas() == before


def test_index_cli_add_list_remove_search(zoo_fps, repo_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODELKIN_INDEX", str(tmp_path / "ix.sqlite"))
    ex = repo_root / "examples"
    assert main(["index", "add", str(ex / "base"), str(ex / "independent")]) == 0
    assert main(["index", "add", str(ex / "base")]) == 2  # already there
    assert main(["index", "list", "--json"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("["):])
    assert [m["name"] for m in listed] == ["base", "independent"]
    assert main(["index", "search", str(ex / "finetuned"), "--json", "-"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["hits"][0]["name"] == "base" and res["hits"][0]["verdict"] == "related"
    assert res["hits"][1]["name"] == "independent" and res["hits"][1]["verdict"] == "independent"
    assert res["hits"][0]["context"]["same_tokenizer"] is True
    assert main(["index", "remove", "independent"]) == 0
    with Index(tmp_path / "ix.sqlite") as ix:
        assert [m.name for m in ix.models()] == ["base"]
        assert len(list(ix.store.glob("*/*.mkfp"))) == 1  # the removed fingerprint's file is gone
    assert main(["index", "remove", "independent"]) == 2


_ADDER = """
import sys, time
sys.path.insert(0, {src!r})
from modelkin.index.store import Index
ix = Index({db!r})
for i in range({n}):
    ix.add({fp!r}, name={prefix!r} + str(i))
    {pause}
"""


def _adder(db, fp, prefix, n, pause="pass"):
    code = _ADDER.format(src=SRC, db=str(db), fp=str(fp), prefix=prefix, n=n, pause=pause)
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)


def test_two_processes_adding_at_once_lose_nothing(zoo_fps, repo_root, tmp_path):
    db = tmp_path / "ix.sqlite"
    Index(db).close()
    fa, fb = zoo_fps[repo_root / "examples/base"], zoo_fps[repo_root / "examples/independent"]
    procs = [_adder(db, fa, "a", 8), _adder(db, fb, "b", 8)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    with Index(db) as ix:
        names = {m.name for m in ix.models()}
        assert names == {f"a{i}" for i in range(8)} | {f"b{i}" for i in range(8)}
        assert all(len(ix.sketches("text")[0]) == 16 for _ in [0])


def test_a_writer_killed_mid_write_leaves_a_readable_index(zoo_fps, repo_root, tmp_path):
    db = tmp_path / "ix.sqlite"
    Index(db).close()
    p = _adder(db, zoo_fps[repo_root / "examples/base"], "k", 10_000)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        with Index(db) as ix:
            if len(ix.models()) >= 3:
                break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with Index(db) as ix:
        models = ix.models()
        assert len(models) >= 3
        for m in models:  # every committed record has its fingerprint and its sketch
            assert ix.fingerprint_path(m.sha256).is_file()
        assert len(ix.sketches("text")[0]) == len(models)
        ix.add(zoo_fps[repo_root / "examples/independent"], name="after")
        assert "after" in {m.name for m in ix.models()}


def test_audit_breaks_a_graft_down_by_component_and_checks_claims(zoo_fps, repo_root, tmp_path):
    ex = repo_root / "examples"
    db = tmp_path / "ix.sqlite"
    with Index(db) as ix:
        for m in ("vlm-donor", "base", "independent"):
            ix.add(zoo_fps[ex / m], name=m)
        graft = tmp_path / "graft"
        shutil.copytree(ex / "vlm-graft", graft)
        (graft / "README.md").write_text("---\nlicense: apache-2.0\nbase_model:\n- base\n- someorg/not-indexed\n---\n# card\n")
        fp = make_fingerprint(graft, tmp_path / "graft.mkfp")
        doc = audit(ix, fp.path)
    comps = {c["component"]: c for c in doc["components"]}
    assert [d["name"] for d in comps["vision"]["derived_from"]] == ["vlm-donor"]
    assert comps["text"]["derived_from"] == [] and comps["projector"]["derived_from"] == []
    assert doc["derived_share"] == pytest.approx(comps["vision"]["share"])
    assert sum(c["share"] for c in doc["components"]) == pytest.approx(1.0)
    assert doc["claims"]["license"] == "apache-2.0"
    assert doc["claims"]["claimed_but_not_found"] == ["base", "someorg/not-indexed"]
    assert doc["claims"]["claimed_not_indexed"] == ["someorg/not-indexed"]
    assert doc["claims"]["found_but_not_claimed"] == ["vlm-donor"]


def test_audit_cli_writes_json_and_html(zoo_fps, repo_root, tmp_path, capsys):
    ex = repo_root / "examples"
    db = tmp_path / "ix.sqlite"
    with Index(db) as ix:
        ix.add(zoo_fps[ex / "vlm-donor"], name="vlm-donor")
    assert main(["audit", str(zoo_fps[ex / "vlm-graft"]), "--index", str(db), "--html", str(tmp_path / "a.html"),
                 "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "vision" in out and "derived from vlm-donor" in out and "no relative among 1 indexed models" in out
    page = (tmp_path / "a.html").read_text()
    assert "default-src 'none'" in page and "http://" not in page and "https://" not in page
    assert json.loads((tmp_path / "a.json").read_text())["components"]


# -- the fingerprint's size: planned from shapes, flat in the model's size -----------------------------------


def test_planned_fingerprint_size_is_flat_from_7b_to_70b():
    from modelkin.index.fingerprint import llama_like, planned_size
    from modelkin.sampling import DEFAULT_SAMPLE

    sizes, plans, headers = {}, {}, {}
    for name, shape in {"7B": dict(hidden=4096, layers=32, ffn=11008, vocab=32000),
                        "70B": dict(hidden=8192, layers=80, ffn=28672, vocab=128256, kv_heads=8)}.items():
        tensors, config = llama_like(**shape)
        vocab = {f"tok{i}": i for i in range(shape["vocab"])}
        sizes[name], plans[name] = planned_size(tensors, config, vocab=vocab)
        headers[name] = sizes[name] - plans[name].payload_bytes
    assert sizes["7B"] <= 16_000_000
    # The 70B's fingerprint is no larger than the 7B's plus its larger header (vocabulary, tensor list).
    assert sizes["70B"] <= sizes["7B"] + (headers["70B"] - headers["7B"])
    rows = {n: p.payload_bytes - p.by_role["products"] for n, p in plans.items()}  # the budget bounds the rows kept
    assert rows["70B"] <= 14 << 20 and rows["7B"] <= 14 << 20
    # The units' responses to the basis rows, held beside them: under 1 MB (they save every compare computing them).
    assert 0 < plans["70B"].by_role["products"] < plans["7B"].by_role["products"] < 1_000_000
    assert 1 <= plans["70B"].k < plans["7B"].k < 32
    assert plans["7B"].by_role["basis"] <= 256 * 4096 * 2  # at most 256 token rows, bf16 kept as bf16
    # The unbudgeted 1 %-of-rows sample (fingerprint version 1) was ten times larger at 7B and grew with the model.
    tensors, config = llama_like(hidden=4096, layers=32, ffn=11008, vocab=32000)
    assert planned_size(tensors, config, DEFAULT_SAMPLE)[0] > 10 * sizes["7B"]


def test_planned_size_is_the_written_size(repo_root, tmp_path):
    from modelkin.index.fingerprint import planned_size

    policy = SamplePolicy(fraction=0.0, min_rows=16, block_rows=16, small_bytes=0, max_layers=1)
    for m in ("base", "vlm-donor"):
        made = make_fingerprint(repo_root / "examples" / m, tmp_path / f"{m}.mkfp", policy=policy, hash_files=False)
        with open_model(repo_root / "examples" / m) as src:
            from modelkin.alignment.vocab import load_vocab

            planned, plan = planned_size(dict(sorted(src.tensors.items())), src.config, policy, load_vocab(src))
        assert made.kept_bytes == plan.payload_bytes
        assert abs(made.n_bytes - planned) < 600  # the header's source record and date differ, nothing else


def test_budgeted_fingerprint_reads_k_layers_and_compares_as_the_models(repo_root, tmp_path):
    ex = repo_root / "examples"
    policy = SamplePolicy(fraction=0.0, min_rows=16, block_rows=16, small_bytes=0, max_layers=1)
    fa = make_fingerprint(ex / "base", tmp_path / "a.mkfp", policy=policy).path
    fb = make_fingerprint(ex / "finetuned", tmp_path / "b.mkfp", policy=policy).path
    fp = modelkin.compare(fa, fb)
    models = modelkin.compare(ex / "base", ex / "finetuned", read_mode="sampled", sample_policy=policy)
    assert fp.verdict == models.verdict == "related"
    assert fp.components["text"].log10_p == pytest.approx(models.components["text"].log10_p, abs=1e-9)
    from modelkin.sampling import choose_layers

    (kept,) = choose_layers("text", [0, 1], 1)
    assert {t.layer_a for t in fp.tensors if t.layer_a is not None} == {kept}  # one of the two layers
    assert any("only some layers were read" in n and "1 of 2 text layers" in n for n in fp.notes)
    assert not any("does not hold" in n for n in fp.notes)
    with open_model(fa) as src:  # the other layer's tensors are in the header, with no rows
        f = src.files[0]
        other = f"model.layers.{1 - kept}.mlp.up_proj.weight"
        assert f.stored_rows(other).size == 0 and src.tensors[other].shape == (128, 64)


@pytest.fixture(scope="module")
def wide_fps(tmp_path_factory):
    """A model whose FFN is too wide to be read whole (its units are sampled, their products held), a fine-tuned
    child and an unrelated model, fingerprinted with ``BUDGET``."""
    from builders import perturb, qwen2_tensors, write_model

    work = tmp_path_factory.mktemp("wide")
    config = {"model_type": "qwen2", "hidden_size": 128, "intermediate_size": 2304, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024}
    base = qwen2_tensors(31, hidden=128, ffn=2304, vocab=1024)
    models = {"base": base, "child": perturb(base, 0.3), "other": qwen2_tensors(32, hidden=128, ffn=2304, vocab=1024)}
    return {n: Path(make_fingerprint(write_model(work / n, t, config), work / f"{n}.mkfp", policy=BUDGET,
                                     hash_files=False).path) for n, t in models.items()}


def test_products_are_the_units_responses_and_change_no_verdict(wide_fps, monkeypatch):
    """A fingerprint holds its sampled units' products with the token-block basis rows: they equal the products
    of the rows it holds, answer only what they cover, and a compare using them decides as one that does not."""
    import numpy as np

    import modelkin.sources.fingerprint_format as F
    from modelkin.sampling import token_blocks

    with open_model(wide_fps["base"]) as src:
        f = src.files[0]
        products = f.header["products"]
        assert f.header["version"] == 3 and any("up_proj" in n for n in products)
        for name, entry in products.items():
            info, emb = src.tensors[name], src.tensors[entry["basis"]]
            rows, cols = f.stored_rows(name), token_blocks(emb.shape[0])
            held = src.row_products(info, rows, emb, cols)
            want = src.read_rows(info, rows) @ src.read_rows(emb, cols).T
            assert held.dtype == np.float32 and np.allclose(held, want, rtol=1e-5, atol=1e-5)
            assert np.array_equal(src.row_products(info, rows[::2], emb, cols[1::3]), held[::2][:, 1::3])
            missing = sorted(set(range(info.shape[0])) - set(rows.tolist()))[:1]
            assert src.row_products(info, np.array(missing), emb, cols) is None
            outside = sorted(set(range(emb.shape[0])) - set(cols.tolist()))[:1]
            assert src.row_products(info, rows, emb, np.array(outside)) is None
    pairs = [("base", "child"), ("base", "other"), ("child", "other")]
    used = [modelkin.compare(wide_fps[a], wide_fps[b], hash_files=False) for a, b in pairs]
    monkeypatch.setattr(F.FingerprintFile, "row_products", lambda *a: None)
    computed = [modelkin.compare(wide_fps[a], wide_fps[b], hash_files=False) for a, b in pairs]
    assert _verdicts(used[0])["text"] == "related" and _verdicts(used[1])["text"] != "related"
    for x, y in zip(used, computed):
        assert _verdicts(x) == _verdicts(y) and x.log10_p == pytest.approx(y.log10_p, rel=1e-6, abs=1e-6)
        sx, sy = (next(t for c in r.components.values() for t in c.invariant_tests) for r in (x, y))
        assert sx["ran"] and sx["log10_p"] == pytest.approx(sy["log10_p"], rel=1e-6, abs=1e-6)


HOSTILE_PRODUCTS = {
    "basis": (lambda e: e.update(basis="nope"), "must be matrices"),
    "payload": (lambda e: e.update(payload="p0"), "not an F32 tensor|payload shape"),
    "keys": (lambda e: e.update(extra=1), "exactly the keys"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PRODUCTS))
def test_hostile_products_fail_in_one_line(case, wide_fps, tmp_path):
    edit, message = HOSTILE_PRODUCTS[case]
    bad = _rewrite(wide_fps["base"], tmp_path / "bad.mkfp", lambda h: edit(next(iter(h["products"].values()))))
    with pytest.raises(FormatError, match=message):
        open_model(bad)


def test_a_version_2_fingerprint_without_products_is_read(wide_fps, tmp_path):
    def v2(h):
        h.update(version=2)
        h.pop("products")

    old = _rewrite(wide_fps["child"], tmp_path / "v2.mkfp", v2)
    with open_model(old) as src:
        assert not src.files[0]._products
    r2, r3 = (modelkin.compare(wide_fps["base"], b, hash_files=False) for b in (old, wide_fps["child"]))
    assert _verdicts(r2) == _verdicts(r3) == {"text": "related"}


def test_an_old_version_fingerprint_gives_one_line(zoo_fps, repo_root, tmp_path, capsys):
    bad = _rewrite(zoo_fps[repo_root / "examples/base"], tmp_path / "v1.mkfp", lambda h: h.update(version=1))
    assert main(["compare", str(bad), str(repo_root / "examples/base")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "version 1 is not supported" in err and "make the fingerprint again" in err


def test_raw_sketch_ranks_a_low_rank_updated_child_next_to_its_parent(tmp_path):
    """A LoRA-style merged child (a large rank-4 update of every matrix) moves the spectrum, not the weights at
    fixed places: its raw sketch stays closest to its parent's, above an independent model's."""
    import numpy as np

    from builders import qwen2_tensors, write_model
    from modelkin.index.sketch import DIM, RAW_DIM, RAW_SUFFIX, sketch_model

    parent = qwen2_tensors(1, hidden=64, ffn=128, vocab=256, layers=2)
    rng = np.random.default_rng(5)
    child = {k: (v + 3 * v.std() * (rng.normal(size=(v.shape[0], 4)) @ rng.normal(size=(4, v.shape[1]))) / 4
                 if v.ndim == 2 else v).astype(np.float32) for k, v in parent.items()}
    cfg = {"model_type": "qwen2"}
    sk = {}
    for name, t in (("parent", parent), ("child", child), ("other", qwen2_tensors(2, hidden=64, ffn=128, vocab=256, layers=2))):
        with open_model(write_model(tmp_path / name, t, cfg)) as src:
            sk[name] = sketch_model(src)
    assert sk["parent"]["text"].shape == (DIM,) and sk["parent"]["text" + RAW_SUFFIX].shape == (RAW_DIM,)
    raw = {n: s["text" + RAW_SUFFIX] for n, s in sk.items()}
    assert float(raw["child"] @ raw["parent"]) > 0.5 > abs(float(raw["child"] @ raw["other"])) + 0.3


# -- pruning and the confirmation schedule --------------------------------------------------------------


def _unit(v):
    import numpy as np

    return (v / np.linalg.norm(v)).astype(np.float32)


def test_raw_floor_keeps_fewer_than_one_null_model_per_index(tmp_path):
    """The raw floor is the null's 1 - 1/(n+1) quantile: 10,000 null sketches leave about one above it."""
    import numpy as np

    from modelkin.index.search import Candidates, prune, raw_floor
    from modelkin.index.sketch import DIM, RAW_DIM

    assert raw_floor(100) < raw_floor(10_000) < raw_floor(1_000_000)
    rng = np.random.default_rng(0)
    n = 10_000
    q_raw, q_spec = _unit(rng.standard_normal(RAW_DIM)), _unit(rng.standard_normal(DIM))
    rows = [(f"m{i}", {"text": 1}, {"text": _unit(q_spec + 0.01 * rng.standard_normal(DIM)),
                                   "text:raw": _unit(rng.standard_normal(RAW_DIM))}) for i in range(n)]
    rows[7][2]["text:raw"] = _unit(q_raw + 0.5 * rng.standard_normal(RAW_DIM) / np.sqrt(RAW_DIM))  # a relative
    with Index(tmp_path / "ix.sqlite") as ix:
        ix.add_sketch_rows(rows)
        c = prune(ix, {"text": q_spec, "text:raw": q_raw}, cap=32)
    assert isinstance(c, Candidates) and "m7" in c.raw
    assert len(c.raw) <= 4  # the relative and about one null model (a 5-sigma-rare count otherwise)
    assert len(c.spectral["text"]) == 32 and not set(n for n, _ in c.spectral["text"]) & set(c.raw)


def test_spectral_candidates_are_confirmed_in_batches_while_relatives_turn_up(monkeypatch):
    """A spectral batch that finds no relative ends its list; one that does asks for the next batch."""
    import modelkin.index.search as S
    from modelkin.index.defaults import SPECTRAL_BATCH
    from modelkin.index.store import IndexedModel

    def run(related: set[str], n: int = 40) -> list[str]:
        seen = []

        def fake_confirm(q, index, rec, similarity):
            seen.append(rec.name)
            v = "related" if rec.name in related else "independent"
            return S.Hit(rec.name, v, -9.0, {"text": {"verdict": v, "log10_p": -9.0, "median_unit_cosine": 0.5}},
                         similarity, {})

        monkeypatch.setattr(S, "confirm", fake_confirm)
        names = [f"m{i}" for i in range(n)]
        records = {x: IndexedModel(x, x, None, None, None, {}, None, {}, {}, "") for x in names + ["r"]}
        cands = S.Candidates({"r": 0.9}, {"text": [(x, 1.0 - i / 100) for i, x in enumerate(names)]})
        S._confirm_all(None, None, cands, records, lambda rec: False, workers=2)
        return sorted(seen, key=lambda x: (len(x), x))

    assert run(set()) == ["r"] + [f"m{i}" for i in range(SPECTRAL_BATCH)]  # one batch, nothing found: stop
    assert run({"m3"}) == ["r"] + [f"m{i}" for i in range(2 * SPECTRAL_BATCH)]  # found in batch 1: one more
    assert run({f"m{i}" for i in range(40)}) == ["r"] + [f"m{i}" for i in range(40)]  # the whole list


def test_memo_computes_once_per_open_source_and_lets_go_with_it():
    import gc

    import numpy as np

    from modelkin.sources import memo as M

    class Src:
        pass

    calls = []
    a, b = Src(), Src()
    for src in (a, a, b):
        v = M.memo(src, "k", lambda: calls.append(1) or np.zeros(4))
    assert len(calls) == 2 and not v.flags.writeable  # once per source; shared values are read-only
    big = M.MAX_BYTES // 3
    for k in range(4):
        M.memo(a, ("big", k), lambda: np.zeros(big, np.uint8))
    assert M._sizes[id(a)] <= M.MAX_BYTES and ("big", 0) not in M._memos[id(a)]  # least recently used went first
    ida = id(a)
    del a
    gc.collect()
    assert ida not in M._memos and id(b) in M._memos  # a's table went with a


def test_gathered_reads_equal_row_reads_and_stop_at_the_memory_cap(budget_fps, repo_root, monkeypatch):
    """A fingerprint's rows gathered from its payload in memory are the rows read one run at a time; past
    MAX_HELD_BYTES nothing more is held and the reads go by rows."""
    import numpy as np

    import modelkin.sources.fingerprint_format as F

    fp = budget_fps[repo_root / "examples/base"]
    with open_model(fp) as src:
        f = src.files[0]
        infos = [i for n, i in src.tensors.items() if len(i.shape) == 2 and f.stored_rows(n) is not None
                 and len(f.stored_rows(n))]
        assert infos
        gathered = {i.name: src.read_rows(i, f.stored_rows(i.name)[::-1]) for i in infos}
        assert f._held_bytes > 0
    monkeypatch.setattr(F, "MAX_HELD_BYTES", 0)
    with open_model(fp) as src:
        f = src.files[0]
        for i in infos:
            assert np.array_equal(src.read_rows(i, f.stored_rows(i.name)[::-1]), gathered[i.name])
        assert f._held_bytes == 0
        monkeypatch.setattr(F, "MAX_HELD_BYTES", 1 << 30)
        missing = sorted(set(range(infos[0].shape[0])) - set(f.stored_rows(infos[0].name).tolist()))[:1]
        with pytest.raises(F.MissingRowsError):  # a row the fingerprint does not hold, by the gathered path too
            src.read_rows(infos[0], np.array(missing))
