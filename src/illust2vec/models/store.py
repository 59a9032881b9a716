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
from illust2vec.io.atomic import atomic_write, fsync_dir
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
        return self.import_files([(src, name)])[0]

    def import_files(self, files: list[tuple[str | os.PathLike, str | None]]) -> list[Path]:
        """Copy several files ``(source, store name or None)`` into the store, all or nothing.

        Every file is first copied into ``tmp/`` (fsync'ed); only when all copies are complete
        are they renamed into ``files/``.  A failure at any point (a missing source, a full
        disk, a rename refused) removes the staged copies and puts back any file a rename had
        already replaced, so the store is as it was before the call.
        """
        sources = [(Path(src), name or Path(src).name) for src, name in files]
        for src, _ in sources:
            if not src.is_file():
                raise Illust2VecError(f"{src}: no such file to import; nothing was imported")
        self._mkdirs()
        staged: list[tuple[Path, Path]] = []
        moved: list[tuple[Path, Path | None]] = []  # (dest, backup of what was there)
        try:
            for i, (src, name) in enumerate(sources):
                part = self.tmp_dir / f"{name}.import-{os.getpid()}-{i}"
                with open(src, "rb") as inp:
                    atomic_write(part, lambda out: shutil.copyfileobj(inp, out, 1 << 22), tmp_dir=self.tmp_dir)
                staged.append((part, self.path_for(name)))
            for part, dest in staged:
                backup = None
                if dest.exists():
                    backup = dest.with_name(dest.name + f".replaced-{os.getpid()}")
                    backup = self.tmp_dir / backup.name
                    os.replace(dest, backup)
                moved.append((dest, backup))
                os.replace(part, dest)
        except BaseException:
            for dest, backup in reversed(moved):
                if backup is not None:
                    os.replace(backup, dest)
                else:
                    dest.unlink(missing_ok=True)
            for part, _ in staged:
                part.unlink(missing_ok=True)
            raise
        for _, backup in moved:
            if backup is not None:
                backup.unlink(missing_ok=True)
        fsync_dir(self.files_dir)
        return [dest for _, dest in staged]

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
