"""Which entries ``index --prune`` may drop: files that are gone, but not a drive that is away.

A file that no longer exists is dropped when its absence says it was deleted:

* it lies under a root given to ``index`` (a folder argument) that exists and
  is not empty: the user is looking at that folder and the file is not there;
* it lies under no given root, and its own folder still exists and is not empty.

It is kept, and counted in :attr:`PrunePlan.kept`, when the root it lies under
is missing or empty, or (outside the given roots) its folder is gone or empty:
that is what an unmounted drive, a network share that is down or a card that
is not inserted look like, and re-indexing everything when it comes back would
be expensive.  ``missing_roots=True`` (``index --prune-missing``) drops those
entries too.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["PrunePlan", "plan_prune"]


@dataclass
class PrunePlan:
    """What pruning drops, and what it keeps because its folder or root is unavailable."""

    drop: list[str] = field(default_factory=list)
    #: folder (a root, or a file's folder) that is missing or empty -> entries kept under it
    kept: dict[str, list[str]] = field(default_factory=dict)
    #: after a prune that was carried out: the disk given back (a :class:`~illust2vec.collection.compact.CompactReport`)
    compaction: object | None = None


def _unavailable(folder: str) -> bool:
    """Missing, not a folder, or empty (a mount point with nothing mounted)."""
    try:
        with os.scandir(folder) as it:
            return next(it, None) is None
    except OSError:
        return True


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def plan_prune(paths: Iterable[str], roots: Sequence[str | os.PathLike] = (), *,
               missing_roots: bool = False) -> PrunePlan:
    """Sort the stored ``paths`` that no longer exist into dropped and kept (see the module text).

    ``roots`` are the arguments given to ``index``; only folders count as
    roots (files and glob patterns do not).
    """
    root_dirs = []
    for r in roots:
        r = str(r)
        if any(ch in r for ch in "*?[") and not os.path.lexists(r):
            continue  # a glob pattern
        a = os.path.abspath(r)
        if os.path.isdir(a) or not os.path.lexists(a):
            root_dirs.append(os.path.realpath(a) if os.path.exists(a) else a)
    root_dirs.sort(key=len, reverse=True)  # the innermost root first
    unavailable: dict[str, bool] = {}

    def away(folder: str) -> bool:
        if folder not in unavailable:
            unavailable[folder] = _unavailable(folder)
        return unavailable[folder]

    plan = PrunePlan()
    for p in paths:
        if os.path.exists(p):
            continue
        root = next((r for r in root_dirs if _under(p, r)), None)
        folder = root if root is not None else os.path.dirname(p)
        if not missing_roots and away(folder):
            plan.kept.setdefault(folder, []).append(p)
        else:
            plan.drop.append(p)
    return plan
