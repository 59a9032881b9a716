"""Labels for map points: ``folder``, ``regex:PATTERN`` or ``csv:FILE`` (``--label-by``).

A label names the group an image belongs to (one folder per character, as in
the original illustration2vec experiment).  Images without a label get ``None``.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

from illust2vec.errors import Illust2VecError

LABEL_BY_HELP = "folder | regex:PATTERN | csv:FILE"


class LabelSpecError(Illust2VecError):
    """A ``--label-by`` value that cannot be used."""


def _rel(path: Path, root: Path | None) -> Path:
    if root is not None:
        try:
            return Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        except ValueError:
            pass
    return path


def labels_from_folders(paths: Sequence[Path | str], root: Path | str | None = None) -> list[str | None]:
    """Label = the folder an image is in, relative to ``root`` (``a/b`` for nested folders).

    Images directly inside ``root`` get ``None``.  Without ``root``: the parent folder's name.
    """
    rootp = Path(root) if root is not None else None
    out: list[str | None] = []
    for p in paths:
        p = Path(p)
        if rootp is not None:
            rel = _rel(p, rootp)
            if rel is not p:
                parent = rel.parent.as_posix()
                out.append(None if parent in ("", ".") else parent)
                continue
        out.append(p.parent.name or None)
    return out


def labels_from_regex(
    paths: Sequence[Path | str], pattern: str, root: Path | str | None = None
) -> list[str | None]:
    """Label = what ``pattern`` matches (``re.search``) in the path relative to ``root``, as POSIX.

    Uses the group named ``label`` if present, else group 1 if the pattern has
    groups, else the whole match.  No match -> ``None``.
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise LabelSpecError(
            f"--label-by regex:{pattern}: not a valid regular expression ({exc}); "
            "e.g. 'regex:^([^_]+)_' labels 'alice_01.png' as 'alice'"
        ) from exc
    rootp = Path(root) if root is not None else None
    out: list[str | None] = []
    for p in paths:
        text = _rel(Path(p), rootp).as_posix()
        m = rx.search(text)
        if m is None:
            out.append(None)
        elif "label" in rx.groupindex:
            out.append(m.group("label"))
        elif rx.groups:
            out.append(m.group(1))
        else:
            out.append(m.group(0))
    return [v if v else None for v in out]


def read_label_csv(csv_path: Path | str) -> dict[str, str]:
    """Read ``path,label`` rows (a header row ``path,label`` is optional) into a dict."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelSpecError(f"--label-by csv:{csv_path}: file not found; give a CSV with rows 'path,label'")
    mapping: dict[str, str] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 2:
                raise LabelSpecError(
                    f"{csv_path}: line {i + 1} has {len(row)} column(s); each row must be 'path,label'"
                )
            if i == 0 and row[0].strip().lower() in ("path", "file", "filename") and row[1].strip().lower() in (
                "label", "class", "character", "name",
            ):
                continue
            mapping[row[0].strip()] = row[1].strip()
    return mapping


def labels_from_csv(
    paths: Sequence[Path | str], csv_path: Path | str, root: Path | str | None = None
) -> list[str | None]:
    """Label each path from a CSV of ``path,label`` rows.

    A CSV path matches an image by, in order: the path as given, the absolute
    path, the path relative to ``root`` (or to the CSV's folder), or the file
    name alone when that name is unique among the images.
    """
    mapping = read_label_csv(csv_path)
    csv_dir = Path(csv_path).resolve().parent
    by_abs: dict[str, str] = {}
    for key, lab in mapping.items():
        kp = Path(key)
        for base in ([kp] if kp.is_absolute() else [csv_dir / kp] + ([Path(root) / kp] if root else [])):
            by_abs.setdefault(os.path.realpath(base), lab)
    names = [Path(p).name for p in paths]
    name_counts: dict[str, int] = {}
    for nm in names:
        name_counts[nm] = name_counts.get(nm, 0) + 1
    rootp = Path(root) if root is not None else None
    out: list[str | None] = []
    for p, nm in zip(paths, names):
        p = Path(p)
        lab = mapping.get(str(p)) or mapping.get(p.as_posix()) or by_abs.get(os.path.realpath(p))
        if lab is None and rootp is not None:
            lab = mapping.get(_rel(p, rootp).as_posix())
        if lab is None and name_counts[nm] == 1:
            lab = mapping.get(nm)
        out.append(lab or None)
    return out


def labels_from_spec(
    spec: str | None, paths: Sequence[Path | str], root: Path | str | None = None
) -> list[str | None] | None:
    """Dispatch ``--label-by``: ``folder``, ``regex:PATTERN``, ``csv:FILE`` or ``None`` (no labels)."""
    if spec is None or spec == "" or spec == "none":
        return None
    if spec == "folder":
        return labels_from_folders(paths, root)
    if spec.startswith("regex:"):
        return labels_from_regex(paths, spec[len("regex:"):], root)
    if spec.startswith("csv:"):
        return labels_from_csv(paths, spec[len("csv:"):], root)
    raise LabelSpecError(f"--label-by {spec!r}: unknown; use one of {LABEL_BY_HELP}")
