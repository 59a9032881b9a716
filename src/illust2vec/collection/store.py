"""The write side of a collection: :class:`CollectionStore`, the only code that changes one.

Every producer of results (local ``index``, face items, a Ray merge, a
pipeline runner) writes through the store the same way::

    with col.store.writing(embedder=model, taggers=[tagger]) as w:
        w.append(ItemBatch(paths=..., sizes=..., mtimes_ns=..., sha256=..., errors=...,
                           features=feats, codes=codes, probs={tagger.identity: probs}))
    print(w.report)

:meth:`CollectionStore.writing` takes the collection's writer lock, checks
(or records) the models, cuts off vector records an interrupted writer left
behind and upgrades an older database; :meth:`WriteSession.append` is the
one way to add files and their vectors, however they were computed: it
links a file whose content is already stored to that content's row, appends
the vectors of new contents (flushed to disk first), then commits the files,
contents, face items, tag probabilities and row counts of the batch in one
transaction.  An interrupted writer therefore loses at most the batch in
flight.  :meth:`WriteSession.append_probs` adds a tagger's probabilities for
rows already stored (a tagger added to an indexed collection).

A model is anything with the attributes ``name``, ``identity``, ``outputs``,
``feature_dim``, ``binarize`` (and ``binarize_features``) for an embedder,
``tags`` (a :class:`~illust2vec.models.tags.TagTable`) for a tagger: an
:class:`~illust2vec.models.image_model.ImageModel`, or a :class:`ModelRecord`
for results computed elsewhere.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.collection import db as _db
from illust2vec.collection import faces as _faces
from illust2vec.collection import user_tags as _ut
from illust2vec.collection.compact import CompactReport, compact
from illust2vec.collection.errors import CollectionError, ModelMismatchError
from illust2vec.collection.paths import canonical_path
from illust2vec.collection.prune import PrunePlan, plan_prune
from illust2vec.collection.taggers import TaggerInfo, describe, prob_file_name, read_taggers
from illust2vec.collection.vectors import VectorFile
from illust2vec.collection.view import DEFAULT_PROB_FLOOR, CollectionView

__all__ = ["AddReport", "AppendResult", "CollectionStore", "ItemBatch", "ModelRecord", "WriteSession",
           "binarize_width", "model_identity"]


@dataclass
class AddReport:
    """What a write session did (:meth:`illust2vec.collection.Collection.add` returns it)."""

    seen: int = 0
    added: int = 0  # files whose content was newly embedded
    linked: int = 0  # new/moved/changed paths whose content was already indexed
    unchanged: int = 0  # skipped: same size and mtime as last time
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error), this run
    still_bad: int = 0  # files that failed before and did not change (not retried)
    moved: int = 0  # old paths dropped because their content reappeared elsewhere
    pruned: int = 0  # paths dropped by prune
    pruned_paths: list[str] = field(default_factory=list)  # which ones
    #: folder that is missing or empty (unmounted drive?) -> gone paths under it that prune kept
    prune_kept: dict[str, list[str]] = field(default_factory=dict)
    orphans_truncated: int = 0  # vector records from an interrupted run cut off
    #: tagger name -> stored pictures it tagged in this run (a tagger added to an indexed collection)
    tagged: dict[str, int] = field(default_factory=dict)
    #: (path, reason) of stored pictures a tagger added in this run has no tags for (file gone or unreadable)
    untagged: list[tuple[str, str]] = field(default_factory=list)
    #: taggers that do not cover every picture after this run (name -> pictures without their tags)
    lagging: dict[str, int] = field(default_factory=dict)
    compaction: CompactReport | None = None  # with prune: the disk given back (see collection.compact)

    def record_prune(self, plan: PrunePlan) -> None:
        """Count what a prune dropped and kept (and the disk it gave back) in this report."""
        self.pruned, self.pruned_paths, self.prune_kept = len(plan.drop), plan.drop, plan.kept
        if plan.compaction is not None:
            self.compaction = plan.compaction


class ModelRecord:
    """What a collection records about a model whose results come precomputed (no session).

    Has the attributes :meth:`CollectionStore.writing` reads (``name``,
    ``identity``, ``outputs``, ``feature_dim``, ``binarize``, ``tags``); its
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


