"""Structural checks of model files, before they count as present in the model store.

One check for every way a file enters the store (``models import``, a
download, a file already there that ``models download`` re-examines): an
HTML/error-page sniff, then the parse of its format, chosen by file name.
The parsers come from the model families (:attr:`ModelFamily.file_checks
<illust2vec.models.spec.ModelFamily>`: i2v reads ``.caffemodel`` and
``.json[.gz]`` tag lists, WD ``selected_tags.csv``); ``.onnx`` files get
:func:`onnx.checker.check_model`.  Other names only get the sniff.  Every failure is a :class:`ModelFormatError`
naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from collections.abc import Callable, Mapping
from typing import Any

from illust2vec.errors import ModelFormatError

__all__ = ["check_model_file", "looks_like_error_page"]

#: What the first bytes of a web page or an error answer start with (after blanks, case-insensitive).
_PAGE_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<error", b"{\"error", b"<h1")


def looks_like_error_page(path: str | os.PathLike) -> bool:
    """Whether a file is a web page or an error answer rather than a model (reads 512 bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(_PAGE_STARTS)


#: A parser that raises :class:`ModelFormatError` for a file that is not of its kind.
FileCheck = Callable[[Path], Any]


def check_model_file(path: str | os.PathLike, name: str | None = None,
                     checks: Mapping[str, FileCheck] | None = None) -> None:
    """Raise :class:`ModelFormatError` unless ``path`` is a readable model file of its kind.

    ``name`` is the file name that decides the kind (default: ``path``'s own;
    a download passes the final name of its ``.part`` file); ``checks`` maps name
    endings (``.caffemodel``, ``.json.gz``) to the parser that reads that kind.
    """
    path = Path(path)
    kind = (name or path.name).lower()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ModelFormatError(f"{path}: the file is empty (0 bytes)")
    if looks_like_error_page(path):
        raise ModelFormatError(
            f"{path}: is a web page, not a model file (a login, error or download page saved instead "
            "of the file?)"
        )
    ending = max((e for e in (checks or {}) if kind.endswith(e)), key=len, default=None)
    if ending is not None:
        checks[ending](path)  # type: ignore[index]
    elif kind.endswith(".onnx"):
        import onnx  # heavy: only when an ONNX file is checked

        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # onnx raises its own error types, and DecodeError for junk
            raise ModelFormatError(f"{path}: not a valid ONNX model ({str(exc)[:200]})") from None
