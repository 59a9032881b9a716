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
interrupted run never leaves a picture with some of its faces
(:func:`illust2vec.collection.indexer.add_faces` hands complete pictures to
the store).
"""
from __future__ import annotations

import json

from illust2vec.collection.errors import CollectionError


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


def check_mode(path, meta: dict[str, str], options, rebuild: bool) -> None:
    """Refuse adding with (or without) faces to a collection made the other way (``meta``: its metadata)."""
    want = options_key(options)
    have = meta.get("faces", "")
    if rebuild or "embedder_identity" not in meta or want == have:
        return
    if not have:
        raise CollectionError(
            f"{path}: this collection was indexed without --faces (one row per picture); a face collection "
            "needs its own directory: index with --faces into another --db (or recompute everything with --rebuild)"
        )
    if not want:
        raise CollectionError(
            f"{path}: this is a face collection (indexed with --faces, one row per face); add to it with "
            "--faces and the same face options, or index without faces into another --db"
        )
    raise CollectionError(
        f"{path}: indexed with other face options ({have}, now {want}); use the same --face-* options, "
        "another --db, or --rebuild"
    )


def annotate_hits(view, hits: list) -> list:
    """Fill ``face_index`` and ``box`` of search hits in a face collection (``view``: a
    :class:`~illust2vec.collection.view.CollectionView`)."""
    if not hits or not is_face_collection(view.meta):
        return hits
    info = view.face_fields([h.row for h in hits])
    for h in hits:
        fi, box, _ = info.get(h.row, (None, None, None))
        h.face_index, h.box = fi, box
    return hits
