"""tests/hub_server.py: huggingface_hub 2.4.0 works against it unmodified, and every fault does what it says.

huggingface_hub calls get ``endpoint=hub.url`` explicitly (the HF_ENDPOINT routes are tested on their own,
see the hub_server module docstring).  Faults are exercised with http.client (exact control over partial
reads) and, where the remote reader will meet them, with huggingface_hub's httpx2 session.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from safetensors.numpy import save_file

try:  # tests/ may or may not become a package
    from .hub_server import EXAMPLE_NAMES, REPO_ROOT, hub_server, patch_hf_endpoint  # noqa: F401 (fixture)
except ImportError:
    from hub_server import EXAMPLE_NAMES, REPO_ROOT, hub_server, patch_hf_endpoint  # noqa: F401 (fixture)

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status  # noqa: E402

BASE = "modelkin-examples/base"
BASE_DIR = REPO_ROOT / "examples" / "base"
WEIGHTS = (BASE_DIR / "model.safetensors").read_bytes()


@pytest.fixture
def hub(hub_server):
    hub_server.add_example_repos()
    return hub_server


def _api(hub, token=False):
    return HfApi(endpoint=hub.url, token=token)


def _request(url, method="GET", headers=None, timeout=5.0):
    """(status, headers, body) with http.client; a connection per call."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path + ("?" + parts.query if parts.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _content(hub, path="model.safetensors", repo=BASE):
    return hub.content_url(repo, path)


def _ranged(hub, a, b, **kw):
    return _request(_content(hub), headers={"Range": f"bytes={a}-{b}"}, **kw)


# -- huggingface_hub against the server --------------------------------------------------------------------


def test_model_info_reports_commit_sizes_and_lfs_ids(hub):
    info = _api(hub).model_info(BASE, files_metadata=True)
    assert info.id == BASE and info.sha == hub.commit_of(BASE) and len(info.sha) == 40
    assert info.private is False and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == ["config.json", "model.safetensors", "tokenizer.json"]
    weights = siblings["model.safetensors"]
    assert weights.size == len(WEIGHTS)
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest() and weights.lfs.size == len(WEIGHTS)
    config = (BASE_DIR / "config.json").read_bytes()
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == hashlib.sha1(b"blob %d\0" % len(config) + config).hexdigest()
    header = json.loads(WEIGHTS[8 : 8 + int.from_bytes(WEIGHTS[:8], "little")])
    n_params = sum(int(np.prod(t["shape"])) for k, t in header.items() if k != "__metadata__")
    assert info.safetensors.total == n_params
    # by commit sha, and without blobs: names only
    plain = _api(hub).model_info(BASE, revision=info.sha)
    assert plain.sha == info.sha and {s.size for s in plain.siblings} == {None}


def test_commits_are_deterministic_and_revisions_resolve(hub_server, tmp_path):
    first = hub_server.add_repo("org/m", BASE_DIR)
    assert first == hub_server.add_repo("org/m", BASE_DIR)  # same files, same sha
    other = hub_server.add_repo("org/m", REPO_ROOT / "examples" / "finetuned", revision="v2")
    assert other != first
    api = _api(hub_server)
    assert api.model_info("org/m").sha == first
    assert api.model_info("org/m", revision="v2").sha == other
    assert api.model_info("org/m", revision=other).sha == other
    refs = api.list_repo_refs("org/m")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": first, "v2": other}
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/m", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/m", "config.json", revision="nope", endpoint=hub_server.url, cache_dir=tmp_path,
                        token=False)


def test_list_files_and_tree_with_folders(hub_server, tmp_path):
    (tmp_path / "repo" / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "repo" / "a.txt").write_text("a")
    (tmp_path / "repo" / "sub" / "b.txt").write_text("bb")
    (tmp_path / "repo" / "sub" / "deep" / "c.bin").write_bytes(b"ccc")
    hub_server.add_repo("org/tree", tmp_path / "repo")
    api = _api(hub_server)
    assert sorted(api.list_repo_files("org/tree")) == ["a.txt", "sub/b.txt", "sub/deep/c.bin"]
    top = {e.path: type(e).__name__ for e in api.list_repo_tree("org/tree")}
    assert top == {"a.txt": "RepoFile", "sub": "RepoFolder"}
    sub = {e.path: type(e).__name__ for e in api.list_repo_tree("org/tree", "sub", recursive=True)}
    assert sub == {"sub/b.txt": "RepoFile", "sub/deep": "RepoFolder", "sub/deep/c.bin": "RepoFile"}
    lfs = [e for e in api.list_repo_tree("org/tree", recursive=True) if getattr(e, "lfs", None)]
    assert [(e.path, e.lfs.sha256) for e in lfs] == [("sub/deep/c.bin", hashlib.sha256(b"ccc").hexdigest())]
    info = api.get_paths_info("org/tree", ["sub/b.txt", "sub/deep", "missing"])
    assert [(e.path, type(e).__name__) for e in info] == [("sub/b.txt", "RepoFile"), ("sub/deep", "RepoFolder")]


