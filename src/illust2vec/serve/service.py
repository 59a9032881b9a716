"""What the web app asks of a collection, as plain Python calls (no HTTP here).

:class:`CollectionService` wraps one :class:`~illust2vec.collection.Collection`
opened for reading.  Items are the collection's indexed files, identified by
their ``files.id`` (stable across re-indexing; byte-identical copies are
separate items sharing one vector row), less the files that a duplicate
review moved into :attr:`CollectionService.move_to` and did not put back
(read from its manifests: the database is not changed).  Every call reads the database as it
is now, so items that a running ``illust2vec index`` commits show up on the
next call (SQLite WAL readers).  Calls are serialised by one lock: the
SQLite connection and the search indexes are shared.
"""
from __future__ import annotations

import inspect
import io
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from illust2vec.collection import Collection, FileTable
from illust2vec.collection.dupe_actions import (
    apply_plan,
    describe_group,
    list_manifests,
    moved_paths,
    plan_moves,
    undo_manifest,
)
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.query import TagIndex, normalize_tag
from illust2vec.collection.view import SORTS
from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import atomic_write
from illust2vec.io.drawing import thumbnail
from illust2vec.io.images import load_image

#: Largest ``limit`` of one items page and ``k`` of one similarity query.
MAX_LIMIT = 1000
#: Tags listed per item in a page of items (the item view lists them all).
PAGE_TAGS = 12
THUMB_SIZES = (128, 256, 512)
MANIFEST_NAME = re.compile(r"^dupes-manifest-[0-9]{8}-[0-9]{6}(-[0-9]+)?\.jsonl$")


class NotFound(Illust2VecError):
    """An item id, manifest or file the caller asked for does not exist."""


