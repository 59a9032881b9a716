"""The :class:`Collection`: a directory of indexed images that can be searched.

Layout of a collection directory::

    collection.sqlite (+ -wal, -shm)   files, hashes, models, taggers, tags, user tags, errors
    feature.f32                        float features, one record per content (or face item)
    codes.u8                           packed binary codes
    prob.f32, prob-2.f32, ...          tag probabilities, one file per tagger (see .taggers)
    index/                             FAISS indexes, near-duplicate pairs, other caches (rebuilt when stale)
    write.lock                         held while a writer adds or prunes
    leases/                            readers' snapshot leases (see :mod:`.compact`)

A :class:`Collection` holds the two halves of the collection: ``col.view``
(:class:`~illust2vec.collection.view.CollectionView`, every read) and
``col.store`` (:class:`~illust2vec.collection.store.CollectionStore`, the only
writer).  Its methods are the library's entry points; search, duplicates and
export are functions over the view (:mod:`.search`, :mod:`.dupes`,
:mod:`.export`), indexing is :mod:`.indexer` feeding the store.  Nothing in
``collection/`` imports this module: information flows one way.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.collection import db as _db
from illust2vec.collection.compact import CompactReport
from illust2vec.collection.db import DB_NAME
from illust2vec.collection.errors import CollectionError, ModelMismatchError
from illust2vec.collection.paths import canonical_path
from illust2vec.collection.prune import PrunePlan
from illust2vec.collection.store import AddReport, CollectionStore
from illust2vec.collection.taggers import TaggerInfo, describe
from illust2vec.collection.view import CollectionView

__all__ = ["DB_NAME", "AddReport", "Collection", "canonical_path", "database_error"]


def database_error(folder: str | os.PathLike, exc: sqlite3.Error) -> CollectionError:
    """A one-line :class:`CollectionError` for an SQLite error on the collection in ``folder`` (disk full,
    damaged database, permissions), saying what to do."""
    return _db.explain(Path(folder) / DB_NAME, exc)


class Collection:
    """A collection directory opened for reading (and writing with :meth:`add`).

    Use :meth:`open`; it is a context manager::

        with Collection.open("my.i2v") as col:
            col.add(["pictures/"], embedder=load_model(task="feature"), tagger=load_model(task="tag"))
            hits = col.search(image="query.jpg", k=10)
            hits = col.search(tags="smile, -hat, user:favourite")

    Attributes:
        path: the collection directory.
        view: every read (:class:`~illust2vec.collection.view.CollectionView`).
        store: the writer (:class:`~illust2vec.collection.store.CollectionStore`).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.view = CollectionView(path, conn)
        self.store = CollectionStore(path, conn, self.view)

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> Collection:
        """Open the collection in directory ``path`` (created when ``create`` and missing).

        Opening with ``create`` (a writer) upgrades a collection made by an
        older version in place (see :mod:`.db`); ``create=False`` reads it as it is.
        """
        p = Path(path).expanduser()
        if p.suffix == ".sqlite" and p.name == DB_NAME:
            p = p.parent
        if p.exists() and not p.is_dir():
            raise CollectionError(f"{p}: is a file; a collection is a directory, give a directory path to --db")
        if not p.exists():
            if not create:
                raise CollectionError(f"{p}: no collection here; create one with 'illust2vec index DIR --db {p}'")
            p.mkdir(parents=True)
        conn = _db.connect(p / DB_NAME, create=create)
        return cls(p.resolve(), conn)

    def close(self) -> None:
        """Close the database (and release the writer lock if held)."""
        self.store.close()
        self.view.release_snapshot()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.view.forget()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of indexed files (paths)."""
        return len(self.view)

    def release_snapshot(self) -> None:
        """Stop holding the last snapshot read (the next read takes one again; see :mod:`.compact`).

        A reader that stays open while idle (the web app between requests)
        calls this so that compaction of dropped pictures need not wait for it.
        """
        self.view.release_snapshot()

    # ------------------------------------------------------------------ reading
    @property
    def meta(self) -> dict[str, str]:
        """The collection's metadata (embedder, schema version, row counts)."""
        return self.view.meta

    def info(self) -> dict[str, Any]:
        """Counts and models (``taggers``: every tagger; ``tagger``: the one queries use by default)."""
        return self.view.info()

    def taggers(self) -> list[TaggerInfo]:
        """The taggers whose probabilities the collection holds, oldest first."""
        return self.view.taggers()

    def errors(self) -> list[tuple[str, str]]:
        """``(path, message)`` for every file that could not be indexed."""
        return self.view.errors()

    def rows_to_paths(self, rows: Sequence[int]) -> dict[int, list[str]]:
        """Indexed paths of each vector row (of the picture, for a face row)."""
        return self.view.rows_to_paths(rows)

    def vectors(self, kind: str = "feature", rows: Sequence[int] | None = None, *, tagger=None) -> np.ndarray:
        """Stored ``"feature"``, ``"codes"`` or ``"prob"`` vectors of ``rows`` (all live rows by default);
        ``"prob"`` of ``tagger`` (default: the most recently added)."""
        return self.view.vectors(kind, rows, tagger=tagger)

    def live_rows(self) -> np.ndarray:
        """Vector rows of indexed contents, sorted."""
        return self.view.live_rows()

    def row_of_path(self, path: str | os.PathLike) -> int | None:
        """The vector row of an indexed file (by path, or by content hash when the path is unknown)."""
        return self.view.row_of_path(path)

    def search(self, image=None, vector=None, *, k: int | None = 20, binary: bool = False, tags=None,
               not_tags=None, min_prob: float = 0.5, tagger=None, embedder=None, nprobe: int | None = None,
               include_query: bool = False):
        """Similar images and/or tag matches; see :func:`illust2vec.collection.search.search`.

        A query file that is in the collection is left out of the results unless ``include_query``.
        """
        from illust2vec.collection.search import search

        return search(self.view, image=image, vector=vector, k=k, binary=binary, tags=tags, not_tags=not_tags,
                      min_prob=min_prob, tagger=tagger, embedder=embedder, nprobe=nprobe,
                      include_query=include_query)

    def match_tags(self, tags=None, not_tags=None, *, min_prob: float = 0.5, tagger=None) -> np.ndarray:
        """Sorted live rows where a tag expression holds (user tags included); see :mod:`.query`."""
        return self.view.match_tags(tags, not_tags, min_prob=min_prob, tagger=tagger).rows

    def query_vector(self, image=None, vector=None, *, embedder=None, binary: bool = False):
        """``(feature or None, code or None, row or None)`` of a query; see :func:`.search.query_vector`."""
        from illust2vec.collection.search import query_vector

        return query_vector(self.view, image, vector, embedder=embedder, binary=binary)

    def nearest_rows(self, queries: np.ndarray, k: int, *, binary: bool = False) -> list[np.ndarray]:
        """The ``k`` nearest live rows of each query vector; see :func:`.search.nearest_rows`."""
        from illust2vec.collection.search import nearest_rows

        return nearest_rows(self.view, queries, k, binary=binary)

    def dupes(self, max_distance: int | None = None, *, progress: bool = False):
        """Groups of near-duplicate files; see :func:`illust2vec.collection.dupes.find_dupes`.

        ``max_distance`` defaults to a fraction of the code length that suits the
        kind of code (:data:`illust2vec.collection.dupes.NEAR_FRACTION`: 82 of
        i2v's 4096 bits, 819 of the generic embedder's 4096 SimHash bits).
        """
        from illust2vec.collection.dupes import default_max_distance, find_dupes

        if max_distance is None:
            max_distance = default_max_distance(self.view)
        return find_dupes(self.view, max_distance=max_distance, progress=progress)

    def export(self, path: str | os.PathLike | None, format: str | None = None, **kw) -> int:
        """Write paths, tags, probabilities and vectors to a file; see :func:`illust2vec.collection.export.export`."""
        from illust2vec.collection.export import export

        return export(self.view, path, format=format, **kw)

    # ------------------------------------------------------------------ writing
    def add(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        embedder,
        tagger=None,
        taggers: Sequence[Any] = (),
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool = True,
        prune: bool = False,
        rebuild: bool = False,
        faces=None,
        prune_missing: bool = False,
    ) -> AddReport:
        """Index image files and directories (recursively) into the collection.

        Incremental: a file whose size and mtime did not change is skipped; a
        file whose content (SHA-256) is already indexed only gets its path
        recorded (a moved file keeps its vectors, and the old path is dropped
        when it no longer exists).  Files that fail to decode are recorded
        with their error and retried only when their size, mtime and hash
        change.  Vectors are written and committed batch by batch, so an
        interrupted run loses at most the batch in flight and the next run
        goes on where it stopped.

        Several taggers' probabilities are kept side by side.  A tagger the
        collection does not hold yet is added: the stored pictures are tagged
        with it (only the tagger runs, nothing is embedded again; a picture
        whose files are gone is listed in :attr:`AddReport.untagged`), and
        from then on every new picture gets it.

        Args:
            paths: files, directories or globs (see :func:`illust2vec.io.images.iter_image_files`).
            embedder: the feature model (``outputs`` contains ``"feature"``).
            tagger: a tag model whose probabilities are stored for tag queries
                (may be the embedder itself when it has both outputs).
            taggers: more tag models (every tagger the collection holds must
                be given, so that new pictures get all their tags).
            batch_size: images per inference batch and per database commit.
            workers: decode worker processes (``None``: automatic, 0: decode in this process).
            progress: show tqdm progress bars on stderr.
            prune: drop files that no longer exist from the collection, except
                under a folder that is missing or empty (an unmounted drive), see
                :mod:`illust2vec.collection.prune`; then give back their disk
                (:meth:`compact`, reported in ``AddReport.compaction``).
            prune_missing: with ``prune``, drop those too.
            rebuild: forget all stored vectors and taggers and recompute them
                with these models (needed after changing the embedder).
            faces: a :class:`illust2vec.faces.FaceOptions`: one item (vector
                row) per detected face, the whole picture when none is found
                (unless ``faces_only``); see :mod:`illust2vec.collection.faces`.
                A collection is made with or without faces, with one set of
                face options; adding the other way raises :class:`CollectionError`.

        Raises:
            ModelMismatchError: the collection holds vectors of another
                embedder (and ``rebuild`` is false), or a stored tagger is missing
                from ``tagger``/``taggers``.
        """
        from illust2vec.collection.indexer import index_files

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        models = _taggers(tagger, taggers)
        if not rebuild:
            self._check_all_taggers_given(models)
        try:
            with self.store.writing(embedder=embedder, taggers=models, rebuild=rebuild, faces=faces) as w:
                index_files(w, self.view, list(paths), embedder=embedder, taggers=models, batch_size=batch_size,
                            workers=workers, progress=progress, prune=prune, prune_missing=prune_missing,
                            faces=faces)
            return w.report
        except sqlite3.Error as exc:  # disk full, damaged file...: one line naming the database
            raise _db.explain(self.path / DB_NAME, exc) from exc

    def add_tagger(self, tagger, *, batch_size: int = 32, workers: int | None = None,
                   progress: bool = True) -> AddReport:
        """Add a tagger's probabilities for the stored pictures without embedding anything again.

        Also finishes a tagger whose tagging was interrupted.  Only the tagger
        runs, over one existing path of each stored content; contents whose
        files are all gone are reported in :attr:`AddReport.untagged`.
        """
        from illust2vec.collection.indexer import fill_taggers

        try:
            with self.store.writing(taggers=[tagger]) as w:
                fill_taggers(w, self.view, [tagger], batch_size=batch_size, workers=workers, progress=progress)
            return w.report
        except sqlite3.Error as exc:
            raise _db.explain(self.path / DB_NAME, exc) from exc

    def _check_all_taggers_given(self, models: Sequence[Any]) -> None:
        given = {str(getattr(m, "identity", "")) for m in models}
        missing = [t for t in self.view.taggers() if t.identity not in given]
        if missing:
            now = ", ".join(repr(getattr(m, "name", "?")) for m in models) or "no tagger"
            raise ModelMismatchError(
                f"{self.path}: its tag probabilities come from {describe(missing)}, not only from {now}: every "
                "picture of a collection gets every stored tagger's tags. Give those taggers too (the CLI does by "
                "default: leave --tagger out or name another one to add it), index into a new --db, or "
                "recompute every vector with --rebuild")

    def prune(self, roots: Sequence[str | os.PathLike] = (), *, missing_roots: bool = False,
              dry_run: bool = False) -> PrunePlan:
        """Drop files that no longer exist; returns what was dropped and what was kept.

        Entries under a folder (one of ``roots``, or the file's own folder)
        that is missing or empty are kept unless ``missing_roots``: an
        unmounted drive must not empty the collection.  ``dry_run`` changes
        nothing and returns the plan; otherwise the dropped pictures' disk is
        given back (``plan.compaction``, see :meth:`compact`).
        """
        return self.store.prune(roots, missing_roots=missing_roots, dry_run=dry_run)

    def compact(self) -> CompactReport:
        """Give back the disk of dropped pictures' vectors and database rows; see :mod:`illust2vec.collection.compact`.

        ``index --prune`` and :meth:`prune` do this already; call it when they
        reported it deferred (a reader held an older snapshot).
        """
        try:
            return self.store.compact()
        except sqlite3.Error as exc:
            raise _db.explain(self.path / DB_NAME, exc) from exc

    def set_user_tags(self, shas: Iterable[str], *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> int:
        """Add or remove user tags on pictures by content hash (see :mod:`.user_tags`); returns records written."""
        return self.store.set_user_tags(shas, add=add, remove=remove)

    def forget_user_tags(self, shas: Iterable[str], tags: Iterable[str]) -> int:
        """Drop the user's decisions about ``tags`` for ``shas`` (the model's tags show again)."""
        return self.store.forget_user_tags(shas, tags)

    def tag_files(self, paths: Iterable[str | os.PathLike], *, add: Iterable[str] = (),
                  remove: Iterable[str] = ()) -> int:
        """User tags by file path (each file's content gets them); returns records written.

        Raises :class:`CollectionError` naming a path that is not indexed.
        """
        shas = []
        table = self.view.file_table()
        for p in paths:
            k = table.by_path.get(canonical_path(p))
            if k is None:
                raise CollectionError(f"{p}: not indexed in {self.path}")
            shas.append(table.shas[k])
        return self.set_user_tags(shas, add=add, remove=remove)


def _taggers(tagger, taggers: Sequence[Any]) -> list[Any]:
    """``tagger`` and ``taggers`` as one list, each model once."""
    out: list[Any] = []
    for m in ([tagger] if tagger is not None else []) + list(taggers):
        if all(m is not x and getattr(m, "identity", None) != getattr(x, "identity", object()) for x in out):
            out.append(m)
    return out
