"""Export a collection: paths, hashes, tag probabilities and vectors, as Parquet, CSV or JSON Lines."""
from __future__ import annotations

import json
import os

import numpy as np

from illust2vec.collection.errors import CollectionError
from illust2vec.collection.user_tags import effective_tags
from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import atomic_write, utf8_safe
from illust2vec.io.records import infer_format, write_records

FORMATS = ("parquet", "csv", "jsonl", "json")
#: Extra columns of a face collection's records.
FACE_COLUMNS = ("face_index", "face_x", "face_y", "face_w", "face_h", "face_likelihood")


def export(view, path: str | os.PathLike | None, format: str | None = None, *, vectors: bool = True,
           codes: bool = True, probs: bool = True, min_prob: float | None = None, raw_csv: bool = False,
           tagger=None) -> int:
    """Write one record per indexed file (per item in a face collection); returns the number of records.

    ``view`` is the collection's :class:`~illust2vec.collection.view.CollectionView`;
    the tag probabilities are those of ``tagger`` (a name or identity; default:
    the most recently added tagger), named in the file's metadata (Parquet:
    ``illust2vec.collection``; JSON Lines: a ``tagger`` field).  Pictures the
    tagger has no probabilities for (not tagged yet, or gone when it was
    added) have NaN probabilities in Parquet and CSV and no tags in JSON Lines.

    Columns: ``path``, ``sha256``, ``row``; in a face collection (``index
    --faces``) one record per face with ``face_index`` and the face box
    ``face_x``, ``face_y``, ``face_w``, ``face_h`` and ``face_likelihood``
    (all empty for a picture embedded whole); with ``probs`` the tag
    probabilities (Parquet: a ``prob`` list column plus the tag names in the
    schema metadata; CSV: one column per tag; JSON Lines: a ``tags`` object
    with probabilities ``>= min_prob``, default all); with ``vectors`` the
    float ``feature`` and with ``codes`` the packed ``code`` (hex in CSV/JSON).
    ``path`` None writes JSON, JSON Lines or CSV to stdout.  A file is written atomically
    (an earlier export stays until the new one is complete).  CSV text cells are guarded
    against spreadsheet formulas (:func:`illust2vec.io.records.csv_cell`) unless ``raw_csv``.
    File names that are not UTF-8 are written as their bytes in CSV, as ``\\udcXX`` escapes in
    JSON and with ``\\xNN`` escapes in Parquet (which holds UTF-8 only).
    When the collection has user tags (:mod:`.user_tags`), CSV has one column
    ``user:TAG`` per user tag (last; ``1`` added, ``0`` removed, empty for no
    decision), Parquet a ``user_tags`` column with each record's decisions as JSON
    ``{tag: added?}`` (empty when none); in JSON Lines they are applied to ``tags``
    (added tags at 1.0, removed ones dropped) and given as an object.
    """
    try:
        fmt = infer_format(path, format, FORMATS, default="jsonl")
    except Illust2VecError as exc:
        raise CollectionError(str(exc)) from None
    snap = view.snapshot()
    meta = snap.meta
    t = view.tagger(tagger, snap=snap)
    records = view.file_records()
    if snap.faces:  # one record per item: a face, or a picture without one
        rows_files = [r[:3] for r in records]
        face_cols = dict(zip(FACE_COLUMNS, zip(*[r[3:] for r in records]))) if records else \
            {k: () for k in FACE_COLUMNS}
    else:
        rows_files = records
        face_cols = {}
    rows = np.asarray([r for _, _, r in rows_files], dtype=np.int64)
    has_vectors = not snap.empty
    F = view.vectors("feature", rows) if vectors and has_vectors else None
    C = view.vectors("codes", rows) if codes and has_vectors else None
    P = view.vectors("prob", rows, tagger=t) if probs and has_vectors and t is not None else None
    names = view.tag_index(t, snap=snap).names if P is not None else []
    models = {"embedder_name": meta.get("embedder_name"), "embedder_identity": meta.get("embedder_identity"),
              "tagger_name": t.name if t else None, "tagger_identity": t.identity if t else None}
    user = view.user_tags_of([s for _, s, _ in rows_files])
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {
            "path": pa.array([utf8_safe(p) for p, _, _ in rows_files], pa.string()),
            "sha256": pa.array([s for _, s, _ in rows_files], pa.string()),
            "row": pa.array(rows, pa.int64()),
        }
        if user:
            cols["user_tags"] = pa.array([json.dumps(user[s], ensure_ascii=False, sort_keys=True) if s in user else ""
                                          for _, s, _ in rows_files], pa.string())
        for k, values in face_cols.items():
            cols[k] = pa.array(list(values), pa.float64() if k == "face_likelihood" else pa.int64())
        if P is not None:
            cols["prob"] = pa.FixedSizeListArray.from_arrays(pa.array(P.reshape(-1), pa.float32()), P.shape[1])
        if F is not None:
            cols["feature"] = pa.FixedSizeListArray.from_arrays(pa.array(F.reshape(-1), pa.float32()), F.shape[1])
        if C is not None:
            cols["code"] = pa.array([bytes(c) for c in C], pa.binary(C.shape[1]))
        md = {"illust2vec.collection": json.dumps(models), "illust2vec.tags": json.dumps(names)}
        table = pa.table(cols).replace_schema_metadata(md)
        atomic_write(path, lambda fh: pq.write_table(table, fh), fsync=True)
        return len(rows_files)

    user_names = sorted({n for d in user.values() for n in d})

    def csv_records():
        for i, (p, s, r) in enumerate(rows_files):
            rec: dict[str, object] = {"path": p, "sha256": s, "row": r}
            rec.update({k: ("" if v[i] is None else v[i]) for k, v in face_cols.items()})
            if P is not None:
                rec.update({f"tag:{n}": repr(float(x)) for n, x in zip(names, P[i])})
            if F is not None:
                rec.update({f"f{j}": repr(float(x)) for j, x in enumerate(F[i])})
            if C is not None:
                rec["code"] = C[i].tobytes().hex()
            decided = user.get(s, {})
            rec.update({f"user:{n}": ("" if n not in decided else int(decided[n])) for n in user_names})
            yield rec

    def json_records():
        thr = -1.0 if min_prob is None else float(min_prob)
        for i, (p, s, r) in enumerate(rows_files):
            rec = {"path": p, "sha256": s, "row": r}
            rec.update({k: v[i] for k, v in face_cols.items()})
            if P is not None:
                rec["tags"] = {names[t]: float(P[i, t]) for t in np.nonzero(P[i].astype(np.float64) >= thr)[0]}
            if s in user:  # the user's decisions take precedence over the model's tags
                rec["tags"] = effective_tags(rec.get("tags", {}), user[s])
                rec["user_tags"] = user[s]
            if F is not None:
                rec["feature"] = F[i].tolist()
            if C is not None:
                rec["code"] = C[i].tobytes().hex()
            rec["model"] = models["embedder_name"]
            if t is not None:
                rec["tagger"] = t.name
            yield rec

    if fmt == "csv":
        return write_records(csv_records(), path, fmt, rows=lambda rec: [rec], raw_csv=raw_csv)
    return write_records(json_records(), path, fmt)