@dataclass
class ItemBatch:
    """Results for some files, however they were computed: the argument of :meth:`WriteSession.append`.

    One entry per file (``paths``, ``sizes``, ``mtimes_ns``, ``sha256``,
    ``errors``; ``errors[j]`` is ``None`` when file ``j`` worked).  Vectors
    come per *item*: by default one item per file without an error, in
    order; ``item_file`` (item -> file entry) gives a file several items
    (the faces of a picture) or none (a picture without a face, recorded
    with its hash so that it is not scanned again).

    Attributes:
        features: ``(items, D)`` float32 features of the embedder.
        codes: ``(items, B)`` uint8 packed binary codes.
        probs: tag probabilities ``(items, T)`` per tagger identity (an array
            alone when the session has one tagger).
        item_file: per item, the index of its file entry.
        faces: per item of a face collection, ``{"face_index", "box", "likelihood"}``
            (``None`` fields, or ``None``, for a picture embedded whole).
    """

    paths: Sequence[str]
    sizes: Sequence[int | None]
    mtimes_ns: Sequence[int | None]
    sha256: Sequence[str | None]
    errors: Sequence[str | None]
    features: np.ndarray | None = None
    codes: np.ndarray | None = None
    probs: Mapping[str, np.ndarray] | np.ndarray | None = None
    item_file: Sequence[int] | None = None
    faces: Sequence[dict[str, Any] | None] | None = None


@dataclass
class AppendResult:
    """Per file entry of an :class:`ItemBatch`: the row it now points to (``None``: failed, or no item)."""

    rows: list[int | None]


def model_identity(model) -> str:
    """The identity a collection records for ``model`` (its content hash)."""
    ident = getattr(model, "identity", None)
    if not ident:
        raise CollectionError(f"model {getattr(model, 'name', model)!r} has no identity; load it with illust2vec.load_model")
    return str(ident)


def short_identity(identity: str) -> str:
    """An identity for messages: the hash's start and what follows it (``+int8-cal...``: the precision)."""
    head, plus, tail = identity.partition("+")
    return head[:16] + plus + tail


def binarize_width(embedder, dim: int) -> int:
    """Bytes per binary code for ``embedder``'s features."""
    from illust2vec.collection.infer import binarize

    return int(binarize(embedder, np.zeros((1, dim), np.float32)).shape[1])


def _key(path: str) -> str:
    """The collection's name for a path: canonical for local files, URIs as they are."""
    return path if "://" in path else canonical_path(path)


