"""The read side of a collection: :class:`CollectionView`, the one object every query reads through.

Everything that reads a collection (search, duplicates, export, the web app,
maps, tag statistics, attribute queries) asks a :class:`CollectionView`:

* a **snapshot** (:meth:`CollectionView.snapshot`): the metadata, the live
  vector rows and the taggers read in one SQLite transaction, so that they
  agree with each other and with the vector files (rows only grow between
  deletions, and a writer commits a row only after its vectors are on disk);
* **files and rows**: counts, errors, the paths of rows, the row of a path, the
  table of indexed files (:class:`FileTable`) and pages of it, filtered and
  sorted (:meth:`CollectionView.select`);
* **vectors**: features, codes and a chosen tagger's probabilities
  (:meth:`CollectionView.vectors`, :meth:`CollectionView.probs`);
* **tags**: the taggers (:meth:`CollectionView.taggers`, one chosen per
  query), their tag tables, tag expressions evaluated with user tags
  (:meth:`CollectionView.match_tags`, :mod:`.query`), tag counts, user tags;
* a **memo** (:meth:`CollectionView.memo`) where the modules built on the
  view keep what outlives a query (search indexes, tag directions), keyed by
  the collection's state.

The view never writes: :class:`~illust2vec.collection.store.CollectionStore`
does.  Modules above it (:mod:`.search`, :mod:`.dupes`, :mod:`.export`,
:mod:`.faces`) take a view and use only its public methods; nothing outside
``collection/`` sees its SQL.
"""
from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.collection import db as _db
from illust2vec.collection import user_tags as _ut
from illust2vec.collection.compact import ReaderLease
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.packed import IntPositions, PackedStrings, StringPositions
from illust2vec.collection.paths import canonical_path
from illust2vec.collection.query import TagIndex, TagMatch, TagQuery, evaluate, model_matches
from illust2vec.collection.taggers import TaggerInfo, pick_tagger, read_taggers
from illust2vec.collection.vectors import VectorFile
from illust2vec.models.store import sha256_file

__all__ = ["CollectionView", "FileTable", "SORTS", "Snapshot"]

DEFAULT_PROB_FLOOR = 0.01
#: Orders of :meth:`CollectionView.select`: by path, by when a file was first indexed, by the queried tags.
SORTS = ("path", "-path", "added", "-added", "score")
#: Tag queries whose rows the view keeps (the web app pages through them).
QUERY_CACHE = 32
NO_TAGGER_HINT = "; add a tagger with 'illust2vec index DIR --db DB --tagger NAME' (the stored pictures are tagged, not re-embedded)"


@dataclass(frozen=True)
class Snapshot:
    """The state of a collection at one moment: metadata, live vector rows, taggers (read together)."""

    meta: dict[str, str]
    live: np.ndarray  # vector rows of indexed items (contents, or face items), sorted
    taggers: tuple[TaggerInfo, ...]

    @property
    def rows(self) -> int:
        """Vector rows committed (live or not)."""
        return int(self.meta.get("rows", 0))

    @property
    def empty(self) -> bool:
        """No embedder recorded yet (nothing was ever indexed)."""
        return "feature_dim" not in self.meta

    @property
    def faces(self) -> bool:
        """A face collection (one row per face, see :mod:`.faces`)."""
        return bool(self.meta.get("faces"))

    @property
    def prob_floor(self) -> float:
        return float(self.meta.get("prob_floor", DEFAULT_PROB_FLOOR))

    @property
    def key(self) -> tuple:
        """Changes whenever rows are added or dropped, or the models change."""
        return (self.meta.get("rows"), self.meta.get("delete_gen"), self.meta.get("embedder_identity"),
                tuple((t.identity, t.rows) for t in self.taggers))


