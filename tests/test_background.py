"""iterate_in_thread: order, errors, and an early stop that closes the source and ends the thread."""
from __future__ import annotations

import threading

import pytest

from illust2vec.runtime.background import iterate_in_thread


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_items_arrive_in_order_and_errors_are_reraised():
    assert list(iterate_in_thread(iter(range(100)), maxsize=3, name="t-order")) == list(range(100))

    def failing():
        yield 1
        yield ValueError("an item, not an error")  # exceptions as items stay items
        raise KeyError("source broke")

    got = []
    with pytest.raises(KeyError, match="source broke"):
        for x in iterate_in_thread(failing(), maxsize=1, name="t-error"):
            got.append(x)
    assert got[0] == 1 and isinstance(got[1], ValueError)
    assert not _alive("t-error")


def test_closing_early_closes_the_source_in_its_thread():
    closed_in = []

    def source():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed_in.append(threading.current_thread().name)

    stream = iterate_in_thread(source(), maxsize=2, name="t-close")
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed_in == ["t-close"] and not _alive("t-close")
