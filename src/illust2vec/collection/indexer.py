"""Local indexing: image files -> models -> the collection's store (what ``illust2vec index`` runs).

Three producers feed a :class:`~illust2vec.collection.store.WriteSession`
through its one append API, like any other producer (a Ray merge, a pipeline
runner) would:

* :func:`index_files`: scan folders (unchanged files skipped by size and
  mtime, known contents linked by hash, failures recorded), then embed and
  tag the new contents batch by batch;
* :func:`add_faces`: the same for a face collection, one item per face;
* :func:`fill_taggers`: a tagger's probabilities for the pictures already
  stored (a tagger added to an indexed collection): only the tagger runs,
  over one path per stored content; nothing is embedded again.  A content
  whose files are all gone is reported (:attr:`AddReport.untagged`) and
  left without that tagger's tags.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from illust2vec.collection.errors import CollectionError
from illust2vec.collection.infer import binarize, infer, model_set
from illust2vec.collection.paths import list_image_files
from illust2vec.collection.store import ItemBatch, WriteSession
from illust2vec.collection.taggers import TaggerInfo
from illust2vec.collection.view import CollectionView
from illust2vec.models.store import sha256_file

#: Stored rows handed to a tagger at a time while it catches up (paths are looked up per chunk).
FILL_CHUNK = 4096


def index_files(w: WriteSession, view: CollectionView, paths: Sequence[str | os.PathLike], *, embedder,
                taggers: Sequence = (), batch_size: int = 32, workers: int | None = None, progress: bool = True,
                prune: bool = False, prune_missing: bool = False, faces=None) -> None:
    """Index image files and folders into the session's collection (see :meth:`Collection.add`).

    The session's taggers that lag behind the stored rows are filled first
    (after the scan, so moved files are found at their new paths).
    """
    from illust2vec.runtime.progress import progress_counter

    report = w.report
    files = list_image_files(paths)
    report.seen = len(files)
    known = w.known_files()
    sha_row = w.content_rows()
    todo: dict[str, list[tuple[str, int, int]]] = {}  # sha -> [(path, size, mtime)]
    link: list[tuple[str, int, int, str, int]] = []
    errs: list[tuple[str, int, int, str | None, str]] = []
    step, close = progress_counter(progress, label="scanning", unit="file", total=len(files))
    for path in files:
        step(1)
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
    close()
    w.record_files([(p, size, mtime, sha, row, None) for p, size, mtime, sha, row in link]
                   + [(p, size, mtime, sha, None, msg) for p, size, mtime, sha, msg in errs])
    report.linked += len(link)
    report.moved += w.drop_moved(row for *_, row in link)
    report.failed += [(p, msg) for p, _, _, sha, msg in errs if sha is None and msg is not None]
    if prune:
        w.prune(paths, missing_roots=prune_missing)
    fill_taggers(w, view, taggers, batch_size=batch_size, workers=workers, progress=progress)
    if faces is not None:
        add_faces(w, todo, embedder, taggers, faces, batch_size=batch_size, progress=progress)
    else:
        _add_contents(w, todo, embedder, taggers, batch_size=batch_size, workers=workers, progress=progress)
    report.seen = len(files)  # the store counted the files it was handed again


def _record_copies(w: WriteSession, todo, shas: list[str], rows: list[int | None], errors: dict[str, str]) -> None:
    """Files beyond the first of each new content: linked to its row, failed with it, or (a picture without
    a face under ``faces_only``) recorded with its hash and no row."""
    entries = []
    for sha, row in zip(shas, rows):
        for path, size, mtime in todo[sha][1:]:
            if row is not None:
                entries.append((path, size, mtime, sha, row, None))
                w.report.added += 1
            elif sha in errors:
                entries.append((path, size, mtime, sha, None, errors[sha]))
                w.report.failed.append((path, errors[sha]))
            else:
                entries.append((path, size, mtime, sha, None, None))
    if entries:
        w.record_files(entries)


def _add_contents(w: WriteSession, todo, embedder, taggers, *, batch_size, workers, progress) -> None:
    from illust2vec.runtime.progress import progress_counter

    shas = list(todo)
    reps = [todo[s][0] for s in shas]
    step, close = progress_counter(progress if reps else None, label="indexing", unit="img", total=len(reps),
                                   leave=True)
    ids = [t.identity for t in taggers]
    try:
        for batch in infer([p for p, _, _ in reps], embedder, taggers, batch_size=batch_size, workers=workers):
            entries = [j for j in batch.indices] + [j for j, _ in batch.errors]
            msg = dict(batch.errors)
            feats = batch.features if batch.features is not None else np.zeros((0, embedder.feature_dim), np.float32)
            res = w.append(ItemBatch(
                paths=[reps[j][0] for j in entries], sizes=[reps[j][1] for j in entries],
                mtimes_ns=[reps[j][2] for j in entries], sha256=[shas[j] for j in entries],
                errors=[msg.get(j) for j in entries], features=feats, codes=binarize(embedder, feats),
                probs=dict(zip(ids, batch.probs)),
            ))
            _record_copies(w, todo, [shas[j] for j in entries], res.rows, {shas[j]: m for j, m in batch.errors})
            step(len(entries))
    finally:
        close()


def fill_taggers(w: WriteSession, view: CollectionView, taggers: Sequence, *, batch_size: int = 32,
                 workers: int | None = None, progress: bool = True) -> None:
    """Give the session's taggers that lag behind the stored rows their probabilities for those rows.

    Runs only the taggers (never the embedder) over one existing path per
    stored content, in row order, committing batch by batch (an interrupted
    fill resumes where it stopped).  Rows no longer live, contents whose
    files are all gone and files that cannot be decoded get no tags (NaN
    records); the latter two are listed in ``w.report.untagged``.
    """
    from illust2vec.runtime.progress import progress_counter

    models = {t.identity: t for t in taggers}
    lagging = [t for t in w.lagging() if t.identity in models]
    if not lagging:
        return
    if w.faces:
        raise CollectionError(f"{w.path}: a face collection gets its taggers when its faces are indexed; "
                              "use --rebuild or another --db")
    start = min(t.rows for t in lagging)
    live = view.snapshot().live
    live = live[(live >= start) & (live < w.rows)]
    names = ", ".join(repr(t.name) for t in lagging)
    step, close = progress_counter(progress if len(live) else None, label=f"tagging stored pictures ({names})",
                                   unit="img", total=len(live), leave=True)
    try:
        for c0 in range(0, len(live), FILL_CHUNK):
            chunk = live[c0 : c0 + FILL_CHUNK]
            upto = int(chunk[-1]) + 1 if c0 + FILL_CHUNK < len(live) else w.rows
            paths = view.first_existing_paths(chunk.tolist())
            have = [int(r) for r in chunk if paths.get(int(r))]
            for r in chunk:
                if not paths.get(int(r)):
                    gone = view.rows_to_paths([int(r)]).get(int(r)) or [f"row {int(r)}"]
                    w.report.untagged.append((gone[0], "file is gone; no tags from " + names))
            results: dict[int, list[np.ndarray]] = {}
            for batch in (infer([paths[r] for r in have], None, [models[t.identity] for t in lagging],
                                batch_size=batch_size, workers=workers) if have else ()):
                for k, j in enumerate(batch.indices):
                    results[have[j]] = [p[k] for p in batch.probs]
                for j, msg in batch.errors:
                    w.report.untagged.append((paths[have[j]], msg))
                step(len(batch.indices) + len(batch.errors))
            for t in w.lagging():
                if t.identity not in models or t.rows >= upto:
                    continue
                block = np.full((upto - t.rows, t.tag_count), np.nan, np.float32)
                for r, ps in results.items():
                    if t.rows <= r < upto:
                        block[r - t.rows] = ps[[x.identity for x in lagging].index(t.identity)]
                done = int(np.isfinite(block[:, 0]).sum()) if t.tag_count else 0
                w.append_probs(t, block)
                w.report.tagged[t.name] = w.report.tagged.get(t.name, 0) + done
            step(len(chunk) - len(have))
    finally:
        close()


# --------------------------------------------------------------------------- faces
def add_faces(w: WriteSession, todo: dict[str, list[tuple[str, int, int]]], embedder, taggers: Sequence, options,
              *, batch_size: int, progress: bool) -> None:
    """Detect, embed and store the face items of the pictures in ``todo`` (sha -> [(path, size, mtime)]).

    A picture's items reach the store together, once all of them are
    computed (items come in input order: every picture before the last one
    received is complete).
    """
    from illust2vec.faces.features import FaceInputs
    from illust2vec.runtime.batches import iter_batches

    model = model_set(embedder, taggers)  # crops: one prepared batch per distinct input
    shas = list(todo)
    reps = [todo[s][0][0] for s in shas]
    pos = {p: i for i, p in enumerate(reps)}
    det_errors: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_det_error(e: Any) -> None:
        with lock:
            det_errors.append((str(e.source), str(e.message)))

    crops = FaceInputs(reps, options, on_error=on_det_error)
    ids = [t.identity for t in taggers]
    pending: list[tuple[int, dict[str, Any], np.ndarray, list[np.ndarray]]] = []  # (picture, meta, feature, probs)
    done: set[int] = set()

    def commit(upto: int | None) -> None:
        """Hand the complete pictures (index < upto; all with None) and the detector's errors to the store."""
        with lock:
            errs = det_errors[:]
            det_errors.clear()
        n = 0
        while n < len(pending) and (upto is None or pending[n][0] < upto):
            n += 1
        items, pending[:] = pending[:n], pending[n:]
        pictures = list(dict.fromkeys(p for p, *_ in items))
        failed = [(pos[src], msg) for src, msg in errs if src in pos]
        w.report.failed += [(src, msg) for src, msg in errs if src not in pos]
        entries = pictures + [i for i, _ in failed]
        if not entries:
            return
        item_file = [pictures.index(p) for p, *_ in items]
        feats = np.stack([f for _, _, f, _ in items]) if items else np.zeros((0, embedder.feature_dim), np.float32)
        msg = dict(failed)
        res = w.append(ItemBatch(
            paths=[reps[i] for i in entries], sizes=[todo[shas[i]][0][1] for i in entries],
            mtimes_ns=[todo[shas[i]][0][2] for i in entries], sha256=[shas[i] for i in entries],
            errors=[msg.get(i) for i in entries], features=feats, codes=binarize(embedder, feats),
            probs={ident: np.stack([ps[k] for *_, ps in items]) if items else np.zeros((0, len(t.tags.names)))
                   for k, (ident, t) in enumerate(zip(ids, taggers))},
            item_file=item_file, faces=[m for _, m, _, _ in items],
        ))
        done.update(entries)
        _record_copies(w, todo, [shas[i] for i in entries], res.rows, {shas[i]: m for i, m in failed})

    outputs = ("feature", *(f"prob{i}" for i in range(len(taggers))))
    # crops are decoded already: preprocessing runs in iter_batches' background thread
    for batch in iter_batches(model, crops, batch_size=batch_size, workers=None, outputs=outputs,
                              progress=progress, desc="faces", unit="face",
                              on_error=lambda e: w.report.failed.append((str(getattr(e, "source", "?")),
                                                                         str(getattr(e, "message", e))))):
        idx = [int(i) for i in batch.indices]
        if idx:
            feats = np.asarray(batch.outputs["feature"], dtype=np.float32).reshape(len(idx), -1)
            probs = [np.asarray(batch.outputs[f"prob{i}"], dtype=np.float32).reshape(len(idx), -1)
                     for i in range(len(taggers))]
            for k, i in enumerate(idx):
                m = crops.meta[i]
                pending.append((pos[m["source"]], m, feats[k], [p[k] for p in probs]))
        commit(pending[-1][0] if pending else 0)
    commit(None)
    # faces_only: pictures without a face are remembered (hash, no row) so they are not scanned again
    rest = [i for i in range(len(shas)) if i not in done]
    if rest:
        w.record_files([(path, size, mtime, shas[i], None, None) for i in rest for path, size, mtime in todo[shas[i]]])
