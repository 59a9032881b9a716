"""How a collection names files: absolute paths with symlinks resolved, and the image files under folders."""
from __future__ import annotations

import os
from collections.abc import Sequence


def canonical_path(path: str | os.PathLike) -> str:
    """The absolute path a file is stored under: symlinks resolved, except a broken one or a loop,
    which keeps its own name so that its error line names the link (never raises, unlike Path.resolve)."""
    real = os.path.realpath(path)
    return real if os.path.exists(real) else os.path.abspath(path)


def list_image_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The image files of ``paths`` (files, folders searched recursively, globs), as canonical paths."""
    from illust2vec.io.images import iter_image_files

    return [canonical_path(p) for p in iter_image_files(list(paths))]
