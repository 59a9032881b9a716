"""Atomic file writes: readers see the old file or the complete new one, never a half-written one.

New files get the mode any other program would give them (``0666 & ~umask``);
a file that is replaced keeps its mode.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    *,
    text: bool = False,
    newline: str | None = None,
    tmp_dir: str | os.PathLike | None = None,
    fsync: bool = False,
) -> Iterator[IO[Any]]:
    """Open a temporary file that becomes ``path`` when the ``with`` block ends without error.

    ``text`` opens it as UTF-8 text (``newline`` as for :func:`open`), else
    binary.  ``tmp_dir`` must be on the same filesystem as ``path`` (default:
    beside it).  ``fsync`` flushes the data to disk before the rename.  On any
    error the temporary file is removed and ``path`` is left as it was.
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
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), _final_mode(path))
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], Any],
    *,
    text: bool = False,
    newline: str | None = None,
    tmp_dir: str | os.PathLike | None = None,
    fsync: bool = False,
) -> Path:
    """Call ``write(fh)`` on a temporary file, then rename it to ``path`` (see :func:`atomic_open`)."""
    with atomic_open(path, text=text, newline=newline, tmp_dir=tmp_dir, fsync=fsync) as fh:
        write(fh)
    return Path(path)