@dataclass
class FileTable:
    """The indexed files sorted by path, as parallel arrays (the web app's items).

    ``ids`` are ``files.id`` (stable across re-indexing; byte-identical
    copies are separate items sharing one row).  Paths and digests are packed
    (:class:`~illust2vec.collection.packed.PackedStrings`) and looked up by
    sorted keys: ~150 MB at a million files, where lists and dicts took ~400 MB.
    """

    key: tuple
    ids: np.ndarray
    rows: np.ndarray
    paths: Sequence[str]
    shas: Sequence[str]
    pos: IntPositions = field(init=False)  # id -> index
    by_path: StringPositions = field(init=False)  # path -> index

    def __post_init__(self) -> None:
        if not isinstance(self.paths, PackedStrings):
            self.paths = PackedStrings(self.paths)
        if not isinstance(self.shas, PackedStrings):
            self.shas = PackedStrings(self.shas)
        self.pos = IntPositions(self.ids)
        self.by_path = StringPositions(self.paths)

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, paths: set[str], key: tuple) -> FileTable:
        """The table less ``paths`` (e.g. files moved aside by a duplicate review)."""
        keep = [k for k, p in enumerate(self.paths) if p not in paths]
        return FileTable(key, self.ids[keep], self.rows[keep], [self.paths[k] for k in keep],
                         [self.shas[k] for k in keep])


class _UserTags:
    """User tags as rows, for the tag-expression evaluator (:class:`~.query.UserTagRows`)."""

    def __init__(self, conn: sqlite3.Connection, live: np.ndarray, faces: bool) -> None:
        self.conn, self.live, self.faces = conn, live, faces
        # one look first: most collections have no user tag, and then no query below is needed
        self.present = _ut.has_table(conn) and conn.execute(
            "SELECT EXISTS (SELECT 1 FROM user_tags)").fetchone()[0] == 1

    def rows(self, name: str, added: bool) -> np.ndarray:
        if not self.present:
            return self.live[:0]
        join = "JOIN faces f ON f.content = c.row" if self.faces else ""
        sel = "f.row" if self.faces else "c.row"
        rows = np.fromiter((r for (r,) in self.conn.execute(
            f"SELECT {sel} FROM user_tags u JOIN contents c ON c.sha256 = u.sha256 {join} "
            f"WHERE u.tag = ? AND u.value = ? ORDER BY {sel}", (name, int(added)))), dtype=np.int64)
        pos = np.searchsorted(self.live, rows).clip(max=max(0, len(self.live) - 1))
        return rows[self.live[pos] == rows] if len(self.live) else rows[:0]

    def has(self, name: str) -> bool:
        return self.present and self.conn.execute("SELECT 1 FROM user_tags WHERE tag = ? LIMIT 1",
                                                  (name,)).fetchone() is not None

    def names(self) -> list[str]:
        return [] if not self.present else [t for (t,) in self.conn.execute("SELECT DISTINCT tag FROM user_tags")]


