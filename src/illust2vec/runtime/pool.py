"""The decode pool: the one place that starts worker processes or threads to decode pictures.

Every reader of the package decodes through here: the batch runner
(:mod:`illust2vec.runtime.batches`: one thread, or processes writing into a
shared ring), face detection (:func:`ordered_map` over chunks of pictures) and
thumbnails (:func:`decode_threads`).  ``tests/test_layering.py`` checks that
no module outside ``runtime/`` starts a pool of its own.

Worker processes start with ``forkserver`` (``spawn`` where there is none),
never ``fork``: a process where Ray, gRPC or any threaded library has run can
no longer fork safely (a forked child inherits locks held by threads that do not
exist in it, and dies or hangs).  The forkserver is a fresh, single-threaded
process started on first use; workers fork from it, so they start in a few
milliseconds once it runs.  What a worker runs must therefore be picklable (a
module-level function and its arguments), and a script that starts workers
needs the usual ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The start method of every worker process of the package (see the module docstring).
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class WorkerDied(Exception):
    """A decode worker process died (a decoder crash, the OOM killer); ``tasks`` were in flight."""

    def __init__(self, tasks: list[Any]) -> None:
        super().__init__("a decode worker process died")
        self.tasks = tasks


def process_pool(workers: int, *, initializer: Callable[..., None] | None = None,
                 initargs: tuple = ()) -> cf.ProcessPoolExecutor:
    """``workers`` decode processes, started with :data:`START_METHOD`."""
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(START_METHOD),
                                  initializer=initializer, initargs=initargs)


def decode_threads(workers: int = 1, *, name: str = "illust2vec-decode") -> cf.ThreadPoolExecutor:
    """``workers`` decode threads (Pillow and the resizers release the GIL)."""
    return cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name)


def ordered_map(fn: Callable[[T], R], tasks: Iterable[T], *, workers: int, window: int | None = None
                ) -> Iterator[R]:
    """``fn(task)`` for every task in ``workers`` processes, yielded in task order.

    At most ``window`` tasks (default ``2 * workers``) are in flight, so memory
    stays bounded.  ``fn`` must be a module-level function; a dead worker raises
    :class:`WorkerDied` naming the tasks that were in flight.
    """
    window = window or 2 * workers
    source = iter(tasks)
    pending: deque[tuple[T, cf.Future]] = deque()
    with process_pool(workers) as pool:
        try:
            for task in source:
                pending.append((task, pool.submit(fn, task)))
                if len(pending) >= window:
                    yield _result(pending)
            while pending:
                yield _result(pending)
        finally:
            for _, fut in pending:
                fut.cancel()


def _result(pending: deque) -> Any:
    task, fut = pending[0]
    try:
        result = fut.result()
    except BrokenProcessPool as exc:
        raise WorkerDied([t for t, _ in pending]) from exc
    pending.popleft()
    return result
