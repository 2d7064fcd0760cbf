"""A local process pool: the one way modelkin runs independent jobs on several cores without Ray.

``spawn`` workers (never ``fork``: the parent may hold threads, open files or torch's OpenMP state), results
yielded as jobs finish.  Used by the bench (pairs), the zoo builder (models whose parents are built) and the
index's scale-out when no Ray address is given. Also the one BLAS thread modelkin's own threads run with
(``one_blas_thread``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager


_blas_lock = threading.Lock()
_blas_users = 0
_blas_controller = None  # the loaded BLAS libraries, looked up once per process (about 2 ms a look-up)
_blas_limiter = None  # the limit in force while any thread is inside ``one_blas_thread``


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread inside the block: modelkin parallelises over tensors and models itself, and
    BLAS threads on top only contend for the cores. Blocks on several threads at once share one limit, set when
    the first enters and lifted when the last leaves; code that runs blocks on worker threads (a search's
    compares) enters one itself first, so that one thread sets and lifts it: limits set and lifted on the
    workers left the process's BLAS at one thread for good (OpenBLAS)."""
    global _blas_users, _blas_controller, _blas_limiter
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def process_pool(workers: int) -> Executor:
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_local(fn: Callable, jobs: Iterable[tuple], workers: int = 1) -> Iterator[tuple[tuple, object]]:
    """Yield ``(job, fn(*job))`` as jobs finish; ``workers`` <= 1 (or one job) runs them here, in order.

    An exception raised by a job propagates to the caller (the remaining jobs are cancelled)."""
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            yield j, fn(*j)
        return
    from concurrent.futures import as_completed

    with process_pool(min(workers, len(jobs))) as pool:
        futures = {pool.submit(fn, *j): j for j in jobs}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()
