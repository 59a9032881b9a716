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
        """The stored file of this name, if present (a ``.gz`` twin counts)."""
        for candidate in (self.path_for(filename), self.path_for(filename + ".gz")):
            if candidate.is_file() and candidate.stat().st_size > 0:
                return candidate
        if filename.endswith(".gz"):
            plain = self.path_for(filename[:-3])
            if plain.is_file() and plain.stat().st_size > 0:
                return plain
        return None

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

    # -- content hashes, memoised by (path, size, mtime) so cached loads stay fast
    def content_hash(self, path: str | os.PathLike) -> str:
        path = Path(path).resolve()
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        memo_path = self.root / "hashes.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        if key in memo:
            return memo[key]
        digest = sha256_file(path)
        memo[key] = digest
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(memo_path, lambda fh: fh.write(json.dumps(memo, indent=0).encode()), fsync=True)
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
