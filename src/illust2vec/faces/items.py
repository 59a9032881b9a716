"""Face detection over many images in worker processes, and faces as pipeline items.

:func:`iter_detections` runs the detector in a pool of processes (one native
detector per process), a few images per task, with a bounded number of tasks
in flight so memory stays flat on big collections, and yields results in input
order.  :func:`iter_face_items` turns each detected face into a
:class:`FaceItem` (source, face index, box, likelihood, crop), with the whole
image as a fallback item when no face is found (unless ``faces_only``).
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from illust2vec.errors import Illust2VecError, MissingDependency, is_missing_dependency
from illust2vec.runtime.pool import WorkerDied, ordered_map
from illust2vec.runtime.progress import progress_counter
from illust2vec.faces.detect import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    Box,
    Face,
    _load_rgb,
    crop_padded,
    crop_region,
    detect_faces,
)


def source_label(source: Any, index: int) -> str:
    """How an input is named in outputs: the path for files, ``<image N>`` otherwise."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<image {index}>"


@dataclass
class Detection:
    """Faces found in one input image (or the error that stopped it)."""

    index: int
    source: str
    size: tuple[int, int] | None = None  # (width, height) of the original image
    faces: list[Face] = field(default_factory=list)
    crops: list[np.ndarray] | None = None  # one per face, when asked for
    image: np.ndarray | None = None  # the decoded image, when asked for
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.error is not None:
            out["error"] = self.error
            return out
        out["width"], out["height"] = self.size if self.size else (None, None)
        out["faces"] = [dict(face_index=i, **f.to_dict()) for i, f in enumerate(self.faces)]
        return out


@dataclass
class FaceItem:
    """One item for tagging, embedding, indexing or mapping: a face crop or a whole image.

    ``face_index``, ``box`` and ``likelihood`` are ``None`` for the whole-image
    fallback of a picture without faces.
    """

    source: str
    face_index: int | None
    box: Box | None
    likelihood: float | None
    crop: np.ndarray
    crop_box: Box | None = None
    face: Face | None = None

    @property
    def is_face(self) -> bool:
        return self.face_index is not None

    @property
    def label(self) -> str:
        """``NAME.jpg#face0 [x,y,w,h]`` (or just ``NAME.jpg`` for a whole image)."""
        return face_label(self.source, self.face_index, self.box)

    @property
    def ref(self) -> str:
        """``SOURCE#face0 [x,y,w,h]`` with the full source path (just ``SOURCE`` for a whole image)."""
        return face_ref(self.source, self.face_index, self.box)

    def meta(self) -> dict[str, Any]:
        """Fields every output row carries: ``source``, ``face_index``, ``box``, ``likelihood``."""
        return {
            "source": self.source,
            "face_index": self.face_index,
            "box": list(self.box) if self.box is not None else None,
            "likelihood": round(float(self.likelihood), 6) if self.likelihood is not None else None,
        }


def face_label(source: str, face_index: int | None, box: Sequence[int] | None) -> str:
    """Display string that traces a crop back to its picture: ``NAME.jpg#face0 [x,y,w,h]``."""
    name = Path(source).name if not source.startswith("<") else source
    if face_index is None or box is None:
        return name
    return f"{name}#face{face_index} [{','.join(str(int(v)) for v in box)}]"


def face_ref(source: str, face_index: int | None, box: Sequence[int] | None) -> str:
    """Path-like reference to a face: ``SOURCE#face0 [x,y,w,h]`` (``SOURCE`` alone for a whole image)."""
    if face_index is None or box is None:
        return source
    return f"{source}#face{face_index} [{','.join(str(int(v)) for v in box)}]"


_REF = re.compile(r"^(?P<source>.*)#face(?P<index>\d+) \[(?P<box>-?\d+,-?\d+,\d+,\d+)\]$")


def parse_face_ref(ref: str) -> tuple[str, int | None, Box | None]:
    """Inverse of :func:`face_ref`: ``(source, face_index, box)``; a plain path gives ``(path, None, None)``."""
    m = _REF.match(ref)
    if m is None:
        return ref, None, None
    x, y, w, h = (int(v) for v in m.group("box").split(","))
    return m.group("source"), int(m.group("index")), (x, y, w, h)


@dataclass(frozen=True)
class _Options:
    min_likelihood: float
    max_side: int | None
    margin: float | None  # None: no crops
    square: bool
    keep_image: str  # "never" | "no_faces" | "always"
    scan: str = "fine"


def _detect_one(index: int, source: Any, label: str, opts: _Options) -> Detection:
    try:
        rgb = _load_rgb(source)
        faces = detect_faces(rgb, min_likelihood=opts.min_likelihood, max_side=opts.max_side, scan=opts.scan)
    except MissingDependency:
        raise  # the detector library is missing: one error for the run, not one per picture
    except Illust2VecError as exc:
        # ImageDecodeError says "NAME: reason"; keep the reason, the source is reported beside it
        return Detection(index=index, source=label, error=getattr(exc, "reason", None) or str(exc))
    except MemoryError:
        return Detection(index=index, source=label, error="out of memory while decoding (image too large?)")
    except Exception as exc:  # a decoder bug must not stop the whole run
        if is_missing_dependency(exc):
            raise
        return Detection(index=index, source=label, error=f"{type(exc).__name__}: {exc}")
    det = Detection(index=index, source=label, size=(rgb.shape[1], rgb.shape[0]), faces=faces)
    if opts.margin is not None:
        det.crops = [crop_padded(rgb, crop_region(f.box, margin=opts.margin, square=opts.square)) for f in faces]
    if opts.keep_image == "always" or (opts.keep_image == "no_faces" and not faces):
        det.image = rgb
    return det


