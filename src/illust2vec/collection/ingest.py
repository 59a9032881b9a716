"""Add vectors computed elsewhere (a Ray run's shards) to a collection, batch by batch.

:meth:`Collection.add` runs the models itself; :func:`add_precomputed` takes
their results instead: batches of paths with content hashes and, for the
files that worked, features, binary codes and tag probabilities.  Each batch
is appended to the vector files and committed in one transaction, so memory
stays bounded by one batch and an interrupted merge resumes where it stopped
(paths already recorded with the same content are skipped).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from illust2vec.collection import db as _db
from illust2vec.collection.core import DEFAULT_PROB_FLOOR, AddReport, _delete_orphan_contents, _upsert_file
from illust2vec.collection.errors import CollectionError


@dataclass
class PrecomputedBatch:
    """Results for some files: one entry per file; vectors for the files without an error, in order."""

    paths: list[str]
    sizes: list[int | None]
    mtimes_ns: list[int | None]
    sha256: list[str | None]
    errors: list[str | None]
    features: np.ndarray  # (good, D) float32
    codes: np.ndarray  # (good, B) uint8
    probs: np.ndarray | None = None  # (good, T) float32


class ModelRecord:
    """What a collection records about a model whose results come precomputed (no session).

    Has the attributes :meth:`Collection.add` checks (``name``, ``identity``,
    ``outputs``, ``feature_dim``, ``binarize``, ``tags``); its
    ``binarize_features`` only gives the code width, the codes themselves
    come with the results.
    """

    def __init__(self, *, name: str, identity: str, outputs: tuple[str, ...], binarize: str = "positive",
                 feature_dim: int | None = None, code_bytes: int | None = None, tags=None) -> None:
        self.name, self.identity, self.outputs, self.binarize = name, identity, tuple(outputs), binarize
        self.feature_dim, self.code_bytes, self.tags = feature_dim, code_bytes, tags

    def binarize_features(self, features: np.ndarray) -> np.ndarray:
        if self.code_bytes is None:
            raise CollectionError(f"{self.name}: precomputed results carry no binary codes")
        return np.zeros((len(features), self.code_bytes), np.uint8)


def _key(path: str) -> str:
    """The collection's name for a path: absolute for local files, URIs as they are."""
    return path if "://" in path else os.path.realpath(path)


def add_precomputed(col, batches: Iterable[PrecomputedBatch], *, embedder: ModelRecord,
                    tagger: ModelRecord | None = None, progress: bool = False, total: int | None = None
                    ) -> AddReport:
    """Add precomputed results to the collection ``col`` (opened for writing).

    A path already recorded with the same content hash is counted as
    unchanged; a content already in the collection (a copy, or a file seen
    before under another path) is linked to its vectors instead of being
    stored twice.  Raises :class:`~illust2vec.collection.errors.ModelMismatchError`
    when the collection holds vectors of other models.
    """
    from tqdm import tqdm

    col._acquire_lock()
    try:
        col._check_models(embedder, tagger, False)
        report = AddReport()
        vfs, report.orphans_truncated = col._open_for_write()
        c = col.conn
        known = {p: (sha, row) for p, sha, row in c.execute("SELECT path, sha256, row FROM files")}
        sha_row = dict(c.execute("SELECT sha256, row FROM contents").fetchall())
        floor = float(_db.get_meta(c, "prob_floor", str(DEFAULT_PROB_FLOOR)))
        rows = int(_db.get_meta(c, "rows", "0"))
        bar = tqdm(total=total, desc="merging", unit="img", disable=not progress, file=sys.stderr, smoothing=0.1)
        try:
            for batch in batches:
                rows = _add_batch(c, vfs, batch, known, sha_row, rows, floor, report)
                bar.update(len(batch.paths))
        finally:
            bar.close()
        with _db.transaction(c):
            _delete_orphan_contents(c)
        col._cache.clear()
        return report
    finally:
        col._release_lock()


def _add_batch(c, vfs, batch: PrecomputedBatch, known, sha_row, rows: int, floor: float, report: AddReport) -> int:
    now = time.time()
    good = [j for j, e in enumerate(batch.errors) if e is None]
    new_vec: list[int] = []  # positions in the good rows whose content gets a new vector row
    plan: list[tuple[str, int, int, str, int | None, str | None]] = []
    pending: dict[str, int] = {}
    for q, j in enumerate(good):
        path, sha = _key(batch.paths[j]), batch.sha256[j]
        report.seen += 1
        prev = known.get(path)
        if prev is not None and prev[0] == sha and prev[1] is not None:
            report.unchanged += 1
            continue
        row = sha_row.get(sha, pending.get(sha))
        if row is None:
            row = pending[sha] = rows + len(new_vec)
            new_vec.append(q)
            report.added += 1
        else:
            report.linked += 1
        plan.append((path, batch.sizes[j] or 0, batch.mtimes_ns[j] or 0, sha, row, None))
        known[path] = (sha, row)
    for j, msg in enumerate(batch.errors):
        if msg is not None:
            report.seen += 1
            path = _key(batch.paths[j])
            plan.append((path, batch.sizes[j] if batch.sizes[j] is not None else -1,
                         batch.mtimes_ns[j] if batch.mtimes_ns[j] is not None else -1, batch.sha256[j], None, msg))
            report.failed.append((path, msg))
    if new_vec:
        vfs["feature"].append(np.asarray(batch.features[new_vec], np.float32), expect_row=rows)
        vfs["codes"].append(np.asarray(batch.codes[new_vec], np.uint8), expect_row=rows)
        if "prob" in vfs:
            vfs["prob"].append(np.asarray(batch.probs[new_vec], np.float32), expect_row=rows)
    with _db.transaction(c):
        for k, q in enumerate(new_vec):
            row = rows + k
            c.execute("INSERT INTO contents(row, sha256, added_at) VALUES (?, ?, ?)",
                      (row, batch.sha256[good[q]], now))
            if "prob" in vfs:
                p = np.asarray(batch.probs[q], dtype=np.float64)
                keep = np.nonzero(p >= floor)[0]
                c.executemany("INSERT INTO tag_probs(tag_id, prob, row) VALUES (?, ?, ?)",
                              [(int(t), float(p[t]), row) for t in keep])
        for path, size, mtime, sha, row, msg in plan:
            _upsert_file(c, path, size, mtime, sha, row, msg, now)
        rows += len(new_vec)
        _db.set_meta(c, "rows", rows)
    for sha, row in pending.items():
        sha_row[sha] = row
    return rows
