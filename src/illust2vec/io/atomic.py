"""Atomic, durable file writes: readers see the old file or the complete new one, never a half-written one.

:func:`atomic_write` is the one way result files are written.  The new bytes
go to a temporary file in the same directory, are flushed and ``fsync``'ed,
the file is renamed over the target and the directory is ``fsync``'ed, so a
crash, a full disk or an exception in the writer leaves the previous file
intact and no partial or empty file behind.  A created file gets the mode a
plain :func:`open` would give it (``0o666`` less the umask, e.g. ``0644``);
a replaced file keeps its mode.

Text files are UTF-8; a file name that is not valid UTF-8 (which Linux
allows) reaches Python as a ``str`` with surrogate escapes
(:func:`os.fsdecode`) and is written back as its original bytes
(``errors="surrogateescape"``), so a path in a text output names the same
file.  JSON is different: it must stay valid UTF-8, so :func:`json_safe`
turns such characters into ``\\udcXX`` escapes, which :func:`json.loads`
reads back to the same ``str``.

Many small files (captions, face crops, video frames, a matrix and its
sidecars) go through one :class:`DurableBatch`: each file is written in full
to its temporary name, then the batch ``fsync``'s them all in parallel
(threads: the journal commits them together), renames them, and ``fsync``'s
each directory once -- the same guarantee as :func:`atomic_write` at the
cost of a few journal commits instead of two per file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["AtomicFile", "DurableBatch", "atomic_write", "current_umask", "fsync_dir", "json_safe", "utf8_safe"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-by-setting (restored at once)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _no_room(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:  # pragma: no cover
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def json_safe(text: str) -> str:
    """JSON text with lone surrogates (non-UTF-8 file names) written as ``\\uXXXX`` escapes."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _new_mode(path: Path, umask: int | None = None) -> int:
    """The mode ``path`` gets: a replaced file keeps its own, a new one ``0o666`` less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~(current_umask() if umask is None else umask)  # as open() makes it (mkstemp: 0600)


def _named_error(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (a failed write of a temporary file says only ``ENOSPC``).

    Some writers (NumPy's) report a short write without an errno: on a full
    file system that becomes ``ENOSPC``.
    """
    if exc.filename is not None and not os.path.basename(os.fspath(exc.filename)).endswith(".part"):
        return exc
    if exc.errno is not None:
        return type(exc)(exc.errno, exc.strerror, str(path))
    if _no_room(path.parent):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(None, str(exc), str(path))


class AtomicFile:
    """A temporary file beside ``path`` that replaces ``path`` when committed.

    Use it as a context manager (commit on success, discard on an exception)
    or call :meth:`commit` / :meth:`discard` yourself, e.g. for a streamed
    output that is closed in a ``finally``.  Writes and other file methods go
    to the temporary file.  Options as for :func:`atomic_write`.
    """

    def __init__(self, path: str | os.PathLike, *, text: bool = False, newline: str | None = None,
                 tmp_dir: str | os.PathLike | None = None, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        directory = Path(tmp_dir) if tmp_dir is not None else self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        mode = _new_mode(self.path)
        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".part")
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            if text:
                self.file: IO[Any] = os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape",
                                               newline=newline)
            else:
                self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            Path(self.tmp).unlink(missing_ok=True)
            raise
        self.done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            raise self._named(exc) from None

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as exc:
            raise self._named(exc) from None

    def _named(self, exc: OSError) -> OSError:
        """``exc`` naming the target file (a failed write of the temporary file says only ``ENOSPC``).

        Some writers (NumPy's) report a short write without an errno: on a
        full file system that becomes ``ENOSPC``.
        """
        if exc.filename is not None:
            return exc
        if exc.errno is not None:
            return type(exc)(exc.errno, exc.strerror, str(self.path))
        if _no_room(self.path.parent):
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return OSError(None, str(exc), str(self.path))

    def commit(self) -> Path:
        """Flush, fsync, rename over ``path`` (and fsync the directory); on failure ``path`` is untouched."""
        if self.done:
            return self.path
        self.done = True
        try:
            with self.file:
                self.file.flush()
                if self.fsync:
                    os.fsync(self.file.fileno())
            os.replace(self.tmp, self.path)
        except OSError as exc:
            Path(self.tmp).unlink(missing_ok=True)
            raise self._named(exc) from None
        except BaseException:
            Path(self.tmp).unlink(missing_ok=True)
            raise
        if self.fsync:
            fsync_dir(self.path.parent)
        return self.path

    close = commit

    def discard(self) -> None:
        """Forget what was written; ``path`` stays as it was."""
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        except OSError:
            pass  # e.g. ENOSPC flushing the buffer: the bytes are dropped anyway
        finally:
            Path(self.tmp).unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        self.discard()
        if isinstance(exc, OSError):
            named = self._named(exc)
            if named is not exc:
                raise named from None


