"""Command-line glue for faces, shared by ``faces``, ``tag``, ``embed``, ``index`` and ``map``.

A command that supports faces calls :func:`add_face_arguments` on its parser
and gives ``face_inputs(files, args, on_error=report)`` (``None`` without
``--faces``) to :func:`illust2vec.runtime.batches.iter_batches` instead of its files;
``faces.source(i)`` / ``faces.fields(i)`` (``face_index``, ``box``,
``likelihood``) then describe output row ``i``.  Matrix outputs get a
``FILE.faces.jsonl`` sidecar (:func:`illust2vec.pipeline.writers.write_face_sidecar`).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from illust2vec.errors import Illust2VecError, one_line
from illust2vec.faces.defaults import DEFAULT_MARGIN, DEFAULT_MAX_SIDE

if TYPE_CHECKING:  # the face modules (numpy, the detector) load when a command runs, not for --help
    import numpy as np

    from illust2vec.faces.features import FaceInputs, FaceOptions
    from illust2vec.faces.items import FaceItem, FaceItemError


def add_face_arguments(parser: argparse.ArgumentParser, *, group_title: str = "faces") -> None:
    """Add ``--faces``, ``--faces-only``, ``--face-margin``, ``--face-min-likelihood``, ``--face-workers``, ``--face-max-side``."""
    g = parser.add_argument_group(
        group_title,
        "detect anime faces (AnimeFace 2009) and work on each face crop instead of the whole picture",
    )
    g.add_argument(
        "--faces",
        action="store_true",
        help="one item per detected face (crop with margin, squared); pictures without a face are used whole",
    )
    g.add_argument(
        "--faces-only",
        action="store_true",
        help="like --faces, but skip pictures in which no face is found",
    )
    g.add_argument(
        "--face-margin",
        type=_non_negative_float,
        default=DEFAULT_MARGIN,
        metavar="FRACTION",
        help=f"margin added on each side of a face box, as a fraction of its size (default {DEFAULT_MARGIN})",
    )
    g.add_argument(
        "--face-min-likelihood",
        type=_unit_float,
        default=0.0,
        metavar="P",
        help="drop faces below this likelihood, 0..1 (default 0: all the detector reports, which is >= ~0.5)",
    )
    g.add_argument(
        "--face-workers",
        type=int,
        default=None,
        metavar="N",
        help="face detection processes (default: one per CPU core; 0 = in the main process)",
    )
    g.add_argument(
        "--face-scan",
        choices=("fine", "fast"),
        default="fine",
        help="fine (default: the original AnimeFace scan) or fast (about twice as fast, may miss a few faces)",
    )
    g.add_argument(
        "--face-max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        metavar="PIXELS",
        help=f"downscale pictures to this longest side for detection; boxes are scaled back (default {DEFAULT_MAX_SIDE})",
    )


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = _non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def faces_requested(args: argparse.Namespace) -> bool:
    """True when ``--faces`` or ``--faces-only`` was given."""
    return bool(getattr(args, "faces", False) or getattr(args, "faces_only", False))


def expand_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files, directories (recursive) and globs -> image files (see :func:`illust2vec.io.images.iter_image_files`).

    Missing paths are kept, so that detection reports ``PATH: no such file`` for them; when every
    path is missing, nothing runs (:func:`illust2vec.pipeline.readers.require_inputs`).
    """
    from illust2vec.pipeline.readers import require_inputs
    from illust2vec.io.images import iter_image_files

    require_inputs([os.fspath(p) for p in paths])
    return list(iter_image_files(list(paths)))


@dataclass
class FaceExpansion:
    """Face items of a set of inputs, ready to feed a model.

    ``items[i]`` is the crop (or whole image) for ``meta[i]``;  ``errors`` are
    ``(source, message)`` pairs for inputs that could not be read.
    """

    items: list[np.ndarray] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:  # allows ``items, meta, errors = expand_face_items(...)``
        return iter((self.items, self.meta, self.errors))


def item_meta(item: FaceItem) -> dict[str, Any]:
    """``source``, ``face_index``, ``box``, ``likelihood``, the display ``label`` and the ``ref`` of an item."""
    from illust2vec.faces.features import _item_meta

    return _item_meta(item)


