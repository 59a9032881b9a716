"""Atomic file writes: readers see the old file or the complete new one, never a half-written one."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], Any],
    *,
    text: bool = False,
    newline: str | None = None,
    tmp_dir: str | os.PathLike | None = None,
    fsync: bool = False,
) -> Path:
    """Call ``write(fh)`` on a temporary file, then rename it to ``path``.

    ``text`` opens the temporary file as UTF-8 text (``newline`` as for
    :func:`open`), else binary.  ``tmp_dir`` must be on the same filesystem as
    ``path`` (default: beside it).  ``fsync`` flushes the data to disk before
    the rename.  On any error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tmp_dir) if tmp_dir is not None else path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        mode = "w" if text else "wb"
        encoding = "utf-8" if text else None
        with os.fdopen(fd, mode, encoding=encoding, newline=newline if text else None) as fh:
            write(fh)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
