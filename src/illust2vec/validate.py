"""Structural checks of model files, before they count as present in the model store.

One check for every way a file enters the store (``models import``, a
download, a file already there that ``models download`` re-examines): an
HTML/error-page sniff, then the parse of its format, chosen by file name:

* ``.caffemodel``: the Caffe wire format parses into layers with consistent blobs;
* ``.json`` / ``.json.gz``: an illustration2vec tag list (bounded when inflated);
* ``.csv``: a WD ``selected_tags.csv``;
* ``.onnx``: :func:`onnx.checker.check_model`.

Other names only get the sniff.  Every failure is a :class:`ModelFormatError`
naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from illust2vec.caffe.net import read_caffemodel
from illust2vec.errors import ModelFormatError
from illust2vec.tags import TagTable
from illust2vec.wd import read_selected_tags

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


def check_model_file(path: str | os.PathLike, name: str | None = None) -> None:
    """Raise :class:`ModelFormatError` unless ``path`` is a readable model file of its kind.

    ``name`` is the file name that decides the kind (default: ``path``'s own;
    a download passes the final name of its ``.part`` file).
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
    if kind.endswith(".caffemodel"):
        read_caffemodel(path)
    elif kind.endswith((".json", ".json.gz")):
        TagTable.from_i2v_json(path)
    elif kind.endswith(".csv"):
        read_selected_tags(path)
    elif kind.endswith(".onnx"):
        import onnx  # heavy: only when an ONNX file is checked

        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:  # onnx raises its own error types, and DecodeError for junk
            raise ModelFormatError(f"{path}: not a valid ONNX model ({str(exc)[:200]})") from None
