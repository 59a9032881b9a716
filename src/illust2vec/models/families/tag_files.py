"""What the tagger families' files share: tag and threshold CSVs read with errors that name the
file and line (:func:`csv_rows`, :func:`category_code`, :func:`read_tag_table`), and a zoo
record's file list on the Hugging Face Hub (:func:`hub_model_files`).
"""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from illust2vec.errors import ModelFormatError
from illust2vec.models.spec import ModelFile
from illust2vec.models.tags import TagTable

__all__ = ["HUB_URL", "category_code", "csv_rows", "hub_model_files", "read_tag_table"]

#: Where a file of a Hub repository is downloaded from.
HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"


def csv_rows(path: str | os.PathLike[str], columns: Sequence[str], *, what: str = "tag file",
             missing: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a UTF-8 CSV file that has ``columns``.

    Errors are :class:`ModelFormatError` naming the file: ``not a WHAT (need columns ...)``,
    ``MISSING not found`` (``missing`` defaults to ``what``), ``not UTF-8 text``.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise ModelFormatError(f"{path}: not a {what} (need columns {','.join(columns)}; "
                                       f"found {reader.fieldnames})")
            for row in reader:
                yield reader.line_num, row
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: {missing or what} not found") from None
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path}: not UTF-8 text ({exc})") from None


def category_code(path: str | os.PathLike[str], line: int, value: str | None) -> int:
    """A row's integer ``category`` (``PATH:LINE: bad category 'x'`` otherwise)."""
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ModelFormatError(f"{path}:{line}: bad category {value!r}") from None


def read_tag_table(path: str | os.PathLike[str], codes: Mapping[int, str], *, name_column: str = "name",
                   what: str = "tag file", require_names: bool = True) -> TagTable:
    """A ``name,category`` CSV as a tag table, category codes named by ``codes`` (else ``categoryN``).

    ``require_names``: an empty name is an error naming the line.  No rows is an error too.
    """
    names: list[str] = []
    cats: list[str] = []
    for line, row in csv_rows(path, (name_column, "category"), what=what, missing="tag file"):
        code = category_code(path, line, row["category"])
        if require_names and not row.get(name_column):
            raise ModelFormatError(f"{path}:{line}: empty tag name")
        names.append(row[name_column])
        cats.append(codes.get(code, f"category{code}"))
    if not names:
        raise ModelFormatError(f"{path}: no tags")
    return TagTable(tuple(names), tuple(cats))


def hub_model_files(repo: str, layout: Mapping[str, str], stem: str) -> tuple[ModelFile, ...]:
    """A zoo record's files: role -> ``file`` of ``layout`` in Hub ``repo``, stored as ``STEM.BASENAME``."""
    return tuple(ModelFile(f"{stem}.{file.rsplit('/', 1)[-1]}", role, HUB_URL.format(repo=repo, file=file))
                 for role, file in layout.items())
