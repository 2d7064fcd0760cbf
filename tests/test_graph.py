"""The lineage graph (``modelkin graph``) on the smoke zoo; the same graph on a local process pool and on Ray."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
from itertools import combinations
from pathlib import Path

import pytest

from modelkin.cli import main
from modelkin.index.graph import build_graph, index_folder
from modelkin.index.store import Index


def _origins(manifest: dict) -> dict[tuple[str, str], str]:
    """(model, component) -> the model whose training produced that component, from the zoo's recipes."""
    models = manifest["models"]
    comps = {"qwen2": ("text",), "qwen2_5_vl": ("text", "vision", "projector"), "resnet": ("vision",)}

    def origin(name: str, comp: str) -> str:
        m = models[name]
        if m["parent"] is None or (m["recipe"]["op"] == "graft" and comp == "text"):
            return name  # a base model, or the graft's freshly trained text model
        return origin(m["parent"], comp)

    return {(n, c): origin(n, c) for n, m in models.items() for c in comps[m["family"]]}


def _expected_edges(manifest: dict) -> set[tuple[str, str, str]]:
    org = _origins(manifest)
    out = set()
    for a, b in combinations(sorted(manifest["models"]), 2):
        for (n, c), o in org.items():
            if n == a and org.get((b, c)) == o:
                out.add((a, b, c))
    return out


@pytest.fixture(scope="module")
def zoo_index(smoke_zoo, tmp_path_factory):
    idx = Index(tmp_path_factory.mktemp("graph") / "zoo.sqlite")
    index_folder(smoke_zoo / "models", idx)  # fingerprints every model folder, named by folder
    yield idx
    idx.close()