class DurableBatch:
    """Many files written as :func:`atomic_write` writes one, with a few ``fsync`` rounds in all.

    :meth:`write` (whole bytes) or :meth:`open` (a stream) puts the complete
    new contents of one file under a temporary name beside it; nothing is
    visible yet.  :meth:`commit` (also run every ``max_pending`` files, and on
    leaving a ``with`` block, an exception included: what was handed over is
    kept) ``fsync``'s the pending files in parallel, renames each over its
    target (atomic: readers see the old file or the new one) and ``fsync``'s
    each directory once; when it returns the files survive a power cut.  A
    file written twice ends with the later contents; created files get the
    mode :func:`open` gives, replaced ones keep theirs.  :meth:`discard`
    forgets the pending files (for a set that must land whole or not at all).

    Failures name the file and touch no other: :meth:`write` and :meth:`open`
    raise the ``OSError`` (``ENOSPC`` on a full disk, with the target's name)
    at once and keep the earlier files pending; a file whose ``fsync`` or
    rename fails at commit time goes to ``on_error(path, exc)``, or, without
    it, :meth:`commit` raises the first such error after committing the
    rest.  The old file (if any) stays as it was; no temporary file is left.
    """

    def __init__(self, *, max_pending: int = 256, workers: int = 32,
                 on_error: Callable[[Path, OSError], Any] | None = None) -> None:
        self.max_pending = max(1, int(max_pending))  # open descriptors held: well under the usual 1024
        self.workers = max(1, int(workers))
        self.on_error = on_error
        self._pending: list[tuple[Path, str, IO[Any]]] = []  # (target, temporary, its open file)
        self._made: set[Path] = set()
        self._umask = current_umask()
        self._serial = 0

    def __len__(self) -> int:
        return len(self._pending)

    def write(self, path: str | os.PathLike, data: bytes | str) -> None:
        """Queue ``data`` (``str``: UTF-8, surrogate escapes as their bytes) as the new ``path``."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        with self.open(path) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def open(self, path: str | os.PathLike, *, text: bool = False,
             newline: str | None = None) -> Iterator[IO[Any]]:
        """A file to write the new ``path`` into (text: UTF-8 as :func:`atomic_write`'s); queued on closing.

        An exception inside the block discards this file (the others stay pending).
        """
        path = Path(path)
        folder = path.parent
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        mode = _new_mode(path, self._umask)
        fd, tmp = self._create(path, mode)
        fh: IO[Any] | None = None
        try:
            fh = (os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline=newline) if text
                  else os.fdopen(fd, "wb"))
            yield fh
            fh.flush()
        except BaseException as exc:
            with contextlib.suppress(OSError):
                fh.close() if fh is not None else os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _named_error(exc, path) from None
            raise
        self._pending.append((path, tmp, fh))
        if len(self._pending) >= self.max_pending:
            self.commit()

    def _create(self, path: Path, mode: int) -> tuple[int, str]:
        """A new temporary file beside ``path`` (``O_EXCL``; cheaper than :func:`tempfile.mkstemp`'s names)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        while True:
            self._serial += 1
            tmp = os.path.join(path.parent, f".{path.name}.{os.getpid()}-{id(self):x}-{self._serial}.part")
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise _named_error(exc, path) from None
            try:
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, mode)  # exactly ``mode``: the umask does not apply to fchmod
            except OSError as exc:
                os.close(fd)
                os.unlink(tmp)
                raise _named_error(exc, path) from None
            return fd, tmp

    def commit(self) -> list[Path]:
        """Make every pending file durable and visible; returns the paths committed."""
        pending, self._pending = self._pending, []
        if not pending:
            return []

        def sync(item: tuple[Path, str, IO[Any]]) -> OSError | None:
            try:
                with item[2] as fh:
                    os.fsync(fh.fileno())
                return None
            except OSError as exc:
                return exc

        if len(pending) == 1 or self.workers == 1:
            synced = [sync(item) for item in pending]
        else:  # fsync frees the GIL: the file system commits these together
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.workers, len(pending))) as pool:
                synced = list(pool.map(sync, pending))
        done: list[Path] = []
        failed: list[tuple[Path, OSError]] = []
        for (path, tmp, _), exc in zip(pending, synced):
            if exc is None:
                try:
                    os.replace(tmp, path)
                    done.append(path)
                    continue
                except OSError as err:
                    exc = err
            Path(tmp).unlink(missing_ok=True)
            failed.append((path, _named_error(exc, path)))
        for folder in dict.fromkeys(p.parent for p in done):
            fsync_dir(folder)
        for path, exc in failed:
            if self.on_error is None:
                raise failed[0][1]
            self.on_error(path, exc)
        return done

    def discard(self) -> None:
        """Forget the pending files: their targets stay as they were."""
        pending, self._pending = self._pending, []
        for _, tmp, fh in pending:
            with contextlib.suppress(OSError):
                fh.close()
            Path(tmp).unlink(missing_ok=True)

    def __enter__(self) -> DurableBatch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.commit()


def utf8_safe(text: str) -> str:
    """``text`` as valid UTF-8 for formats that hold nothing else (Parquet): non-UTF-8 bytes as ``\\xNN``."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], Any],
    *,
    text: bool = False,
    newline: str | None = None,
    tmp_dir: str | os.PathLike | None = None,
    fsync: bool = True,
) -> Path:
    """Call ``write(fh)`` on a temporary file, then rename it to ``path``.

    ``text`` opens the temporary file as UTF-8 text (``newline`` as for
    :func:`open`; surrogate escapes written as the bytes they stand for),
    else binary.  ``tmp_dir`` must be on the same filesystem as ``path``
    (default: beside it).  ``fsync`` (the default) flushes the data to disk
    before the rename and the directory after it; pass ``False`` only for
    files that can be rebuilt.  The parent directory is created when missing.
    On any error (``ENOSPC`` included) the temporary file is removed and
    ``path`` is left as it was.
    """
    with AtomicFile(path, text=text, newline=newline, tmp_dir=tmp_dir, fsync=fsync) as fh:
        write(fh.file)
    return Path(path)
