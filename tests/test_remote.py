"""Remote models: Hub ids and URLs against a real HTTP server on 127.0.0.1 (tests/hub_server.py).

No test touches the internet: HF_ENDPOINT points at the local server, caches live in tmp folders.
"""

from __future__ import annotations

import json
import shutil

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import modelkin
from modelkin.cli import main
from modelkin.errors import ModelkinError, RemoteError, SourceNotFoundError
from modelkin.sources import open_model
from modelkin.sources.http import FetchStats
from modelkin.sampling import SamplePolicy

try:
    from . import builders
    from .hub_server import HubServer, patch_hf_endpoint
except ImportError:
    import builders
    from hub_server import HubServer, patch_hf_endpoint

EX = "modelkin-examples"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer() as server:
        server.add_example_repos()
        patch_hf_endpoint(monkeypatch, server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("modelkin.sources.http.BACKOFF_SECONDS", 0.01)
        yield server


def _verdicts(r) -> dict[str, str]:
    return {name: c.verdict for name, c in r.components.items()}


def _header_bytes(folder) -> int:
    raw = (folder / "model.safetensors").read_bytes()[:8]
    return 8 + int.from_bytes(raw, "little")


# -- Hub ids ------------------------------------------------------------------------------------------


def test_hub_compare_matches_local_and_records_the_commit(hub, repo_root):
    remote = modelkin.compare(f"{EX}/base", f"{EX}/finetuned", read_mode="full")
    local = modelkin.compare(repo_root / "examples/base", repo_root / "examples/finetuned")
    assert remote.verdict == local.verdict == "related"
    assert remote.log10_p == pytest.approx(local.log10_p, abs=1e-9)
    assert remote.a.revision == hub.commit_of(f"{EX}/base") and len(remote.a.revision) == 40
    rec = remote.a.files["model.safetensors"]
    assert rec.sha256_source == "hub" and rec.sha256 == local.a.files["model.safetensors"].sha256
    doc = json.loads(remote.to_json())
    assert doc["a"]["revision"] == remote.a.revision and doc["reads"]["mode"] == "full"


def test_revision_pins_another_commit(hub, repo_root):
    old = hub.commit_of(f"{EX}/base")
    hub.add_repo(f"{EX}/base", repo_root / "examples/independent", revision="main")  # main moves on
    r_new = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")
    r_old = modelkin.compare(f"{EX}/base", f"{EX}/finetuned", revision_a=old)
    assert r_old.a.revision == old != r_new.a.revision
    assert r_old.verdict == "related" and r_new.verdict == "independent"


def test_component_full_read_fetches_only_that_component(hub, repo_root):
    r = modelkin.compare(f"{EX}/vlm-donor", f"{EX}/vlm-graft", read_mode="full", components=("vision",))
    assert set(r.components) == {"vision"} and r.components["vision"].verdict == "related"
    sources = [open_model(repo_root / f"examples/{n}") for n in ("vlm-donor", "vlm-graft")]
    from modelkin.inventory import build_inventory

    vision = sum(e.info.n_bytes for s in sources for e in build_inventory(s).tensors if e.component == "vision")
    headers = sum(_header_bytes(repo_root / f"examples/{n}") for n in ("vlm-donor", "vlm-graft"))
    assert r.reads.remote_bytes_fetched <= 1.05 * (vision + headers)
    text_bytes = sum(e.info.n_bytes for e in build_inventory(sources[0]).tensors if e.component == "text")
    assert text_bytes > 0.3 * vision  # the check would notice a text tower fetched by mistake


def test_inspect_reads_headers_only(hub, capsys):
    stats = FetchStats()
    with open_model(f"{EX}/vlm-donor", stats=stats) as src:
        assert src.revision == hub.commit_of(f"{EX}/vlm-donor") and src.config["model_type"] == "qwen2_5_vl"
    assert stats.bytes_fetched < 16_000
    assert main(["inspect", f"{EX}/vlm-donor", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["revision"] == hub.commit_of(f"{EX}/vlm-donor") and doc["family"]


def test_plain_url_and_index_url(hub, tmp_path, repo_root):
    url = hub.content_url(f"{EX}/base", "model.safetensors")
    r = modelkin.compare(url, f"{EX}/finetuned")
    assert r.verdict == "related" and r.a.revision is None
    # A sharded model behind a shard-index URL.
    src = open_model(repo_root / "examples/base")
    names = sorted(src.tensors)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: src.read(src.tensors[n]).reshape(src.tensors[n].shape) for n in part}, str(shard_dir / fname))
        weight_map.update({n: fname for n in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(repo_root / "examples/base/config.json", shard_dir / "config.json")
    shutil.copy(repo_root / "examples/base/tokenizer.json", shard_dir / "tokenizer.json")
    hub.add_repo("someone/sharded", shard_dir)
    by_id = modelkin.compare("someone/sharded", f"{EX}/finetuned", read_mode="full")
    local = modelkin.compare(repo_root / "examples/base", repo_root / "examples/finetuned")
    assert by_id.log10_p == pytest.approx(local.log10_p, abs=1e-9)
    index_url = hub.resolve_url("someone/sharded", "model.safetensors.index.json")
    assert modelkin.compare(index_url, f"{EX}/finetuned", read_mode="full").log10_p == pytest.approx(local.log10_p, abs=1e-9)


# -- access and errors ----------------------------------------------------------------------------------


def test_gated_model_needs_a_token(hub, repo_root, monkeypatch, capsys):
    hub.add_repo("corp/gated", repo_root / "examples/base", gated=True)
    assert main(["compare", "corp/gated", f"{EX}/finetuned", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HF_TOKEN" in err and err.startswith("modelkin: error:")
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert modelkin.compare("corp/gated", f"{EX}/finetuned").verdict == "related"


def test_missing_model_and_revision_are_one_line(hub, capsys):
    assert main(["compare", "nobody/nothing", f"{EX}/base", "--quiet"]) == 2
    assert "no such model on the Hub" in capsys.readouterr().err
    assert main(["compare", f"{EX}/base", f"{EX}/finetuned", "--revision-a", "v9", "--quiet"]) == 2
    assert "no revision 'v9'" in capsys.readouterr().err


@pytest.mark.parametrize("fault, params", [
    ("status", {"code": 503, "times": 3}),  # a 5xx storm that passes
    ("drop", {"after_bytes": 100, "times": 2}),  # connection dropped mid-range
    ("short_body", {"missing_bytes": 10, "declare": "short", "times": 2}),
    ("stall", {"seconds": 2.0, "times": 1}),
])
def test_transient_faults_are_retried_to_the_same_numbers(hub, repo_root, monkeypatch, fault, params):
    monkeypatch.setattr("modelkin.sources.http.READ_TIMEOUT_SECONDS", 0.5)
    times = params.pop("times")
    hub.inject(fault, kind="content", times=times, **params)
    r = modelkin.compare(f"{EX}/base", f"{EX}/finetuned", read_mode="full")
    local = modelkin.compare(repo_root / "examples/base", repo_root / "examples/finetuned")
    assert r.log10_p == pytest.approx(local.log10_p, abs=1e-9)
    assert [x.cosine for x in r.tensors] == [x.cosine for x in local.tensors]


@pytest.mark.parametrize("fault, params, words", [
    ("status", {"code": 503}, "gave up after"),  # a storm that never ends
    ("status", {"code": 404}, "404"),
    ("status", {"code": 403}, "HF_TOKEN"),
    ("status", {"code": 416}, "416"),
    ("bad_content_range", {"shift": 7}, "asked for bytes"),
    ("ignore_range", {}, "asked for bytes"),
])
def test_persistent_faults_end_in_one_error_line(hub, capsys, fault, params, words):
    hub.inject(fault, kind="content", **params)
    assert main(["compare", f"{EX}/base", f"{EX}/finetuned", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err and "Traceback" not in err


def test_file_changed_between_header_and_data(hub, capsys):
    # A's first read (its header) sees the old bytes, every later read the new ones.
    hub.inject("mutate", kind="content", path=f"/cdn/{EX}/base/*", skip=1, from_byte=0)
    assert main(["compare", f"{EX}/base", f"{EX}/finetuned", "--quiet"]) == 2
    assert "changed on the server" in capsys.readouterr().err


def test_cache_is_reused_verified_and_refetched_when_corrupt(hub, tmp_path):
    first = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")
    assert first.reads.remote_bytes_fetched > 0
    again = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")
    assert again.reads.remote_bytes_fetched == 0 and again.reads.remote_bytes_cached > 0
    entries = [p for p in (tmp_path / "mk-cache" / "ranges").rglob("*") if p.is_file() and not p.name.endswith(".sha256")]
    for p in entries:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    fixed = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")
    assert fixed.reads.remote_bytes_fetched > 0 and fixed.log10_p == first.log10_p


def test_offline_mode_serves_what_was_cached(hub, monkeypatch, capsys):
    online = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.inject("status", code=500)  # the server is unusable: nothing may reach it
    offline = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")
    assert offline.log10_p == online.log10_p and offline.a.revision == online.a.revision
    assert main(["compare", f"{EX}/base", f"{EX}/independent", "--quiet"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


# -- sampled mode -----------------------------------------------------------------------------------------

BIG = dict(hidden=1024, ffn=2816, vocab=1024, layers=2, v_hidden=1024, v_ffn=2816, v_depth=3)


@pytest.fixture(scope="module")
def big_vlms(tmp_path_factory):
    """A >= 100 MB VLM and a graft of its vision tower (fine-tuned) onto an independent text tower."""
    root = tmp_path_factory.mktemp("big-vlm")
    donor = builders.vlm_tensors(1, **BIG)
    other = builders.vlm_tensors(2, **BIG)
    graft = {k: (donor[k] + 0.3 * donor[k].std() * np.random.default_rng(7).normal(size=donor[k].shape)).astype(np.float32)
             if k.startswith("visual.blocks") or k.startswith("visual.patch") else other[k] for k in donor}
    config = builders.vlm_config(**BIG)
    out = []
    for name, tensors in (("donor", donor), ("graft", graft)):
        folder = root / name
        folder.mkdir()
        save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config))
        out.append(folder)
    assert (out[0] / "model.safetensors").stat().st_size >= 100e6
    return out


def test_sampled_mode_reads_under_two_percent_with_the_full_verdicts(hub, big_vlms):
    donor, graft = big_vlms
    hub.add_repo("big/donor", donor)
    hub.add_repo("big/graft", graft)
    full = modelkin.compare(donor, graft, read_mode="full")
    sampled = modelkin.compare("big/donor", "big/graft")  # remote: sampled by default
    assert sampled.reads.mode == "sampled"
    assert _verdicts(sampled) == _verdicts(full) and sampled.verdict == full.verdict
    assert full.components["vision"].verdict == "related"
    # The independent text towers are large enough for their units to be sampled: a permuted copy could not be
    # ruled out, so the honest answer is inconclusive, saying why (docs/method.md, "Related, independent ...").
    assert full.components["text"].verdict == "inconclusive" and "fingerprinted only" in full.components["text"].reason
    compared = sampled.reads.full_bytes
    assert sampled.reads.remote_bytes_fetched <= 0.02 * compared, sampled.reads
    sampled_rows = [t for t in sampled.tensors if t.sampled_rows]
    assert sampled_rows and all(t.identity_basis == "sampled" for t in sampled_rows)
    assert all(t.pearson_ci[0] <= t.pearson <= t.pearson_ci[1] for t in sampled_rows if t.pearson_ci)
    assert any("Sampled reads" in n for n in sampled.notes)


def test_byte_cap_leaves_tensors_out_and_says_so(big_vlms):
    donor, graft = big_vlms
    r = modelkin.compare(donor, graft, read_mode="sampled", max_bytes=200_000)
    assert r.reads.left_out and r.reads.planned_bytes <= 200_000
    assert any("--max-bytes" in n for n in r.notes)
    # What was read still decides, with the power of what was read: "independent" only with that power.
    for c in r.components.values():
        if c.verdict == "independent":
            assert c.min_detectable_unit_cosine is not None and c.min_detectable_unit_cosine <= 0.1
    starved = modelkin.compare(donor, graft, read_mode="sampled", max_bytes=5_000)
    assert starved.verdict == "inconclusive" and all(c.verdict == "inconclusive" for c in starved.components.values())


def test_a_capped_remote_sampled_compare_fetches_no_more_than_the_cap(hub, big_vlms, tmp_path, monkeypatch):
    """Alignment's rows (fetched before the plan) count against --max-bytes: bytes fetched <= cap + headers."""
    donor, graft = big_vlms
    hub.add_repo("big/donor", donor)
    hub.add_repo("big/graft", graft)
    headers = FetchStats()
    for name in ("big/donor", "big/graft"):
        open_model(name, stats=headers).close()
    uncapped = modelkin.compare("big/donor", "big/graft")
    needed = uncapped.reads.remote_bytes_fetched - headers.bytes_fetched
    for cap in (needed // 2, needed // 5):
        monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / f"cache-{cap}"))  # nothing fetched before
        r = modelkin.compare("big/donor", "big/graft", max_bytes=cap)
        assert r.reads.remote_bytes_fetched <= cap + headers.bytes_fetched, (cap, r.reads)
        assert r.reads.remote_bytes_fetched > 0.5 * cap  # the cap is used, not avoided
        assert r.reads.left_out and any("--max-bytes" in n for n in r.notes)


def test_sampled_note_only_when_sampling_left_bytes_unread(hub, repo_root):
    small = modelkin.compare(f"{EX}/base", f"{EX}/finetuned")  # remote: sampled mode, small tensors read whole
    assert small.reads.mode == "sampled" and small.reads.planned_bytes == small.reads.full_bytes
    assert not any("Sampled reads" in n for n in small.notes)
    cut = modelkin.compare(repo_root / "examples/base", repo_root / "examples/finetuned", read_mode="sampled",
                           sample_policy=AGGRESSIVE)
    assert cut.reads.planned_bytes < cut.reads.full_bytes
    assert any(n.startswith("Sampled reads: ") for n in cut.notes)


# -- sampled vs full on the zoo and the examples ---------------------------------------------------------

# Sample every tensor, however small, down to two blocks of 16 rows: the zoo's models are tiny, and the
# default policy would read them whole (which would make the agreement trivial).
AGGRESSIVE = SamplePolicy(fraction=0.01, min_rows=32, block_rows=16, small_bytes=0)


def test_sampled_verdicts_equal_full_verdicts_on_smoke_zoo_and_examples(smoke_zoo, repo_root):
    manifest = json.loads((smoke_zoo / "manifest.json").read_text())
    pairs = [(smoke_zoo / p["a"], smoke_zoo / p["b"]) for p in manifest["pairs"]]
    ex = repo_root / "examples"
    pairs += [(ex / "base", ex / b) for b in ("finetuned", "independent")] + [(ex / "vlm-donor", ex / "vlm-graft")]
    sampled_any = samplable = 0
    for a, b in pairs:
        full = modelkin.compare(a, b, read_mode="full")
        sampled = modelkin.compare(a, b, read_mode="sampled", sample_policy=AGGRESSIVE)
        assert _verdicts(sampled) == _verdicts(full) and sampled.verdict == full.verdict, (a.name, b.name)
        sampled_any += sampled.reads.planned_bytes < sampled.reads.full_bytes
        # Pairs of different widths pair no tensor by shape, and small CNNs' kernels have too few rows to sample.
        samplable += any(t.shape and t.shape[0] > AGGRESSIVE.min_rows for t in full.tensors)
    assert samplable >= len(pairs) - 6 and sampled_any >= samplable - 1  # the policy really sampled


def test_file_changed_since_its_listing(hub, capsys):
    """The Hub's redirect names the content's sha256: one that differs from the listing's is a change."""
    hub.inject("mutate", kind="resolve", path=f"/{EX}/base/resolve/*", from_byte=0)
    assert main(["compare", f"{EX}/base", f"{EX}/finetuned", "--quiet"]) == 2
    assert "changed on the server since its listing" in capsys.readouterr().err
