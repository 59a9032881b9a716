"""Compact in-memory tables for a million items: strings in one buffer, lookups by sorted keys.

A Python ``list`` of a million path strings and two ``dict`` lookups hold ~400 MB; the same
table here holds ~150 MB (one UTF-8 buffer with offsets, sorted int64 keys), and looking an item
up costs a few microseconds either way.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["IntPositions", "PackedStrings", "StringPositions"]


class PackedStrings(Sequence[str]):
    """An immutable sequence of strings stored as one UTF-8 buffer and ``n + 1`` offsets."""

    __slots__ = ("_buf", "_offsets")

    def __init__(self, items: Iterable[str]) -> None:
        encoded = [s.encode("utf-8", "surrogatepass") for s in items]
        self._buf = b"".join(encoded)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=self._offsets[1:])

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(k)
        return self._buf[self._offsets[k]:self._offsets[k + 1]].decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        buf, off = self._buf, self._offsets.tolist()
        for a, b in zip(off, off[1:]):
            yield buf[a:b].decode("utf-8", "surrogatepass")

    @property
    def nbytes(self) -> int:
        return len(self._buf) + self._offsets.nbytes


class IntPositions:
    """``key -> position`` over an int64 array of keys (a read-only mapping's ``get``/``in``; with
    repeated keys, such as string hashes, :meth:`matches` gives every position)."""

    __slots__ = ("_sorted", "_order")

    def __init__(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]

    def __len__(self) -> int:
        return len(self._sorted)

    def matches(self, key: int) -> Iterator[int]:
        """The positions of every entry equal to ``key``."""
        i = int(np.searchsorted(self._sorted, key))
        while i < len(self._sorted) and self._sorted[i] == key:
            yield int(self._order[i])
            i += 1

    def get(self, key: int, default: int | None = None) -> int | None:
        return next(self.matches(key), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (int, np.integer)) and self.get(int(key)) is not None

    def __getitem__(self, key: int) -> int:
        k = self.get(key)
        if k is None:
            raise KeyError(key)
        return k


class StringPositions:
    """``string -> position`` in a :class:`PackedStrings` (strings distinct): by their hashes, checked."""

    __slots__ = ("_strings", "_hashes")

    def __init__(self, strings: PackedStrings) -> None:
        self._strings = strings
        self._hashes = IntPositions(np.fromiter(map(hash, strings), dtype=np.int64, count=len(strings)))

    def __len__(self) -> int:
        return len(self._strings)

    def get(self, key: str, default: int | None = None) -> int | None:
        return next((k for k in self._hashes.matches(hash(key)) if self._strings[k] == key), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> int:
        k = self.get(key)
        if k is None:
            raise KeyError(key)
        return k
