"""Face crops through a model: the glue between face detection and :func:`illust2vec.runtime.batches.iter_batches`.

>>> from illust2vec.faces.features import FaceOptions, face_features     # doctest: +SKIP
>>> ff = face_features(model, ["01.jpg", "05.jpg"], FaceOptions(margin=0.25))
>>> ff.refs
['01.jpg#face0 [81,81,218,218]', '05.jpg#face0 [160,140,80,80]', '05.jpg#face1 [281,110,80,80]']
>>> ff.features.shape
(3, 4096)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.faces.detect import DEFAULT_MARGIN, DEFAULT_MAX_SIDE, crop_padded, crop_region
from illust2vec.faces.items import FaceItemError, iter_face_items

#: The fields every output row gets with ``--faces``.
FACE_FIELDS = ("face_index", "box", "likelihood")


@dataclass(frozen=True)
class FaceOptions:
    """How pictures become face items (the ``--faces`` flags as a value).

    ``faces_only``: skip pictures without a face (else they are used whole);
    ``margin``/``square``: crop shape (:func:`~illust2vec.faces.crop_region`);
    ``min_likelihood``/``max_side``: detection (:func:`~illust2vec.faces.detect_faces`);
    ``workers``: detection processes (``None``: one per core, 0: in this process);
    ``scan``: ``"fine"`` (original bindings) or ``"fast"`` (about twice as fast).
    """

    faces_only: bool = False
    margin: float = DEFAULT_MARGIN
    square: bool = True
    min_likelihood: float = 0.0
    max_side: int | None = DEFAULT_MAX_SIDE
    workers: int | None = None
    scan: str = "fine"

    def __post_init__(self) -> None:
        from illust2vec.faces.native import SCANS

        if self.scan not in SCANS:
            raise Illust2VecError(f"face scan must be one of {', '.join(SCANS)}, got {self.scan!r}")
        if self.margin < 0:
            raise Illust2VecError(f"face margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.min_likelihood <= 1.0:
            raise Illust2VecError(f"face min_likelihood must be between 0 and 1, got {self.min_likelihood}")
        if self.max_side is not None and self.max_side < 64:
            raise Illust2VecError(f"face max_side {self.max_side}: too small; use at least 64 (or None for full size)")
        if self.workers is not None and self.workers < 0:
            raise Illust2VecError(f"face workers must be 0 or more, got {self.workers}")


def _item_meta(item: Any) -> dict[str, Any]:
    meta = item.meta()
    meta["label"] = item.label
    meta["ref"] = item.ref
    return meta


class FaceInputs:
    """Face crops of ``files`` as the ``inputs`` of :func:`illust2vec.runtime.batches.iter_batches`.

    Detection runs in worker processes ahead of the network; every crop that
    is handed out is recorded, so ``batch.indices`` map back to their face::

        faces = FaceInputs(files, FaceOptions(), on_error=report)
        for batch in iter_batches(model, faces, ...):
            for i in batch.indices:
                faces.source(i), faces.fields(i)   # path, {"face_index", "box", "likelihood"}

    Unreadable inputs go to ``on_error`` (an object whose ``str`` is
    ``"SOURCE: message"``, with ``.source`` and ``.message``) and are skipped.
    """

    def __init__(
        self,
        files: Sequence[Any],
        options: FaceOptions | None = None,
        *,
        on_error: Callable[[FaceItemError], None] | None = None,
        progress: Any = False,
    ) -> None:
        self.files = list(files)
        self.options = options or FaceOptions()
        self.on_error = on_error
        self.progress = progress
        self.meta: list[dict[str, Any]] = []
        self.errors: list[FaceItemError] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        o = self.options
        for item in iter_face_items(
            self.files,
            workers=o.workers,
            faces_only=o.faces_only,
            margin=o.margin,
            square=o.square,
            min_likelihood=o.min_likelihood,
            max_side=o.max_side,
            progress=self.progress,
            scan=o.scan,
        ):
            if isinstance(item, FaceItemError):
                self.errors.append(item)
                if self.on_error is not None:
                    self.on_error(item)
                continue
            self.meta.append(_item_meta(item))
            yield item.crop

    def source(self, index: int) -> str:
        """Path of the picture item ``index`` was cut from."""
        return self.meta[index]["source"]

    def ref(self, index: int) -> str:
        """``SOURCE#faceK [x,y,w,h]`` (the source path alone for a whole-image item)."""
        return self.meta[index]["ref"]

    def fields(self, index: int) -> dict[str, Any]:
        """``{"face_index", "box", "likelihood"}`` of item ``index`` (``None`` values for a whole image)."""
        m = self.meta[index]
        return {k: m[k] for k in FACE_FIELDS}


def face_thumbnail_source(meta: dict[str, Any], options: FaceOptions) -> np.ndarray | str:
    """What to draw for an item: its crop, cut again from the source (or the source path for a whole image)."""
    if meta.get("box") is None:
        return meta["source"]
    from illust2vec.io.images import load_image

    rgb = load_image(meta["source"])
    return crop_padded(rgb, crop_region(meta["box"], margin=options.margin, square=options.square))


@dataclass
class FaceFeatures:
    """Model outputs for every face item, in input order (faces by likelihood within a picture)."""

    meta: list[dict[str, Any]]
    features: np.ndarray
    probs: np.ndarray | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    options: FaceOptions = field(default_factory=FaceOptions)

    @property
    def refs(self) -> list[str]:
        """``SOURCE#faceK [x,y,w,h]`` per row: the source picture and the face box (path-like, unique)."""
        return [m["ref"] for m in self.meta]

    @property
    def sources(self) -> list[str]:
        return [m["source"] for m in self.meta]

    def thumbnail(self, index: int) -> np.ndarray | str:
        """The crop of row ``index`` (re-cut from its source), or the source path for a whole image."""
        return face_thumbnail_source(self.meta[index], self.options)


def face_features(
    model: Any,
    inputs: Sequence[Any],
    options: FaceOptions | None = None,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    with_probs: bool = True,
    progress: Any = None,
    on_error: Callable[[Any], None] | None = None,
) -> FaceFeatures:
    """Detect faces in ``inputs`` and run ``model`` over every crop (detection runs ahead in worker processes).

    ``workers`` are the pipeline's decode workers; detection processes come
    from ``options.workers``.  Returns features (and tag probabilities when
    the model has them and ``with_probs``) with one metadata dict per row.
    """
    from illust2vec.runtime.batches import iter_batches

    options = options or FaceOptions()
    errors: list[tuple[str, str]] = []

    def _err(e: Any) -> None:
        errors.append((str(e.source), str(e.message)))
        if on_error is not None:
            on_error(e)

    faces = FaceInputs(inputs, options, on_error=_err)
    outputs = ["feature"]
    if with_probs and "prob" in model.outputs and getattr(model, "tags", None) is not None:
        outputs.append("prob")
    feats: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    meta: list[dict[str, Any]] = []
    for batch in iter_batches(model, faces, batch_size=batch_size, workers=workers, outputs=tuple(outputs),
                              progress=progress, desc="faces", unit="face", on_error=_err):
        if not batch.indices:
            continue
        feats.append(batch.outputs["feature"])
        if "prob" in outputs:
            probs.append(batch.outputs["prob"])
        meta.extend(faces.meta[i] for i in batch.indices)
    if not feats:
        raise Illust2VecError("no picture could be read (or no face found with --faces-only); see the error lines above")
    return FaceFeatures(
        meta=meta,
        features=np.concatenate(feats).astype(np.float32),
        probs=np.concatenate(probs).astype(np.float32) if probs else None,
        errors=errors,
        options=options,
    )
