"""Sinks: tag records as JSON/JSONL/CSV, vectors as NumPy/Parquet, caption ``.txt`` files."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.fileio import AtomicFile, atomic_write, json_safe, utf8_safe

CaptionMode = Literal["overwrite", "append", "skip"]


def tag_record(path: str, tags: dict[str, list[tuple[str, float]]], **extra: Any) -> dict[str, Any]:
    """One image's result: ``{"path": ..., "tags": {category: {tag: probability}}}`` (sorted by probability)."""
    record: dict[str, Any] = {"path": path}
    record.update(extra)
    record["tags"] = {cat: {t: round(float(p), 6) for t, p in pairs} for cat, pairs in tags.items()}
    return record


#: First characters that make a spreadsheet read a cell as a formula (OWASP's list).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str, *, raw: bool = False) -> str:
    """A text cell for CSV opened in a spreadsheet: one starting with ``= + - @``, tab or CR gets a leading ``'``.

    Spreadsheets run such cells as formulas (``=HYPERLINK(...)``); Danbooru
    has tags like ``=_=`` and ``+_+``.  The apostrophe is what a spreadsheet
    user types to enter text literally.  ``raw`` returns ``text`` unchanged
    (``--csv-raw``).
    """
    if raw or not text or not text.startswith(FORMULA_PREFIXES):
        return text
    return "'" + text


