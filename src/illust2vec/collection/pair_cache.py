"""The close pairs of a collection's binary codes, kept and brought up to date incrementally.

Finding every pair within ``r`` bits is done once (:func:`illust2vec.collection.mih.pairs_among`);
the pairs are kept in ``index/near-pairs.npz`` with what they cover:

* the model identity and code width (other codes: recomputed),
* the radius ``r`` they were found with (a query with a smaller distance
  filters them; a larger one recomputes),
* ``rows_upto``: every live row below it was compared with every other,
* ``delete_gen`` and, per row compared, a 64-bit hash of its code: rows only
  grow between deletions (``delete_gen`` bumps on every deletion and on
  ``--rebuild``), so while ``delete_gen`` is unchanged the pairs stay true;
  after a change the stored code hashes of the rows still live are compared
  with the codes on disk (a ``--rebuild`` that put other pictures under the
  same row numbers is caught there) and the pairs of dropped rows are left out.

After ``index`` adds pictures, only the rows from ``rows_upto`` on are
compared: with all older live rows and with each other (``new_from`` of
:func:`~illust2vec.collection.mih.pairs_among`), still exact.  Like the
search indexes it is a cache: deleting it is always safe, and a collection on
read-only storage keeps it in memory only.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from illust2vec.collection import mih as _mih

CACHE_NAME = "near-pairs.npz"
FORMAT = 1


@dataclass
class PairState:
    """What a pair cache covers (stored as JSON inside the ``.npz``)."""

    format: int
    identity: str
    code_bytes: int
    radius: int
    rows_upto: int
    delete_gen: int


def cache_path(col_path: Path) -> Path:
    return Path(col_path) / "index" / CACHE_NAME


def code_digest(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of the code of each row (to tell whether row numbers still mean the same pictures)."""
    if not len(rows):
        return np.zeros(0, np.uint64)
    return _mih.Substrings(codes.shape[1], 1).keys(codes, np.asarray(rows, np.int64), range(1))[0]


def load(path: Path) -> tuple[PairState, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(state, pairs, rows, digest)`` from a cache file; ``None`` when missing, unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as z:
            state = PairState(**json.loads(bytes(z["state"]).decode()))
            if state.format != FORMAT:
                return None
            return state, z["pairs"], z["rows"], z["digest"]
    except Exception:  # noqa: BLE001 - a cache: missing, truncated, from another version
        return None


def save(path: Path, state: PairState, pairs: np.ndarray, rows: np.ndarray, digest: np.ndarray) -> None:
    """Write the cache atomically (temporary file + rename); on read-only storage nothing is written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, state=np.frombuffer(json.dumps(asdict(state)).encode(), np.uint8), pairs=pairs,
                     rows=rows, digest=digest)
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except (OSError, UnboundLocalError):
            pass


def _still_true(codes: np.ndarray, live: np.ndarray, rows: np.ndarray, digest: np.ndarray) -> bool:
    """Whether every cached row that is still live holds the code it held (and no live old row is unknown)."""
    if not len(live):
        return True
    pos = np.searchsorted(rows, live).clip(max=max(0, len(rows) - 1))
    if len(rows) == 0 or not (rows[pos] == live).all():
        return False
    return bool((code_digest(codes, live) == digest[pos]).all())


def close_pairs(view, snap, max_distance: int, *, method: str = "auto", threads: int | None = None,
                progress=None) -> np.ndarray:
    """``(row_a, row_b, distance)`` of every pair of live rows within ``max_distance`` bits, sorted; exact.

    ``view``: the collection's :class:`~illust2vec.collection.view.CollectionView`,
    ``snap``: a snapshot of it.  Reads and updates the collection's pair cache
    (see the module docstring).
    """
    meta, live = snap.meta, snap.live
    r = int(max_distance)
    rows_now = int(meta["rows"])
    gen = int(meta.get("delete_gen", 0))
    ident = meta.get("embedder_identity", "")
    nbytes = int(meta["code_bytes"])
    codes = view.vector_file("codes", snap).view(rows_now)
    path = cache_path(view.path)
    got = load(path)
    if got is not None:
        state, pairs, rows, digest = got
        if (state.identity, state.code_bytes) != (ident, nbytes) or state.rows_upto > rows_now or state.radius < r:
            got = None
        else:
            old = live[: np.searchsorted(live, state.rows_upto)]
            if state.delete_gen != gen and not _still_true(codes, old, rows, digest):
                got = None
    if got is None:
        found = _mih.pairs_among(codes, live, r, method=method, threads=threads, progress=progress)
        pairs = np.stack([live[found[:, 0]], live[found[:, 1]], found[:, 2]], axis=1)
        save(path, PairState(FORMAT, ident, nbytes, r, rows_now, gen), pairs, live, code_digest(codes, live))
        return pairs
    changed = state.delete_gen != gen or state.rows_upto < rows_now
    if state.delete_gen != gen:  # pairs of rows that were dropped go
        keep = np.isin(pairs[:, 0], live) & np.isin(pairs[:, 1], live)
        pairs = pairs[keep]
        pos = np.searchsorted(rows, old)
        rows, digest = old, digest[pos]
    n_old = len(old)
    if n_old < len(live):  # rows added since: compared with every live row, old and new
        found = _mih.pairs_among(codes, live, state.radius, new_from=n_old, method=method, threads=threads,
                                 progress=progress)
        new = np.stack([live[found[:, 0]], live[found[:, 1]], found[:, 2]], axis=1)
        pairs = np.concatenate([pairs, new])
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        rows = live
        digest = np.concatenate([digest, code_digest(codes, live[n_old:])])
    if changed:
        save(path, PairState(FORMAT, ident, nbytes, state.radius, rows_now, gen), pairs, rows, digest)
    return pairs[pairs[:, 2] <= r]