def _detect_chunk(tasks: list[tuple[int, Any, str]], opts: _Options) -> list[Detection]:
    return [_detect_one(i, src, label, opts) for i, src, label in tasks]


def default_workers() -> int:
    """Worker processes used when none is given: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _make_progress(progress: Any, total: int | None) -> tuple[Callable[[int], None], Callable[[], None]]:
    return progress_counter(progress, label="faces", unit="img", total=total)


def iter_detections(
    inputs: Iterable[Any],
    *,
    workers: int | None = None,
    min_likelihood: float = 0.0,
    max_side: int | None = DEFAULT_MAX_SIDE,
    margin: float | None = None,
    square: bool = True,
    keep_image: str = "never",
    chunksize: int = 4,
    progress: Any = None,
    scan: str = "fine",
) -> Iterator[Detection]:
    """Detect faces in every input, in the decode pool's processes, yielding :class:`Detection` in input order.

    Parameters
    ----------
    inputs:
        Paths (or arrays / PIL images, which are pickled to the workers).
    workers:
        Processes; ``None`` = :func:`default_workers`, 0 or 1 = in this process.
    margin:
        When not ``None``, also cut a crop per face (see :func:`crop_region`).
    keep_image:
        Also return the decoded image: ``"never"``, ``"no_faces"`` (for
        whole-image fallbacks) or ``"always"``.
    chunksize:
        Images per task sent to a worker.
    progress:
        ``True`` for a tqdm bar on stderr, or a callable receiving the number of images done.
    scan:
        ``"fine"`` or ``"fast"`` (see :func:`~illust2vec.faces.detect_faces`).
    """
    if not 0.0 <= min_likelihood <= 1.0:
        raise Illust2VecError(f"min_likelihood must be between 0 and 1, got {min_likelihood}")
    if margin is not None and margin < 0:
        raise Illust2VecError(f"face margin must be >= 0, got {margin}")
    if keep_image not in ("never", "no_faces", "always"):
        raise ValueError(f"keep_image must be 'never', 'no_faces' or 'always', got {keep_image!r}")
    if chunksize < 1:
        raise Illust2VecError(f"chunksize must be >= 1, got {chunksize}")
    from illust2vec.faces.native import get_detector

    get_detector()  # a missing detector library is one error now, before any picture is read
    items = list(inputs)
    tasks = [(i, src, source_label(src, i)) for i, src in enumerate(items)]
    opts = _Options(min_likelihood, max_side, margin, square, keep_image, scan)
    n_workers = default_workers() if workers is None else int(workers)
    n_workers = min(n_workers, max(1, (len(tasks) + chunksize - 1) // chunksize))
    update, close = _make_progress(progress, len(tasks))
    try:
        if n_workers <= 1:
            for task in tasks:
                det = _detect_one(*task, opts)
                update(1)
                yield det
            return
        chunks = [tasks[i : i + chunksize] for i in range(0, len(tasks), chunksize)]
        try:  # the decode pool (runtime.pool): forkserver workers, safe after Ray or other threads ran here
            for chunk in ordered_map(functools.partial(_detect_chunk, opts=opts), chunks, workers=n_workers):
                for det in chunk:
                    update(1)
                    yield det
        except WorkerDied as exc:
            names = ", ".join(label for chunk_ in exc.tasks for _, _, label in chunk_)
            raise Illust2VecError(
                f"a face detection worker died while reading one of: {names}; "
                "run with 0 detection workers to find the file that crashes it"
            ) from exc
    finally:
        close()


def detection_items(det: Detection, *, faces_only: bool = False) -> list[FaceItem]:
    """The items of one detection: one per face, or the whole image when there is none."""
    if det.error is not None:
        return []
    if det.faces:
        if det.crops is None:
            raise ValueError("detection has no crops: run iter_detections with margin=...")
        items = []
        for i, (face, crop) in enumerate(zip(det.faces, det.crops)):
            items.append(
                FaceItem(
                    source=det.source,
                    face_index=i,
                    box=face.box,
                    likelihood=face.likelihood,
                    crop=crop,
                    face=face,
                )
            )
        return items
    if faces_only:
        return []
    if det.image is None:
        raise ValueError("detection has no image: run iter_detections with keep_image='no_faces'")
    return [FaceItem(source=det.source, face_index=None, box=None, likelihood=None, crop=det.image)]


@dataclass
class FaceItemError:
    """An input that could not be read; ``message`` says why."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def iter_face_items(
    paths: Iterable[Any],
    *,
    workers: int | None = None,
    faces_only: bool = False,
    margin: float = DEFAULT_MARGIN,
    square: bool = True,
    min_likelihood: float = 0.0,
    max_side: int | None = DEFAULT_MAX_SIDE,
    chunksize: int = 4,
    progress: Any = None,
    scan: str = "fine",
) -> Iterator[FaceItem | FaceItemError]:
    """Yield a :class:`FaceItem` for every face in ``paths`` (input order, faces by likelihood).

    Pictures without a face give one whole-image item (``face_index=None``)
    unless ``faces_only``.  Unreadable inputs give a :class:`FaceItemError`
    and the run goes on.
    """
    for det in iter_detections(
        paths,
        workers=workers,
        min_likelihood=min_likelihood,
        max_side=max_side,
        margin=margin,
        square=square,
        keep_image="never" if faces_only else "no_faces",
        chunksize=chunksize,
        progress=progress,
        scan=scan,
    ):
        if det.error is not None:
            yield FaceItemError(det.source, det.error)
            continue
        for item in detection_items(det, faces_only=faces_only):
            if item.is_face:
                item.crop_box = crop_region(item.box, margin=margin, square=square)  # type: ignore[arg-type]
            yield item