class TagWriter:
    """Streams tag records to a file object in ``json``, ``jsonl`` or ``csv`` (long format)."""

    def __init__(self, fh: IO[str], fmt: Literal["json", "jsonl", "csv"], *, raw_csv: bool = False) -> None:
        self.fh, self.fmt, self.raw_csv = fh, fmt, raw_csv
        self._first = True
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(fh)
            self._csv.writerow(["path", "category", "tag", "probability"])
        elif fmt == "json":
            fh.write("[")

    def write(self, record: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.fh.write(json_safe(json.dumps(record, ensure_ascii=False)) + "\n")
        elif self.fmt == "json":
            self.fh.write(("\n" if self._first else ",\n") + json_safe(json.dumps(record, ensure_ascii=False)))
        else:
            for cat, tags in record["tags"].items():
                for tag, p in tags.items():
                    self._csv.writerow([csv_cell(record["path"], raw=self.raw_csv), cat,
                                        csv_cell(tag, raw=self.raw_csv), f"{p:.6f}"])
        self._first = False
        self.fh.flush()

    def close(self) -> None:
        if getattr(self.fh, "closed", False):
            return  # the output was discarded after an error
        if self.fmt == "json":
            self.fh.write("\n]\n" if not self._first else "]\n")
        self.fh.flush()


def write_matrix(path: str | os.PathLike, matrix: np.ndarray, paths: Sequence[str], *, column_names: Sequence[str] | None = None) -> list[Path]:
    """Save a row-per-image matrix with its paths.

    ``.npy``: the matrix, plus ``NAME.paths.txt`` (one path per line, same order).
    ``.npz``: arrays ``matrix`` and ``paths`` (and ``columns``).
    ``.parquet``: columns ``path`` and ``vector`` (a fixed-size list), or one
    column per name when ``column_names`` is given.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if suffix == ".npy":
        # non-UTF-8 names as their bytes (surrogateescape); encoded before anything is written
        listing = "".join(p.replace("\n", " ") + "\n" for p in paths).encode("utf-8", "surrogateescape")
        paths_file = path.with_suffix(".paths.txt")
        # both written in full before either replaces its old file: a failure leaves the old pair
        with AtomicFile(path) as npy, AtomicFile(paths_file) as txt:
            np.save(npy.file, matrix)
            txt.write(listing)
        written.append(paths_file)
    elif suffix == ".npz":
        extra = {"columns": np.asarray(column_names, dtype=str)} if column_names is not None else {}
        atomic_write(path, lambda f: np.savez(f, matrix=matrix, paths=np.asarray(paths, dtype=str), **extra))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if column_names is not None:
            table = pa.table({"path": [utf8_safe(p) for p in paths],
                              **{n: matrix[:, i] for i, n in enumerate(column_names)}})
        else:
            flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
            vectors = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
            table = pa.table({"path": [utf8_safe(p) for p in paths], "vector": vectors})
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        raise Illust2VecError(f"{path}: unknown output format {suffix!r}; use .npy, .npz or .parquet")
    return written


@dataclass
class CaptionOptions:
    """How tag lists become caption text (comma-separated, as training tools expect)."""

    underscores: bool = False          # "blue_eyes" instead of "blue eyes"
    exclude: frozenset[str] = frozenset()
    order: tuple[str, ...] = ("character", "copyright", "general")  # categories, in this order
    rating: bool = False               # prepend the most likely rating tag
    escape_parentheses: bool = False   # "\(" for prompt syntaxes that use brackets
    mode: CaptionMode = "overwrite"
    extension: str = ".txt"
    keep: tuple[str, ...] = field(default_factory=tuple)  # tags always placed first, when present


def caption_text(tags: dict[str, list[tuple[str, float]]], options: CaptionOptions) -> str:
    """The caption line for one image's plausible tags."""
    words: list[str] = []
    categories = list(options.order) + [c for c in tags if c not in options.order and c != "rating"]
    if options.rating and tags.get("rating"):
        words.append(tags["rating"][0][0])
    for cat in categories:
        words.extend(t for t, _ in tags.get(cat, []))
    seen = set()
    out = []
    excluded = {e.strip().lower().replace("_", " ") for e in options.exclude}
    for w in words:
        norm = w.lower().replace("_", " ")
        if norm in excluded or norm in seen:
            continue
        seen.add(norm)
        text = w.replace(" ", "_") if options.underscores else _spaces(w)
        if options.escape_parentheses:
            text = text.replace("(", r"\(").replace(")", r"\)")
        out.append(text)
    if options.keep:
        first = [w for w in out if w in options.keep]
        out = first + [w for w in out if w not in options.keep]
    return ", ".join(out)


#: Tags whose underscores are part of the tag (emoticons) and must stay.
_KEEP_UNDERSCORES = {"^_^", "0_0", "o_o", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<",
                     "3_3", "6_9", ">_o", "@_@", "^_^;", "x_x", "u_u", "|_|", "||_||"}


def _spaces(tag: str) -> str:
    return tag if tag in _KEEP_UNDERSCORES else tag.replace("_", " ")


def caption_path(image: Path, options: CaptionOptions, caption_dir: Path | None, root: Path | None) -> Path:
    """Where the caption of ``image`` goes: beside it, or mirrored under ``caption_dir``."""
    if caption_dir is None:
        return image.with_suffix(options.extension)
    rel = image.name
    if root is not None:
        try:
            rel = str(image.resolve().relative_to(root))
        except ValueError:
            rel = image.name
    return (caption_dir / rel).with_suffix(options.extension)


def write_caption(path: Path, text: str, mode: CaptionMode) -> bool:
    """Write one caption file; returns False when skipped because it exists."""
    if path.exists():
        if mode == "skip":
            return False
        if mode == "append":
            old = path.read_text(encoding="utf-8").rstrip()
            if old:
                have = {w.strip() for w in old.split(",")}
                new = [w for w in text.split(", ") if w and w not in have]
                text = old + (", " + ", ".join(new) if new else "")
    atomic_write(path, lambda fh: fh.write(text + "\n"), text=True)
    return True


def common_root(paths: Iterable[Path]) -> Path | None:
    resolved = [str(p.resolve().parent) for p in paths]
    if not resolved:
        return None
    return Path(os.path.commonpath(resolved))


def open_text_output(path: str | None) -> tuple[IO[str], bool]:
    """``(file, should_close)`` for ``--output`` (stdout when absent or ``-``).

    A file is an :class:`~illust2vec.fileio.AtomicFile`: ``close()`` puts the
    complete output in place, ``discard()`` (call it when the run fails)
    leaves an existing file as it was.
    """
    import sys

    if path in (None, "-"):
        return sys.stdout, False
    return AtomicFile(path, text=True, newline=""), True  # type: ignore[return-value]


__all__ = [
    "FORMULA_PREFIXES", "CaptionOptions", "TagWriter", "csv_cell", "caption_path", "caption_text", "common_root", "open_text_output",
    "tag_record", "write_caption", "write_matrix",
]
