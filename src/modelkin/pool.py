"""A local process pool: the one way modelkin runs independent jobs on several cores without Ray.

``spawn`` workers (never ``fork``: the parent may hold threads, open files or torch's OpenMP state), results
yielded as jobs finish.  Used by the bench (pairs), the zoo builder (models whose parents are built) and the
index's scale-out when no Ray address is given.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from contextlib import AbstractContextManager


_controller = None
_controller_lock = threading.Lock()


def one_blas_thread() -> AbstractContextManager:
    """BLAS limited to one thread inside the block: modelkin parallelises over tensors and models itself, and
    BLAS threads on top only contend for the cores. The loaded BLAS libraries are found once per process (a
    scan of them costs about 2 ms, once per compare otherwise)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


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
