"""Append-only files of fixed-size vector records.

A vector file is a 64-byte header followed by ``rows`` records of ``dim``
values of one dtype (``float32`` features and tag probabilities, ``uint8``
binary codes).  Row ``i`` is record ``i``; the SQLite database says which
content each row belongs to.

Crash safety comes from the write order used by :class:`~.Collection`:
records are appended and flushed (``fsync``) *before* the database
transaction that references them commits.  After a ``kill -9`` the file may
therefore hold more records than the database knows about (an *orphan tail*),
or end in a partial record; :meth:`VectorFile.truncate` (called by the writer
when it opens the collection) cuts the file back to the committed row count.
Readers never truncate: they only look at the rows their database snapshot
references.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from illust2vec.collection.errors import CollectionError

MAGIC = b"I2VVEC1\0"
HEADER_SIZE = 64
_DTYPES = {"float32": np.dtype("<f4"), "uint8": np.dtype("u1")}
_HEADER = struct.Struct("<8s16sQ")  # magic, dtype name, dim


class VectorFile:
    """One append-only file of ``dim``-wide records of ``dtype``.

    Args:
        path: the file; created with a header when ``create`` and missing.
        dim: values per record.
        dtype: ``"float32"`` or ``"uint8"``.
        create: create the file when it does not exist.
    """

    def __init__(self, path: str | os.PathLike, dim: int, dtype: str, *, create: bool = False) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
        self.path = Path(path)
        self.dim = int(dim)
        self.dtype = _DTYPES[dtype]
        self.record_size = self.dim * self.dtype.itemsize
        if not self.path.exists():
            if not create:
                raise CollectionError(f"{self.path}: vector file is missing; the collection is damaged, re-index it into a new --db")
            header = _HEADER.pack(MAGIC, dtype.encode().ljust(16, b"\0"), self.dim).ljust(HEADER_SIZE, b"\0")
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        self._check_header(dtype)

    def _check_header(self, dtype: str) -> None:
        with open(self.path, "rb") as fh:
            raw = fh.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise CollectionError(f"{self.path}: truncated header; the collection is damaged, re-index it into a new --db")
        magic, dt, dim = _HEADER.unpack(raw[: _HEADER.size])
        if magic != MAGIC:
            raise CollectionError(f"{self.path}: not an illust2vec vector file")
        stored = dt.rstrip(b"\0").decode()
        if stored != dtype or dim != self.dim:
            raise CollectionError(f"{self.path}: holds {stored} x {dim} records, expected {dtype} x {self.dim}")

    @property
    def rows(self) -> int:
        """Number of complete records in the file (a partial last record is not counted)."""
        size = os.path.getsize(self.path) - HEADER_SIZE
        return max(size, 0) // self.record_size

    def truncate(self, rows: int) -> int:
        """Cut the file back to ``rows`` records; returns how many records were dropped.

        Raises :class:`CollectionError` if the file holds fewer than ``rows``
        complete records (data the database references is gone).
        """
        have = self.rows
        if have < rows:
            raise CollectionError(
                f"{self.path}: holds {have} vectors but the database references {rows}; "
                "the collection is damaged (was the disk full?), re-index it into a new --db"
            )
        size = HEADER_SIZE + rows * self.record_size
        if os.path.getsize(self.path) != size:
            with open(self.path, "r+b") as fh:
                fh.truncate(size)
                fh.flush()
                os.fsync(fh.fileno())
        return have - rows

    def append(self, values: np.ndarray, *, expect_row: int | None = None) -> int:
        """Append records and flush them to disk; returns the first new row number.

        ``expect_row`` guards against a file that does not end where the
        caller thinks it does.
        """
        arr = np.ascontiguousarray(values, dtype=self.dtype)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"expected an (N, {self.dim}) array, got {arr.shape}")
        start = self.rows
        if expect_row is not None and start != expect_row:
            raise CollectionError(f"{self.path}: ends at row {start}, expected {expect_row}")
        try:
            with open(self.path, "r+b") as fh:
                fh.seek(HEADER_SIZE + start * self.record_size)
                fh.write(arr.tobytes())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # ENOSPC...: name the file; the partial tail is cut off by the next writer
            if exc.filename is None and exc.errno is not None:
                raise type(exc)(exc.errno, exc.strerror, str(self.path)) from None
            raise
        return start

    def view(self, rows: int | None = None) -> np.ndarray:
        """A read-only memory map of the first ``rows`` records (all complete ones by default)."""
        n = self.rows if rows is None else int(rows)
        if n == 0:
            return np.zeros((0, self.dim), dtype=self.dtype)
        if n > self.rows:
            raise CollectionError(f"{self.path}: holds {self.rows} vectors, {n} requested")
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=HEADER_SIZE, shape=(n, self.dim))

    def read(self, rows: np.ndarray | list[int]) -> np.ndarray:
        """Copy of the given rows, in the given order."""
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size == 0:
            return np.zeros((0, self.dim), dtype=self.dtype)
        mm = self.view(int(idx.max()) + 1)
        return np.array(mm[idx])
