"""``make_map``: images (or a collection) -> features -> 2-D map -> PNG, HTML viewer and report.

Stages (each also callable alone, each configured by one record of :mod:`.options`):

1. :func:`gather_features` (:class:`~.options.FeatureOptions`): from a collection
   (``db``, or the input *is* a collection directory), else computed with the
   model (``iter_batches``); tag probabilities come along when the collection or
   model has them;
2. :func:`layout_map` (:class:`~.options.LayoutOptions`): L2-normalise, PCA 50,
   openTSNE / UMAP / PCA (:mod:`.reduce`), optional grid snap (:mod:`.grid`),
   clusters with distinctive tags (:mod:`.clusters`), quality (:mod:`.quality`);
3. PNG (:func:`.render.render_map`, :class:`~.options.RenderOptions`), HTML viewer
   (:func:`write_map_viewer`), JSON report.
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
from illust2vec.maps.options import FeatureOptions, LayoutOptions, MapOptions

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


@dataclass(frozen=True)
class MapData:
    """Data a caller already has, so that :func:`make_map` does not compute or read it.

    ``features`` (N, D), with ``inputs`` the matching list of image paths, skips
    feature extraction.  ``labels``: one per image (instead of ``label_by``).
    ``tag_probs``/``tag_names``/``tag_categories`` explain clusters when the model
    or collection has no tag probabilities.  ``thumbnails`` (a sequence or
    ``i -> path | PIL image | array``) are drawn instead of reading the paths
    (e.g. face crops), and ``links`` are what a click in the viewer opens.
    """

    features: np.ndarray | None = None
    labels: Sequence[str | None] | None = None
    tag_probs: np.ndarray | None = None
    tag_names: Sequence[str] | None = None
    tag_categories: Sequence[str] | None = None
    thumbnails: Sequence[Any] | Callable[[int], Any] | None = None
    links: Sequence[str] | None = None


@dataclass
class MapFeatures:
    """What the features stage gives the layout: one row per image that worked."""

    paths: list[str]
    features: np.ndarray
    probs: np.ndarray | None = None
    names: list[str] | None = None
    categories: list[str] | None = None
    root: Path | None = None
    model: str | None = None
    thumbnails: Sequence[Any] | Callable[[int], Any] | None = None
    links: Sequence[str] | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class MapLayout:
    """What the layout stage computed: positions, optional grid, clusters, quality."""

    embedding: np.ndarray
    grid: GridLayout | None
    cluster_ids: np.ndarray
    clusters: list[ClusterInfo]
    quality: dict
    exclude: np.ndarray | None


def _input_root(inputs: Sequence[Path | str] | Path | str) -> tuple[list, Path | None]:
    single = isinstance(inputs, (str, Path))
    input_list = [inputs] if single else list(inputs)  # type: ignore[list-item]
    root = Path(input_list[0]) if len(input_list) == 1 and Path(input_list[0]).is_dir() else None
    return input_list, root


def gather_features(
    inputs: Sequence[Path | str] | Path | str,
    *,
    model: Any = None,
    data: MapData = MapData(),
    options: FeatureOptions = FeatureOptions(),
    progress: Any = False,
    on_error: Callable[[Any], None] | None = None,
) -> MapFeatures:
    """Stage 1: the features of ``inputs`` (given in ``data``, read from a collection, or computed)."""
    input_list, root = _input_root(inputs)
    if data.features is not None:
        paths = [str(p) for p in input_list]
        feats = np.asarray(data.features, dtype=np.float32)
        if feats.shape[0] != len(paths):
            raise Illust2VecError(f"{feats.shape[0]} feature rows for {len(paths)} paths")
        name = model if isinstance(model, str) or model is None else getattr(model, "name", None)
        out = MapFeatures(paths, feats, root=root, model=name)
    elif root is not None and is_collection(root):
        paths, feats, probs, names, cats = features_from_collection(root, tagger=options.tagger)
        out = MapFeatures(paths, feats, probs, names, cats, model="collection")
        faces = face_thumbnails_from_collection(root, paths) if data.thumbnails is None else None
        if faces is not None:  # a face collection: draw the crops, link to the pictures
            out.paths, out.thumbnails, out.links = faces
    else:
        out = _model_features(input_list, root, model, options, progress, on_error)
    if data.thumbnails is not None:
        out.thumbnails, out.links = data.thumbnails, data.links
    elif data.links is not None:
        out.links = data.links
    if data.tag_probs is not None:
        out.probs = data.tag_probs
        out.names = list(data.tag_names) if data.tag_names is not None else None
        out.categories = list(data.tag_categories) if data.tag_categories is not None else None
    n = len(out.paths)
    if n == 0:
        raise Illust2VecError("no images to map")
    if out.probs is not None and (out.probs.shape[0] != n or out.names is None):
        raise Illust2VecError(f"tag probabilities have {out.probs.shape[0]} rows for {n} images")
    return out


def _model_features(input_list: list, root: Path | None, model: Any, options: FeatureOptions, progress: Any,
                    on_error: Callable[[Any], None] | None) -> MapFeatures:
    from illust2vec.io.images import iter_image_files

    files = iter_image_files([str(p) for p in input_list])
    if not files:
        raise Illust2VecError(f"no images found in: {', '.join(map(str, input_list))}")
    if model is None or isinstance(model, str):
        from illust2vec.models.loading import load_model

        model = load_model(model, task="feature", progress=bool(progress))
    name = getattr(model, "name", None)
    tags = "prob" in model.outputs and model.tags is not None
    if options.db is None:
        paths, feats, probs, errors = compute_features(
            model, files, batch_size=options.batch_size, workers=options.workers, progress=progress or None,
            on_error=on_error,
        )
        out = MapFeatures(paths, feats, root=root, model=name, errors=errors)
        if probs is not None:
            out.probs, out.names = probs, list(model.tags.names)
            out.categories = list(getattr(model.tags, "categories", []) or []) or None
        return out
    from illust2vec.collection.core import Collection, canonical_path

    errors: list[tuple[str, str]] = []
    with Collection.open(options.db) as col:
        col.add([str(f) for f in files], embedder=model, tagger=model if tags else None,
                batch_size=options.batch_size or 32, workers=options.workers, progress=progress)
        wanted = {canonical_path(f) for f in files}
        for p, m in col.errors():
            if p in wanted:
                errors.append((str(p), str(m)))
                if on_error:
                    on_error(f"{p}: {m}")
    paths, feats, probs, names, cats = features_from_collection(options.db, files, tagger=options.tagger)
    return MapFeatures(paths, feats, probs, names, cats, root=root, model=name, errors=errors)


def layout_map(
    feats: np.ndarray,
    *,
    labels: Sequence[str | None] | None = None,
    probs: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    options: LayoutOptions = LayoutOptions(),
    progress: Any = None,
    timings: dict[str, float] | None = None,
) -> MapLayout:
    """Stage 2: reduce to 2-D, snap to the grid, find and explain clusters, measure quality."""
    from threadpoolctl import threadpool_limits

    from illust2vec.maps.reduce import effective_jobs, reduce

    timings = {} if timings is None else timings
    n = feats.shape[0]
    with threadpool_limits(limits=effective_jobs(n, options.n_jobs)):
        t = time.perf_counter()
        emb = reduce(feats, method=options.method, seed=options.seed, perplexity=options.perplexity,
                     n_jobs=options.n_jobs, progress=progress)
        timings["reduce"] = time.perf_counter() - t
        layout = None
        if options.grid:
            t = time.perf_counter()
            layout = snap_to_grid(emb)
            timings["grid"] = time.perf_counter() - t
        t = time.perf_counter()
        cluster_ids = find_clusters(emb, min_cluster_size=options.min_cluster_size)
        exclude = None
        if categories is not None and probs is not None and len(categories) == probs.shape[1]:
            exclude = np.array([c == "rating" for c in categories])
        clusters = explain_clusters(emb, cluster_ids, probs, names, exclude=exclude)
        timings["clusters"] = time.perf_counter() - t
        t = time.perf_counter()
        quality = _quality(feats, emb, layout, labels, options)
        timings["quality"] = time.perf_counter() - t
    return MapLayout(emb, layout, cluster_ids, clusters, quality, exclude)


def _quality(feats, emb, layout, labels, options: LayoutOptions) -> dict:
    n = feats.shape[0]
    if n < 3:
        return {}
    from illust2vec.maps.quality import map_quality

    queries = 2000 if n <= 20_000 else 1000  # each query ranks all N points in D dimensions
    k, seed = options.quality_k, options.seed
    quality = map_quality(feats, emb, labels, k=k, seed=seed, max_queries=queries)
    quality["layout"] = options.method
    if layout is not None:
        # equal cell distances are ordered by the t-SNE/UMAP distance underneath
        unit = (emb - emb.min(0)) / np.maximum(np.ptp(emb, axis=0), 1e-12)
        gq = map_quality(feats, layout.cells + 1e-3 * unit, labels, k=k, seed=seed, max_queries=queries)
        quality["grid"] = {key: v for key, v in gq.items()
                           if key in ("trustworthiness", "knn_preservation", "knn_label_accuracy_map")}
    return quality


def write_map_viewer(html: Path | str, found: MapFeatures, lay: MapLayout, labels, *, title: str | None,
                     progress: Any = None) -> Path:
    """Stage 4: the HTML viewer of a laid-out map (one file up to :data:`VIEWER_EMBED_MAX` images)."""
    from illust2vec.io.drawing import thumbnail
    from illust2vec.maps.viewer import ViewerOptions, ViewerPoint, write_viewer

    html = Path(html)
    paths, n = found.paths, len(found.paths)
    probs, names = found.probs, found.names
    tt = top_tags(probs, names, exclude=lay.exclude) if probs is not None and names is not None else None
    pos = lay.grid.cells.astype(np.float64) if lay.grid is not None else lay.embedding
    links = found.links
    points = [
        ViewerPoint(x=float(pos[i, 0]), y=float(pos[i, 1]), path=paths[i],
                    label=labels[i] if labels is not None else None,
                    cluster=int(lay.cluster_ids[i]), top_tags=tt[i] if tt else [],
                    href=_href(paths[i] if links is None else links[i], html))
        for i in range(n)
    ]
    qnum = {k: float(v) for k, v in lay.quality.items() if isinstance(v, float)}
    qnum.update({f"grid_{k}": float(v) for k, v in lay.quality.get("grid", {}).items()})
    thumbs = found.thumbnails
    thumb = paths.__getitem__ if thumbs is None else (thumbs if callable(thumbs) else thumbs.__getitem__)
    options = ViewerOptions(title=title or "illust2vec map", embed=n <= VIEWER_EMBED_MAX,
                            avoid_overlap=lay.grid is None)
    return write_viewer(html, points, lambda i: thumbnail(thumb(i), 256), options,
                        cluster_names={c.id: c.name for c in lay.clusters}, quality=qnum, progress=progress)


def make_map(
    inputs: Sequence[Path | str] | Path | str,
    out_png: Path | str | None = None,
    *,
    html: Path | str | None = None,
    report: Path | str | None = None,
    options: MapOptions = MapOptions(),
    model: Any = None,
    data: MapData = MapData(),
    progress: Any = False,
    on_error: Callable[[Any], None] | None = None,
) -> MapResult:
    """Draw a map of images: the library form of ``illust2vec map``.

    A chain of stages, each callable alone: :func:`gather_features` ->
    labels (:func:`~illust2vec.maps.labels.labels_from_spec`) ->
    :func:`layout_map` -> PNG (:func:`~illust2vec.maps.render.render_map`) ->
    viewer (:func:`write_map_viewer`) -> JSON report.

    ``inputs``: image files/directories/globs, or a collection directory.
    ``options`` (:class:`~illust2vec.maps.options.MapOptions`): one record per
    stage.  ``model``: an :class:`~illust2vec.models.image_model.ImageModel` or a
    zoo name (default: the best feature model available offline).  ``data``:
    features, labels, tags, thumbnails or links the caller already has
    (:class:`MapData`).  Writes ``out_png``, ``html`` and ``report`` when given.
    ``progress``: ``True`` for bars on stderr, or a callback
    (:mod:`illust2vec.runtime.progress`) that can stop the run.  ``on_error`` gets
    each unreadable image's error.
    """
    t0 = time.perf_counter()
    bars = None
    if progress is True:
        from illust2vec.runtime.progress import ProgressBar

        progress = bars = ProgressBar(leave=False)
    try:
        found = gather_features(inputs, model=model, data=data, options=options.features, progress=progress,
                                on_error=on_error)
        timings = {"features": time.perf_counter() - t0}
        n = len(found.paths)
        labels = data.labels
        if labels is None and options.label_by:
            labels = labels_from_spec(options.label_by, found.paths, found.root)
        if labels is not None and len(labels) != n:
            raise Illust2VecError(f"{len(labels)} labels for {n} images")
        lay = layout_map(found.features, labels=labels, probs=found.probs, names=found.names,
                         categories=found.categories, options=options.layout, progress=progress, timings=timings)
        result = MapResult(paths=found.paths, embedding=lay.embedding,
                           labels=list(labels) if labels is not None else None, cluster_ids=lay.cluster_ids,
                           clusters=lay.clusters, quality=lay.quality, grid=lay.grid, model=found.model,
                           timings=timings, errors=found.errors)
        if out_png is not None:
            from illust2vec.maps.render import render_map

            t = time.perf_counter()
            rr = render_map(out_png, lay.embedding, found.paths if found.thumbnails is None else found.thumbnails,
                            labels=labels, cluster_ids=lay.cluster_ids,
                            cluster_names={c.id: c.name for c in lay.clusters}, grid=lay.grid,
                            options=options.render, progress=progress)
            result.png, result.rects = rr.path, rr.rects
            timings["png"] = time.perf_counter() - t
        if html is not None:
            t = time.perf_counter()
            result.html = write_map_viewer(html, found, lay, labels, title=options.render.title, progress=progress)
            timings["html"] = time.perf_counter() - t
    finally:
        if bars is not None:
            bars.close()
    timings["total"] = time.perf_counter() - t0
    if report is not None:
        lo = options.layout
        data_out = result.report_dict(method=lo.method, seed=lo.seed, grid=bool(lo.grid), label_by=options.label_by,
                                      title=options.render.title)
        text = json_safe(json.dumps(data_out, indent=1, ensure_ascii=False))
        atomic_write(Path(report), lambda fh: fh.write(text), text=True)
        result.report = Path(report)
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