class CollectionService:
    """The web app's view of one collection.

    Every read goes through the collection's
    :class:`~illust2vec.collection.view.CollectionView` (tag expressions with
    user tags, pages of items, taggers), every write (user tags) through its
    store.  ``model`` arguments pick one of the collection's taggers by name
    (default: the most recently added), as ``--tagger`` does on the command line.

    Args:
        db: the collection directory.
        embedder: the model for query images from outside the collection, or a
            function of no arguments that returns it (called on the first query
            image; ``illust2vec serve`` passes its model flags this way); default:
            the collection's embedder, loaded by name on first use.
        move_to: where duplicate review moves the copies it takes out
            (default ``DB/duplicates``).
        thumb_dir: the thumbnail cache (default ``DB/thumbs``; kept in memory
            only when it cannot be written).
    """

    def __init__(self, db: str | Path, *, embedder=None, move_to: str | Path | None = None,
                 thumb_dir: str | Path | None = None) -> None:
        self.col = Collection.open(db, create=False)
        self.view = self.col.view
        self.lock = threading.RLock()
        self.embedder = embedder
        self.move_to = Path(move_to).expanduser().resolve() if move_to else self.col.path / "duplicates"
        self.thumb_dir = Path(thumb_dir) if thumb_dir else self.col.path / "thumbs"
        self._files: tuple[tuple, FileTable] | None = None
        self._dims: dict[str, tuple[int, int, int, int]] = {}  # path -> (mtime_ns, size, w, h)
        self._dupes: tuple[tuple, list, str | None] | None = None
        self._dupes_thread: threading.Thread | None = None
        self._thumbs_mem: OrderedDict[tuple, bytes] = OrderedDict()
        self.col.store.ensure_user_tags()  # False on read-only storage: user tags cannot be stored there

    def close(self) -> None:
        with self.lock:
            self.col.close()

    def idle(self) -> None:
        """Between requests: hold no snapshot of the collection, so that compaction does not wait for the app."""
        with self.lock:
            self.col.release_snapshot()

    # ------------------------------------------------------------------ files
    def files(self) -> FileTable:
        """The items: the indexed files sorted by path, less those a duplicate review moved aside."""
        table = self.view.file_table()
        key = (table.key, id(table), self._manifests_key())
        if self._files is None or self._files[0] != key:
            gone = moved_paths(self.move_to)  # moved aside by a duplicate review and not put back
            self._files = (key, table.without(gone, (*table.key, key[2])) if gone else table)
        return self._files[1]

    def _manifests_key(self) -> tuple:
        try:
            return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in list_manifests(self.move_to))
        except OSError:
            return ()

    def _index_of(self, item_id: int) -> tuple[FileTable, int]:
        f = self.files()
        k = f.pos.get(int(item_id))
        if k is None:
            raise NotFound(f"no item {item_id} in this collection")
        return f, k

    def path_of(self, item_id: int) -> Path:
        """The file of an item; :class:`NotFound` when the id is unknown or the file is gone."""
        with self.lock:
            f, k = self._index_of(item_id)
            p = Path(f.paths[k])
        if not p.is_file():
            raise NotFound(f"item {item_id}: its file is no longer there")
        return p

    def _dims_of(self, path: str) -> tuple[int | None, int | None]:
        try:
            st = Path(path).stat()
        except OSError:
            return None, None
        got = self._dims.get(path)
        if got is not None and got[:2] == (st.st_mtime_ns, st.st_size):
            return got[2], got[3]
        try:
            with Image.open(path) as im:
                w, h = int(im.width), int(im.height)
        except Exception:  # noqa: BLE001 - an unreadable file has no size
            return None, None
        self._dims[path] = (st.st_mtime_ns, st.st_size, w, h)
        return w, h

    # ------------------------------------------------------------------ tags
    def tag_index(self, model: str | None = None) -> TagIndex | None:
        """The tag table of the tagger ``model`` (default: the newest); ``None`` without taggers."""
        return self.view.tag_index(model or None)

    def _item_dicts(self, files: FileTable, sel: Sequence[int], min_prob: float, top: int | None,
                    model: str | None) -> list[dict]:
        tags = self.view.item_tags([int(files.rows[k]) for k in sel], [files.shas[k] for k in sel], min_prob, top,
                                   tagger=model or None)
        out = []
        for k, (t, u) in zip(sel, tags):
            path = files.paths[k]
            w, h = self._dims_of(path)
            out.append({"id": int(files.ids[k]), "path": path, "width": w, "height": h, "tags": t, "user_tags": u})
        return out

    # ------------------------------------------------------------------ public API
    def info(self) -> dict[str, Any]:
        """Counts, models and settings the pages need (``taggers``: every tagger, newest last)."""
        with self.lock:
            m = self.col.meta
            taggers = self.view.taggers()
            default = taggers[-1] if taggers else None
            return {"path": str(self.col.path), "items": len(self.files().ids), "embedder": m.get("embedder_name"),
                    "tagger": default.name if default else None, "tags": default.tag_count if default else 0,
                    "has_tags": default is not None, "move_to": str(self.move_to),
                    "taggers": [{"name": t.name, "tags": t.tag_count, "identity": t.identity} for t in taggers],
                    "sorts": list(SORTS)}

    def items(self, *, tags: str | None = None, not_tags: str | None = None, min_prob: float = 0.5,
              offset: int = 0, limit: int = 100, model: str | None = None, sort: str = "path") -> dict[str, Any]:
        """``{"total", "offset", "items": [{"id", "path", "width", "height", "tags", "user_tags"}]}``.

        ``tags``/``not_tags`` are tag expressions as in ``illust2vec search
        --tags`` (``"a, -b, character:c, user:d, e>=0.3"``); ``user:NAME`` names
        a user tag.  User decisions take precedence: a tag the user removed
        does not match, one the user added matches whatever the model said.
        ``model``: whose tags (a tagger's name; default the newest);
        ``sort``: ``path`` (default), ``-path``, ``added``, ``-added`` or ``score``.
        """
        if offset < 0 or not 0 < limit <= MAX_LIMIT:
            raise CollectionError(f"offset must be >= 0 and limit between 1 and {MAX_LIMIT}")
        if not 0.0 <= min_prob <= 1.0:
            raise CollectionError(f"min must be between 0 and 1, not {min_prob}")
        with self.lock:
            files = self.files()
            sel = self.view.select(files, tags, not_tags, min_prob=min_prob, tagger=model or None, sort=sort)
            page = sel[offset : offset + limit]
            return {"total": len(sel), "offset": int(offset),
                    "items": self._item_dicts(files, page, min_prob, PAGE_TAGS, model)}

    def item(self, item_id: int, *, model: str | None = None) -> dict[str, Any]:
        """One item with every stored tag (model probabilities >= the collection's floor, and user tags)."""
        with self.lock:
            files, k = self._index_of(item_id)
            floor = float(self.col.meta.get("prob_floor", 0.01))
            d = self._item_dicts(files, [k], floor, None, model)[0]
            d["model_tags"] = self.view.model_tags([int(files.rows[k])], floor, None, tagger=model or None)[0]
            d["sha256"] = files.shas[k]
            d["copies"] = [int(files.ids[j]) for j in np.nonzero(files.rows == files.rows[k])[0] if j != k]
            ti = self.tag_index(model)
            if ti is not None:
                cat = {n: c for n, c in zip(ti.names, ti.categories)}
                d["categories"] = {t: cat.get(t, "user") for t in d["tags"]}
            else:
                d["categories"] = {t: "user" for t in d["tags"]}
            try:
                d["bytes"] = Path(d["path"]).stat().st_size
            except OSError:
                d["bytes"] = None
            return d

    def _hits_to_items(self, files: _Files, hits, k: int, exclude_id: int | None) -> list[dict]:
        by_path = files.by_path
        out = []
        for h in hits:
            for p in h.paths or [h.path]:
                j = by_path.get(p)
                if j is None or int(files.ids[j]) == exclude_id:
                    continue
                out.append({"id": int(files.ids[j]), "path": p, "score": None if h.score is None else round(float(h.score), 6),
                            "distance": h.distance})
        return out[:k]

    def similar(self, item_id: int, *, k: int = 20, binary: bool = False) -> list[dict]:
        """The ``k`` nearest items to an item by its stored features (cosine) or binary codes (Hamming), itself left out."""
        if not 0 < k <= MAX_LIMIT:
            raise CollectionError(f"k must be between 1 and {MAX_LIMIT}")
        with self.lock:
            files, j = self._index_of(item_id)
            row = int(files.rows[j])
            vec = self.col.vectors("codes" if binary else "feature", rows=[row])[0]
            copies = int((files.rows == row).sum())
            hits = self.col.search(vector=vec, k=k + copies, binary=binary)
            return self._hits_to_items(files, hits, k, int(item_id))

    def search_image(self, image: bytes, *, k: int = 20) -> list[dict]:
        """The ``k`` items most similar to an image given as encoded bytes (cosine on features)."""
        if not 0 < k <= MAX_LIMIT:
            raise CollectionError(f"k must be between 1 and {MAX_LIMIT}")
        with self.lock:
            files = self.files()
            if inspect.isroutine(self.embedder):  # a loader (a function), not a model
                self.embedder = self.embedder()
            hits = self.col.search(image=bytes(image), k=k, embedder=self.embedder)
            return self._hits_to_items(files, hits, k, None)

    def tags(self, prefix: str = "", *, limit: int = 20, min_prob: float = 0.5,
             model: str | None = None) -> list[dict]:
        """Autocomplete: ``[{"tag", "category", "count"}]`` whose name starts with ``prefix``, most used first.

        ``prefix`` may start with a category (``character:mi``) or ``user:``;
        ``count`` is the number of items with the tag at ``min_prob`` or more
        (user tags: items it was added to).
        """
        with self.lock:
            ti = self.tag_index(model)
            cats = {c.lower() for c in (ti.categories if ti else ())} | {"user"}
            cat = None
            p = prefix.lstrip("-").strip()
            if ":" in p and p.split(":", 1)[0].strip().lower() in cats:
                cat, p = p.split(":", 1)[0].strip().lower(), p.split(":", 1)[1]
            p = normalize_tag(p)
            counts = self.view.tag_counts(min_prob, tagger=model or None) if ti is not None else {}
            out = []
            if ti is not None and cat != "user":
                for i, (n, c) in enumerate(zip(ti.names, ti.categories)):
                    if (cat is None or c.lower() == cat) and normalize_tag(n).startswith(p):
                        out.append({"tag": n, "category": c, "count": counts.get(i, 0)})
            if cat in (None, "user"):
                for n, cnt in self.view.user_tag_counts().items():
                    if n.startswith(p):
                        out.append({"tag": n, "category": "user", "count": cnt})
            out.sort(key=lambda e: (-e["count"], e["tag"]))
            return out[:limit]

    # ------------------------------------------------------------------ duplicates
    def _dupes_key(self, max_distance: int | None) -> tuple:
        m = self.col.meta
        return (m.get("rows"), m.get("delete_gen"), m.get("embedder_identity"), max_distance)

    def _compute_dupes(self, key: tuple) -> None:
        """Find the groups on a connection of its own, so requests go on meanwhile (the pair cache makes
        a later call compare only what was added; the first one at a new distance may take minutes)."""
        try:
            with Collection.open(self.col.path, create=False) as col:
                groups, error = col.dupes(key[-1]), None
        except Exception as exc:  # noqa: BLE001 - reported to the page, the server goes on
            groups, error = [], f"cannot find duplicates: {exc}"
        with self.lock:
            self._dupes = (key, groups, error)
            self._dupes_thread = None

    def dupes_settings(self) -> dict[str, Any]:
        """``{"default_distance", "code_bits"}``: the distance ``dupes`` uses unless told, and its upper end."""
        from illust2vec.collection.dupes import default_max_distance

        with self.lock:
            bits = int(self.col.meta.get("code_bytes", 0)) * 8
            return {"default_distance": default_max_distance(self.view) if bits else None, "code_bits": bits}

    def dupes(self, *, max_distance: int | None = None, wait: bool = True) -> list[dict] | None:
        """Near-duplicate groups within ``max_distance`` bits (default: the ``dupes`` command's) whose files are still there.

        Each: ``{"items": [{"id", "path", "width", "height", "bytes", "format", "lossless", "keep"}],
        "keeper": id, "max_distance"}``; the keeper by
        :data:`~illust2vec.collection.dupe_actions.KEEPER_RULE`.  Groups are found
        in a background thread once per state of the collection and distance;
        with ``wait`` false, ``None`` means they are still being found (ask again).
        """
        if max_distance is not None and max_distance < 0:
            raise CollectionError(f"distance must be 0 or more bits, not {max_distance}")
        with self.lock:
            key = self._dupes_key(max_distance)
            if self._dupes is None or self._dupes[0] != key:
                if self._dupes_thread is None:
                    self._dupes_thread = threading.Thread(target=self._compute_dupes, args=(key,), daemon=True,
                                                          name="illust2vec-dupes")
                    self._dupes_thread.start()
                thread = self._dupes_thread
            else:
                thread = None
        if thread is not None:
            if not wait:
                return None
            thread.join()
            return self.dupes(max_distance=max_distance, wait=wait)
        with self.lock:
            _, groups, error = self._dupes
            if error:
                raise CollectionError(error)
            files = self.files()
            by_path = files.by_path
            ids = files.ids
        out = []
        for g in groups:
            paths = [p for p in g.paths if p in by_path and Path(p).exists()]
            if len(paths) < 2:
                continue
            d = describe_group(paths)
            items = [dict(f, id=int(ids[by_path[f["path"]]])) for f in d["files"]]
            out.append({"items": items, "keeper": int(ids[by_path[d["keeper"]]]), "max_distance": g.max_distance})
        return out

    def apply_dupes(self, decisions: Sequence[dict]) -> dict[str, Any]:
        """Move every item of each decided group but its keeper into :attr:`move_to` (with a manifest).

        ``decisions``: ``[{"ids": [...], "keeper": id}]``.  Returns ``{"manifest",
        "done", "failed": [[path, reason]]}``; undo with :meth:`undo_dupes`.
        """
        with self.lock:
            files = self.files()
            groups, keepers = [], []
            for d in decisions:
                ids = [int(i) for i in d.get("ids", [])]
                keeper = int(d.get("keeper", -1))
                if keeper not in ids or len(ids) < 2:
                    raise CollectionError("each decision needs 'ids' (two or more) and a 'keeper' among them")
                groups.append([files.paths[self._index_of(i)[1]] for i in ids])
                keepers.append(files.paths[self._index_of(keeper)[1]])
            plan = plan_moves(groups, self.move_to, keepers=keepers)
            rep = apply_plan(plan)
            return {"manifest": rep.manifest.name if rep.manifest else None, "done": rep.done,
                    "failed": [list(f) for f in rep.failed], "plan": plan.lines()}

    def manifests(self) -> list[str]:
        """Names of the manifests in :attr:`move_to`, newest first."""
        return [p.name for p in list_manifests(self.move_to)]

    def undo_dupes(self, name: str) -> dict[str, Any]:
        """Undo the moves of one manifest in :attr:`move_to`, given by file name only."""
        if not MANIFEST_NAME.match(name or "") or not (self.move_to / name).is_file():
            raise NotFound(f"no manifest {name!r} in {self.move_to}")
        with self.lock:
            rep = undo_manifest(self.move_to / name)
        return {"restored": rep.restored, "already": rep.already, "failed": [list(f) for f in rep.failed]}

    # ------------------------------------------------------------------ user tags
    def set_user_tags(self, ids: Sequence[int], *, add: Sequence[str] = (), remove: Sequence[str] = (),
                      forget: Sequence[str] = ()) -> int:
        """Add / remove user tags on items (``forget`` drops the user's decision); returns the items changed."""
        with self.lock:
            files = self.files()
            shas = [files.shas[self._index_of(i)[1]] for i in ids]
            self.col.store.set_user_tags(shas, add=add, remove=remove)
            if forget:
                self.col.store.forget_user_tags(shas, forget)
            return len(ids)

    # ------------------------------------------------------------------ thumbnails
    def thumbnail(self, item_id: int, size: int = 256) -> Path | bytes:
        """A JPEG thumbnail (longest side ``size``, one of :data:`THUMB_SIZES`), cached by content hash.

        Returns the cache file, or the JPEG bytes where the cache cannot be written.
        """
        if size not in THUMB_SIZES:
            raise CollectionError(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
        with self.lock:
            files, k = self._index_of(item_id)
            sha, path = files.shas[k], files.paths[k]
        cache = self.thumb_dir / str(size) / sha[:2] / f"{sha}.jpg"
        if cache.is_file():
            return cache
        mem = self._thumbs_mem.get((sha, size))
        if mem is not None:
            return mem
        try:
            arr = load_image(path)
        except Illust2VecError as exc:
            raise NotFound(f"item {item_id}: {exc}") from None
        im = thumbnail(arr, size)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        try:
            return atomic_write(cache, lambda fh: fh.write(data))
        except OSError:  # read-only collection: keep a few in memory
            with self.lock:
                self._thumbs_mem[(sha, size)] = data
                while len(self._thumbs_mem) > 2000:
                    self._thumbs_mem.popitem(last=False)
        return data
