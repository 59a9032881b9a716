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
