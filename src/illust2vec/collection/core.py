"""The :class:`Collection`: a directory of indexed images that can be searched.

Layout of a collection directory::

    collection.sqlite (+ -wal, -shm)   files, hashes, models, tags, errors
    feature.f32                        float features, one record per content
    codes.u8                           packed binary codes
    prob.f32                           tag probabilities (when a tagger was used)
    index/                             FAISS indexes (caches, rebuilt when stale)
    write.lock                         held while a writer adds or prunes
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from illust2vec.collection import db as _db
from illust2vec.collection.prune import PrunePlan, plan_prune
from illust2vec.collection.errors import CollectionError, ModelMismatchError
from illust2vec.collection.vectors import VectorFile
from illust2vec.models.store import sha256_file

DB_NAME = "collection.sqlite"
DEFAULT_PROB_FLOOR = 0.01


def _short_identity(identity: str) -> str:
    """An identity for messages: the hash's start and what follows it (``+int8-cal...``: the precision)."""
    head, plus, tail = identity.partition("+")
    return head[:16] + plus + tail


def _model_identity(model) -> str:
    ident = getattr(model, "identity", None)
    if not ident:
        raise CollectionError(f"model {getattr(model, 'name', model)!r} has no identity; load it with illust2vec.load_model")
    return str(ident)


@dataclass
class AddReport:
    """What :meth:`Collection.add` did."""

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