def test_hf_file_system_reads_a_range(hub):
    fs = hf.HfFileSystem(endpoint=hub.url, token=False, skip_instance_cache=True)
    assert fs.info(f"{BASE}/model.safetensors")["size"] == len(WEIGHTS)
    with fs.open(f"{BASE}/model.safetensors", "rb", block_size=1024) as f:
        f.seek(5000)
        assert f.read(100) == WEIGHTS[5000:5100]
    (first, last), = [s.byte_range for s in hub.log() if s.kind == "content"]  # one ranged read (+ readahead)
    assert first == 5000 and 5099 <= last < 5000 + 100 + 2048


def test_hf_hub_download_small_and_lfs_files(hub, tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        path = hf_hub_download(BASE, name, endpoint=hub.url, cache_dir=tmp_path, token=False)
        assert Path(path).read_bytes() == (BASE_DIR / name).read_bytes()
        assert f"snapshots/{hub.commit_of(BASE)}/{name}" in path
    c = hub.counters()
    assert c.count("content", "GET") == 1  # only the LFS file went to the content host
    assert c.bytes_by_kind["content"] == len(WEIGHTS)


def test_get_hf_file_metadata_reads_the_redirect(hub):
    meta = get_hf_file_metadata(hf_hub_url(BASE, "model.safetensors", endpoint=hub.url), token=False)
    assert meta.commit_hash == hub.commit_of(BASE)
    assert meta.etag == hashlib.sha256(WEIGHTS).hexdigest() and meta.size == len(WEIGHTS)
    assert meta.location.startswith(hub.cdn_url + "/cdn/")
    small = get_hf_file_metadata(hf_hub_url(BASE, "config.json", endpoint=hub.url), token=False)
    assert small.etag == hub.file(BASE, "config.json").blob_id and small.size == 441
    assert hub.counters().count("content") == 0  # HEAD stops at the cross-origin 302


def test_get_safetensors_metadata_single_and_sharded(hub, tmp_path):
    meta = _api(hub).get_safetensors_metadata(BASE)
    header = json.loads(WEIGHTS[8 : 8 + int.from_bytes(WEIGHTS[:8], "little")])
    tensors = meta.files_metadata["model.safetensors"].tensors
    assert {k: (t.dtype, t.shape, list(t.data_offsets)) for k, t in tensors.items()} == {
        k: (t["dtype"], t["shape"], t["data_offsets"]) for k, t in header.items() if k != "__metadata__"
    }
    # a sharded repo: index + two shards
    repo = tmp_path / "sharded"
    repo.mkdir()
    save_file({"a": np.ones((2, 3), np.float32)}, str(repo / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(4, np.int8)}, str(repo / "model-00002-of-00002.safetensors"))
    index = {"metadata": {"total_size": 28},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (repo / "model.safetensors.index.json").write_text(json.dumps(index))
    hub.add_repo("org/sharded", repo)
    meta = _api(hub).get_safetensors_metadata("org/sharded")
    assert meta.sharded and meta.weight_map == index["weight_map"] and meta.metadata == {"total_size": 28}
    assert meta.files_metadata["model-00002-of-00002.safetensors"].tensors["b"].shape == [4]
    one_call = _api(hub).get_sharded_safetensors_metadata("org/sharded")
    assert one_call.weight_map == index["weight_map"]


def test_snapshot_download_with_cache_dir_and_patched_hub_cache(hub, tmp_path, monkeypatch):
    folder = Path(snapshot_download("modelkin-examples/vlm-graft", endpoint=hub.url, cache_dir=tmp_path / "a",
                                    token=False))
    assert folder.parent.name == "snapshots" and folder.name == hub.commit_of("modelkin-examples/vlm-graft")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).read_bytes() == (REPO_ROOT / "examples" / "vlm-graft" / name).read_bytes()
    # HF_HUB_CACHE is read at import: the in-process route is the constant
    monkeypatch.setattr(hf.constants, "HF_HUB_CACHE", str(tmp_path / "b"))
    folder = Path(snapshot_download(BASE, endpoint=hub.url, token=False))
    assert folder.is_relative_to(tmp_path / "b") and (folder / "model.safetensors").read_bytes() == WEIGHTS


def test_hf_endpoint_env_is_read_at_import(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert hf.constants.ENDPOINT != hub.url  # too late: read once at import
    assert hf.hf_api.api.endpoint != hub.url  # module-level model_info & co are bound to it
    with monkeypatch.context() as half:  # the trap: ENDPOINT without the URL template
        half.setattr(hf.constants, "ENDPOINT", hub.url)
        assert hf_hub_url(BASE, "config.json", endpoint=hub.url).startswith("https://huggingface.co/")
    patch_hf_endpoint(monkeypatch, hub.url)
    assert hf.model_info(BASE, token=False).sha == hub.commit_of(BASE)
    assert hf.list_repo_files(BASE, token=False) == ["config.json", "model.safetensors", "tokenizer.json"]
    path = hf.hf_hub_download(BASE, "config.json", cache_dir=tmp_path, token=False)  # no endpoint=
    assert Path(path).read_bytes() == (BASE_DIR / "config.json").read_bytes()
    assert HfApi().endpoint == hub.url


def test_hf_endpoint_env_set_before_import_subprocess(hub, tmp_path):
    code = (
        "import json, huggingface_hub as h\n"
        "info = h.model_info('modelkin-examples/base', files_metadata=True)\n"
        "meta = h.get_safetensors_metadata('modelkin-examples/base')\n"
        "path = h.hf_hub_download('modelkin-examples/base', 'model.safetensors')\n"
        "print(json.dumps([h.constants.ENDPOINT, info.sha, len(meta.weight_map), path]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_TOKEN=hub.token)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    endpoint, sha, n_tensors, path = json.loads(out.stdout.strip().splitlines()[-1])
    assert (endpoint, sha) == (hub.url, hub.commit_of(BASE)) and n_tensors == 27
    assert Path(path).is_relative_to(tmp_path) and Path(path).read_bytes() == WEIGHTS


def test_raw_ranged_get_through_the_hf_session_follows_the_redirect(hub):
    url = hf_hub_url(BASE, "model.safetensors", endpoint=hub.url)
    n = len(WEIGHTS)
    for asked, expect in [("0-7", WEIGHTS[:8]), ("1000-1999", WEIGHTS[1000:2000]), (f"{n - 5}-{n + 100}", WEIGHTS[-5:]),
                          ("-16", WEIGHTS[-16:]), (f"{n - 3}-", WEIGHTS[-3:])]:
        r = get_session().get(url, headers={**build_hf_headers(token=hub.token), "Range": f"bytes={asked}"}, timeout=5)
        hf_raise_for_status(r)
        assert r.status_code == 206 and r.content == expect, asked
        assert r.headers["Content-Range"].endswith(f"/{n}") and r.headers["ETag"].strip('"') == hashlib.sha256(WEIGHTS).hexdigest()
        assert [h.status_code for h in r.history] == [302] and r.url.host == "127.0.0.1"
        assert str(r.url).startswith(hub.cdn_url)
    c = hub.counters()
    assert c.count("resolve", "GET") == 5 and c.count("content", "GET") == 5 and c.ranges_served == 5
    assert c.bytes_by_kind["content"] == 8 + 1000 + 5 + 16 + 3


def test_content_host_ranges_etags_and_signature(hub):
    n, etag = len(WEIGHTS), hashlib.sha256(WEIGHTS).hexdigest()
    url = _content(hub)
    status, headers, body = _request(url, "HEAD")
    assert (status, headers["Content-Length"], headers["Accept-Ranges"], body) == (200, str(n), "bytes", b"")
    assert _request(url)[2] == WEIGHTS
    status, headers, _ = _request(url, headers={"Range": f"bytes={n}-{n + 10}"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{n}")
    assert _request(url, headers={"Range": "bytes=0-1,5-6"})[0] == 200  # multi-range: whole file, as S3
    assert _request(url, headers={"Range": "bytes=0-9", "If-Match": '"nope"'})[0] == 412
    assert _request(url, headers={"Range": "bytes=0-9", "If-Match": f'"{etag}"'})[2] == WEIGHTS[:10]
    assert _request(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})[0] == 200
    assert _request(url.replace("sig=", "sig=0"))[0] == 403  # signed URLs only, no token needed
    assert _request(hub.url + urlsplit(url).path)[0] == 404  # content is not on the Hub's origin
    # small files: 200 on /resolve, ranges too
    status, headers, body = _request(hub.resolve_url(BASE, "config.json"), headers={"Range": "bytes=2-5"})
    assert (status, body) == (206, (BASE_DIR / "config.json").read_bytes()[2:6])
    assert headers["X-Repo-Commit"] == hub.commit_of(BASE)


def test_missing_repo_revision_and_file_give_typed_errors(hub, tmp_path):
    api = _api(hub)
    with pytest.raises(RepositoryNotFoundError) as e:
        api.model_info("org/none")
    assert e.value.response.status_code == 401  # anonymous: 401 as the Hub
    with pytest.raises(RepositoryNotFoundError) as e:
        _api(hub, hub.token).model_info("org/none")
    assert e.value.response.status_code == 404
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(BASE, revision="nope")
    with pytest.raises(RemoteEntryNotFoundError) as e:
        hf_hub_download(BASE, "nope.bin", endpoint=hub.url, cache_dir=tmp_path, token=False)
    assert e.value.response.headers["X-Repo-Commit"] == hub.commit_of(BASE)
    assert not api.file_exists(BASE, "nope.bin") and api.file_exists(BASE, "config.json")


def test_private_repo_needs_the_token(hub_server, tmp_path):
    hub_server.add_repo("org/private", BASE_DIR, private=True)
    with pytest.raises(RepositoryNotFoundError):
        _api(hub_server).model_info("org/private")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/private", "config.json", endpoint=hub_server.url, cache_dir=tmp_path, token=False)
    with pytest.raises(RepositoryNotFoundError):
        _api(hub_server, hub_server.token_without_access).model_info("org/private")
    with pytest.raises(HfHubHTTPError) as e:
        _api(hub_server, "hf_wrong").model_info("org/private")
    assert not isinstance(e.value, RepositoryNotFoundError) and e.value.response.status_code == 401
    assert "Invalid credentials" in str(e.value)
    assert _api(hub_server, hub_server.token).model_info("org/private").private is True
    path = hf_hub_download("org/private", "model.safetensors", endpoint=hub_server.url, cache_dir=tmp_path,
                           token=hub_server.token)
    assert Path(path).read_bytes() == WEIGHTS


def test_gated_repo_raises_gated_error_without_token(hub_server, tmp_path, monkeypatch):
    hub_server.add_repo("org/gated", BASE_DIR, gated=True)
    assert _api(hub_server).model_info("org/gated").gated == "manual"  # metadata stays public
    with pytest.raises(GatedRepoError) as e:
        hf_hub_download("org/gated", "model.safetensors", endpoint=hub_server.url, cache_dir=tmp_path, token=False)
    assert e.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as e:
        _api(hub_server, hub_server.token_without_access).get_safetensors_metadata("org/gated")
    assert e.value.response.status_code == 403 and "not in the authorized list" in str(e.value)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)  # HF_TOKEN is read at call time
    meta = HfApi(endpoint=hub_server.url).get_safetensors_metadata("org/gated")
    assert len(meta.weight_map) == 27
    path = hf_hub_download("org/gated", "model.safetensors", endpoint=hub_server.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == WEIGHTS


# -- faults --------------------------------------------------------------------------------------------------


def test_latency_is_added_per_matching_request(hub):
    hub.inject("latency", seconds=0.1, kind="content")
    t0 = time.perf_counter()
    for _ in range(3):
        _ranged(hub, 0, 9)
    slow = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(3):
        _request(hub.resolve_url(BASE, "config.json"))
    fast = time.perf_counter() - t0
    assert slow >= 0.3 and fast < slow - 0.2  # the unmatched path is not delayed


def test_bandwidth_cap_is_one_shared_pipe(hub):
    hub.inject("bandwidth", bytes_per_s=2_000_000, kind="content")
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_ranged, args=(hub, 0, 199_999)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0  # 400 kB through one 2 MB/s pipe: 0.2 s, not 0.1
    assert 0.18 <= elapsed < 1.0
    assert hub.counters().bytes_by_kind["content"] == 400_000


def test_drop_closes_after_n_body_bytes(hub):
    fault = hub.inject("drop", after_bytes=1000, kind="content", times=1)
    parts = urlsplit(_content(hub))
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", f"{parts.path}?{parts.query}", headers={"Range": "bytes=0-99999"})
    resp = conn.getresponse()
    assert resp.status == 206 and resp.headers["Content-Length"] == "100000"
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    assert e.value.partial == WEIGHTS[:1000]
    conn.close()
    assert _ranged(hub, 0, 99_999)[2] == WEIGHTS[:100_000]  # times=1: the next read is whole
    assert (fault.seen, fault.fired) == (2, 1)
    assert [s.body_bytes for s in hub.log() if s.kind == "content"] == [1000, 100_000]


def test_drop_through_the_hf_session_is_a_protocol_error(hub):
    import httpx2

    hub.inject("drop", after_bytes=10, kind="content")
    url = hf_hub_url(BASE, "model.safetensors", endpoint=hub.url)
    with pytest.raises(httpx2.RemoteProtocolError):
        get_session().get(url, headers={"Range": "bytes=0-999"}, timeout=5)


def test_stall_on_the_nth_request_times_the_client_out(hub):
    hub.inject("stall", seconds=30, kind="content", skip=1, times=1)
    assert _ranged(hub, 0, 9, timeout=1)[2] == WEIGHTS[:10]
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError):
        _ranged(hub, 0, 9, timeout=0.3)
    assert time.perf_counter() - t0 < 1.0
    assert _ranged(hub, 0, 9, timeout=1)[2] == WEIGHTS[:10]


def test_stall_mid_body_and_close_ends_it(hub):
    import httpx2

    hub.inject("stall", seconds=30, after_bytes=100, kind="content")
    url = _content(hub)
    with pytest.raises(httpx2.ReadTimeout):
        get_session().get(url, headers={"Range": "bytes=0-9999"}, timeout=0.3)
    def stalled_read():
        try:
            _request(url, timeout=10)
        except (http.client.HTTPException, OSError):
            pass  # cut off by close(): fine, it must just not hang

    thread = threading.Thread(target=stalled_read)
    thread.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    hub.close()  # wakes the stalled handler at once
    thread.join(5)
    assert not thread.is_alive() and time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("code,error_code,error", [
    (404, "EntryNotFound", RemoteEntryNotFoundError),
    (401, "GatedRepo", GatedRepoError),
    (403, None, HfHubHTTPError),
    (503, None, HfHubHTTPError),
])
def test_status_faults_come_out_as_typed_errors(hub, code, error_code, error):
    hub.inject("status", code=code, error_code=error_code, path="*model.safetensors", kind="resolve", times=1)
    url = hf_hub_url(BASE, "model.safetensors", endpoint=hub.url)
    with pytest.raises(error) as e:
        get_hf_file_metadata(url, token=False)
    assert e.value.response.status_code == code
    assert get_hf_file_metadata(url, token=False).size == len(WEIGHTS)  # times=1: over


def test_5xx_storm_for_k_requests_then_recovery(hub):
    storm = hub.inject("status", code=503, kind="content", times=3, retry_after=1)
    answers = [_ranged(hub, 0, 9) for _ in range(4)]
    assert [a[0] for a in answers] == [503, 503, 503, 206]
    assert answers[0][1]["Retry-After"] == "1" and answers[3][2] == WEIGHTS[:10]
    assert storm.fired == 3
    # by path pattern, until removed: other files are unaffected
    storm = hub.inject("status", code=500, path="*/tokenizer.json")
    assert _request(hub.resolve_url(BASE, "tokenizer.json"))[0] == 500
    assert _request(hub.resolve_url(BASE, "config.json"))[0] == 200
    storm.remove()
    assert _request(hub.resolve_url(BASE, "tokenizer.json"))[0] == 200


def test_injected_416_names_the_size(hub):
    hub.inject("status", code=416, kind="content", times=1)
    status, headers, _ = _ranged(hub, 0, 9)
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(WEIGHTS)}")


def test_short_body_full_declaration_then_close(hub):
    hub.inject("short_body", missing_bytes=7, kind="content")
    parts = urlsplit(_content(hub))
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", f"{parts.path}?{parts.query}", headers={"Range": "bytes=100-199"})
    resp = conn.getresponse()
    assert resp.headers["Content-Length"] == "100" and resp.headers["Content-Range"] == f"bytes 100-199/{len(WEIGHTS)}"
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    assert e.value.partial == WEIGHTS[100:193]
    conn.close()


def test_short_body_honest_headers(hub):
    hub.inject("short_body", missing_bytes=7, declare="short", kind="content")
    status, headers, body = _ranged(hub, 100, 199)
    assert status == 206 and headers["Content-Range"] == f"bytes 100-192/{len(WEIGHTS)}"
    assert headers["Content-Length"] == "93" and body == WEIGHTS[100:193]
    status, headers, body = _request(_content(hub))  # no Range: 200 with fewer bytes than the file
    assert status == 200 and len(body) == len(WEIGHTS) - 7 and headers["Content-Length"] == str(len(WEIGHTS) - 7)


def test_bad_content_range_and_ignored_range(hub):
    fault = hub.inject("bad_content_range", shift=3, kind="content")
    status, headers, body = _ranged(hub, 100, 199)
    assert status == 206 and headers["Content-Range"] == f"bytes 103-202/{len(WEIGHTS)}" and body == WEIGHTS[103:203]
    fault.remove()
    hub.inject("ignore_range", kind="content")
    status, headers, body = _ranged(hub, 100, 199)
    assert status == 200 and "Content-Range" not in headers and body == WEIGHTS


def test_mutate_changes_bytes_and_etag_between_header_and_data_reads(hub):
    hub.inject("mutate", from_byte=1000, path="*/model.safetensors", skip=1)
    url = hf_hub_url(BASE, "model.safetensors", endpoint=hub.url)
    meta = get_hf_file_metadata(url, token=False)  # 1st matching request: the old version
    assert meta.etag == hashlib.sha256(WEIGHTS).hexdigest()
    status, headers, body = _request(meta.location, headers={"Range": "bytes=990-1009"})
    assert status == 206 and headers["ETag"].strip('"') != meta.etag
    assert body[:10] == WEIGHTS[990:1000] and body[10:] != WEIGHTS[1000:1010]
    assert _request(meta.location, headers={"Range": "bytes=0-9", "If-Match": f'"{meta.etag}"'})[0] == 412
    assert get_hf_file_metadata(url, token=False).etag == headers["ETag"].strip('"')  # /resolve agrees


def test_scoping_by_kind_method_and_reset(hub):
    fault = hub.inject("status", code=500, kind="api", method="GET")
    with pytest.raises(HfHubHTTPError):
        _api(hub).model_info(BASE)
    assert _request(hub.resolve_url(BASE, "config.json"), "HEAD")[0] == 200
    assert fault.seen == fault.fired == 1
    with pytest.raises(ValueError, match="unknown fault"):
        hub.inject("explode")
    with pytest.raises(TypeError, match="needs"):
        hub.inject("latency")
    with pytest.raises(TypeError, match="takes"):
        hub.inject("drop", after=3)
    hub.reset()
    assert hub.faults == () and hub.counters().count() == 0
    assert _api(hub).model_info(BASE).sha == hub.commit_of(BASE)


def test_counters_by_method_and_kind(hub, tmp_path):
    hf_hub_download(BASE, "model.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=False)
    _ranged(hub, 0, 99)
    _api(hub).model_info(BASE)
    c = hub.counters()
    assert c.requests == {("HEAD", "resolve"): 1, ("GET", "content"): 2, ("GET", "api"): 1}
    assert c.count("content") == 2 and c.count(method="GET") == 3 and c.ranges_served == 1
    assert c.bytes_by_kind["content"] == len(WEIGHTS) + 100
    assert c.bytes_served == sum(s.body_bytes for s in hub.log())
    ranged = [s for s in hub.log() if s.status == 206]
    assert [(s.repo, s.filename, s.range_asked, s.byte_range) for s in ranged] == [
        (BASE, "model.safetensors", "bytes=0-99", (0, 99))]
    hub.reset_counters()
    assert hub.counters().count() == 0 and hub.log() == ()


def test_examples_are_all_registered(hub):
    api = _api(hub)
    for name in EXAMPLE_NAMES:
        files = api.list_repo_files(f"modelkin-examples/{name}")
        assert sorted(files) == sorted(p.name for p in (REPO_ROOT / "examples" / name).iterdir())
