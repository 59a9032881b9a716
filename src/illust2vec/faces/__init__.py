"""Anime faces: detection (AnimeFace 2009 through its bundled native library), crops and face items.

Main entry points:

* :func:`detect_faces` (image or path -> list of :class:`Face` with box,
  likelihood, landmarks and colours),
* :func:`face_crops` / :func:`crop_region` (margin, squared, padded at borders),
* :func:`iter_detections` / :func:`iter_face_items` (many images in worker
  processes; faces as items for tagging, embedding, indexing and maps),
* :class:`FaceInputs` / :func:`face_features` (face crops through a model,
  detection running ahead in worker processes),
* :func:`draw_faces` / :func:`face_thumbnail` (visual check; a sheet of them:
  :func:`illust2vec.io.drawing.contact_sheet`),
* :mod:`illust2vec.cli.face_options` (``--faces`` options for the commands).

The detector works with any Pillow version: it never touches Pillow's
internals (see :mod:`illust2vec.faces.native`).
"""
from __future__ import annotations

from illust2vec.faces.defaults import DEFAULT_MARGIN, DEFAULT_MAX_SIDE  # noqa: F401 (exported)
from illust2vec.lazy import lazy_exports

#: Public name -> submodule; imported on first use, so that the CLI's parser stays light.
_EXPORTS = {
    "Face": "detect", "crop_padded": "detect", "crop_region": "detect", "detect_faces": "detect",
    "face_crops": "detect",
    "FaceFeatures": "features", "FaceInputs": "features", "FaceOptions": "features", "face_features": "features",
    "Detection": "items", "FaceItem": "items", "FaceItemError": "items", "detection_items": "items",
    "face_label": "items", "face_ref": "items", "iter_detections": "items", "iter_face_items": "items",
    "parse_face_ref": "items",
    "FaceDetectorUnavailable": "native",
    "draw_faces": "sheet", "face_thumbnail": "sheet",
}

__all__ = sorted([*_EXPORTS, "DEFAULT_MARGIN", "DEFAULT_MAX_SIDE"])
__getattr__ = lazy_exports("illust2vec.faces", _EXPORTS)
