"""Face collections: every detected face of a picture is an item with its own vector row.

``Collection.add(..., faces=FaceOptions())`` (``illust2vec index DIR --faces``)
detects anime faces (:mod:`illust2vec.faces`) and embeds each face crop; a
picture without a face is embedded whole (skipped with ``faces_only``).

Storage (schema version 2):

* ``faces(row, content, face_index, x, y, w, h, likelihood)``: one record per
  item; ``row`` is its record in the vector files, ``content`` the
  ``contents.row`` of its picture (the row of the picture's first item),
  ``face_index``/box/likelihood are ``NULL`` for a whole-picture item.
* ``meta.faces``: the face options of the collection as JSON (empty or
  missing: an ordinary one-row-per-picture collection).  A collection is
  either a face collection or not, with one set of face options: adding with
  other options is refused (use another ``--db``, or ``--rebuild``), since
  the rows of one collection must be comparable and a file is indexed once.
* A picture with no face under ``faces_only`` is recorded in ``files`` with
  its hash and no row, so it is not scanned again until it changes.

Crash safety is the collection's: vectors are appended and flushed before the
transaction that references them, and a picture's items are committed
together (with its ``files`` rows) only once all of them are on disk, so an
interrupted run never leaves a picture with some of its faces.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Sequence

import numpy as np

from illust2vec.collection import db as _db
from illust2vec.collection.errors import CollectionError
from illust2vec.runtime.batches import ModelSet


def options_key(options) -> str:
    """The ``meta.faces`` value for ``options`` (``""`` for no faces)."""
    if options is None:
        return ""
    return json.dumps(
        {
            "faces_only": bool(options.faces_only),
            "margin": float(options.margin),
            "square": bool(options.square),
            "min_likelihood": float(options.min_likelihood),
            "max_side": options.max_side,
            "scan": options.scan,
        },
        sort_keys=True,
    )


def is_face_collection(meta: dict[str, str]) -> bool:
    """True when the collection stores one row per face."""
    return bool(meta.get("faces"))


def check_mode(col, options, rebuild: bool) -> None:
    """Refuse adding with (or without) faces to a collection made the other way."""
    m = col.meta
    want = options_key(options)
    have = m.get("faces", "")
    if rebuild or "embedder_identity" not in m or want == have:
        return
    if not have:
        raise CollectionError(
            f"{col.path}: this collection was indexed without --faces (one row per picture); a face collection "
            "needs its own directory: index with --faces into another --db (or recompute everything with --rebuild)"
        )
    if not want:
        raise CollectionError(
            f"{col.path}: this is a face collection (indexed with --faces, one row per face); add to it with "
            "--faces and the same face options, or index without faces into another --db"
        )
    raise CollectionError(
        f"{col.path}: indexed with other face options ({have}, now {want}); use the same --face-* options, "
        "another --db, or --rebuild"
    )


def set_mode(col, options) -> None:
    with _db.transaction(col.conn) as c:
        _db.set_meta(c, "faces", options_key(options))


def face_fields(conn, rows: Sequence[int]) -> dict[int, tuple[int | None, list[int] | None, float | None]]:
    """``{row: (face_index, box, likelihood)}`` of face-collection rows."""
    out: dict[int, tuple[int | None, list[int] | None, float | None]] = {}
    rows = [int(r) for r in rows]
    for i in range(0, len(rows), 900):
        chunk = rows[i : i + 900]
        q = f"SELECT row, face_index, x, y, w, h, likelihood FROM faces WHERE row IN ({','.join('?' * len(chunk))})"
        for r, fi, x, y, w, h, lk in conn.execute(q, chunk):
            out[r] = (fi, None if fi is None else [x, y, w, h], lk)
    return out


def annotate_hits(col, hits: list) -> list:
    """Fill ``face_index`` and ``box`` of search hits in a face collection."""
    if not hits or not is_face_collection(col.meta):
        return hits
    info = face_fields(col.conn, [h.row for h in hits])
    for h in hits:
        fi, box, _ = info.get(h.row, (None, None, None))
        h.face_index, h.box = fi, box
    return hits


def _model(embedder, tagger):
    if tagger is None:
        return embedder, ("feature",)
    if tagger is embedder:
        return embedder, ("prob", "feature")
    if ModelSet.shares_input(embedder, tagger):
        return ModelSet({"feature": embedder, "prob": tagger}), ("prob", "feature")
    raise CollectionError(
        f"with --faces the tagger must be the embedder or take the same input as it; "
        f"{getattr(tagger, 'name', '?')!r} and {getattr(embedder, 'name', '?')!r} differ: use --tagger none "
        "or a matching tagger"
    )


def add_faces(col, c, vfs, todo: dict[str, list[tuple[str, int, int]]], embedder, tagger, options, *,
              batch_size: int, workers: int | None, progress: bool, report, upsert_file) -> None:
    """Detect, embed and commit the face items of the pictures in ``todo`` (sha -> [(path, size, mtime)])."""
    from illust2vec.collection.infer import binarize
    from illust2vec.faces.features import FaceInputs
    from illust2vec.runtime.batches import iter_batches

    model, outputs = _model(embedder, tagger)
    shas = list(todo)
    reps = [todo[s][0][0] for s in shas]
    pos = {p: i for i, p in enumerate(reps)}
    det_errors: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_det_error(e: Any) -> None:
        with lock:
            det_errors.append((str(e.source), str(e.message)))

    faces = FaceInputs(reps, options, on_error=on_det_error)
    floor = float(_db.get_meta(c, "prob_floor", "0.01"))
    committed = written = int(_db.get_meta(c, "rows", "0"))
    pending: list[tuple[int, dict[str, Any], np.ndarray | None]] = []  # (row, meta, probs)
    content_row: dict[str, int] = {}
    done: set[str] = set()

    def commit(upto_pos: int | None) -> None:
        nonlocal committed
        with lock:
            errs = det_errors[:]
            det_errors.clear()
        n = 0
        while n < len(pending) and (upto_pos is None or pos[pending[n][1]["source"]] < upto_pos):
            n += 1
        items, pending[:] = pending[:n], pending[n:]
        now = time.time()
        with _db.transaction(c):
            for row, m, p in items:
                src = m["source"]
                sha = shas[pos[src]]
                if sha not in content_row:
                    content_row[sha] = row
                    c.execute("INSERT INTO contents(row, sha256, added_at) VALUES (?, ?, ?)", (row, sha, now))
                    for path, size, mtime in todo[sha]:
                        upsert_file(c, path, size, mtime, sha, row, None, now)
                    report.added += len(todo[sha])
                    done.add(src)
                box = m.get("box")
                c.execute(
                    "INSERT INTO faces(row, content, face_index, x, y, w, h, likelihood) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (row, content_row[sha], m.get("face_index"), *(box if box is not None else (None,) * 4),
                     m.get("likelihood")),
                )
                if p is not None:
                    keep = np.nonzero(p >= floor)[0]
                    c.executemany("INSERT INTO tag_probs(tag_id, prob, row) VALUES (?, ?, ?)",
                                  [(int(t), float(p[t]), row) for t in keep])
            for src, msg in errs:
                sha = shas[pos[src]] if src in pos else None
                if sha is None:
                    report.failed.append((src, msg))
                    continue
                done.add(src)
                for path, size, mtime in todo[sha]:
                    upsert_file(c, path, size, mtime, sha, None, msg, now)
                    report.failed.append((path, msg))
            if items:
                committed = items[-1][0] + 1
                _db.set_meta(c, "rows", committed)

    def on_item_error(e: Any) -> None:  # a crop the network could not take (should not happen)
        report.failed.append((str(getattr(e, "source", "?")), str(getattr(e, "message", e))))

    # crops are decoded already: preprocessing runs in iter_batches' background thread
    for batch in iter_batches(model, faces, batch_size=batch_size, workers=None, outputs=outputs,
                              progress=progress, desc="faces", on_error=on_item_error):
        idx = [int(i) for i in batch.indices]
        if idx:
            feats = np.asarray(batch.outputs["feature"], dtype=np.float32).reshape(len(idx), -1)
            probs = (np.asarray(batch.outputs["prob"], dtype=np.float32).reshape(len(idx), -1)
                     if "prob" in vfs else None)
            vfs["feature"].append(feats, expect_row=written)
            vfs["codes"].append(binarize(embedder, feats), expect_row=written)
            if probs is not None:
                vfs["prob"].append(probs, expect_row=written)
            for k, i in enumerate(idx):
                pending.append((written + k, faces.meta[i], None if probs is None else probs[k].astype(np.float64)))
            written += len(idx)
        # items come in input order: every picture before the last one received is complete
        # (the last one may have more faces in the next batch; it is committed with them)
        commit(pos[pending[-1][1]["source"]] if pending else 0)
    commit(None)
    if committed != written:  # pragma: no cover - every written item is committed above
        raise CollectionError(f"{col.path}: {written - committed} face vectors were not committed")
    # faces_only: pictures without a face are remembered (hash, no row) so they are not scanned again
    now = time.time()
    with _db.transaction(c):
        for i, sha in enumerate(shas):
            if reps[i] not in done:
                for path, size, mtime in todo[sha]:
                    upsert_file(c, path, size, mtime, sha, None, None, now)
