"""Anime faces: detection (AnimeFace 2009 through its bundled native library), crops and face items.

Main entry points:

* :func:`detect_faces` (image or path -> list of :class:`Face` with box,
  likelihood, landmarks and colours),
* :func:`face_crops` / :func:`crop_region` (margin, squared, padded at borders),
* :func:`iter_detections` / :func:`iter_face_items` (many images in worker
  processes; faces as items for tagging, embedding, indexing and maps),
* :class:`FaceInputs` / :func:`face_features` (face crops through a model,
  detection running ahead in worker processes),
* :func:`draw_faces` / :func:`contact_sheet` (visual check),
* :mod:`illust2vec.cli.face_options` (``--faces`` options for the commands).

The detector works with any Pillow version: it never touches Pillow's
internals (see :mod:`illust2vec.faces.native`).
"""
from __future__ import annotations

from illust2vec.faces.detect import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    Face,
    crop_padded,
    crop_region,
    detect_faces,
    face_crops,
)
from illust2vec.faces.features import FaceFeatures, FaceInputs, FaceOptions, face_features
from illust2vec.faces.items import (
    Detection,
    FaceItem,
    FaceItemError,
    detection_items,
    face_label,
    face_ref,
    iter_detections,
    iter_face_items,
    parse_face_ref,
)
from illust2vec.faces.native import FaceDetectorUnavailable

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_MAX_SIDE",
    "Detection",
    "Face",
    "FaceDetectorUnavailable",
    "FaceFeatures",
    "FaceInputs",
    "FaceOptions",
    "FaceItem",
    "FaceItemError",
    "contact_sheet",
    "crop_padded",
    "crop_region",
    "detect_faces",
    "detection_items",
    "draw_faces",
    "face_crops",
    "face_features",
    "face_label",
    "face_ref",
    "iter_detections",
    "iter_face_items",
    "parse_face_ref",
]


def __getattr__(name: str):  # drawing helpers are imported on demand
    if name in ("draw_faces", "contact_sheet"):
        from illust2vec.faces import sheet

        return getattr(sheet, name)
    raise AttributeError(f"module 'illust2vec.faces' has no attribute {name!r}")
