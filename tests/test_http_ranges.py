"""sources/http.py below the comparison: the shared fetching pool, prefetches into the range cache, the
cache's entries, and the stand-in's own process (tests/hub_server.py's ``HubProcess``).

Everything runs against the stand-in on 127.0.0.1; no test touches the internet.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time

import pytest

from modelkin.sources import http

try:
    from .hub_server import REPO_ROOT, HubProcess, HubServer
except ImportError:
    from hub_server import REPO_ROOT, HubProcess, HubServer

BASE = "modelkin-examples/base"
WEIGHTS = (REPO_ROOT / "examples" / "base" / "model.safetensors").read_bytes()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
    monkeypatch.setattr(http, "COALESCE_GAP_BYTES", 256)  # the example file is small: keep its ranges apart
    with HubServer() as server:
        server.add_example_repos(("base",))
        yield server


def _file(hub, **kw) -> http.HttpFile:
    return http.HttpFile(hub.resolve_url(BASE, "model.safetensors"), size=len(WEIGHTS), identity="test:" + hub.url, **kw)


def _spread_ranges(n: int = 40, length: int = 1000) -> list[tuple[int, int]]:
    """n ranges far apart (never coalesced), in no particular order."""
    step = len(WEIGHTS) // n
    assert step > length + http.COALESCE_GAP_BYTES
    return [((i * 7 % n) * step, length) for i in range(n)]


def test_prefetch_fills_the_cache_once_and_reads_then_fetch_nothing(hub):
    ranges = _spread_ranges()
    f = _file(hub)
    f.prefetch(ranges)
    assert hub.counters().count("content", "GET") == len(ranges)  # one request per range, none twice
    assert f.stats.bytes_fetched == sum(n for _, n in ranges)
    before = hub.counters().count()
    got = f.read_ranges(ranges)
    assert got == [WEIGHTS[o : o + n] for o, n in ranges]
    f.prefetch(ranges)  # already held: no request
    assert hub.counters().count() == before
    f.close()
    # Another open of the same file reads the entries from disk, verified: still no request.
    g = _file(hub)
    assert g.read_ranges(ranges[:3]) == [WEIGHTS[o : o + n] for o, n in ranges[:3]]
    assert hub.counters().count() == before and g.stats.bytes_fetched == 0


def test_cache_entries_are_one_file_named_by_their_sha256_and_a_corrupt_one_is_refetched(hub):
    f = _file(hub)
    f.read_ranges([(100, 5000)])
    f.close()
    entries = [p for p in f._cache.folder.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in entries] == [f"100-5000-{hashlib.sha256(WEIGHTS[100:5100]).hexdigest()}"]
    data = bytearray(entries[0].read_bytes())
    data[10] ^= 0xFF
    entries[0].write_bytes(bytes(data))
    g = _file(hub)
    assert g.read_ranges([(200, 100)]) == [WEIGHTS[200:300]]  # the bad entry is dropped, the bytes fetched again
    assert g.stats.bytes_fetched == 100 and not entries[0].exists()


def test_an_open_file_serves_its_recent_entries_from_memory_and_forgets_them_when_closed(hub):
    f = _file(hub)
    f.read_ranges([(0, 4096)])
    (entry,) = [p for p in f._cache.folder.iterdir() if not p.name.startswith(".")]
    entry.unlink()  # gone from disk: the open file still has the bytes it fetched
    assert f.read_ranges([(10, 20)]) == [WEIGHTS[10:30]] and f.stats.bytes_fetched == 4096
    f.close()
    assert not [k for k in http._RECENT._entries if k[0] == id(f._cache)]


def test_requests_in_flight_stay_under_the_byte_budget_and_results_keep_their_order(monkeypatch):
    monkeypatch.setattr(http, "MAX_INFLIGHT_BYTES", 1000)
    lock, inflight, peak = threading.Lock(), [0], [0]

    def fetch(offset: int, n: int) -> int:
        with lock:
            inflight[0] += n
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.002 * (offset % 3))  # finish out of order
        with lock:
            inflight[0] -= n
        return offset

    jobs = [(i, 300) for i in range(30)] + [(99, 5000)]  # one job larger than the budget still runs, alone
    assert http._run_bounded(fetch, jobs, keep=True) == [o for o, _ in jobs]
    assert 600 <= peak[0] <= 5000 and inflight[0] == 0
    assert http._run_bounded(fetch, jobs, keep=False) == [None] * len(jobs)


def _read_in_child(url: str, size: int, identity: str, queue) -> None:
    queue.put(http.HttpFile(url, size=size, identity=identity).read_ranges([(8, 16), (size - 16, 16)]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_fetches_with_its_own_pool(hub):
    _file(hub).read_ranges(_spread_ranges(8))  # the parent's pool and clients exist
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(hub.resolve_url(BASE, "model.safetensors"), len(WEIGHTS), "child", queue))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
    assert child.exitcode == 0, "the child hung or failed (a pool inherited from the parent has no threads)"
    assert queue.get(timeout=5) == [WEIGHTS[8:24], WEIGHTS[-16:]]


def test_stand_in_in_its_own_process_serves_and_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
    with HubProcess() as hub:
        commit = hub.add_repo(BASE, REPO_ROOT / "examples" / "base")
        assert len(commit) == 40 and hub.commit_of(BASE) == commit
        assert hub.inject("latency", seconds=0.0) is None
        url = f"{hub.url}/{BASE}/resolve/main/model.safetensors"
        f = http.HttpFile(url, size=len(WEIGHTS), identity="process")
        assert f.read_ranges([(0, 8), (1000, 24)]) == [WEIGHTS[:8], WEIGHTS[1000:1024]]
        c = hub.counters()
        assert c.count("resolve", "GET") == 1 and c.count("content", "GET") == 1  # neighbours: one request
        assert c.bytes_by_kind["content"] == 1024 and c.ranges_served == 1
        with pytest.raises(ValueError, match="unknown fault"):
            hub.inject("no-such-fault")
        process = hub._proc
    assert process.poll() is not None  # closed with the block


def test_stand_in_listens_with_a_backlog_for_many_simultaneous_connections(hub):
    # socketserver's default (5) drops SYNs when a client opens dozens of connections at once: 1 s stalls.
    assert all(s.request_queue_size >= 256 for s in hub._servers)


def test_reads_during_a_background_prefetch_get_their_bytes_first_and_nothing_twice(hub):
    f = _file(hub)
    with f.in_background():
        f.prefetch([(0, len(WEIGHTS))])  # returns at once
    assert f._ahead is not None
    got = f.read_ranges([(len(WEIGHTS) - 3000, 3000), (5, 10)])  # far ahead of the background's order
    assert got == [WEIGHTS[-3000:], WEIGHTS[5:15]]
    f._ahead.join(30)
    assert all(state == "done" for state in f._ahead.state.values())
    assert f.read_ranges([(0, len(WEIGHTS))]) == [WEIGHTS]
    assert f.stats.bytes_fetched == len(WEIGHTS) == hub.counters().bytes_by_kind["content"]
    f.close()
    assert f._ahead is None


def test_a_sampled_background_keeps_many_requests_in_flight_and_takes_more_ranges_later(hub):
    """Small ranges (a sampled read's rows): many requests at once on the shared threads; a second background
    prefetch adds only what the first did not ask for; every byte is fetched once, reads get theirs."""
    hub.inject("latency", seconds=0.05, kind="content")
    f = _file(hub)
    f.read_ranges([(0, 8)])  # the content URL is known: later requests go to the content host only
    first = _spread_ranges(40)[:30]
    started = time.perf_counter()
    with f.in_background():
        f.prefetch(first)
    assert time.perf_counter() - started < 0.05  # returned at once
    later = _spread_ranges(40)[20:]  # 10 ranges queued already, 10 new
    with f.in_background():
        f.prefetch(later)
    assert len(f._ahead.jobs) == 40
    assert f.read_ranges(later[-3:]) == [WEIGHTS[o : o + n] for o, n in later[-3:]]
    f._ahead.join(30)
    elapsed = time.perf_counter() - started
    assert all(state == "done" for state in f._ahead.state.values())
    assert elapsed < 0.05 * 40 / 4  # 40 requests of 50 ms each: far more than 4 at a time
    # (0, 8) lies inside the first range: its bytes were cached, the rest of that range fetched alone
    assert f.stats.bytes_fetched == sum(n for _, n in _spread_ranges(40)) == hub.counters().bytes_by_kind["content"]
    f.close()


def test_a_background_prefetch_skips_what_the_cache_holds(hub):
    f = _file(hub)
    f.read_ranges([(1000, 2000), (300_000, 500)])
    with f.in_background():
        f.prefetch([(0, len(WEIGHTS))])
    assert sorted(f._ahead.jobs) == [(0, 1000), (3000, 297_000), (300_500, len(WEIGHTS) - 300_500)]
    f.close()


def test_a_failing_background_prefetch_leaves_each_read_its_own_answer(hub, monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(http, "MAX_REQUEST_BYTES", 64 << 10)
    monkeypatch.setattr(http, "MAX_CONCURRENT_REQUESTS", 4)  # 2 requests at a time: more are queued than run
    f = _file(hub)
    f.read_ranges([(0, 8)])  # the content URL is known: later requests go to the content host only
    storm = hub.inject("status", code=503, kind="content")  # every background request gives up
    with f.in_background():
        f.prefetch([(0, len(WEIGHTS))])
    f._ahead.join(30)
    assert f._ahead.stopped  # stopped at the first failure; the reads fetch for themselves
    assert sum(state != "done" for state in f._ahead.state.values()) > 0
    storm.remove()
    assert f.read_ranges([(100_000, 50), (len(WEIGHTS) - 10, 10)]) == [WEIGHTS[100_000:100_050], WEIGHTS[-10:]]
    hub.inject("status", code=404, kind="content")
    with pytest.raises(http.RemoteError, match="404"):
        f.read_ranges([(len(WEIGHTS) // 2 + 7, 10)])
    f.close()


def test_a_capped_full_remote_compare_fetches_what_the_plan_keeps(tmp_path, monkeypatch):
    """--full --max-bytes: the cap decides what is fetched (no background fetch of every byte)."""
    import json

    import ml_dtypes
    from safetensors.numpy import save_file

    import modelkin

    try:
        from . import builders
        from .hub_server import patch_hf_endpoint
    except ImportError:
        import builders
        from hub_server import patch_hf_endpoint

    dims = dict(hidden=512, ffn=1408, vocab=1024, layers=2, v_hidden=512, v_ffn=1408, v_depth=2)
    with HubServer() as server:
        total = 0
        for seed, name in ((1, "donor"), (2, "other")):
            folder = tmp_path / name
            folder.mkdir()
            tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in builders.vlm_tensors(seed, **dims).items()}
            total += sum(v.nbytes for v in tensors.values())
            save_file(tensors, str(folder / "model.safetensors"))
            (folder / "config.json").write_text(json.dumps(builders.vlm_config(**dims)))
            server.add_repo(f"cap/{name}", folder)
        patch_hf_endpoint(monkeypatch, server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        r = modelkin.compare("cap/donor", "cap/other", read_mode="full", max_bytes=total // 10)
    assert r.reads.left_out and r.reads.planned_bytes <= total // 10
    # What the plan keeps, plus the sampled rows alignment reads and the headers: far from every byte.
    assert 0 < r.reads.remote_bytes_fetched <= total // 4, (r.reads.remote_bytes_fetched, total)


def test_closing_a_file_with_a_stalled_background_prefetch_does_not_hang(hub, monkeypatch):
    f = _file(hub)
    f.read_ranges([(0, 8)])
    hub.inject("stall", kind="content", seconds=30)  # every later request hangs before its headers
    with f.in_background():
        f.prefetch([(0, len(WEIGHTS))])
    time.sleep(0.2)  # the background's requests are out, and stuck
    t0 = time.monotonic()
    f.close()
    assert time.monotonic() - t0 < 5
    assert f._ahead is None
