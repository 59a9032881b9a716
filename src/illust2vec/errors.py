"""Exceptions a user can cause.  Each message says what was wrong and what to do.

The CLI turns any :class:`Illust2VecError` into one line on stderr and a
non-zero exit; per-item errors (one bad image among many) are collected and
reported without stopping the run.
"""
from __future__ import annotations


class Illust2VecError(Exception):
    """Base class for errors caused by user input, files or environment."""


class ImageDecodeError(Illust2VecError):
    """An input image could not be read (missing, truncated, not an image, too large)."""


class ModelFormatError(Illust2VecError):
    """A model file is corrupt, truncated or uses something we cannot import."""


class ModelNotFoundError(Illust2VecError):
    """A model's files are not in the model store and could not be fetched."""


class DownloadError(Illust2VecError):
    """A download failed (network, size or checksum mismatch)."""


#: Optional import -> (what it is for, the extra that installs it).
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "onnxruntime": ("ONNX Runtime (every model)", "cpu"),
    "faiss": ("collections (index, search, dupes)", "collections"),
    "pyarrow": ("Parquet files", "parquet"),
    "openTSNE": ("maps (t-SNE)", "maps"),
    "sklearn": ("maps", "maps"),
    "scipy": ("maps", "maps"),
    "umap": ("UMAP maps", "umap"),
    "av": ("video (PyAV)", "video"),
    "animeface": ("anime faces", "faces"),
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
