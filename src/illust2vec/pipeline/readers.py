"""Readers, the first stage: what the pictures are, before any is decoded.

* :func:`image_files`: files, folders (recursive) and globs, in a stable order;
* :func:`source_list`: the same plus list files and URIs (``s3://``, ``gs://``,
  ``https://``), for runs whose workers read the sources themselves (Ray);
* :func:`face_crops`: an input stage that detects faces in the decode pool and
  feeds one crop per face (or the whole picture) to the models.

Video frames come from :func:`illust2vec.video.iter_video_frames`, whose frames
the same runner takes.

Decoding itself happens in the runner's decode pool (:mod:`illust2vec.runtime.pool`).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from illust2vec.errors import Illust2VecError

Paths = Sequence[str | os.PathLike]


def require_inputs(paths: Paths) -> None:
    """Before any work: one error when no input names anything (``tag nonexist/``).

    A missing path among others that exist is reported by the run (``error: PATH: no such file``)
    and the exit code is 1; with nothing to read there is no run, no output and no progress bar.
    """
    from illust2vec.errors import one_line
    from illust2vec.io.images import missing_inputs

    missing = missing_inputs(paths)
    if missing and len(missing) == len(paths):
        raise Illust2VecError(f"{', '.join(one_line(p) for p in missing)}: no such file or directory")


def image_files(paths: Paths, *, recursive: bool = True) -> list[Path]:
    """The image files under ``paths`` (see :func:`~illust2vec.io.images.iter_image_files`); none is an error."""
    from illust2vec.io.images import iter_image_files

    require_inputs([str(p) for p in paths])
    files = iter_image_files([str(p) for p in paths], recursive=recursive)
    if not files:
        raise Illust2VecError(f"no images found in: {', '.join(map(str, paths))}")
    return files


def source_list(paths: Paths) -> list[str]:
    """Files, folders, list files (one source a line) and URIs, expanded (see :func:`~illust2vec.distributed.expand_sources`)."""
    from illust2vec.distributed import expand_sources

    sources = expand_sources([str(p) for p in paths])
    if not sources:
        raise Illust2VecError(f"no images found in: {', '.join(map(str, paths))}")
    return sources


def face_crops(files: Sequence[Any], options: Any = None, *, on_error: Callable[[Any], None] | None = None):
    """:class:`~illust2vec.faces.features.FaceInputs`: one crop per face, detected in the decode pool.

    Iterating it yields the crops; ``.source(i)``, ``.ref(i)``, ``.fields(i)`` and
    ``.meta[i]`` describe crop ``i``.  ``options`` is a :class:`~illust2vec.faces.FaceOptions`.
    """
    from illust2vec.faces.features import FaceInputs

    return FaceInputs(files, options, on_error=on_error)

