"""The model store: a cache directory holding model files and converted ONNX graphs.

Layout (``ILLUST2VEC_HOME`` or ``--model-dir`` override the platform default)::

    ROOT/files/   official model files (caffemodels, tag lists, onnx + csv)
    ROOT/onnx/    graphs converted by importers, keyed by the source's content hash
    ROOT/tmp/     partial downloads and files being written (renamed into place when complete)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import atomic_write
from illust2vec.models.validate import looks_like_error_page

ENV_HOME = "ILLUST2VEC_HOME"


def default_model_dir() -> Path:
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("illust2vec", appauthor=False))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ModelStore:
    """Where model files live.  Creating a store touches nothing on disk."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_model_dir()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def path_for(self, filename: str) -> Path:
        """Where the store keeps (or would keep) a model file of this name."""
        return self.files_dir / filename

    def find(self, filename: str) -> Path | None:
        """The stored file of this name, if present (a ``.gz`` twin counts).

        An empty file, or one that is a web page (an error page saved as the
        model), does not count: it is as if the file were missing.
        """
        candidates = [self.path_for(filename), self.path_for(filename + ".gz")]
        if filename.endswith(".gz"):
            candidates.append(self.path_for(filename[:-3]))
        for candidate in candidates:
            if candidate.is_file() and candidate.stat().st_size > 0 and not looks_like_error_page(candidate):
                return candidate
        return None

    def set_aside(self, path: Path) -> Path:
        """Move a broken store file out of the way (into ``tmp/``, never deleted) and return its new path."""
        self._mkdirs()
        dest = self.tmp_dir / f"{path.name}.broken"
        os.replace(path, dest)
        return dest

    def _mkdirs(self) -> None:
        for d in (self.files_dir, self.onnx_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    def import_file(self, src: str | os.PathLike, *, name: str | None = None) -> Path:
        """Copy a model file into the store (atomically) and return its new path."""
        src = Path(src)
        if not src.is_file():
            raise Illust2VecError(f"{src}: no such file to import")
        self._mkdirs()
        dest = self.path_for(name or src.name)
        with open(src, "rb") as inp:
            return atomic_write(dest, lambda out: shutil.copyfileobj(inp, out, 1 << 22),
                                tmp_dir=self.tmp_dir, fsync=True)

    # -- content hashes, memoised by the file's stat so cached loads stay fast
    def content_hash(self, path: str | os.PathLike) -> str:
        """SHA-256 of a file, memoised in ``ROOT/hashes.json``.

        The memo key is what git's index uses to notice a changed file: path,
        size, ``mtime_ns``, ``ctime_ns``, inode and device.  Replacing a file
        by another of the same size and mtime (``cp -p``, ``touch -r``, a
        rename over it) still changes its ctime or inode, which no user can
        set back, so the hash (and the converted graph keyed by it) is
        recomputed.
        """
        path = Path(path).resolve()
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"
        memo_path = self.root / "hashes.json"
        try:
            memo = json.loads(memo_path.read_text())
            if not isinstance(memo, dict):
                memo = {}
        except (OSError, ValueError):
            memo = {}
        if key in memo:
            return memo[key]
        digest = sha256_file(path)
        prefix = f"{path}|"
        memo = {k: v for k, v in memo.items() if not k.startswith(prefix)}  # older stats of this path
        memo[key] = digest
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(memo_path, lambda fh: fh.write(json.dumps(memo, indent=0).encode()))
        except OSError:
            pass  # a read-only store still works, just without the memo
        return digest

    def cached_onnx(self, key: str, build: Callable[[], bytes]) -> Path:
        """Path of the converted graph ``key``, building and storing it on first use."""
        path = self.onnx_dir / f"{key}.onnx"
        if path.is_file() and path.stat().st_size > 0:
            return path
        self._mkdirs()
        data = build()
        atomic_write(path, lambda fh: fh.write(data), tmp_dir=self.tmp_dir, fsync=True)
        return path


def offline_mode(offline: bool | None = None) -> bool:
    """Whether downloads are forbidden (``offline`` argument or ``ILLUST2VEC_OFFLINE=1``)."""
    if offline is not None:
        return bool(offline)
    return os.environ.get("ILLUST2VEC_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
