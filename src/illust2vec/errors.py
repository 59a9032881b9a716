"""Exceptions a user can cause.  Each message says what was wrong and what to do.

The CLI turns any :class:`Illust2VecError` into one line on stderr and a
non-zero exit; per-item errors (one bad image among many) are collected and
reported without stopping the run.
"""
from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable, Mapping


class Illust2VecError(Exception):
    """Base class for errors caused by user input, files or environment."""


class ImageDecodeError(Illust2VecError):
    """An input image could not be read (missing, truncated, not an image, too large)."""


class ModelFormatError(Illust2VecError):
    """A model file is corrupt, truncated or uses something we cannot import."""


class ModelNotFoundError(Illust2VecError):
    """A model's files are not in the model store and could not be fetched.

    ``str()`` is the short message (at most 3 lines, one recommended command); ``details``
    holds the long form (every file, its source and where it would go), which the CLI prints
    with ``--debug``.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class DownloadError(Illust2VecError):
    """A download failed (network, size or checksum mismatch)."""


class MissingDependency(Illust2VecError):
    """An optional library (or a native library it brings) is not installed.

    It is a fact about the installation, not about one input: per-item loops
    re-raise it (:func:`is_missing_dependency`) so that it is said once, and
    commands check for it before any work (:func:`require_modules`).
    """


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})

#: What to do about the storage faults users meet, by errno name.
_OS_HINTS = {
    "ENOSPC": "the disk is full: free some space and run the command again",
    "EDQUOT": "the disk quota is exhausted: free some space and run the command again",
    "EROFS": "the file system is read-only: write the output somewhere else",
    "EACCES": "permission denied: check the owner and mode of the file and its folder",
    "EPERM": "operation not permitted: check the owner and mode of the file and its folder",
    "ELOOP": "a symbolic link loop",
    "EIO": "input/output error: the disk or the network file system failed",
}


def close_matches(word: str, choices: Iterable[str], *, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The ``choices`` closest to ``word`` (case-insensitive, best first), at most ``n``.

    >>> close_matches("wd-vit-v4", ["wd-vit-v3", "i2v-tag", "wd-vit-large-v3"])
    ['wd-vit-v3', 'wd-vit-large-v3']
    """
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[f] for f in found]


def did_you_mean(word: str, choices: Iterable[str] | Mapping[str, str], *, n: int = 3, quote: str = "") -> str:
    """``" Did you mean X?"`` (or ``"X, Y or Z"``) for the close choices; ``""`` when none is close.

    ``choices`` may map each choice to the text shown for it.
    """
    labels = choices if isinstance(choices, Mapping) else {c: c for c in choices}
    found = [f"{quote}{labels[c]}{quote}" for c in close_matches(word, labels, n=n)]
    if not found:
        return ""
    listed = found[0] if len(found) == 1 else ", ".join(found[:-1]) + " or " + found[-1]
    return f" Did you mean {listed}?"


def one_line(text: object) -> str:
    """``text`` with control characters (newlines in file names...) escaped, so an error stays one line."""
    return str(text).translate(_CONTROL)


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason (ENAME): what to do`` for an :class:`OSError`, on one line."""
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    where = ""
    if exc.filename is not None:
        where = f"{one_line(exc.filename)}: "
        if exc.filename2 is not None:
            where = f"{one_line(exc.filename)} -> {one_line(exc.filename2)}: "
    hint = _OS_HINTS.get(name)
    text = f"{where}{reason}" + (f" ({name})" if name else "") + (f": {hint}" if hint and name != "ELOOP" else "")
    return one_line(text)
#: Optional import -> (what it is for, the extra that installs it).
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("ONNX Runtime (every model)", "cpu"),
    "faiss": ("collections (index, search, dupes)", "collections"),
    "pyarrow": ("reading and writing Parquet", "parquet"),
    "openTSNE": ("maps (t-SNE)", "maps"),
    "sklearn": ("maps", "maps"),
    "scipy": ("maps", "maps"),
    "umap": ("UMAP maps", "umap"),
    "av": ("video (PyAV)", "video"),
    "animeface": ("face detection (faces, --faces)", "faces"),
    "fastapi": ("the web app", "serve"),
    "uvicorn": ("the web app", "serve"),
    "ray": ("Ray clusters", "ray"),
}


def missing_extra_message(module: str | None) -> str | None:
    """One line naming the pip command that installs a missing optional module, or None if it is not one."""
    top = (module or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    what, extra = OPTIONAL_MODULES[top]
    if extra == "cpu":
        return (f"{what} is not installed: pip install 'illust2vec[cpu]' "
                "(or 'illust2vec[gpu]' for NVIDIA GPUs; never both)")
    return f"{what} needs the optional package '{top}': pip install 'illust2vec[{extra}]'"


def require_modules(*modules: str) -> None:
    """Raise :class:`MissingDependency` (the pip command in one line) unless every module can be imported.

    Cheap: asks the import system where the module is, without importing it.
    """
    import importlib.util
    import sys

    for module in modules:
        top = module.split(".")[0]
        if top in sys.modules:  # None there: an import known to fail (how the tests hide a module)
            found = sys.modules[top] is not None
        else:
            try:
                found = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError):
                found = False
        if not found:
            raise MissingDependency(missing_extra_message(top) or f"the Python package '{top}' is not installed")


def is_missing_dependency(exc: BaseException) -> bool:
    """True for a missing optional library: :class:`MissingDependency`, or an import of one of
    :data:`OPTIONAL_MODULES` that failed.  Per-item ``except Exception`` clauses re-raise these."""
    if isinstance(exc, MissingDependency):
        return True
    return isinstance(exc, ModuleNotFoundError) and missing_extra_message(exc.name) is not None