class CollectionStore:
    """The writer of the collection in ``path`` (``col.store``); ``view`` is told to forget after writes."""

    def __init__(self, path: Path, conn, view: CollectionView) -> None:
        self.path = Path(path)
        self.conn = conn
        self.view = view
        self._lock_fh = None

    # ------------------------------------------------------------------ lock
    def _acquire_lock(self) -> None:
        if self._lock_fh is not None:
            raise CollectionError(f"{self.path}: a write session is already open on this collection object")
        if _db.is_read_only(self.conn):
            raise CollectionError(
                f"{self.path}: the collection is on read-only storage: it can be searched, exported, mapped "
                "and checked for duplicates, not changed; copy it to writable storage to index"
            )
        fh = open(self.path / "write.lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise CollectionError(
                f"{self.path}: another process is writing to this collection; wait for it to finish"
            ) from None
        self._lock_fh = fh

    def _release_lock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    @property
    def locked(self) -> bool:
        """Whether this store holds the writer lock (a session is open)."""
        return self._lock_fh is not None

    def close(self) -> None:
        self._release_lock()

    # ------------------------------------------------------------------ sessions
    def writing(self, *, embedder=None, taggers: Sequence[Any] = (), rebuild: bool = False, faces=None
                ) -> WriteSession:
        """Open a write session (a context manager): the lock, the model check, the models recorded.

        Args:
            embedder: the feature model of the files to be appended (``None``:
                this session only adds taggers' probabilities to stored rows).
            taggers: tag models whose probabilities come with the appended
                items; one the collection does not hold yet is added (its
                stored rows are then tagged with :meth:`WriteSession.append_probs`).
            rebuild: forget every stored vector, tagger and face item first
                (files, contents and user tags by hash are recomputed or kept).
            faces: the :class:`~illust2vec.faces.FaceOptions` of a face
                collection (``None``: one item per picture).

        Raises:
            ModelMismatchError: the collection's vectors come from another embedder.
            CollectionError: read-only storage, another writer, a tagger added to a
                face collection that has items, models without the needed outputs.
        """
        self._acquire_lock()
        try:
            return WriteSession(self, embedder, list(taggers), rebuild, faces)
        except BaseException:
            self._release_lock()
            raise

    def prune(self, roots: Sequence[str | os.PathLike] = (), *, missing_roots: bool = False,
              dry_run: bool = False) -> PrunePlan:
        """Drop files that no longer exist (see :mod:`.prune`); ``dry_run`` changes nothing."""
        if dry_run:
            return _plan(self.conn, roots, missing_roots)
        self._acquire_lock()
        try:
            plan = _prune(self.conn, roots, missing_roots)
            plan.compaction = self._compact()
            return plan
        finally:
            self._release_lock()
            self.view.forget()

    def compact(self) -> CompactReport:
        """Give back the disk of dropped pictures' vectors and database rows; see :mod:`.compact`.

        :meth:`prune` and a write session that pruned do it already; call this
        when they reported it deferred (a reader held an older snapshot).
        """
        self._acquire_lock()
        try:
            return self._compact()
        finally:
            self._release_lock()
            self.view.forget()

    def _compact(self) -> CompactReport:
        """:func:`.compact.compact` under the writer lock this store holds."""
        self.view.release_snapshot()  # this process's own reading must not hold the holes back
        snap = self.view.snapshot()
        files = [] if snap.empty else self.view.vector_files(snap)
        return compact(self.conn, self.path, snap, files)

    def remove_files(self, paths: Iterable[str | os.PathLike]) -> int:
        """Take files out of the collection (the files themselves are not touched); returns how many were recorded.

        A content left without any path is dropped with its vectors' rows
        (they stop being live; the search indexes are rebuilt without them).
        User tags stay (by content hash), for when the picture comes back.
        """
        keys = [_key(os.fspath(p)) for p in paths]
        self._acquire_lock()
        try:
            with _db.transaction(self.conn) as c:
                before = c.total_changes
                c.executemany("DELETE FROM files WHERE path=CAST(? AS TEXT)", [(_db.text_param(p),) for p in keys])
                removed = c.total_changes - before
                _delete_orphan_contents(c)
            return removed
        finally:
            self._release_lock()
            self.view.forget()

    # ------------------------------------------------------------------ user tags
    def set_user_tags(self, shas: Iterable[str], *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> int:
        """Record that the pictures ``shas`` have (``add``) or do not have (``remove``) tags; see :mod:`.user_tags`."""
        n = _ut.set_user_tags(self.conn, shas, add=add, remove=remove)
        self.view.forget()
        return n

    def forget_user_tags(self, shas: Iterable[str], tags: Iterable[str]) -> int:
        """Drop the user's decisions about ``tags`` for ``shas`` (the model's tags show again)."""
        n = _ut.forget_user_tags(self.conn, shas, tags)
        self.view.forget()
        return n

    def ensure_user_tags(self) -> bool:
        """Create the user-tags table of an older collection; ``False`` on read-only storage."""
        try:
            _ut.ensure_table(self.conn)
            return True
        except Exception:  # noqa: BLE001 - sqlite3.Error on read-only storage
            return False


class WriteSession:
    """An open write session (from :meth:`CollectionStore.writing`); use it as a context manager.

    Attributes:
        report: what the session did so far (:class:`AddReport`).
        taggers: the session's taggers (:class:`~.taggers.TaggerInfo`, in the order given).
        rows: vector rows committed.
    """

    def __init__(self, store: CollectionStore, embedder, tagger_models: list, rebuild: bool, faces) -> None:
        self.store, self.conn, self.path = store, store.conn, store.path
        self.embedder = embedder
        self.report = AddReport()
        self.closed = False
        c = self.conn
        meta = _db.get_all_meta(c)
        if int(meta.get("schema_version", _db.SCHEMA_VERSION)) < _db.SCHEMA_VERSION:
            _db.upgrade(c)  # a collection opened create=False and written to (a Ray merge)
        if embedder is not None:
            _faces.check_mode(self.path, _db.get_all_meta(c), faces, rebuild)
        if rebuild:
            self._reset()
        self._check_embedder(embedder)
        if embedder is not None and _db.get_meta(c, "faces", "") != _faces.options_key(faces):
            with _db.transaction(c) as t:
                _db.set_meta(t, "faces", _faces.options_key(faces))
        self.models: dict[str, Any] = {}
        self.taggers = [self._tagger(m) for m in tagger_models]
        self.rows = int(_db.get_meta(c, "rows", "0"))
        self.faces = bool(_db.get_meta(c, "faces"))
        self.floor = float(_db.get_meta(c, "prob_floor", str(DEFAULT_PROB_FLOOR)))
        self._files: dict[str, VectorFile] = {}
        self._open_vectors()
        self._known: dict[str, tuple] | None = None
        self._sha_row: dict[str, int] | None = None
        self.pruned = False  # prune ran in this session: compaction when it closes

    # ------------------------------------------------------------------ set-up
    def __enter__(self) -> WriteSession:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)

    def close(self, *, ok: bool = True) -> None:
        """Finish: contents no path points to any more are dropped, the lock is released."""
        if self.closed:
            return
        self.closed = True
        try:
            if ok:
                with _db.transaction(self.conn) as c:
                    _delete_orphan_contents(c)
                rows = self.rows
                self.report.lagging = {t.name: rows - t.rows for t in read_taggers(self.conn, _db.get_all_meta(self.conn))
                                       if t.rows < rows}
                if self.pruned:  # give the disk of what was dropped back, still under the lock
                    self.report.compaction = self.store._compact()
        finally:
            self.store._release_lock()
            self.store.view.forget()

    def _reset(self) -> None:
        c = self.conn
        m = _db.get_all_meta(c)
        files = [t.file for t in read_taggers(c, m)]
        with _db.transaction(c):
            c.execute("DELETE FROM tag_probs")
            c.execute("UPDATE files SET row=NULL, error=NULL, sha256=NULL, size=-1")
            c.execute("DELETE FROM contents")
            c.execute("DELETE FROM faces")
            c.execute("DELETE FROM tags")
            c.execute("DELETE FROM taggers")
            for k in ("embedder_name", "embedder_identity", "feature_dim", "code_bytes", "code_kind", "faces"):
                c.execute("DELETE FROM meta WHERE key=?", (k,))
            _db.set_meta(c, "rows", 0)
            _db.set_meta(c, "delete_gen", int(m.get("delete_gen", 0)) + 1)
        for name in ("feature.f32", "codes.u8", "prob.f32", *files):
            (self.path / name).unlink(missing_ok=True)

    def _check_embedder(self, embedder) -> None:
        if embedder is None:
            return
        c = self.conn
        m = _db.get_all_meta(c)
        e_id = model_identity(embedder)
        if "embedder_identity" in m:
            if m["embedder_identity"] != e_id:
                raise ModelMismatchError(
                    f"{self.path}: its features come from {m.get('embedder_name')!r} (identity "
                    f"{short_identity(m['embedder_identity'])}), not {getattr(embedder, 'name', '?')!r} "
                    f"(identity {short_identity(e_id)}). "
                    "Vectors of different embedders cannot be mixed: use the same embedder, index into a new "
                    "--db, or recompute every vector with --rebuild (taggers can be added without it: --tagger NAME)"
                )
            return
        dim = getattr(embedder, "feature_dim", None)
        if "feature" not in tuple(getattr(embedder, "outputs", ("feature",))) or not dim:
            raise CollectionError(f"model {getattr(embedder, 'name', '?')!r} has no feature output; pass a feature "
                                  "model as embedder (--model)")
        code_bytes = binarize_width(embedder, int(dim))
        with _db.transaction(c):
            _db.set_meta(c, "embedder_name", getattr(embedder, "name", ""))
            _db.set_meta(c, "embedder_identity", e_id)
            _db.set_meta(c, "feature_dim", int(dim))
            _db.set_meta(c, "code_bytes", code_bytes)
            _db.set_meta(c, "code_kind", getattr(embedder, "binarize", "positive"))
            if m.get("prob_floor") is None:
                _db.set_meta(c, "prob_floor", DEFAULT_PROB_FLOOR)

    def _tagger(self, model) -> TaggerInfo:
        """The stored tagger of ``model``, added to the collection first when it is new."""
        c = self.conn
        ident = model_identity(model)
        m = _db.get_all_meta(c)
        stored = read_taggers(c, m)
        for t in stored:
            if t.identity == ident:
                self.models[ident] = model
                return t
        tt = getattr(model, "tags", None)
        if tt is None:
            raise CollectionError(f"model {getattr(model, 'name', '?')!r} has no tags; pass a tag model as tagger "
                                  "(--tagger)")
        if m.get("faces") and int(m.get("rows", 0) or 0):
            raise CollectionError(
                f"{self.path}: a face collection gets its taggers when its faces are indexed; adding "
                f"{getattr(model, 'name', '?')!r} (the collection holds {describe(stored)}) needs --rebuild, or "
                "index into another --db")
        tid = max([t.id for t in stored], default=0) + 1
        base = max([t.tag_base + t.tag_count for t in stored], default=0)
        base = max(base, (c.execute("SELECT MAX(id) FROM tags").fetchone()[0] or -1) + 1)
        file = prob_file_name(tid)
        (self.path / file).unlink(missing_ok=True)  # left by a tagger of a --rebuild before: not ours
        with _db.transaction(c):
            c.execute("INSERT INTO taggers(id, name, identity, tag_base, tag_count, file, rows, added_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                      (tid, getattr(model, "name", "") or "", ident, base, len(tt.names), file, time.time()))
            c.executemany("INSERT INTO tags(id, name, category) VALUES (?, ?, ?)",
                          [(base + j, n, cat) for j, (n, cat) in enumerate(zip(tt.names, tt.categories))])
            if m.get("prob_floor") is None:
                _db.set_meta(c, "prob_floor", DEFAULT_PROB_FLOOR)
        self.models[ident] = model
        return TaggerInfo(tid, getattr(model, "name", "") or "", ident, base, len(tt.names), file, 0, time.time())

    def _open_vectors(self) -> None:
        """Open the vector files, cutting off records an interrupted writer appended but never committed."""
        m = _db.get_all_meta(self.conn)
        if "feature_dim" in m:
            self._files["feature"] = VectorFile(self.path / "feature.f32", int(m["feature_dim"]), "float32", create=True)
            self._files["codes"] = VectorFile(self.path / "codes.u8", int(m["code_bytes"]), "uint8", create=True)
        dropped = 0
        for vf in self._files.values():
            dropped = max(dropped, vf.truncate(self.rows))
        for t in read_taggers(self.conn, m):
            vf = self._files[t.identity] = VectorFile(self.path / t.file, t.tag_count, "float32", create=True)
            dropped = max(dropped, vf.truncate(t.rows))
        self.report.orphans_truncated = dropped

    def _refresh_taggers(self) -> None:
        by_id = {t.identity: t for t in read_taggers(self.conn, _db.get_all_meta(self.conn))}
        self.taggers = [by_id[t.identity] for t in self.taggers]

    # ------------------------------------------------------------------ what a writer reads
    def known_files(self) -> dict[str, tuple]:
        """``{path: (size, mtime_ns, sha256, row, error)}`` of every file recorded."""
        return {r[0]: r[1:] for r in self.conn.execute("SELECT path, size, mtime_ns, sha256, row, error FROM files")}

    def content_rows(self) -> dict[str, int]:
        """``{sha256: row}`` of every stored content."""
        return dict(self.conn.execute("SELECT sha256, row FROM contents").fetchall())

    def lagging(self) -> list[TaggerInfo]:
        """The session's taggers that have no probabilities for some stored rows (to fill with :meth:`append_probs`)."""
        self._refresh_taggers()
        return [t for t in self.taggers if t.rows < self.rows]

    # ------------------------------------------------------------------ writes
    def record_files(self, entries: Iterable[tuple[str, int, int, str | None, int | None, str | None]]) -> None:
        """Record ``(path, size, mtime_ns, sha256, row, error)`` of files in one transaction (links, errors, no-item pictures)."""
        now = time.time()
        with _db.transaction(self.conn) as c:
            for path, size, mtime, sha, row, error in entries:
                _upsert_file(c, path, size, mtime, sha, row, error, now)

    def drop_moved(self, rows: Iterable[int]) -> int:
        """Remove the paths of ``rows`` that no longer exist (their content moved to a new path); returns how many."""
        c = self.conn
        gone = []
        for row in set(rows):
            for (p,) in c.execute("SELECT path FROM files WHERE row=?", (row,)).fetchall():
                if not os.path.exists(p):
                    gone.append(p)
        with _db.transaction(c):
            c.executemany("DELETE FROM files WHERE path=CAST(? AS TEXT)", [(_db.text_param(p),) for p in gone])
        return len(gone)

    def prune(self, roots: Sequence[str | os.PathLike] = (), *, missing_roots: bool = False) -> PrunePlan:
        """Drop files that no longer exist (see :mod:`.prune`), under this session's lock; their disk is given
        back when the session closes (:meth:`CollectionStore.compact`, ``report.compaction``)."""
        plan = _prune(self.conn, roots, missing_roots)
        self.report.record_prune(plan)
        self.pruned = True
        return plan

    def _probs_of(self, batch: ItemBatch, n_items: int) -> dict[str, np.ndarray]:
        """The batch's probabilities per session tagger that covers every row (the others fall behind)."""
        appending = [t for t in self.taggers if t.rows == self.rows]
        probs = batch.probs
        if probs is None:
            probs = {}
        elif isinstance(probs, np.ndarray):
            if len(self.taggers) != 1:
                raise CollectionError("probabilities given as one array: the session needs exactly one tagger, "
                                      f"it has {len(self.taggers)}; give them per tagger identity")
            probs = {self.taggers[0].identity: probs}
        out = {}
        for t in appending:
            p = probs.get(t.identity)
            if p is None:
                if n_items:
                    raise CollectionError(f"{self.path}: the batch has no probabilities of tagger {t.name!r}; "
                                          "every item of a session gets every session tagger's")
                p = np.zeros((0, t.tag_count), np.float32)
            p = np.asarray(p, dtype=np.float32).reshape(-1, t.tag_count)
            if len(p) != n_items:
                raise CollectionError(f"tagger {t.name!r}: {len(p)} rows of probabilities for {n_items} items")
            out[t.identity] = p
        return out

    def append(self, batch: ItemBatch) -> AppendResult:
        """Add a batch of files with the vectors of their items (see :class:`ItemBatch`).

        A path recorded before with the same content is counted as unchanged;
        a content already stored (a copy, a moved file) is linked to its row
        instead of being stored twice; new contents get new rows.  The vectors
        are on disk before the transaction that references them commits.
        """
        if self.embedder is None and any(e is None for e in batch.errors):
            raise CollectionError("this write session has no embedder: it can only add taggers' probabilities")
        n = len(batch.paths)
        if not (len(batch.sizes) == len(batch.mtimes_ns) == len(batch.sha256) == len(batch.errors) == n):
            raise CollectionError("an ItemBatch needs one size, mtime, sha256 and error per path")
        if self._known is None:
            self._known = {p: (sha, row) for p, (_, _, sha, row, _) in self.known_files().items()}
            self._sha_row = self.content_rows()
        known, sha_row = self._known, self._sha_row
        good = [j for j, e in enumerate(batch.errors) if e is None]
        item_file = list(good) if batch.item_file is None else [int(j) for j in batch.item_file]
        n_items = len(item_file)
        feats = np.zeros((0, 0), np.float32) if batch.features is None else np.asarray(batch.features)
        if n_items and (batch.features is None or batch.codes is None or len(feats) != n_items
                        or len(batch.codes) != n_items):
            raise CollectionError(f"an ItemBatch with {n_items} items needs {n_items} features and codes")
        probs = self._probs_of(batch, n_items)
        items_of: dict[int, list[int]] = {}
        for q, j in enumerate(item_file):
            items_of.setdefault(j, []).append(q)
        faces = self.faces
        new_items: list[int] = []
        new_contents: list[tuple[int, str]] = []  # (row, sha)
        face_rows: list[tuple] = []
        plan: list[tuple] = []
        pending: dict[str, int] = {}
        result: list[int | None] = [None] * n
        rows = self.rows
        for j in good:
            path, sha = _key(batch.paths[j]), batch.sha256[j]
            size, mtime = batch.sizes[j] or 0, batch.mtimes_ns[j] or 0
            self.report.seen += 1
            prev = known.get(path)
            if prev is not None and prev[0] == sha and prev[1] is not None:
                self.report.unchanged += 1
                result[j] = prev[1]
                continue
            row = sha_row.get(sha, pending.get(sha))
            if row is None:
                its = items_of.get(j, [])
                if not its:  # no item (a picture without a face under faces_only): hash recorded, no row
                    plan.append((path, size, mtime, sha, None, None))
                    continue
                row = pending[sha] = rows + len(new_items)
                new_contents.append((row, sha))
                for k, q in enumerate(its):
                    if faces:  # every item of a face collection is in ``faces``; a whole picture has no box
                        f = (batch.faces[q] or {}) if batch.faces is not None else {}
                        box = f.get("box")
                        face_rows.append((row + k, row, f.get("face_index"),
                                          *(box if box is not None else (None,) * 4), f.get("likelihood")))
                    new_items.append(q)
                self.report.added += 1
            else:
                self.report.linked += 1
            plan.append((path, size, mtime, sha, row, None))
            known[path] = (sha, row)
            result[j] = row
        for j, msg in enumerate(batch.errors):
            if msg is not None:
                self.report.seen += 1
                path = _key(batch.paths[j])
                plan.append((path, batch.sizes[j] if batch.sizes[j] is not None else -1,
                             batch.mtimes_ns[j] if batch.mtimes_ns[j] is not None else -1, batch.sha256[j], None, msg))
                self.report.failed.append((path, msg))
        if new_items:
            self._files["feature"].append(np.asarray(feats[new_items], np.float32), expect_row=rows)
            self._files["codes"].append(np.asarray(np.asarray(batch.codes)[new_items], np.uint8), expect_row=rows)
            for ident, p in probs.items():
                self._files[ident].append(p[new_items], expect_row=rows)
        now = time.time()
        top = rows + len(new_items)
        by_ident = {t.identity: t for t in self.taggers}
        with _db.transaction(self.conn) as c:
            c.executemany("INSERT INTO contents(row, sha256, added_at) VALUES (?, ?, ?)",
                          [(r, s, now) for r, s in new_contents])
            if face_rows:
                c.executemany("INSERT INTO faces(row, content, face_index, x, y, w, h, likelihood) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", face_rows)
            for ident, p in probs.items():
                if new_items:
                    _insert_probs(c, p[new_items], rows, by_ident[ident].tag_base, self.floor)
                c.execute("UPDATE taggers SET rows=? WHERE identity=?", (top, ident))
            for path, size, mtime, sha, row, msg in plan:
                _upsert_file(c, path, size, mtime, sha, row, msg, now)
            _db.set_meta(c, "rows", top)
        self.rows = top
        for sha, row in pending.items():
            sha_row[sha] = row
        self._refresh_taggers()
        return AppendResult(result)

    def append_probs(self, tagger: TaggerInfo, probs: np.ndarray) -> TaggerInfo:
        """Append a tagger's probabilities for the stored rows ``tagger.rows ...`` (NaN rows: no tags).

        ``probs`` is ``(n, T)``, the next ``n`` rows the tagger has not got
        yet; they are flushed, then committed with their ``tag_probs``.
        Returns the tagger as it is now.
        """
        t = next(x for x in read_taggers(self.conn, _db.get_all_meta(self.conn)) if x.identity == tagger.identity)
        p = np.asarray(probs, dtype=np.float32).reshape(-1, t.tag_count)
        if t.rows + len(p) > self.rows:
            raise CollectionError(f"tagger {t.name!r}: probabilities for rows up to {t.rows + len(p)}, "
                                  f"the collection has {self.rows}")
        if len(p):
            self._files[t.identity].append(p, expect_row=t.rows)
        with _db.transaction(self.conn) as c:
            _insert_probs(c, p, t.rows, t.tag_base, self.floor)
            c.execute("UPDATE taggers SET rows=? WHERE identity=?", (t.rows + len(p), t.identity))
        self._refresh_taggers()
        return next(x for x in read_taggers(self.conn, _db.get_all_meta(self.conn)) if x.identity == t.identity)


def _insert_probs(c, p: np.ndarray, first_row: int, base: int, floor: float) -> None:
    """``tag_probs`` rows of every probability ``>= floor`` of ``p`` (rows ``first_row...``); NaN never is."""
    rr, tt = np.nonzero(np.asarray(p, dtype=np.float64) >= floor)
    if len(rr):
        vals = np.asarray(p, dtype=np.float64)[rr, tt]
        c.executemany("INSERT INTO tag_probs(tag_id, prob, row) VALUES (?, ?, ?)",
                      zip((tt + base).tolist(), vals.tolist(), (rr + first_row).tolist()))


def _upsert_file(c, path, size, mtime, sha, row, error, now) -> None:
    c.execute(
        "INSERT INTO files(path, size, mtime_ns, sha256, row, error, updated_at) "
        "VALUES (CAST(? AS TEXT), ?, ?, ?, ?, CAST(? AS TEXT), ?) "
        "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, "
        "row=excluded.row, error=excluded.error, updated_at=excluded.updated_at",
        (_db.text_param(path), size, mtime, sha, row, _db.text_param(error), now),
    )


def _plan(conn, roots, missing_roots: bool) -> PrunePlan:
    return plan_prune([p for (p,) in conn.execute("SELECT path FROM files").fetchall()], roots,
                      missing_roots=missing_roots)


def _prune(conn, roots, missing_roots: bool) -> PrunePlan:
    plan = _plan(conn, roots, missing_roots)
    if plan.drop:
        with _db.transaction(conn) as c:
            c.executemany("DELETE FROM files WHERE path=CAST(? AS TEXT)", [(_db.text_param(p),) for p in plan.drop])
            _delete_orphan_contents(c)
    return plan


def _delete_orphan_contents(c) -> int:
    """Drop contents no file points to any more, with their face items and tag probabilities."""
    orphans = [r for (r,) in c.execute(
        "SELECT row FROM contents WHERE NOT EXISTS (SELECT 1 FROM files WHERE files.row = contents.row)"
    ).fetchall()]
    if orphans:
        items = [r for o in orphans for (r,) in c.execute("SELECT row FROM faces WHERE content=?", (o,)).fetchall()]
        c.executemany("DELETE FROM tag_probs WHERE row=?", [(r,) for r in items])
        c.executemany("DELETE FROM faces WHERE row=?", [(r,) for r in items])
        c.executemany("DELETE FROM tag_probs WHERE row=?", [(r,) for r in orphans])
        c.executemany("DELETE FROM contents WHERE row=?", [(r,) for r in orphans])
        _db.set_meta(c, "delete_gen", int(_db.get_meta(c, "delete_gen", "0")) + 1)
    return len(orphans)
