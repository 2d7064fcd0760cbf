"""The lineage graph (``modelkin graph``) on the smoke zoo; the same graph on a local process pool and on Ray."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
from itertools import combinations

import pytest

from modelkin.cli import main
from modelkin.index.graph import build_graph, index_folder
from modelkin.index.store import Index


def _origins(manifest: dict) -> dict[tuple[str, str], str]:
    """(model, component) -> the model whose training produced that component, from the zoo's recipes."""
    models = manifest["models"]
    comps = {"qwen2": ("text",), "qwen2_5_vl": ("text", "vision", "projector")}

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
    assert g["n_models"] == 12 and g["n_pairs"] == 66 and g["n_compared"] == 66 and not g["notes"]
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
    assert all(e["log10_p"] < -2 and 0 < e["median_unit_cosine"] <= 1 for e in g["edges"])
    fams = [f for f in g["families"] if len(f) > 1]
    assert fams == [sorted(n for n in manifest["models"] if n.startswith("qwen2-A-tA512-s1")),
                    ["qwen2_5_vl-A-tA512-s61-img0", "qwen2_5_vl-A-tA512-s61-img0~graft"]]
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
    finally:
        ray.shutdown()
    print(f"ray graph: {time.perf_counter() - t0:.1f} s; pool {pool.seconds:.1f} s; local {local.seconds:.1f} s")
    assert on_ray.engine == "ray:auto" and pool.engine == "process-pool:2"
    for g in (pool, on_ray):
        assert g.edges == local.edges and g.pairs == local.pairs and g.families == local.families


def test_graph_bad_input(tmp_path, capsys):
    assert main(["graph", str(tmp_path / "none"), "-o", str(tmp_path / "g.json")]) == 2
    assert main(["graph", str(tmp_path), "-o", str(tmp_path / "g.svg")]) == 2
    assert main(["graph", str(tmp_path), "-o", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "no such index or folder" in err and ".html or .json" in err and "no fingerprints (.mkfp) or models" in err
