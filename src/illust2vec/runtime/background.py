"""Computing an iterator ahead in a background thread.

Used where one stage holds the GIL while the other releases it: the batch
pipeline runs the model (ONNX Runtime releases the GIL) ahead of the caller's
per-batch Python work, and the video timeline decodes frames ahead of the
model.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["iterate_in_thread"]

T = TypeVar("T")
_END = object()


class _Raised:
    """An exception from the producer, boxed so that it is never taken for an item."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def iterate_in_thread(items: Iterator[T], *, maxsize: int, name: str) -> Iterator[T]:
    """Yield ``items`` in order while a daemon thread named ``name`` computes them ahead.

    At most ``maxsize`` computed items wait.  An exception raised by ``items``
    is re-raised here.  Closing this generator (or leaving it with an
    exception) stops the thread once it has finished the item in progress,
    closes ``items`` in that thread (so their ``finally`` blocks run) and waits
    for it.
    """
    pending: queue.Queue[object] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            put(_Raised(exc))
            return
        put(_END)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = pending.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