def test_graph_edges_are_the_zoo_lineage(zoo_index, smoke_zoo, tmp_path):
    manifest = json.loads((smoke_zoo / "manifest.json").read_text())
    # The folder route over fingerprints: one .mkfp per model, named by model.
    folder = tmp_path / "fps"
    folder.mkdir()
    for m in zoo_index.models():
        shutil.copy(zoo_index.fingerprint_path(m.sha256), folder / f"{m.name}.mkfp")
    gj, gh = tmp_path / "graph.json", tmp_path / "graph.html"
    assert main(["graph", str(folder), "-o", str(gj), "-o", str(gh)]) == 0
    g = json.loads(gj.read_text())
    from modelkin.zoo.recipes import COMPONENTS

    n = len(manifest["models"])
    comps = {m: set(COMPONENTS[e["family"]]) for m, e in manifest["models"].items()}
    sharing = sum(1 for a, b in combinations(sorted(comps), 2) if comps[a] & comps[b])  # a ResNet shares no text
    n_pairs = n * (n - 1) // 2
    assert g["n_models"] == n and g["n_pairs"] == n_pairs and g["n_compared"] == sharing
    assert [note.split(":")[0] for note in g["notes"]] == (
        [] if sharing == n_pairs else [f"{n_pairs - sharing} of {n_pairs} pairs were not compared"])
    edges = {(e["a"], e["b"], e["component"]) for e in g["edges"]}
    assert edges == _expected_edges(manifest)
    # Every labelled pair of the manifest, component by component, as labelled.
    by_pair = {(p["a"], p["b"]): p for p in g["pairs"]}
    for p in manifest["pairs"]:
        a, b = (p["a"].split("/")[-1], p["b"].split("/")[-1])
        got = by_pair[tuple(sorted((a, b)))]["components"]
        assert {c: got[c]["verdict"] for c in p["components"]} == p["components"], p["id"]
    # Direction only where the weights show one: the depth-pruned child drops a layer of its parent.
    dirs = {(e["a"], e["b"], e["component"]): e for e in g["edges"]}
    drop = dirs[("qwen2-A-tA512-s1", "qwen2-A-tA512-s1~drop1", "text")]
    assert drop["direction"] == "a->b" and "drops A's layers" in drop["direction_evidence"]
    ft = dirs[("qwen2-A-tA512-s1", "qwen2-A-tA512-s1~ft30C", "text")]
    assert ft["direction"] == "unknown" and "no asymmetry" in ft["direction_evidence"]
    assert all(e["direction"] == "unknown" for e in g["edges"] if "drop1" not in e["a"] + e["b"])
    # Pairs of different shapes are related through the shared-basis or channel test: no unit cosine.
    assert all(e["log10_p"] < -2 and (e["median_unit_cosine"] is None or 0 < e["median_unit_cosine"] <= 1)
               for e in g["edges"])
    fams = [f for f in g["families"] if len(f) > 1]
    assert fams == [sorted(n for n in manifest["models"] if n.startswith("qwen2-A-tA512-s1")),
                    ["qwen2_5_vl-A-tA512-s61-img0", "qwen2_5_vl-A-tA512-s61-img0~graft"],
                    ["resnet-img0-s81", "resnet-img0-s81~pp20"]]
    # The HTML view is self-contained: the data inline, the one script allowed by its hash, no URL to fetch.
    page = gh.read_text()
    csp = re.search(r'Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "unsafe-inline'; img" in csp and "script-src 'sha256-" in csp
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(script) == 1
    assert f"'sha256-{base64.b64encode(hashlib.sha256(script[0].encode()).digest()).decode()}'" in csp
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "drops A's layers" in page


def test_graph_pruned_pairs_are_not_compared_and_said_so(zoo_index):
    g = build_graph(zoo_index, candidates=1)
    assert g.n_compared < g.n_pairs and "not compared is not evidence of independence" in g.notes[0]


def test_graph_on_ray_equals_the_process_pool(zoo_index):
    ray = pytest.importorskip("ray")
    pool = build_graph(zoo_index, workers=2)
    local = build_graph(zoo_index)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = build_graph(zoo_index, ray_address="auto")
        from modelkin.index.graph import add_models

        with Index(zoo_index.path.parent / "ray-add.sqlite") as ix:  # fingerprinting as Ray tasks
            two = ["qwen2-A-tA512-s1", "qwen2_5_vl-A-tA512-s61-img0"]
            add_models(ix, [str(Path(m.location)) for m in zoo_index.models() if m.name in two], ray_address="auto",
                       workdir=ix.path.parent)
            ray_added = {m.name: m.parameters for m in ix.models()}
    finally:
        ray.shutdown()
    print(f"ray graph: {time.perf_counter() - t0:.1f} s; pool {pool.seconds:.1f} s; local {local.seconds:.1f} s")
    assert on_ray.engine == "ray:auto" and pool.engine == "process-pool:2"
    assert ray_added == {m.name: m.parameters for m in zoo_index.models() if m.name in ray_added} and len(ray_added) == 2
    for g in (pool, on_ray):
        assert g.edges == local.edges and g.pairs == local.pairs and g.families == local.families


def test_graph_bad_input(tmp_path, capsys):
    assert main(["graph", str(tmp_path / "none"), "-o", str(tmp_path / "g.json")]) == 2
    assert main(["graph", str(tmp_path), "-o", str(tmp_path / "g.svg")]) == 2
    assert main(["graph", str(tmp_path), "-o", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "no such index or folder" in err and ".html or .json" in err and "no fingerprints (.mkfp) or models" in err


# -- index add in parallel; published indexes (push into a folder, pull over HTTP from the Hub stand-in) ---


def test_index_add_many_models_in_a_process_pool(smoke_zoo, zoo_index, tmp_path, capsys):
    names = ["qwen2-A-tA512-s1", "qwen2-A-tA512-s2"]
    db = tmp_path / "ix.sqlite"
    assert main(["index", "add", *[str(smoke_zoo / "models" / n) for n in names], "--db", str(db), "--workers", "2"]) == 0
    with Index(db) as ix:
        got = {m.name: (m.parameters, m.family) for m in ix.models()}
    assert got == {m.name: (m.parameters, m.family) for m in zoo_index.models() if m.name in names}


def _published(zoo_index, tmp_path, names=("qwen2-A-tA512-s1", "qwen2-A-tA512-s1~drop1")):
    small = Index(tmp_path / "small.sqlite")
    for m in zoo_index.models():
        if m.name in names:
            small.add(zoo_index.fingerprint_path(m.sha256), name=m.name)
    folder = tmp_path / "published"
    assert main(["index", "push", "org/zoo-index", "--db", str(small.path), "--to-folder", str(folder)]) == 0
    small.close()
    return folder


def test_index_push_to_folder_then_pull_from_hub_dataset(zoo_index, tmp_path, monkeypatch, capsys):
    try:
        from .hub_server import HubServer, patch_hf_endpoint
    except ImportError:
        from hub_server import HubServer, patch_hf_endpoint

    folder = _published(zoo_index, tmp_path)
    man = json.loads((folder / "manifest.json").read_text())
    assert [e["name"] for e in man["models"]] == ["qwen2-A-tA512-s1", "qwen2-A-tA512-s1~drop1"]
    with HubServer() as hub:
        patch_hf_endpoint(monkeypatch, hub.url)
        commit = hub.add_repo("org/zoo-index", folder, repo_type="dataset")
        db = tmp_path / "pulled.sqlite"
        assert main(["index", "pull", "org/zoo-index", "--db", str(db), "--revision", commit]) == 0
        with Index(db) as ix:
            pulled = {m.name: m.sha256 for m in ix.models()}
            assert all(ix.fingerprint_path(s).is_file() for s in pulled.values())
        assert pulled == {e["name"]: e["sha256"] for e in man["models"]}
        assert main(["index", "pull", "org/zoo-index", "--db", str(db)]) == 2  # names already indexed
        assert "--replace" in capsys.readouterr().err
        # A tampered fingerprint: nothing enters the index.
        victim = folder / man["models"][1]["file"]
        data = bytearray(victim.read_bytes())
        data[-1] ^= 1
        victim.write_bytes(bytes(data))
        hub.add_repo("org/tampered", folder, repo_type="dataset")
        db2 = tmp_path / "t.sqlite"
        assert main(["index", "pull", "org/tampered", "--db", str(db2)]) == 2
        assert "do not match the manifest's size and sha256" in capsys.readouterr().err
        with Index(db2) as ix:
            assert ix.models() == []
        assert main(["index", "pull", "org/missing", "--db", str(db2)]) == 2
        assert "cannot read the dataset repo" in capsys.readouterr().err


def test_index_push_through_hf_endpoint_then_pull(zoo_index, tmp_path, monkeypatch, capsys):
    """push creates the dataset repo and commits fingerprints + manifest through the Hub API (HF_ENDPOINT);
    pull of that commit gives back the same index; without a write token, one line and exit 2."""
    try:
        from .hub_server import HubServer, patch_hf_endpoint
    except ImportError:
        from hub_server import HubServer, patch_hf_endpoint

    names = ("qwen2-A-tA512-s1", "qwen2-A-tA512-s1~drop1")
    small = Index(tmp_path / "small.sqlite")
    for m in zoo_index.models():
        if m.name in names:
            small.add(zoo_index.fingerprint_path(m.sha256), name=m.name)
    small.close()
    with HubServer() as hub:
        patch_hf_endpoint(monkeypatch, hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        assert main(["index", "push", "org/pushed", "--db", str(tmp_path / "small.sqlite")]) == 2
        err = capsys.readouterr().err
        assert "cannot publish" in err and "HF_TOKEN" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        monkeypatch.setenv("HF_TOKEN", hub.token)
        assert main(["index", "push", "org/pushed", "--db", str(tmp_path / "small.sqlite")]) == 0
        assert "/datasets/org/pushed/commit/" in capsys.readouterr().out
        commit = hub.commit_of("datasets/org/pushed")
        served = sorted(hub._repos["datasets/org/pushed"].commits[commit])
        assert served[-1] == "manifest.json" and len(served) == 3 and all(p.startswith("fingerprints/") for p in served[:2])
        db = tmp_path / "pulled.sqlite"
        assert main(["index", "pull", "org/pushed", "--db", str(db)]) == 0
        with Index(db) as ix, Index(tmp_path / "small.sqlite") as orig:
            assert {m.name: m.sha256 for m in ix.models()} == {m.name: m.sha256 for m in orig.models()}
        # Pushing again (the repo exists) makes a new commit of the same content.
        assert main(["index", "push", "org/pushed", "--db", str(tmp_path / "small.sqlite")]) == 0
        assert hub.commit_of("datasets/org/pushed") == commit  # same files, same (content-derived) commit id


@pytest.mark.parametrize("edit, message", [
    (lambda e: e.update(file="../../etc/passwd"), "file must be 'fingerprints/<its sha256>.mkfp'"),
    (lambda e: e.update(file="fingerprints/" + "0" * 64 + ".mkfp"), "file must be"),
    (lambda e: e.update(n_bytes=1 << 40), "n_bytes must be"),
    (lambda e: e.update(name="a\nb"), "control characters"),
    (lambda e: e.update(extra=1), "expected exactly the keys"),
])
def test_published_manifest_is_validated(edit, message, zoo_index, tmp_path):
    from modelkin.index.publish import PublishedIndexError, parse_manifest

    man = json.loads((_published(zoo_index, tmp_path) / "manifest.json").read_text())
    edit(man["models"][0])
    with pytest.raises(PublishedIndexError, match=re.escape(message)):
        parse_manifest(json.dumps(man).encode(), "test")
    with pytest.raises(PublishedIndexError, match="over the"):
        parse_manifest(b" " * (17 << 20), "test")