def face_inputs(files: Sequence[Any], args: argparse.Namespace, *, on_error: Any = None) -> FaceInputs | None:
    """:class:`~illust2vec.faces.features.FaceInputs` when ``--faces``/``--faces-only`` was given, else ``None``."""
    from illust2vec.faces.features import FaceInputs

    return FaceInputs(files, face_options_from_args(args), on_error=on_error) if faces_requested(args) else None


def map_face_inputs(
    model: Any, inputs: Sequence[str] | str, args: argparse.Namespace, *, on_error: Any = None
) -> tuple[list[str], dict[str, Any], list[tuple[str, str]]]:
    """For ``illust2vec map --faces``: ``(refs, make_map keywords, errors)``.

    Every face crop becomes a point named ``SOURCE#faceK [x,y,w,h]``; the map
    draws the crop (``thumbnails``) and the viewer links to the source picture
    (``links``); features and tag probabilities come from the crops.
    """
    from illust2vec.faces.features import face_features
    from illust2vec.io.images import iter_image_files

    files = iter_image_files([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    if not files:
        raise Illust2VecError(f"no images found in: {inputs}")
    ff = face_features(
        model, files, face_options_from_args(args), batch_size=getattr(args, "batch_size", None),
        workers=getattr(args, "workers", None) or None, progress=not getattr(args, "quiet", False),
        on_error=on_error,
    )
    kw: dict[str, Any] = {"features": ff.features, "thumbnails": ff.thumbnail, "links": ff.sources}
    if ff.probs is not None:
        kw["tag_probs"] = ff.probs
        kw["tag_names"] = list(model.tags.names)
        kw["tag_categories"] = list(getattr(model.tags, "categories", []) or []) or None
    return ff.refs, kw, ff.errors


def iter_face_args(
    inputs: Iterable[Any], args: argparse.Namespace, *, workers: int | None = None, progress: bool | None = None
) -> Iterator[FaceItem | FaceItemError]:
    """:func:`iter_face_items` with the options of :func:`add_face_arguments` (streaming)."""
    from illust2vec.faces.items import iter_face_items

    if progress is None:
        progress = not getattr(args, "quiet", False)
    o = face_options_from_args(args)
    return iter_face_items(
        inputs,
        workers=workers if workers is not None else o.workers,
        faces_only=o.faces_only,
        margin=o.margin,
        square=o.square,
        min_likelihood=o.min_likelihood,
        max_side=o.max_side,
        progress=progress,
        scan=o.scan,
    )


def expand_face_items(
    inputs: Iterable[Any], args: argparse.Namespace, *, workers: int | None = None, progress: bool | None = None
) -> FaceExpansion:
    """Detect faces in ``inputs`` and return their crops with metadata (see :class:`FaceExpansion`)."""
    from illust2vec.faces.items import FaceItemError

    out = FaceExpansion()
    for item in iter_face_args(inputs, args, workers=workers, progress=progress):
        if isinstance(item, FaceItemError):
            out.errors.append((item.source, item.message))
            continue
        out.items.append(item.crop)
        out.meta.append(item_meta(item))
    return out


def report_errors(errors: Iterable[tuple[str, str]]) -> int:
    """Print ``error: PATH: message`` lines on stderr; return how many there were."""
    n = 0
    for source, message in errors:
        print(f"error: {one_line(source)}: {one_line(message)}", file=sys.stderr)
        n += 1
    return n


def face_options_from_args(args: argparse.Namespace) -> FaceOptions:
    """:class:`~illust2vec.faces.features.FaceOptions` from the flags of :func:`add_face_arguments`."""
    from illust2vec.faces.features import FaceOptions

    max_side = getattr(args, "face_max_side", DEFAULT_MAX_SIDE)
    if max_side is not None and max_side != 0 and max_side < 64:
        raise Illust2VecError(f"--face-max-side {max_side}: too small; use at least 64 (or 0 for full size)")
    workers = getattr(args, "face_workers", None)
    if workers is not None and workers < 0:
        raise Illust2VecError(f"--face-workers {workers}: must be 0 or more")
    return FaceOptions(
        faces_only=bool(getattr(args, "faces_only", False)),
        margin=float(getattr(args, "face_margin", DEFAULT_MARGIN)),
        min_likelihood=float(getattr(args, "face_min_likelihood", 0.0)),
        max_side=max_side or None,
        workers=workers,
        scan=getattr(args, "face_scan", "fine"),
    )
