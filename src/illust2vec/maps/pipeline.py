"""``make_map``: images (or a collection) -> features -> 2-D map -> PNG, HTML viewer and report.

Stages (each also callable alone, see :mod:`illust2vec.maps`):

1. features: from a collection if one is given (``db``, or the input *is* a
   collection directory), else computed with the model (``iter_batches``);
   tag probabilities come along when the collection or model has them;
2. reduce: L2-normalise, PCA 50, openTSNE / UMAP / PCA (:mod:`.reduce`);
3. optional grid snap (:mod:`.grid`);
4. clusters with distinctive tags (:mod:`.clusters`), on the 2-D map;
5. quality numbers (:mod:`.quality`);
6. PNG (:mod:`.render`), HTML viewer (:mod:`.viewer`), JSON report.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import atomic_write, json_safe
from illust2vec.maps.clusters import ClusterInfo, explain_clusters, find_clusters
from illust2vec.maps.grid import GridLayout, snap_to_grid
from illust2vec.maps.labels import labels_from_spec

REPORT_SCHEMA = 1
#: Up to this many images the viewer is one self-contained file; above, atlases go beside it.
VIEWER_EMBED_MAX = 20_000


@dataclass
class MapResult:
    """Everything :func:`make_map` computed and wrote."""

    paths: list[str]
    embedding: np.ndarray
    labels: list[str | None] | None
    cluster_ids: np.ndarray
    clusters: list[ClusterInfo]
    quality: dict
    grid: GridLayout | None = None
    png: Path | None = None
    html: Path | None = None
    report: Path | None = None
    rects: np.ndarray | None = None
    model: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def report_dict(self, **extra: Any) -> dict:
        """The JSON report: settings, quality, clusters, timings, errors and one row per point."""
        pts = []
        for i, p in enumerate(self.paths):
            row: dict[str, Any] = {
                "path": p,
                "x": round(float(self.embedding[i, 0]), 5),
                "y": round(float(self.embedding[i, 1]), 5),
                "label": self.labels[i] if self.labels is not None else None,
                "cluster": int(self.cluster_ids[i]),
            }
            if self.grid is not None:
                row["cell"] = [int(self.grid.cells[i, 0]), int(self.grid.cells[i, 1])]
            if self.rects is not None:
                row["rect"] = [int(v) for v in self.rects[i]]
            pts.append(row)
        return {
            "schema_version": REPORT_SCHEMA,
            "n": len(self.paths),
            "model": self.model,
            **extra,
            "png": str(self.png) if self.png else None,
            "html": str(self.html) if self.html else None,
            "quality": self.quality,
            "clusters": [c.to_dict() for c in self.clusters],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "errors": [{"path": p, "message": m} for p, m in self.errors],
            "points": pts,
        }


def _stage_progress(enabled: bool) -> Callable[[str, int, int], None] | None:
    """A ``progress(stage, done, total)`` that drives one tqdm bar per stage on stderr."""
    if not enabled:
        return None
    from illust2vec.runtime.progress import progress_bar

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for other in list(bars.values()):
                other.close()
            bars.clear()
            bar = bars[stage] = progress_bar(total, desc=stage, leave=False)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            bars.pop(stage, None)

    return progress


def is_collection(path: Path | str) -> bool:
    """Whether ``path`` is a collection directory (holds ``collection.sqlite``)."""
    from illust2vec.collection.core import DB_NAME

    p = Path(path)
    return p.is_dir() and (p / DB_NAME).is_file()


def features_from_collection(
    db: Path | str,
    paths: Sequence[Path | str] | None = None,
    *,
    tagger: str | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray | None, list[str] | None, list[str] | None]:
    """Read ``(paths, features, probs, tag_names, tag_categories)`` from a collection.

    With ``paths``: those files, in that order (files the collection does not
    hold are left out).  Without: every indexed content once (its first path).
    ``probs`` are those of ``tagger`` (default: the most recently added), with
    the user's tags applied (added 1.0, removed 0.0).
    """
    from illust2vec.collection.core import Collection

    with Collection.open(db, create=False) as col:
        if paths is None:
            live = col.live_rows()
            firsts = col.rows_to_paths(live)
            out_paths = [firsts[int(r)][0] for r in live if firsts.get(int(r))]
            rows = np.array([int(r) for r in live if firsts.get(int(r))], dtype=np.int64)
        else:
            by_path = col.view.path_rows()
            out_paths, rr = [], []
            for p in paths:
                r = by_path.get(os.path.realpath(p))
                if r is not None:
                    out_paths.append(str(p))
                    rr.append(int(r))
            rows = np.array(rr, dtype=np.int64)
        if len(rows) == 0:
            raise Illust2VecError(f"{db}: the collection holds no features for these images; index them first")
        feats = np.asarray(col.vectors("feature", rows), dtype=np.float32)
        probs = names = cats = None
        ti = col.view.tag_index(tagger)
        if ti is not None:
            probs = np.nan_to_num(np.asarray(col.view.probs(rows, tagger=tagger), dtype=np.float32), nan=0.0)
            names, cats = list(ti.names), list(ti.categories)
    return out_paths, feats, probs, names, cats


def face_thumbnails_from_collection(
    db: Path | str, paths: Sequence[str]
) -> tuple[list[str], Callable[[int], Any], list[str]] | None:
    """For a face collection read by :func:`features_from_collection` (no ``paths``):
    ``(refs, thumbnail(i), links)``, so that the map draws each face's crop, names
    it ``SOURCE#faceK [x,y,w,h]`` and links to its picture; ``None`` otherwise.
    """
    import json

    from illust2vec.collection.core import Collection
    from illust2vec.faces.detect import DEFAULT_MARGIN, crop_padded, crop_region
    from illust2vec.faces.items import face_ref
    from illust2vec.io.images import load_image

    with Collection.open(db, create=False) as col:
        options = col.meta.get("faces")
        if not options:
            return None
        live = col.live_rows()
        firsts = col.rows_to_paths(live)
        rows = [int(r) for r in live if firsts.get(int(r))]
        boxes = {r: (fi, None if box is None else tuple(box)) for r, (fi, box, _) in col.view.face_fields(rows).items()}
    opts = json.loads(options)
    items = [boxes.get(r, (None, None)) for r in rows]
    refs = [face_ref(src, fi, box) for src, (fi, box) in zip(paths, items)]
    last: dict[str, Any] = {}

    def thumbnail(i: int) -> Any:
        box = items[i][1]
        if box is None:
            return paths[i]
        if last.get("path") != paths[i]:  # faces of one picture come one after another
            last.update(path=paths[i], image=load_image(paths[i]))
        margin, square = float(opts.get("margin", DEFAULT_MARGIN)), bool(opts.get("square", True))
        region = crop_region(box, margin=margin, square=square)
        return crop_padded(last["image"], region)

    return refs, thumbnail, list(paths)


def compute_features(
    model,
    files: Sequence[Path | str],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    with_probs: bool = True,
    progress: Any = None,
    on_error: Callable[[Any], None] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray | None, list[tuple[str, str]]]:
    """Run ``model`` over ``files``: ``(paths that worked, features, probs or None, errors)``."""
    from illust2vec.runtime.batches import iter_batches

    outputs = ["feature"]
    if with_probs and "prob" in model.outputs and model.tags is not None:
        outputs.append("prob")
    feats: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    ok: list[str] = []
    errors: list[tuple[str, str]] = []

    def _err(e) -> None:
        errors.append((str(e.source), str(e.message)))
        if on_error:
            on_error(e)

    for batch in iter_batches(model, list(files), batch_size=batch_size, workers=workers,
                              outputs=tuple(outputs), progress=progress, on_error=_err):
        if not batch.indices:
            continue
        feats.append(batch.outputs["feature"])
        if "prob" in outputs:
            probs.append(batch.outputs["prob"])
        ok.extend(str(files[i]) for i in batch.indices)
    if not feats:
        raise Illust2VecError("no image could be read; see the error lines above")
    f = np.concatenate(feats).astype(np.float32)
    return ok, f, (np.concatenate(probs).astype(np.float32) if probs else None), errors


def top_tags(probs: np.ndarray, names: Sequence[str], n: int = 5, min_prob: float = 0.05,
             exclude: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
    """Per row, up to ``n`` ``(tag, prob)`` pairs above ``min_prob``, most probable first."""
    p = np.asarray(probs, dtype=np.float32)
    if exclude is not None:
        p = np.where(np.asarray(exclude, bool)[None, :], -1.0, p)
    k = min(n, p.shape[1])
    part = np.argpartition(-p, k - 1, axis=1)[:, :k]
    out = []
    for i, row in enumerate(part):
        order = row[np.argsort(-p[i, row], kind="stable")]
        out.append([(str(names[j]), round(float(p[i, j]), 4)) for j in order if p[i, j] >= min_prob])
    return out


def _href(path: str, html: Path) -> str:
    target = Path(os.path.realpath(path))
    try:
        rel = os.path.relpath(target, html.resolve().parent)
        return quote(Path(rel).as_posix(), safe="/")
    except ValueError:  # another drive on Windows
        return target.as_uri()


def make_map(
    inputs: Sequence[Path | str] | Path | str,
    out_png: Path | str | None = None,
    *,
    html: Path | str | None = None,
    report: Path | str | None = None,
    method: str = "tsne",
    model: Any = None,
    label_by: str | None = None,
    labels: Sequence[str | None] | None = None,
    grid: bool = False,
    seed: int = 0,
    max_size: int = 4096,
    title: str | None = None,
    db: Path | str | None = None,
    features: np.ndarray | None = None,
    tag_probs: np.ndarray | None = None,
    tag_names: Sequence[str] | None = None,
    tag_categories: Sequence[str] | None = None,
    thumbnails: Sequence[Any] | Callable[[int], Any] | None = None,
    links: Sequence[str] | None = None,
    perplexity: float = 30.0,
    quality_k: int = 10,
    min_cluster_size: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    n_jobs: int = 2,
    thumb_size: int | None = None,
    progress: bool = False,
    on_error: Callable[[Any], None] | None = None,
    tagger: str | None = None,
) -> MapResult:
    """Draw a map of images: the library form of ``illust2vec map``.

    ``inputs``: image files/directories/globs, or a collection directory.
    ``features`` (with ``inputs`` the matching list of image paths) skips
    feature extraction.  ``model``: an :class:`~illust2vec.models.image_model.ImageModel` or a
    zoo name (default: the best feature model available offline).  ``db``: a
    collection used as a feature cache (images are indexed into it first).
    ``label_by``: ``folder``, ``regex:PATTERN`` or ``csv:FILE``; or pass
    ``labels``.  ``tag_probs``/``tag_names`` explain clusters when the model or
    collection has no tag probabilities.  Writes ``out_png``, ``html`` and
    ``report`` when given.  ``on_error`` gets each unreadable image's error.
    ``thumbnails`` (a sequence or ``i -> path | PIL image | array``) are drawn
    instead of reading ``paths`` (e.g. face crops), and ``links`` are what a
    click in the viewer opens instead of ``paths``.  ``tagger``: whose tags a
    collection's points carry (default: its most recently added tagger).
    """
    timings: dict[str, float] = {}
    prog = _stage_progress(progress)
    t0 = time.perf_counter()
    errors: list[tuple[str, str]] = []
    root: Path | None = None
    model_name: str | None = None
    probs = tag_probs
    names = list(tag_names) if tag_names is not None else None
    cats = list(tag_categories) if tag_categories is not None else None

    single = isinstance(inputs, (str, Path))
    input_list = [inputs] if single else list(inputs)  # type: ignore[list-item]
    if single and Path(inputs).is_dir():  # type: ignore[arg-type]
        root = Path(inputs)  # type: ignore[arg-type]
    elif len(input_list) == 1 and Path(input_list[0]).is_dir():
        root = Path(input_list[0])

    if features is not None:
        paths = [str(p) for p in input_list]
        feats = np.asarray(features, dtype=np.float32)
        model_name = model if isinstance(model, str) or model is None else getattr(model, "name", None)
        if feats.shape[0] != len(paths):
            raise Illust2VecError(f"{feats.shape[0]} feature rows for {len(paths)} paths")
    elif root is not None and is_collection(root):
        paths, feats, cprobs, cnames, ccats = features_from_collection(root, tagger=tagger)
        faces = face_thumbnails_from_collection(root, paths) if thumbnails is None else None
        if faces is not None:  # a face collection: draw the crops, link to the pictures
            paths, thumbnails, links = faces
        root = None
        if probs is None and cprobs is not None:
            probs, names, cats = cprobs, cnames, ccats
        model_name = "collection"
    else:
        from illust2vec.io.images import iter_image_files

        files = iter_image_files([str(p) for p in input_list])
        if not files:
            raise Illust2VecError(f"no images found in: {', '.join(map(str, input_list))}")
        if model is None or isinstance(model, str):
            from illust2vec.models.loading import load_model

            model = load_model(model, task="feature", progress=progress)
        model_name = getattr(model, "name", None)
        if db is not None:
            from illust2vec.collection.core import Collection, canonical_path

            with Collection.open(db) as col:
                col.add([str(f) for f in files], embedder=model,
                        tagger=model if ("prob" in model.outputs and model.tags is not None) else None,
                        batch_size=batch_size or 32,
                        workers=workers, progress=progress)
                wanted = {canonical_path(f) for f in files}
                for p, m in col.errors():
                    if p in wanted:
                        errors.append((str(p), str(m)))
                        if on_error:
                            on_error(f"{p}: {m}")
            paths, feats, cprobs, cnames, ccats = features_from_collection(db, files, tagger=tagger)
            if probs is None and cprobs is not None:
                probs, names, cats = cprobs, cnames, ccats
        else:
            paths, feats, mprobs, errs = compute_features(
                model, files, batch_size=batch_size, workers=workers, progress=True if progress else None,
                on_error=on_error,
            )
            errors.extend(errs)
            if probs is None and mprobs is not None:
                probs = mprobs
                names = list(model.tags.names)
                cats = list(getattr(model.tags, "categories", []) or []) or None
    timings["features"] = time.perf_counter() - t0
    n = len(paths)
    if n == 0:
        raise Illust2VecError("no images to map")
    if probs is not None and (probs.shape[0] != n or names is None):
        raise Illust2VecError(f"tag probabilities have {probs.shape[0]} rows for {n} images")

    if labels is None and label_by:
        labels = labels_from_spec(label_by, paths, root)
    if labels is not None and len(labels) != n:
        raise Illust2VecError(f"{len(labels)} labels for {n} images")

    from threadpoolctl import threadpool_limits

    from illust2vec.maps.reduce import effective_jobs

    with threadpool_limits(limits=effective_jobs(n, n_jobs)):
        return _finish(
            paths, feats, probs, names, cats, labels, root, errors, timings, t0, model_name, out_png=out_png,
            html=html, report=report, method=method, label_by=label_by, grid=grid, seed=seed,
            max_size=max_size, title=title, perplexity=perplexity, quality_k=quality_k,
            min_cluster_size=min_cluster_size, n_jobs=n_jobs, thumb_size=thumb_size, progress=progress,
            prog=prog, thumbnails=thumbnails, links=links,
        )


def _finish(paths, feats, probs, names, cats, labels, root, errors, timings, t0, model_name, *, out_png, html,
            report, method, label_by, grid, seed, max_size, title, perplexity, quality_k, min_cluster_size,
            n_jobs, thumb_size, progress, prog, thumbnails=None, links=None) -> MapResult:
    n = len(paths)

    from illust2vec.maps.reduce import reduce

    t = time.perf_counter()
    emb = reduce(feats, method=method, seed=seed, perplexity=perplexity, n_jobs=n_jobs, progress=prog)
    timings["reduce"] = time.perf_counter() - t

    layout = None
    if grid:
        t = time.perf_counter()
        layout = snap_to_grid(emb)
        timings["grid"] = time.perf_counter() - t

    t = time.perf_counter()
    cluster_ids = find_clusters(emb, min_cluster_size=min_cluster_size)
    exclude = None
    if cats is not None and probs is not None and len(cats) == probs.shape[1]:
        exclude = np.array([c == "rating" for c in cats])
    clusters = explain_clusters(emb, cluster_ids, probs, names, exclude=exclude)
    timings["clusters"] = time.perf_counter() - t

    t = time.perf_counter()
    quality: dict = {}
    if n >= 3:
        from illust2vec.maps.quality import map_quality

        queries = 2000 if n <= 20_000 else 1000  # each query ranks all N points in D dimensions
        quality = map_quality(feats, emb, labels, k=quality_k, seed=seed, max_queries=queries)
        quality["layout"] = method
        if layout is not None:
            # equal cell distances are ordered by the t-SNE/UMAP distance underneath
            unit = (emb - emb.min(0)) / np.maximum(np.ptp(emb, axis=0), 1e-12)
            gq = map_quality(feats, layout.cells + 1e-3 * unit, labels, k=quality_k, seed=seed,
                             max_queries=queries)
            quality["grid"] = {k: v for k, v in gq.items()
                               if k in ("trustworthiness", "knn_preservation", "knn_label_accuracy_map")}
    timings["quality"] = time.perf_counter() - t

    cluster_names = {c.id: c.name for c in clusters}
    result = MapResult(paths=paths, embedding=emb, labels=list(labels) if labels is not None else None,
                       cluster_ids=cluster_ids, clusters=clusters, quality=quality, grid=layout,
                       model=model_name, timings=timings, errors=errors)

    if out_png is not None:
        from illust2vec.maps.render import render_map

        t = time.perf_counter()
        rr = render_map(out_png, emb, paths if thumbnails is None else thumbnails, labels=labels,
                        cluster_ids=cluster_ids, cluster_names=cluster_names, title=title, grid=layout, max_size=max_size, thumb_size=thumb_size, progress=prog)
        result.png, result.rects = rr.path, rr.rects
        timings["png"] = time.perf_counter() - t

    if html is not None:
        from illust2vec.io.drawing import thumbnail
        from illust2vec.maps.viewer import ViewerPoint, write_viewer

        t = time.perf_counter()
        html = Path(html)
        tt = top_tags(probs, names, exclude=exclude) if probs is not None and names is not None else None
        pos = layout.cells.astype(np.float64) if layout is not None else emb
        points = [
            ViewerPoint(x=float(pos[i, 0]), y=float(pos[i, 1]), path=paths[i],
                        label=labels[i] if labels is not None else None,
                        cluster=int(cluster_ids[i]), top_tags=tt[i] if tt else [],
                        href=_href(paths[i] if links is None else links[i], html))
            for i in range(n)
        ]
        qnum = {k: float(v) for k, v in quality.items() if isinstance(v, float)}
        qnum.update({f"grid_{k}": float(v) for k, v in quality.get("grid", {}).items()})
        thumb = paths.__getitem__ if thumbnails is None else (
            thumbnails if callable(thumbnails) else thumbnails.__getitem__)
        write_viewer(html, points, lambda i: thumbnail(thumb(i), 256), title=title or "illust2vec map",
                     cluster_names=cluster_names, quality=qnum, progress=progress,
                     embed=n <= VIEWER_EMBED_MAX)
        result.html = html
        timings["html"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - t0
    if report is not None:
        report = Path(report)
        data = result.report_dict(method=method, seed=seed, grid=bool(grid), label_by=label_by, title=title)
        text = json_safe(json.dumps(data, indent=1, ensure_ascii=False))
        atomic_write(report, lambda fh: fh.write(text), text=True)
        result.report = report
    return result


def format_quality(q: dict) -> str:
    """Human-readable lines for the quality numbers (what the CLI prints)."""
    if not q:
        return "map quality: too few images to measure"
    lines = [
        f"map quality ({q['layout']}, k={q['k']}, {q['queries']} of {q['n']} points, cosine features):",
        f"  trustworthiness      {q['trustworthiness']:.4f}",
        f"  k-NN preservation    {q['knn_preservation']:.4f}",
    ]
    if "knn_label_accuracy_map" in q:
        lines.append(f"  k-NN label accuracy  features {q['knn_label_accuracy_features']:.4f}   "
                     f"map {q['knn_label_accuracy_map']:.4f}   (k={q['label_k']}, {q['labelled']} labelled)")
    if "grid" in q:
        g = q["grid"]
        line = (f"  on the grid: trustworthiness {g['trustworthiness']:.4f}, "
                f"k-NN preservation {g['knn_preservation']:.4f}")
        if "knn_label_accuracy_map" in g:
            line += f", k-NN label accuracy {g['knn_label_accuracy_map']:.4f}"
        lines.append(line + " (grid cells; ties by map distance)")
    return "\n".join(lines)
