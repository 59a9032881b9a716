"""Anime face detection on numpy images, and face crops.

>>> from illust2vec.faces import detect_faces, face_crops   # doctest: +SKIP
>>> faces = detect_faces("01.jpg")
>>> faces[0].box, round(faces[0].likelihood, 2)
((81, 81, 218, 218), 1.0)
>>> crop, = face_crops(load_image("01.jpg"), faces, margin=0.25)
>>> crop.shape
(327, 327, 3)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.faces.defaults import DEFAULT_MARGIN, DEFAULT_MAX_SIDE  # noqa: F401 (re-exported)

Box = tuple[int, int, int, int]

#: Landmarks given as boxes (x, y, w, h); the others are points (x, y).
BOX_LANDMARKS = ("left_eye", "right_eye", "mouth")
POINT_LANDMARKS = ("nose", "chin")
COLOR_NAMES = ("skin", "hair", "left_eye", "right_eye")



@dataclass(frozen=True)
class Face:
    """One anime face, in the coordinates of the original image.

    Attributes
    ----------
    box:
        ``(x, y, w, h)`` of the face.
    likelihood:
        Detector confidence in [0, 1] (AnimeFace keeps candidates above ~0.5).
    landmarks:
        ``left_eye``, ``right_eye``, ``mouth``: boxes ``(x, y, w, h)``;
        ``nose``, ``chin``: points ``(x, y)``.  ``left``/``right`` are the
        character's (``left_eye`` is usually on the image's right).
    colors:
        ``skin``, ``hair``, ``left_eye``, ``right_eye`` as ``(r, g, b)``.
    """

    box: Box
    likelihood: float
    landmarks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    colors: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists instead of tuples)."""
        return {
            "box": list(self.box),
            "likelihood": round(float(self.likelihood), 6),
            "landmarks": {k: list(v) for k, v in self.landmarks.items()},
            "colors": {k: list(v) for k, v in self.colors.items()},
        }


def _load_rgb(source: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB arrays as they are; anything else through :func:`illust2vec.io.images.load_image`."""
    if isinstance(source, np.ndarray) and source.dtype == np.uint8 and source.ndim == 3 and source.shape[2] == 3:
        return source
    from illust2vec.io.images import load_image

    return load_image(source)


def _scale_box(box: Sequence[int], sx: float, sy: float) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return (int(round(x * sx)), int(round(y * sy)), int(round(w * sx)), int(round(h * sy)))


def _scale_point(p: Sequence[int], sx: float, sy: float) -> tuple[int, int]:
    return (int(round(p[0] * sx)), int(round(p[1] * sy)))


def _downscale(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def detect_faces(
    image: np.ndarray | str | os.PathLike[str] | Any,
    *,
    min_likelihood: float = 0.0,
    max_side: int | None = DEFAULT_MAX_SIDE,
    scan: str = "fine",
) -> list[Face]:
    """Find anime faces with the AnimeFace 2009 detector.

    Parameters
    ----------
    image:
        (H, W, 3) uint8 RGB array, or anything :func:`illust2vec.io.images.load_image`
        accepts (path, bytes, PIL image).
    min_likelihood:
        Drop faces whose likelihood is below this (0..1). The detector itself
        keeps candidates above about 0.5; 0.9 keeps only confident faces.
    max_side:
        Images whose longest side is larger are downscaled to it for detection
        (much faster; faces smaller than ~43 px at that scale are missed) and
        the boxes are scaled back.  ``None`` detects at full size.
    scan:
        ``"fine"`` (default): the scan of the original AnimeFace bindings
        (same boxes as ``animeface.detect``).  ``"fast"``: coarser scales,
        about twice as fast, may miss a few faces.

    Returns
    -------
    Faces sorted by likelihood (highest first), then left to right.
    """
    from illust2vec.faces.native import SCANS, get_detector

    if not 0.0 <= min_likelihood <= 1.0:
        raise Illust2VecError(f"min_likelihood must be between 0 and 1, got {min_likelihood}")
    if scan not in SCANS:
        raise Illust2VecError(f"scan must be one of {', '.join(SCANS)}, got {scan!r}")
    if max_side is not None and max_side < 64:
        raise Illust2VecError(f"max_side must be at least 64 pixels (or None), got {max_side}")
    rgb = _load_rgb(image)
    small = _downscale(rgb, max_side)
    sx = rgb.shape[1] / small.shape[1]
    sy = rgb.shape[0] / small.shape[0]
    faces = []
    for raw in get_detector().detect(np.ascontiguousarray(small), scan=scan):
        if raw.likelihood < min_likelihood:
            continue
        faces.append(
            Face(
                box=_scale_box(raw.face, sx, sy),
                likelihood=raw.likelihood,
                landmarks={
                    "left_eye": _scale_box(raw.left_eye, sx, sy),
                    "right_eye": _scale_box(raw.right_eye, sx, sy),
                    "mouth": _scale_box(raw.mouth, sx, sy),
                    "nose": _scale_point(raw.nose, sx, sy),
                    "chin": _scale_point(raw.chin, sx, sy),
                },
                colors={
                    "skin": raw.skin_color,
                    "hair": raw.hair_color,
                    "left_eye": raw.left_eye_color,
                    "right_eye": raw.right_eye_color,
                },
            )
        )
    faces.sort(key=lambda f: (-f.likelihood, f.box[0], f.box[1]))
    return faces


def crop_region(box: Sequence[int], *, margin: float = DEFAULT_MARGIN, square: bool = True) -> Box:
    """The region ``(x, y, w, h)`` a face crop covers; it may extend past the image borders.

    ``margin`` is the fraction of the box's size added on each side (0.25 makes
    the crop 1.5 times the face).  ``square`` grows the shorter side so the crop
    is square, centred on the face.
    """
    if margin < 0:
        raise Illust2VecError(f"margin must be >= 0, got {margin}")
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2.0, y + h / 2.0
    if square:
        w = h = max(w, h)
    cw = max(1, int(round(w * (1.0 + 2.0 * margin))))
    ch = max(1, int(round(h * (1.0 + 2.0 * margin))))
    return (int(round(cx - cw / 2.0)), int(round(cy - ch / 2.0)), cw, ch)


def crop_padded(image: np.ndarray, region: Sequence[int], *, fill: int | tuple[int, int, int] = 255) -> np.ndarray:
    """Cut ``region`` (x, y, w, h) out of ``image``; parts outside the image are ``fill`` (white)."""
    x, y, w, h = (int(v) for v in region)
    out = np.empty((h, w) + image.shape[2:], dtype=image.dtype)
    out[...] = fill
    ih, iw = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, iw), min(y + h, ih)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = image[y0:y1, x0:x1]
    return out


def face_crops(
    image: np.ndarray | str | os.PathLike[str] | Any,
    faces: Sequence[Face | Sequence[int]],
    *,
    margin: float = DEFAULT_MARGIN,
    square: bool = True,
    fill: int | tuple[int, int, int] = 255,
) -> list[np.ndarray]:
    """Crop every face (or ``(x, y, w, h)`` box) with a margin, squared, padded with ``fill`` at borders."""
    rgb = _load_rgb(image)
    crops = []
    for face in faces:
        box = face.box if isinstance(face, Face) else tuple(face)
        crops.append(crop_padded(rgb, crop_region(box, margin=margin, square=square), fill=fill))
    return crops
