"""Where the images of a distributed run come from: local paths, lists of paths, object stores.

A source is a string: a local path, or a URI that PyArrow's file systems
open (``s3://bucket/key.jpg``, ``gs://...``, ``file:///...``).  Workers on
other machines read it themselves, so local paths must be on storage every
node mounts at the same place (NFS), or be URIs.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from illust2vec.errors import Illust2VecError
from illust2vec.io.images import IMAGE_EXTENSIONS, iter_image_files
from illust2vec.models.store import sha256_file

#: Suffixes of files that list sources (one per line, a ``path`` column, or the first column).
LIST_SUFFIXES = (".txt", ".lst", ".csv", ".parquet")


def is_uri(source: str) -> bool:
    """Whether ``source`` names a file through a URI scheme (``s3://``, ``gs://``, ``file://``)."""
    return "://" in source


def _filesystem(uri: str):
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for unknown schemes and bad URIs
        raise Illust2VecError(f"{uri}: cannot open this URI ({exc})") from None


def _list_uri(uri: str) -> list[str]:
    """Image files at or below ``uri`` (sorted), each as a URI with the same scheme."""
    from pyarrow import fs

    filesystem, root = _filesystem(uri)
    info = filesystem.get_file_info(root)
    scheme = uri.split("://", 1)[0]
    if info.type == fs.FileType.File:
        return [uri]
    if info.type != fs.FileType.Directory:
        return [uri]  # reported as "cannot read" per file, like a missing local path
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    names = sorted(f.path for f in found if f.type == fs.FileType.File
                   and os.path.splitext(f.path)[1].lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in f.path[len(root):].split("/")))
    return [f"{scheme}://{n}" for n in names]  # s3: "bucket/key"; file: "/abs/path"


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Sources named in a list file: ``.txt``/``.lst`` (one per line; ``#`` comments),
    ``.csv`` (a ``path`` column, else the first column) or ``.parquet`` (a ``path`` column)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "path" not in table.column_names:
            raise Illust2VecError(f"{path}: a source list in Parquet needs a 'path' column "
                                  f"(columns: {', '.join(table.column_names)})")
        return [str(p) for p in table.column("path").to_pylist() if p]
    with open(path, newline="", encoding="utf-8") as fh:
        if suffix == ".csv":
            rows = list(csv.reader(fh))
            if not rows:
                return []
            col = rows[0].index("path") if "path" in rows[0] else 0
            body = rows[1:] if "path" in rows[0] else rows
            return [r[col] for r in body if len(r) > col and r[col].strip()]
        return [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]


def expand_sources(args: Iterable[str | os.PathLike]) -> list[str]:
    """Turn command-line inputs into a list of sources, in order.

    Directories and globs are expanded as by :func:`illust2vec.io.images.iter_image_files`
    (the same order as a local run); a ``.txt``/``.lst``/``.csv``/``.parquet`` file
    lists sources (paths or URIs, not expanded further); a URI to a directory is
    listed recursively through PyArrow's file system for its scheme.
    """
    out: list[str] = []
    for arg in args:
        s = os.fspath(arg)
        if is_uri(s):
            out.extend(_list_uri(s))
        elif Path(s).suffix.lower() in LIST_SUFFIXES and Path(s).is_file():
            out.extend(read_list_file(s))
        else:
            out.extend(str(p) for p in iter_image_files([s]))
    return out


def read_source(source: str) -> tuple[bytes, int, int | None]:
    """``(bytes, size, mtime_ns)`` of a URI source; ``OSError`` when it cannot be read."""
    filesystem, path = _filesystem(source)
    info = filesystem.get_file_info(path)
    with filesystem.open_input_stream(path) as fh:
        data = fh.read()
    mtime = info.mtime_ns if info.mtime is not None else None
    return data, len(data), mtime


def stat_and_hash(source: str) -> tuple[int, int, str]:
    """``(size, mtime_ns, sha256)`` of a local file; ``OSError`` when it cannot be read."""
    st = os.stat(source)
    return st.st_size, st.st_mtime_ns, sha256_file(source)