class Collection:
    """A collection directory opened for reading (and writing with :meth:`add`).

    Use :meth:`open`; it is a context manager::

        with Collection.open("my.i2v") as col:
            col.add(["pictures/"], embedder=load_model(task="feature"), tagger=load_model(task="tag"))
            hits = col.search(image="query.jpg", k=10)
    """

    def __init__(self, path: Path, conn) -> None:
        self.path = path
        self.conn = conn
        self._lock_fh = None
        self._cache: dict[str, object] = {}
        self._embedder = None

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True) -> "Collection":
        """Open the collection in directory ``path`` (created when ``create`` and missing)."""
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
        self._release_lock()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._cache.clear()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of indexed files (paths)."""
        return self.conn.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()[0]

    # ------------------------------------------------------------------ metadata
    @property
    def meta(self) -> dict[str, str]:
        """The collection's metadata (models, schema version, row counts)."""
        return _db.get_all_meta(self.conn)

    def info(self) -> dict[str, object]:
        """Counts and models, for ``illust2vec index`` summaries and ``--json``."""
        m = self.meta
        c = self.conn
        return {
            "path": str(self.path),
            "schema_version": int(m["schema_version"]),
            "files": c.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()[0],
            "contents": c.execute("SELECT COUNT(*) FROM contents").fetchone()[0],
            "errors": c.execute("SELECT COUNT(*) FROM files WHERE error IS NOT NULL").fetchone()[0],
            "embedder": m.get("embedder_name"),
            "embedder_identity": m.get("embedder_identity"),
            "feature_dim": int(m["feature_dim"]) if "feature_dim" in m else None,
            "tagger": m.get("tagger_name") or None,
            "tagger_identity": m.get("tagger_identity") or None,
            "tags": int(m.get("tag_count", 0)),
        }

    def errors(self) -> list[tuple[str, str]]:
        """``(path, message)`` for every file that could not be indexed."""
        return self.conn.execute("SELECT path, error FROM files WHERE error IS NOT NULL ORDER BY path").fetchall()

    def _vector_files(self, m: dict[str, str] | None = None) -> dict[str, VectorFile]:
        m = m or self.meta
        if "feature_dim" not in m:
            return {}
        out = {
            "feature": VectorFile(self.path / "feature.f32", int(m["feature_dim"]), "float32", create=True),
            "codes": VectorFile(self.path / "codes.u8", int(m["code_bytes"]), "uint8", create=True),
        }
        if int(m.get("tag_count", 0)):
            out["prob"] = VectorFile(self.path / "prob.f32", int(m["tag_count"]), "float32", create=True)
        return out

    # ------------------------------------------------------------------ writer side
    def _acquire_lock(self) -> None:
        if self._lock_fh is not None:
            return
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

    def _check_models(self, embedder, tagger, rebuild: bool) -> None:
        m = self.meta
        e_id = _model_identity(embedder)
        t_id = _model_identity(tagger) if tagger is not None else ""
        if "embedder_identity" in m and not rebuild:
            problems = []
            if m["embedder_identity"] != e_id:
                problems.append(
                    f"its features come from {m.get('embedder_name')!r} (identity {_short_identity(m['embedder_identity'])}), "
                    f"not {getattr(embedder, 'name', '?')!r} (identity {_short_identity(e_id)})"
                )
            if m.get("tagger_identity", "") != t_id:
                was = f"{m.get('tagger_name')!r} (identity {m['tagger_identity'][:16]})" if m.get("tagger_identity") else "no tagger"
                now = f"{getattr(tagger, 'name', '?')!r} (identity {t_id[:16]})" if tagger is not None else "no tagger"
                problems.append(f"its tag probabilities come from {was}, not {now}")
            if problems:
                raise ModelMismatchError(
                    f"{self.path}: " + "; ".join(problems) + ". Vectors of different models cannot be mixed: "
                    "use the same models, index into a new --db, or recompute every vector with --rebuild"
                )
            return
        dim = getattr(embedder, "feature_dim", None)
        if "feature" not in tuple(getattr(embedder, "outputs", ("feature",))) or not dim:
            raise CollectionError(f"model {getattr(embedder, 'name', '?')!r} has no feature output; pass a feature model as embedder (--model)")
        if tagger is not None and getattr(tagger, "tags", None) is None:
            raise CollectionError(f"model {getattr(tagger, 'name', '?')!r} has no tags; pass a tag model as tagger (--tagger)")
        code_bytes = binarize_width(embedder, int(dim))
        with _db.transaction(self.conn) as c:
            if rebuild:
                c.execute("DELETE FROM tag_probs")
                c.execute("UPDATE files SET row=NULL, error=NULL, sha256=NULL, size=-1")
                c.execute("DELETE FROM contents")
                c.execute("DELETE FROM faces")
                c.execute("DELETE FROM tags")
                _db.set_meta(c, "rows", 0)
                _db.set_meta(c, "delete_gen", int(m.get("delete_gen", 0)) + 1)
                for name in ("feature.f32", "codes.u8", "prob.f32"):
                    (self.path / name).unlink(missing_ok=True)
            _db.set_meta(c, "embedder_name", getattr(embedder, "name", ""))
            _db.set_meta(c, "embedder_identity", e_id)
            _db.set_meta(c, "feature_dim", int(dim))
            _db.set_meta(c, "code_bytes", code_bytes)
            _db.set_meta(c, "code_kind", getattr(embedder, "binarize", "positive"))
            _db.set_meta(c, "tagger_name", getattr(tagger, "name", "") if tagger is not None else "")
            _db.set_meta(c, "tagger_identity", t_id)
            if m.get("prob_floor") is None:
                _db.set_meta(c, "prob_floor", DEFAULT_PROB_FLOOR)
            if tagger is not None:
                tt = tagger.tags
                c.executemany(
                    "INSERT INTO tags(id, name, category) VALUES (?, ?, ?)",
                    list(zip(range(len(tt.names)), tt.names, tt.categories)),
                )
                _db.set_meta(c, "tag_count", len(tt.names))
            else:
                _db.set_meta(c, "tag_count", 0)
        self._cache.clear()

    def add(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        embedder,
        tagger=None,
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

        Args:
            paths: files, directories or globs (see :func:`illust2vec.io.images.iter_image_files`).
            embedder: the feature model (``outputs`` contains ``"feature"``).
            tagger: optional tag model whose probabilities are stored for tag
                queries; may be the embedder itself when it has both outputs.
            batch_size: images per inference batch and per database commit.
            workers: decode worker processes (``None``: automatic, 0: decode in this process).
            progress: show tqdm progress bars on stderr.
            prune: drop files that no longer exist from the collection, except
                under a folder that is missing or empty (an unmounted drive), see
                :mod:`illust2vec.collection.prune`.
            prune_missing: with ``prune``, drop those too.
            rebuild: forget all stored vectors and recompute them with these
                models (needed after changing models).
            faces: a :class:`illust2vec.faces.FaceOptions`: one item (vector
                row) per detected face, the whole picture when none is found
                (unless ``faces_only``); see :mod:`illust2vec.collection.faces`.
                A collection is made with or without faces, with one set of
                face options; adding the other way raises :class:`CollectionError`.

        Raises:
            ModelMismatchError: the collection holds vectors of other models
                (and ``rebuild`` is false).
        """
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._acquire_lock()
        try:
            return self._add(list(paths), embedder, tagger, batch_size, workers, progress, prune, rebuild, faces,
                             prune_missing)
        except sqlite3.Error as exc:  # disk full, damaged file...: one line naming the database
            raise _db.explain(self.path / DB_NAME, exc) from exc
        finally:
            self._release_lock()

    def _open_for_write(self) -> tuple[dict[str, VectorFile], int]:
        rows = int(_db.get_meta(self.conn, "rows", "0"))
        vfs = self._vector_files()
        dropped = 0
        for vf in vfs.values():
            dropped = max(dropped, vf.truncate(rows))
        return vfs, dropped

    def _add(self, paths, embedder, tagger, batch_size, workers, progress, prune, rebuild, faces=None,
             prune_missing=False) -> AddReport:
        from illust2vec.runtime.progress import progress_bar

        from illust2vec.collection import faces as _faces
        from illust2vec.collection.infer import binarize, infer

        _faces.check_mode(self, faces, rebuild)
        self._check_models(embedder, tagger, rebuild)
        if self.meta.get("faces", "") != _faces.options_key(faces):
            _faces.set_mode(self, faces)
        report = AddReport()
        vfs, report.orphans_truncated = self._open_for_write()
        c = self.conn
        files = _list_image_files(paths)
        report.seen = len(files)
        known = {
            r[0]: r[1:]
            for r in c.execute("SELECT path, size, mtime_ns, sha256, row, error FROM files")
        }
        sha_row = dict(c.execute("SELECT sha256, row FROM contents").fetchall())
        todo: dict[str, list[tuple[str, int, int]]] = {}  # sha -> [(path, size, mtime)]
        link: list[tuple[str, int, int, str, int]] = []
        errs: list[tuple[str, int, int, str | None, str]] = []
        bar = progress_bar(len(files), desc="scanning", unit="file", enabled=progress, leave=False, iterable=files)
        for path in bar:
            try:
                st = os.stat(path)
            except OSError as exc:
                errs.append((path, -1, -1, None, f"cannot read file: {exc.strerror or exc}"))
                continue
            prev = known.get(path)
            if prev is not None and prev[0] == st.st_size and prev[1] == st.st_mtime_ns:
                # indexed, or hashed without an item (no face, faces_only: see collection.faces)
                if prev[3] is not None or (prev[2] is not None and prev[4] is None):
                    report.unchanged += 1
                    continue
                if prev[4] is not None:
                    report.still_bad += 1
                    continue
            try:
                sha = sha256_file(path)
            except OSError as exc:
                errs.append((path, st.st_size, st.st_mtime_ns, None, f"cannot read file: {exc.strerror or exc}"))
                continue
            if sha in sha_row:
                link.append((path, st.st_size, st.st_mtime_ns, sha, sha_row[sha]))
            elif prev is not None and prev[4] is not None and prev[2] == sha:
                # failed before with the same bytes: record the new stat, do not retry
                errs.append((path, st.st_size, st.st_mtime_ns, sha, prev[4]))
                report.still_bad += 1
            else:
                todo.setdefault(sha, []).append((path, st.st_size, st.st_mtime_ns))
        bar.close()
        now = time.time()
        with _db.transaction(c):
            for path, size, mtime, sha, row in link:
                _upsert_file(c, path, size, mtime, sha, row, None, now)
                report.linked += 1
            report.moved += _drop_moved(c, {row for *_, row in link})
            for path, size, mtime, sha, msg in errs:
                _upsert_file(c, path, size, mtime, sha, None, msg, now)
                if msg is not None and (path, msg) not in report.failed and sha is None:
                    report.failed.append((path, msg))
        if prune:
            plan = self._prune(paths, missing_roots=prune_missing)
            report.pruned, report.pruned_paths, report.prune_kept = len(plan.drop), plan.drop, plan.kept

        if faces is not None:
            _faces.add_faces(self, c, vfs, todo, embedder, tagger, faces, batch_size=batch_size, workers=workers,
                             progress=progress, report=report, upsert_file=_upsert_file)
            todo = {}
        shas = list(todo)
        reps = [todo[s][0][0] for s in shas]
        floor = float(_db.get_meta(c, "prob_floor", str(DEFAULT_PROB_FLOOR)))
        rows = int(_db.get_meta(c, "rows", "0"))
        bar = progress_bar(len(reps), desc="indexing", enabled=bool(progress and reps))
        try:
            for batch in infer(reps, embedder, tagger, batch_size=batch_size, workers=workers):
                n = len(batch.indices)
                if n:
                    feats = np.asarray(batch.features, dtype=np.float32)
                    vfs["feature"].append(feats, expect_row=rows)
                    vfs["codes"].append(binarize(embedder, feats), expect_row=rows)
                    if "prob" in vfs:
                        vfs["prob"].append(batch.probs, expect_row=rows)
                now = time.time()
                with _db.transaction(c):
                    for k, j in enumerate(batch.indices):
                        sha, row = shas[j], rows + k
                        c.execute("INSERT INTO contents(row, sha256, added_at) VALUES (?, ?, ?)", (row, sha, now))
                        for path, size, mtime in todo[sha]:
                            _upsert_file(c, path, size, mtime, sha, row, None, now)
                        if "prob" in vfs:
                            p = np.asarray(batch.probs[k], dtype=np.float64)
                            keep = np.nonzero(p >= floor)[0]
                            c.executemany(
                                "INSERT INTO tag_probs(tag_id, prob, row) VALUES (?, ?, ?)",
                                [(int(t), float(p[t]), row) for t in keep],
                            )
                    for j, msg in batch.errors:
                        sha = shas[j]
                        for path, size, mtime in todo[sha]:
                            _upsert_file(c, path, size, mtime, sha, None, msg, now)
                            report.failed.append((path, msg))
                    rows += n
                    _db.set_meta(c, "rows", rows)
                report.added += sum(len(todo[shas[j]]) for j in batch.indices)
                bar.update(n + len(batch.errors))
        finally:
            bar.close()
        # contents no path points to any more (files whose bytes changed)
        with _db.transaction(c):
            _delete_orphan_contents(c)
        self._cache.clear()
        return report

    def _prune(self, roots=(), *, missing_roots: bool = False, dry_run: bool = False) -> PrunePlan:
        c = self.conn
        plan = plan_prune([p for (p,) in c.execute("SELECT path FROM files").fetchall()], roots,
                          missing_roots=missing_roots)
        if not plan.drop or dry_run:
            return plan
        with _db.transaction(c):
            c.executemany("DELETE FROM files WHERE path=CAST(? AS TEXT)", [(_db.text_param(p),) for p in plan.drop])
            _delete_orphan_contents(c)
        self._cache.clear()
        return plan

    def prune(self, roots: Sequence[str | os.PathLike] = (), *, missing_roots: bool = False,
              dry_run: bool = False) -> PrunePlan:
        """Drop files that no longer exist; returns what was dropped and what was kept.

        Entries under a folder (one of ``roots``, or the file's own folder)
        that is missing or empty are kept unless ``missing_roots``: an
        unmounted drive must not empty the collection.  ``dry_run`` changes
        nothing and returns the plan.
        """
        if dry_run:
            return self._prune(roots, missing_roots=missing_roots, dry_run=True)
        self._acquire_lock()
        try:
            return self._prune(roots, missing_roots=missing_roots)
        finally:
            self._release_lock()

    # ------------------------------------------------------------------ reader side
    def _snapshot(self):
        """``(meta, live_rows)`` read in one transaction (consistent with the vector files)."""
        c = self.conn
        c.execute("BEGIN")
        try:
            m = _db.get_all_meta(c)
            # rows only grow between deletions, and every deletion bumps delete_gen
            key = (m.get("rows"), m.get("delete_gen"), m.get("embedder_identity"))
            cached = self._cache.get("live")
            if cached is not None and cached[0] == key:
                live = cached[1]
            else:
                q = "SELECT row FROM faces ORDER BY row" if m.get("faces") else "SELECT row FROM contents ORDER BY row"
                live = np.fromiter((r for (r,) in c.execute(q)), dtype=np.int64)
                self._cache["live"] = (key, live)
        finally:
            c.execute("COMMIT")
        return m, live

    def rows_to_paths(self, rows: Sequence[int]) -> dict[int, list[str]]:
        """Indexed paths of each vector row (of the picture, for a face row)."""
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

    def vectors(self, kind: str = "feature", rows: Sequence[int] | None = None) -> np.ndarray:
        """Stored ``"feature"``, ``"codes"`` or ``"prob"`` vectors of ``rows`` (all live rows by default)."""
        m, live = self._snapshot()
        vfs = self._vector_files(m)
        if kind not in vfs:
            raise CollectionError(f"{self.path}: has no {kind!r} vectors")
        return vfs[kind].read(live if rows is None else rows)

    def live_rows(self) -> np.ndarray:
        """Vector rows of indexed contents, sorted."""
        return self._snapshot()[1]

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

    def search(self, image=None, vector=None, *, k: int | None = 20, binary: bool = False, tags=None,
               not_tags=None, min_prob: float = 0.5, embedder=None, nprobe: int | None = None,
               include_query: bool = False):
        """Similar images and/or tag matches; see :func:`illust2vec.collection.search.search`.

        A query file that is in the collection is left out of the results unless ``include_query``.
        """
        from illust2vec.collection.search import search

        return search(self, image=image, vector=vector, k=k, binary=binary, tags=tags, not_tags=not_tags,
                      min_prob=min_prob, embedder=embedder, nprobe=nprobe, include_query=include_query)

    def dupes(self, max_distance: int | None = None, *, progress: bool = False):
        """Groups of near-duplicate files; see :func:`illust2vec.collection.dupes.find_dupes`.

        ``max_distance`` defaults to a fraction of the code length that suits the
        kind of code (:data:`illust2vec.collection.dupes.NEAR_FRACTION`: 82 of
        i2v's 4096 bits, 512 of the generic embedder's 4096 SimHash bits).
        """
        from illust2vec.collection.dupes import default_max_distance, find_dupes

        if max_distance is None:
            max_distance = default_max_distance(self)
        return find_dupes(self, max_distance=max_distance, progress=progress)

    def export(self, path: str | os.PathLike, format: str | None = None, **kw) -> int:
        """Write paths, tags, probabilities and vectors to a file; see :func:`illust2vec.collection.export.export`."""
        from illust2vec.collection.export import export

        return export(self, path, format=format, **kw)


def binarize_width(embedder, dim: int) -> int:
    """Bytes per binary code for ``embedder``'s features."""
    from illust2vec.collection.infer import binarize

    return int(binarize(embedder, np.zeros((1, dim), np.float32)).shape[1])


def _list_image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    try:
        from illust2vec.io.images import iter_image_files
    except ImportError:  # pragma: no cover - before images.py lands
        iter_image_files = _fallback_iter_image_files
    return [canonical_path(p) for p in iter_image_files(list(paths))]


def canonical_path(path: str | os.PathLike) -> str:
    """The absolute path a file is stored under: symlinks resolved, except a broken one or a loop,
    which keeps its own name so that its error line names the link (never raises, unlike Path.resolve)."""
    real = os.path.realpath(path)
    return real if os.path.exists(real) else os.path.abspath(path)


_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def _fallback_iter_image_files(paths):  # pragma: no cover
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [q for q in p.rglob("*") if q.suffix.lower() in _EXTS and q.is_file()]
        else:
            out.append(p)
    return sorted(out)


def _upsert_file(c, path, size, mtime, sha, row, error, now) -> None:
    c.execute(
        "INSERT INTO files(path, size, mtime_ns, sha256, row, error, updated_at) "
        "VALUES (CAST(? AS TEXT), ?, ?, ?, ?, CAST(? AS TEXT), ?) "
        "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, sha256=excluded.sha256, "
        "row=excluded.row, error=excluded.error, updated_at=excluded.updated_at",
        (_db.text_param(path), size, mtime, sha, row, _db.text_param(error), now),
    )


def _drop_moved(c, rows: set[int]) -> int:
    """Remove paths of ``rows`` that no longer exist (their content moved to a new path)."""
    gone = []
    for row in rows:
        for (p,) in c.execute("SELECT path FROM files WHERE row=?", (row,)).fetchall():
            if not os.path.exists(p):
                gone.append(p)
    c.executemany("DELETE FROM files WHERE path=CAST(? AS TEXT)", [(_db.text_param(p),) for p in gone])
    return len(gone)


def _delete_orphan_contents(c) -> int:
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