class CollectionView:
    """Read access to the collection in directory ``path`` over the SQLite connection ``conn``.

    Made by :meth:`illust2vec.collection.Collection.open` (``col.view``);
    not thread-safe (the web app serialises calls).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = Path(path)
        self.conn = conn
        self._memo: dict[Any, Any] = {}
        self._queries: OrderedDict[tuple, Any] = OrderedDict()
        self._lease = ReaderLease(self.path)

    # ------------------------------------------------------------------ memo
    def memo(self, key: Any, build: Callable[[], Any] | None = None) -> Any:
        """The value kept under ``key`` (built with ``build()`` and kept when missing; ``None`` without ``build``).

        For what modules built on the view keep between queries (search
        indexes, memory maps, tag directions): put the collection's state
        (:attr:`Snapshot.key`) in ``key`` so that a change is a miss.
        """
        if key in self._memo:
            return self._memo[key]
        if build is None:
            return None
        value = self._memo[key] = build()
        return value

    def remember(self, key: Any, value: Any) -> Any:
        """Keep ``value`` under ``key`` (replacing what was there); returns it."""
        self._memo[key] = value
        return value

    def forget(self) -> None:
        """Drop everything kept (after this process changed the collection)."""
        self._memo.clear()
        self._queries.clear()

    # ------------------------------------------------------------------ state
    @property
    def read_only(self) -> bool:
        """Whether the collection was opened query-only (read-only storage)."""
        return _db.is_read_only(self.conn)

    @property
    def meta(self) -> dict[str, str]:
        """The collection's metadata (schema version, embedder, row counts)."""
        return _db.get_all_meta(self.conn)

    def data_version(self) -> int:
        """A number that changes when another connection commits (no table scan)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def snapshot(self) -> Snapshot:
        """Metadata, live rows and taggers read in one transaction (consistent with the vector files).

        Under this reader's lease on the snapshot's ``delete_gen`` (taken
        before the read, read again if a deletion committed in between), so
        that compaction leaves the rows of this snapshot alone (see :mod:`.compact`);
        :meth:`release_snapshot` gives the lease up.
        """
        while True:
            gen = int(_db.get_meta(self.conn, "delete_gen", "0") or 0)
            self._lease.hold(gen)
            snap = self._read_snapshot()
            if int(snap.meta.get("delete_gen", 0) or 0) == gen:
                return snap

    def release_snapshot(self) -> None:
        """Stop holding the lease of the last snapshot read (the next read takes one again).

        A reader that stays open while idle (the web app between requests)
        calls this so that compaction need not wait for it; see :mod:`.compact`.
        """
        self._lease.release()

    def _read_snapshot(self) -> Snapshot:
        c = self.conn
        c.execute("BEGIN")
        try:
            m = _db.get_all_meta(c)
            # rows only grow between deletions, and every deletion bumps delete_gen
            key = ("live", m.get("rows"), m.get("delete_gen"), m.get("embedder_identity"), m.get("faces"))
            live = self._memo.get(key)
            if live is None:
                for old in [k for k in self._memo if isinstance(k, tuple) and k[:1] == ("live",)]:
                    del self._memo[old]
                q = "SELECT row FROM faces ORDER BY row" if m.get("faces") else "SELECT row FROM contents ORDER BY row"
                live = self._memo[key] = np.fromiter((r for (r,) in c.execute(q)), dtype=np.int64)
            taggers = tuple(read_taggers(c, m))
        finally:
            c.execute("COMMIT")
        return Snapshot(m, live, taggers)

    def require_items(self, snap: Snapshot | None = None) -> Snapshot:
        """The snapshot; :class:`CollectionError` saying how to add images when nothing was indexed."""
        snap = snap or self.snapshot()
        if snap.empty:
            raise CollectionError(f"{self.path}: the collection is empty; add images with "
                                  f"'illust2vec index DIR --db {self.path}'")
        return snap

    def __len__(self) -> int:
        """Number of indexed files (paths)."""
        return self.conn.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()[0]

    def info(self) -> dict[str, Any]:
        """Counts and models, for summaries and ``--json``; ``tagger`` is the one queries use by default."""
        snap = self.snapshot()
        m, c = snap.meta, self.conn
        default = snap.taggers[-1] if snap.taggers else None
        return {
            "path": str(self.path),
            "schema_version": int(m["schema_version"]),
            "files": c.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()[0],
            "contents": c.execute("SELECT COUNT(*) FROM contents").fetchone()[0],
            "errors": c.execute("SELECT COUNT(*) FROM files WHERE error IS NOT NULL").fetchone()[0],
            "embedder": m.get("embedder_name"),
            "embedder_identity": m.get("embedder_identity"),
            "feature_dim": int(m["feature_dim"]) if "feature_dim" in m else None,
            "tagger": default.name if default else None,
            "tagger_identity": default.identity if default else None,
            "tags": default.tag_count if default else 0,
            "taggers": [{"name": t.name, "identity": t.identity, "tags": t.tag_count, "rows": t.rows,
                         "complete": t.covers(snap.rows)} for t in snap.taggers],
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(path, message)`` for every file that could not be indexed."""
        return self.conn.execute("SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path").fetchall()

    # ------------------------------------------------------------------ taggers
    def taggers(self) -> list[TaggerInfo]:
        """The collection's taggers, oldest first (the last is the default of every query)."""
        return list(self.snapshot().taggers)

    def tagger(self, name: str | TaggerInfo | None = None, *, snap: Snapshot | None = None) -> TaggerInfo | None:
        """The tagger a query uses: ``name`` (or identity), else the most recently added; ``None`` without taggers.

        Raises :class:`~illust2vec.collection.taggers.UnknownTaggerError` listing the stored taggers.
        """
        if isinstance(name, TaggerInfo):
            return name
        return pick_tagger((snap or self.snapshot()).taggers, name, where=str(self.path))

    def tag_index(self, tagger: str | TaggerInfo | None = None, *, snap: Snapshot | None = None) -> TagIndex | None:
        """The tag table (names, categories) of a tagger (default: the newest); ``None`` without taggers."""
        t = self.tagger(tagger, snap=snap)
        if t is None:
            return None
        return self.memo(("tagindex", t.identity, t.tag_base, t.tag_count),
                         lambda: TagIndex.from_db(self.conn, t.tag_base, t.tag_count, tagger=t.name))

    def categories(self, tagger: str | TaggerInfo | None = None) -> list[str]:
        """The tag categories of a tagger, in the order of its tag table."""
        ti = self.tag_index(tagger)
        return list(dict.fromkeys(ti.categories)) if ti is not None else []

    # ------------------------------------------------------------------ vectors
    def vector_file(self, kind: str, snap: Snapshot | None = None, *, tagger: str | TaggerInfo | None = None
                    ) -> VectorFile:
        """The vector file of ``"feature"``, ``"codes"`` or ``"prob"`` (a tagger's: default the newest)."""
        snap = self.require_items(snap)
        m = snap.meta
        if kind == "feature":
            return VectorFile(self.path / "feature.f32", int(m["feature_dim"]), "float32", create=True)
        if kind == "codes":
            return VectorFile(self.path / "codes.u8", int(m["code_bytes"]), "uint8", create=True)
        if kind == "prob":
            t = self.tagger(tagger, snap=snap)
            if t is None:
                raise CollectionError(f"{self.path}: has no tag probabilities (indexed without a tagger)"
                                      + NO_TAGGER_HINT)
            return VectorFile(self.path / t.file, t.tag_count, "float32", create=True)
        raise CollectionError(f"{self.path}: has no {kind!r} vectors (kinds: feature, codes, prob)")

    def vector_files(self, snap: Snapshot | None = None) -> list[VectorFile]:
        """Every vector file of the collection: features, codes and each tagger's probabilities."""
        snap = self.require_items(snap)
        return [self.vector_file("feature", snap), self.vector_file("codes", snap),
                *(self.vector_file("prob", snap, tagger=t) for t in snap.taggers)]

    def vectors(self, kind: str = "feature", rows: Sequence[int] | np.ndarray | None = None, *,
                tagger: str | TaggerInfo | None = None) -> np.ndarray:
        """Stored ``"feature"``, ``"codes"`` or ``"prob"`` vectors of ``rows`` (all live rows by default).

        ``"prob"``: the probabilities of ``tagger`` (default: the newest); rows
        it has no probabilities for (not tagged yet, or their file was gone
        when it was added) are NaN.
        """
        snap = self.require_items()
        rows = snap.live if rows is None else np.asarray(rows, dtype=np.int64)
        vf = self.vector_file(kind, snap, tagger=tagger)
        if kind != "prob":
            return vf.read(rows)
        t = self.tagger(tagger, snap=snap)
        out = np.full((len(rows), t.tag_count), np.nan, dtype=np.float32)
        ok = rows < t.rows
        if ok.any():
            out[ok] = vf.read(rows[ok])
        return out

    def prob_matrix(self, tagger: str | TaggerInfo | None = None, snap: Snapshot | None = None) -> np.ndarray | None:
        """A read-only memory map of a tagger's probabilities over the rows it covers (``None`` without taggers).

        Kept between queries while the tagger's rows and file stay the same (mapping per query costs page faults).
        """
        snap = snap or self.snapshot()
        t = self.tagger(tagger, snap=snap)
        if t is None or snap.empty:
            return None
        try:
            st = os.stat(self.path / t.file)
            stamp = (st.st_ino, st.st_dev)
        except OSError:
            stamp = None
        key = ("probmap", t.identity)
        got = self._memo.get(key)
        if got is None or got[0] != (t.rows, stamp):
            got = self._memo[key] = ((t.rows, stamp), self.vector_file("prob", snap, tagger=t).view(t.rows))
        return got[1]

    def probs(self, rows: Sequence[int] | np.ndarray | None = None, *, tagger: str | TaggerInfo | None = None,
              user_tags: bool = True) -> np.ndarray:
        """A tagger's probabilities of ``rows`` with the user's decisions applied (``user_tags``).

        A tag the user added to a picture is 1.0 there, one the user removed
        0.0 (for tags of the tagger's table; other user tags have no column,
        see :meth:`user_tags_of_rows`).  Rows the tagger has not tagged are NaN.
        """
        snap = self.require_items()
        rows = snap.live if rows is None else np.asarray(rows, dtype=np.int64)
        P = self.vectors("prob", rows, tagger=tagger)
        if not user_tags:
            return P
        ti = self.tag_index(tagger, snap=snap)
        for row, decisions in self.user_tags_of_rows(rows).items():
            where = np.nonzero(rows == row)[0]
            for name, added in decisions.items():
                for j in ti.columns_of(name):
                    P[where, j] = 1.0 if added else 0.0
        return P

    # ------------------------------------------------------------------ rows and files
    def live_rows(self) -> np.ndarray:
        """Vector rows of indexed items, sorted."""
        return self.snapshot().live

    def rows_to_paths(self, rows: Sequence[int]) -> dict[int, list[str]]:
        """Indexed paths of each vector row (of the picture, for a face row), sorted."""
        out: dict[int, list[str]] = {int(r): [] for r in rows}
        faces = bool(_db.get_meta(self.conn, "faces"))
        rows = list(out)
        for i in range(0, len(rows), 900):
            chunk = rows[i : i + 900]
            q = f"SELECT row, path FROM files WHERE row IN ({','.join('?' * len(chunk))}) ORDER BY path"
            if faces:  # a face row's paths are those of its picture
                q = ("SELECT faces.row, files.path FROM faces JOIN files ON files.row = faces.content "
                     f"WHERE faces.row IN ({','.join('?' * len(chunk))}) ORDER BY files.path")
            for r, p in self.conn.execute(q, chunk):
                out[r].append(p)
        return out

    def first_existing_paths(self, rows: Sequence[int]) -> dict[int, str | None]:
        """A path of each content row whose file is still there (``None`` when every path of it is gone)."""
        out: dict[int, str | None] = {}
        for r, paths in self.rows_to_paths(rows).items():
            out[r] = next((p for p in paths if os.path.isfile(p)), None)
        return out

    def row_of_path(self, path: str | os.PathLike) -> int | None:
        """The vector row of an indexed file (by path, or by content hash when the path is unknown)."""
        p = canonical_path(path)
        r = self.conn.execute("SELECT row FROM files WHERE path=CAST(? AS TEXT) AND row IS NOT NULL",
                              (_db.text_param(p),)).fetchone()
        if r is not None:
            return r[0]
        try:
            sha = sha256_file(p)
        except OSError:
            return None
        r = self.conn.execute("SELECT row FROM contents WHERE sha256=?", (sha,)).fetchone()
        return None if r is None else r[0]

    def path_rows(self) -> dict[str, int]:
        """``{path: row}`` of every indexed file."""
        return dict(self.conn.execute("SELECT path, row FROM files WHERE row IS NOT NULL").fetchall())

    def indexed_file_stats(self) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` of every indexed file (to tell which files changed)."""
        return {p: (size, mtime) for p, size, mtime in
                self.conn.execute("SELECT path, size, mtime_ns FROM files WHERE row IS NOT NULL")}

    def copied_rows(self) -> list[int]:
        """Rows of contents indexed under several paths (byte-identical files; every face row of such a picture)."""
        if _db.get_meta(self.conn, "faces"):
            return [r for (r,) in self.conn.execute(
                "SELECT row FROM faces WHERE content IN "
                "(SELECT row FROM files WHERE row IS NOT NULL GROUP BY row HAVING COUNT(*) > 1)")]
        return [r for (r,) in self.conn.execute(
            "SELECT row FROM files WHERE row IS NOT NULL GROUP BY row HAVING COUNT(*) > 1")]

    def face_fields(self, rows: Sequence[int]) -> dict[int, tuple[int | None, list[int] | None, float | None]]:
        """``{row: (face_index, box, likelihood)}`` of face-collection rows (``None`` fields: a whole picture)."""
        out: dict[int, tuple[int | None, list[int] | None, float | None]] = {}
        rows = [int(r) for r in rows]
        for i in range(0, len(rows), 900):
            chunk = rows[i : i + 900]
            q = f"SELECT row, face_index, x, y, w, h, likelihood FROM faces WHERE row IN ({','.join('?' * len(chunk))})"
            for r, fi, x, y, w, h, lk in self.conn.execute(q, chunk):
                out[r] = (fi, None if fi is None else [x, y, w, h], lk)
        return out

    def file_records(self) -> list[tuple]:
        """Every indexed file as ``(path, sha256, row)`` sorted by path; in a face collection one record per item,
        ``(path, sha256, row, face_index, x, y, w, h, likelihood)``."""
        if _db.get_meta(self.conn, "faces"):
            return self.conn.execute(
                "SELECT f.path, f.sha256, fa.row, fa.face_index, fa.x, fa.y, fa.w, fa.h, fa.likelihood "
                "FROM files f JOIN faces fa ON fa.content = f.row ORDER BY f.path, fa.row").fetchall()
        return self.conn.execute(
            "SELECT f.path, f.sha256, f.row FROM files f JOIN contents c ON c.row = f.row ORDER BY f.path").fetchall()

    def file_table(self) -> FileTable:
        """The indexed files sorted by path (kept while nothing is committed)."""
        c = self.conn
        version = self.data_version()
        got = self._memo.get("files")
        if got is not None and got[0] == version:
            return got[1]
        key = c.execute("SELECT COUNT(*), MAX(id), MAX(updated_at) FROM files WHERE row IS NOT NULL").fetchone()
        key = (*key, _db.get_meta(c, "delete_gen"))
        if got is None or got[1].key != key:
            recs = c.execute("SELECT id, row, path, sha256 FROM files WHERE row IS NOT NULL ORDER BY path").fetchall()
            table = FileTable(key, np.fromiter((r[0] for r in recs), dtype=np.int64, count=len(recs)),
                              np.fromiter((r[1] for r in recs), dtype=np.int64, count=len(recs)),
                              PackedStrings(r[2] for r in recs), PackedStrings(r[3] for r in recs))
            del recs
        else:
            table = got[1]
        self._memo["files"] = (version, table)
        return table

    # ------------------------------------------------------------------ tags
    def user_tag_rows(self, snap: Snapshot | None = None) -> _UserTags:
        """User tags as rows (``.rows(name, added)``, ``.has(name)``, ``.names()``)."""
        snap = snap or self.snapshot()
        return _UserTags(self.conn, snap.live, snap.faces)

    def parse_tags(self, tags=None, not_tags=None, *, tagger: str | TaggerInfo | None = None,
                   snap: Snapshot | None = None) -> TagQuery:
        """A tag expression parsed with the categories and tag names of ``tagger`` (see :mod:`.query`)."""
        snap = snap or self.snapshot()
        ti = self.tag_index(tagger, snap=snap)
        user = self.user_tag_rows(snap)
        known = (lambda n: ti.knows(n) or user.has(n)) if ti is not None else user.has
        return TagQuery.parse(tags, not_tags, ti.category_names if ti is not None else (), known=known)

    def match_tags(self, tags=None, not_tags=None, *, min_prob: float = 0.5, tagger: str | TaggerInfo | None = None,
                   snap: Snapshot | None = None) -> TagMatch:
        """The live rows where a tag expression holds, user tags applied (see :mod:`.query`).

        ``tags``: ``"a, -b, character:c, user:d, e>=0.3"`` (or a parsed
        :class:`~.query.TagQuery`); ``not_tags``: terms none may have;
        ``tagger``: whose probabilities (default: the newest tagger).
        """
        snap = self.require_items(snap)
        t = self.tagger(tagger, snap=snap)
        user = self.user_tag_rows(snap)
        ti = self.tag_index(t, snap=snap) if t is not None else None
        if isinstance(tags, TagQuery):
            query = tags
        else:
            known = (lambda n: ti.knows(n) or user.has(n)) if ti is not None else user.has
            query = TagQuery.parse(tags, not_tags, ti.category_names if ti is not None else (), known=known)

        def model_rows(include, exclude):
            probs = self.prob_matrix(t, snap) if t is not None and any(
                c.threshold < snap.prob_floor for c in include + exclude) else None
            return model_matches(self.conn, probs, snap.live, include, exclude, base=ti.base if ti else 0,
                                 prob_floor=snap.prob_floor)

        return evaluate(query, live=snap.live, tags=ti, user=user, model_rows=model_rows,
                        min_prob=min_prob, no_tags_hint=NO_TAGGER_HINT)

    def tag_counts(self, min_prob: float = 0.5, *, tagger: str | TaggerInfo | None = None) -> dict[int, int]:
        """``{column: items whose probability is >= min_prob}`` of a tagger's tags (model only)."""
        snap = self.snapshot()
        t = self.tagger(tagger, snap=snap)
        if t is None:
            return {}
        key = ("tagcounts", snap.key, t.identity, float(min_prob))
        got = self.memo(key)
        if got is not None:
            return got
        if min_prob >= snap.prob_floor and not snap.faces:
            counts = {int(i) - t.tag_base: int(n) for i, n in self.conn.execute(
                "SELECT tag_id, COUNT(*) FROM tag_probs WHERE tag_id >= ? AND tag_id < ? AND prob >= ? GROUP BY tag_id",
                (t.tag_base, t.tag_base + t.tag_count, float(min_prob)))}
        else:
            P = self.prob_matrix(t, snap)
            rows = snap.live[snap.live < len(P)]
            counts = {}
            for i in range(0, len(rows), 65_536):
                for j, n in enumerate((np.asarray(P[rows[i : i + 65_536]]) >= min_prob).sum(axis=0)):
                    if n:
                        counts[j] = counts.get(j, 0) + int(n)
        return self.remember(key, counts)

    def model_tags(self, rows: Sequence[int], min_prob: float, top: int | None = None, *,
                   tagger: str | TaggerInfo | None = None) -> list[dict[str, float]]:
        """Per row, the tagger's tags with probability ``>= min_prob``, most probable first (at most ``top``)."""
        snap = self.snapshot()
        t = self.tagger(tagger, snap=snap)
        ti = self.tag_index(t, snap=snap) if t is not None else None
        if ti is None or not len(rows) or snap.empty:
            return [{} for _ in rows]
        rows = np.asarray(rows, dtype=np.int64)
        M = self.prob_matrix(t, snap)
        P = np.full((len(rows), t.tag_count), np.nan, dtype=np.float32)
        ok = rows < len(M)
        P[ok] = M[rows[ok]]
        out = []
        for p in P:
            idx = np.nonzero(p >= min_prob)[0]
            idx = idx[np.argsort(-p[idx], kind="stable")][:top]
            out.append({ti.names[i]: round(float(p[i]), 4) for i in idx})
        return out

    def user_tags_of(self, shas: Sequence[str]) -> dict[str, dict[str, bool]]:
        """``{sha256: {tag: added?}}`` for the contents in ``shas`` that have user tags."""
        return _ut.user_tags_of(self.conn, shas)

    def user_tags_of_rows(self, rows: Sequence[int]) -> dict[int, dict[str, bool]]:
        """``{row: {tag: added?}}`` for the rows (of pictures, or their face items) that have user tags."""
        rows = [int(r) for r in rows]
        if not rows or not _ut.has_table(self.conn):
            return {}
        faces = bool(_db.get_meta(self.conn, "faces"))
        out: dict[int, dict[str, bool]] = {}
        for i in range(0, len(rows), 900):
            chunk = rows[i : i + 900]
            marks = ",".join("?" * len(chunk))
            q = ("SELECT f.row, u.tag, u.value FROM faces f JOIN contents c ON c.row = f.content "
                 f"JOIN user_tags u ON u.sha256 = c.sha256 WHERE f.row IN ({marks})") if faces else (
                 f"SELECT c.row, u.tag, u.value FROM contents c JOIN user_tags u ON u.sha256 = c.sha256 "
                 f"WHERE c.row IN ({marks})")
            for r, tag, v in self.conn.execute(q + " ORDER BY u.tag", chunk):
                out.setdefault(int(r), {})[tag] = bool(v)
        return out

    def user_tags_stamp(self) -> str:
        """Changes whenever a user tag is set or forgotten (for caches of what user tags decide)."""
        if not _ut.has_table(self.conn):
            return "none"
        n, last = self.conn.execute("SELECT COUNT(*), MAX(updated_at) FROM user_tags").fetchone()
        return f"{n}:{last!r}"

    def user_tag_counts(self) -> dict[str, int]:
        """``{user tag: number of pictures it was added to}``."""
        return _ut.tag_counts(self.conn)

    # ------------------------------------------------------------------ pages of items
    def select(self, table: FileTable, tags=None, not_tags=None, *, min_prob: float = 0.5,
               tagger: str | TaggerInfo | None = None, sort: str = "path") -> np.ndarray:
        """Positions in ``table`` of the files that pass a tag expression, in ``sort`` order.

        ``sort``: ``path`` (default), ``-path``, ``added`` (first indexed
        first), ``-added`` (newest first) or ``score`` (the weakest queried
        tag's probability, highest first; needs ``tags``).  The last
        :data:`QUERY_CACHE` answers are kept, so paging through one is cheap.
        """
        if sort not in SORTS:
            raise CollectionError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        if not 0.0 <= min_prob <= 1.0:
            raise CollectionError(f"min must be between 0 and 1, not {min_prob}")
        t = self.tagger(tagger)
        has_query = bool((tags or "").strip() or (not_tags or "").strip())
        key = (table.key, id(table), tags or "", not_tags or "", float(min_prob), t.identity if t else None, sort)
        hit = self._queries.get(key)
        if hit is not None:
            self._queries.move_to_end(key)
            return hit
        match = self.match_tags(tags, not_tags, min_prob=min_prob, tagger=t) if has_query else None
        sel = np.arange(len(table)) if match is None else np.nonzero(np.isin(table.rows, match.rows))[0]
        if sort == "-path":
            sel = sel[::-1]
        elif sort in ("added", "-added"):
            order = np.argsort(table.ids[sel], kind="stable")
            sel = sel[order if sort == "added" else order[::-1]]
        elif sort == "score":
            if match is None or not match.include:
                raise CollectionError("sort=score orders by the queried tags' probability: give tags to match")
            P = self.prob_matrix(t) if t is not None else None
            rows = table.rows[sel]

            def column(j, rr):
                out = np.full(len(rr), np.nan)
                ok = rr < len(P)
                out[ok] = P[rr[ok], j]
                return out

            score = match.scores(rows, column)
            sel = sel[np.lexsort((sel, -score))]
        self._queries[key] = sel
        while len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return sel

    def item_tags(self, rows: Sequence[int], shas: Sequence[str], min_prob: float, top: int | None = None, *,
                  tagger: str | TaggerInfo | None = None) -> list[tuple[dict[str, float], dict[str, bool]]]:
        """Per item: ``(tags, user_tags)``: the tagger's tags ``>= min_prob`` with the user's decisions applied
        (at most ``top`` model tags), and the user's decisions themselves."""
        model = self.model_tags(rows, min_prob, top, tagger=tagger)
        user = self.user_tags_of(list(shas))
        out = []
        for mt, sha in zip(model, shas):
            u = user.get(sha, {})
            out.append((_ut.effective_tags(mt, u), u))
        return out

    # ------------------------------------------------------------------ query images
    def embedder(self):
        """The collection's embedder, loaded by name on first use (for query images outside the collection)."""
        def load():
            from illust2vec.models.loading import load_model

            return load_model(self.meta.get("embedder_name") or None, task="feature")

        return self.memo(("embedder", self.meta.get("embedder_identity")), load)
