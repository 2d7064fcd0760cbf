"""Running many independent jobs (fingerprinting models, confirming pairs): on Ray when asked, else a local
process pool. No scheduler of modelkin's own: Ray tasks or ``concurrent.futures`` do the scheduling; results
are yielded as they finish so the caller streams them into the index or the graph.

On Ray, fingerprints travel as object references (each fingerprint's bytes put once in the object store),
so the workers need no shared disk; models to fingerprint must be readable from the workers (a Hub id, a
URL, or a path every node sees).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..atomic import write_atomic
from ..errors import ModelkinError


class ScaleError(ModelkinError, RuntimeError):
    """Ray is missing or its cluster cannot be reached."""


def _ray(address: str):
    try:
        import ray
    except ImportError:
        raise ScaleError("--ray-address needs Ray: pip install 'modelkin[scale]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ScaleError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None
    return ray


def _stream_ray(ray, refs: list, keys: list) -> Iterator[tuple[object, object]]:
    by_ref = dict(zip(refs, keys))
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for r in done:
            yield by_ref[r], ray.get(r)


def run_jobs(fn: Callable, jobs: Iterable[tuple], *, workers: int = 1, ray_address: str | None = None,
             ray_fn: Callable | None = None, ray_args: Callable | None = None) -> Iterator[tuple[tuple, object]]:
    """Yield ``(job, fn(*job))`` as jobs finish. ``workers`` <= 1 without Ray runs them here, in order.

    On Ray, ``ray_fn`` (default ``fn``) runs as a Ray task on ``ray_args(ray, job)`` (default: the job)."""
    jobs = list(jobs)
    if ray_address:
        ray = _ray(ray_address)
        task = ray.remote(ray_fn or fn)
        refs = [task.remote(*(ray_args(ray, j) if ray_args else j)) for j in jobs]
        yield from _stream_ray(ray, refs, jobs)
        return
    from ..pool import run_local

    yield from run_local(fn, jobs, workers)


# -- fingerprints as object references ---------------------------------------------------------------


class BlobRefs:
    """One object-store reference per fingerprint file (put once, shared by every task that needs it)."""

    def __init__(self, ray):
        self.ray = ray
        self.refs: dict[str, object] = {}

    def ref(self, path: str | Path):
        key = str(path)
        if key not in self.refs:
            self.refs[key] = self.ray.put(Path(path).read_bytes())
        return self.refs[key]


def materialise(data: bytes) -> Path:
    """A worker's local copy of a fingerprint passed by value (content-addressed, written atomically)."""
    sha = hashlib.sha256(data).hexdigest()
    root = Path(tempfile.gettempdir()) / f"modelkin-worker-{os.getuid()}"
    dest = root / f"{sha}.mkfp"
    if not dest.is_file():
        write_atomic(dest, data)
    return dest


def fingerprint_job(location: str, out: str, revision: str | None = None) -> str:
    """Fingerprint ``location`` into ``out`` (a local job); returns ``out``."""
    from .fingerprint import make_fingerprint

    make_fingerprint(location, out, revision=revision)
    return out


def fingerprint_task(location: str, _out: str, revision: str | None = None) -> bytes:
    """Fingerprint ``location`` on a Ray worker; returns the fingerprint's bytes."""
    from .fingerprint import make_fingerprint

    with tempfile.TemporaryDirectory(prefix="modelkin-fp-") as work:
        p = Path(work) / "model.mkfp"
        make_fingerprint(location, p, revision=revision)
        return p.read_bytes()
