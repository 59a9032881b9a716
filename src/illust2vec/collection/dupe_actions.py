"""Acting on near-duplicate groups: facts per file, a recommended keeper, moves with a manifest, undo.

Nothing here deletes a picture or overwrites a file:

* :func:`file_facts` reads each file's resolution, size, format and mtime
  (image header only, no decoding).
* :func:`keeper_index` picks the copy to keep by :data:`KEEPER_RULE`.
* :func:`plan_moves` turns groups (and optional keeper choices) into a list
  of :class:`Move` s into one folder; :func:`apply_plan` carries it out and
  writes a manifest (a JSON Lines journal) into that folder, one intent line
  before each move and one ``done`` line after it; :func:`undo_manifest`
  reads the manifest and moves every file back, byte-identical (checked by
  SHA-256), refusing to overwrite anything at the original place.

Modes: ``move`` moves the other copies into the folder; ``hardlink`` and
``symlink`` leave them where they are and put links to them in the folder
(a review folder; undo removes only the links it made).
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from illust2vec.collection.errors import CollectionError
from illust2vec.models.store import sha256_file

#: The order in which :func:`keeper_index` prefers a copy (documented in ``illust2vec dupes --help``).
KEEPER_RULE = "most pixels, then lossless over lossy format, then larger file, then older (earlier mtime), then path"
#: Formats that keep every pixel (WebP counts when it is VP8L, i.e. lossless).
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "GIF", "TIFF", "PPM", "TGA", "QOI", "DIB", "ICO"})
MODES = ("move", "hardlink", "symlink")
MANIFEST_PREFIX = "dupes-manifest-"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileFacts:
    """What one needs to know to choose between copies of a picture.

    ``width``/``height``/``format`` are ``None`` when the file cannot be read
    as an image (``error`` then says why); ``bytes``/``mtime_ns`` are ``-1``
    when the file is gone.
    """

    path: str
    width: int | None
    height: int | None
    bytes: int
    format: str | None
    lossless: bool
    mtime_ns: int
    error: str | None = None

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _webp_lossless(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] == b"VP8L"


def file_facts(path: str | os.PathLike) -> FileFacts:
    """Resolution, size, format and mtime of ``path`` (reads the image header only)."""
    from PIL import Image

    p = str(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        return FileFacts(p, None, None, -1, None, False, -1, f"cannot read file: {exc.strerror or exc}")
    try:
        with Image.open(p) as im:
            w, h, fmt = int(im.width), int(im.height), (im.format or "").upper() or None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a fact about the file
        return FileFacts(p, None, None, int(st.st_size), None, False, int(st.st_mtime_ns),
                         f"not a readable image: {exc}")
    lossless = fmt in LOSSLESS_FORMATS or (fmt == "WEBP" and _webp_lossless(p))
    return FileFacts(p, w, h, int(st.st_size), fmt, lossless, int(st.st_mtime_ns))


def keeper_index(facts: Sequence[FileFacts]) -> int:
    """Index of the copy to keep in ``facts``, by :data:`KEEPER_RULE`.

    Unreadable files come last.  Raises :class:`CollectionError` for an empty list.
    """
    if not facts:
        raise CollectionError("a duplicate group needs at least one file")

    def key(i: int):
        f = facts[i]
        return (f.error is None, f.pixels, f.lossless, f.bytes, -f.mtime_ns, [-ord(c) for c in f.path])

    return max(range(len(facts)), key=key)


def describe_group(paths: Sequence[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` (e.g. ``DupeGroup.to_dict()``) plus ``files`` (facts per path, ``keep`` marked) and ``keeper``."""
    paths = list(dict.fromkeys(paths))  # a face collection may list a picture once per face
    facts = [file_facts(p) for p in paths]
    k = keeper_index(facts)
    out = dict(base or {"paths": paths})
    out["files"] = [dict(f.to_dict(), keep=(i == k)) for i, f in enumerate(facts)]
    out["keeper"] = facts[k].path
    return out


@dataclass(frozen=True)
class Move:
    """One planned action: ``src`` goes (or is linked) to ``dst``; ``keeper`` is the copy that stays."""

    src: str
    dst: str
    keeper: str
    group: int


@dataclass
class Plan:
    """Moves into ``dest`` (``mode`` one of :data:`MODES`)."""

    dest: str
    mode: str
    moves: list[Move] = field(default_factory=list)
    keepers: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as text, one line per kept file and per move."""
        verb = {"move": "move", "hardlink": "hard-link", "symlink": "symlink"}[self.mode]
        out = []
        by_group: dict[int, list[Move]] = {}
        for m in self.moves:
            by_group.setdefault(m.group, []).append(m)
        for g, ms in sorted(by_group.items()):
            out.append(f"group {g}: keep {ms[0].keeper}")
            out += [f"  {verb} {m.src} -> {m.dst}" for m in ms]
        return out


def _free_name(dest: Path, name: str, taken: set[str]) -> Path:
    stem, suffix = os.path.splitext(name)
    cand, n = name, 1
    while cand in taken or os.path.lexists(dest / cand):
        cand, n = f"{stem}~{n}{suffix}", n + 1
    taken.add(cand)
    return dest / cand


def plan_moves(groups: Iterable[Sequence[str]], dest: str | os.PathLike, *, keepers: Sequence[str | None] | None = None,
               mode: str = "move") -> Plan:
    """Plan to move (or link) every file of each group but its keeper into ``dest``.

    Args:
        groups: lists of paths, one list per group (e.g. ``DupeGroup.paths``).
        dest: the folder that receives the files, as ``dest/group_NNNN/NAME``
            (names made unique with ``~N``; existing files are never replaced).
        keepers: the path to keep per group (``None``: the recommended one,
            :func:`keeper_index`); a keeper that is not in its group is an error.
        mode: ``move``, ``hardlink`` or ``symlink`` (see the module doc).
    """
    if mode not in MODES:
        raise CollectionError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    d = Path(dest).expanduser().resolve()
    plan = Plan(str(d), mode)
    groups = [list(dict.fromkeys(g)) for g in groups]  # a face collection may list a picture once per face
    keepers = list(keepers) if keepers is not None else [None] * len(groups)
    if len(keepers) != len(groups):
        raise CollectionError(f"{len(keepers)} keepers given for {len(groups)} groups")
    for gi, (paths, keep) in enumerate(zip(groups, keepers), 1):
        if len(paths) < 2:
            continue
        if keep is None:
            keep = paths[keeper_index([file_facts(p) for p in paths])]
        elif keep not in paths:
            raise CollectionError(f"group {gi}: the keeper {keep} is not one of its files")
        plan.keepers.append(keep)
        sub = d / f"group_{gi:04d}"
        taken: set[str] = set()
        for p in paths:
            if p == keep:
                continue
            if Path(p).resolve().is_relative_to(d):
                raise CollectionError(f"{p}: is inside the destination folder {d}; choose a folder outside the collection's files")
            plan.moves.append(Move(p, str(_free_name(sub, Path(p).name, taken)), keep, gi))
    return plan


@dataclass
class ApplyReport:
    """What :func:`apply_plan` did: the manifest written, files moved/linked, and ``(path, reason)`` failures."""

    manifest: Path | None
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class UndoReport:
    """What :func:`undo_manifest` did."""

    restored: int = 0
    already: int = 0  # entries undone before, or never carried out
    failed: list[tuple[str, str]] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move_no_overwrite(src: str, dst: str) -> None:
    """Move ``src`` to ``dst``; fails with ``FileExistsError`` rather than replace ``dst``.

    Same file system: a hard link then an unlink of ``src`` (the link cannot
    replace anything).  Otherwise (or where hard links are not allowed): the
    bytes are copied into a new file created exclusively, flushed, given
    ``src``'s times and mode, and only then is ``src`` removed.
    """
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
            raise
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            shutil.copystat(src, dst)
        except BaseException:
            os.unlink(dst)
            raise
    _fsync_dir(Path(dst).parent)
    os.unlink(src)
    _fsync_dir(Path(src).parent)


def _link(src: str, dst: str, mode: str) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if mode == "hardlink":
        os.link(src, dst)
    else:
        os.symlink(src, dst)


class _Journal:
    """An append-only JSON Lines file, flushed to disk after every line."""

    def __init__(self, path: Path, create: bool) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _new_manifest(dest: Path) -> _Journal:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        p = dest / f"{MANIFEST_PREFIX}{stamp}{'' if n == 0 else f'-{n}'}.jsonl"
        try:
            j = _Journal(p, create=True)
        except FileExistsError:
            continue
        _fsync_dir(dest)
        return j
    raise CollectionError(f"{dest}: cannot create a new manifest file")  # pragma: no cover


def apply_plan(plan: Plan, *, on_error: Callable[[str, str], None] | None = None) -> ApplyReport:
    """Carry out ``plan``; returns the report with the manifest's path (``None`` for an empty plan).

    Each move is written to the manifest before it is made (with the file's
    SHA-256, size and mtime) and confirmed after; a file that changed or
    vanished since the plan, or a destination that exists, is skipped with a
    failure ``(path, reason)`` (also passed to ``on_error``) and the rest goes on.
    """
    report = ApplyReport(None)
    if not plan.moves:
        return report
    dest = Path(plan.dest)
    dest.mkdir(parents=True, exist_ok=True)
    journal = _new_manifest(dest)
    report.manifest = journal.path

    def fail(path: str, why: str) -> None:
        report.failed.append((path, why))
        if on_error:
            on_error(path, why)

    try:
        journal.write({"illust2vec_dupes_manifest": MANIFEST_VERSION, "mode": plan.mode, "dest": plan.dest,
                       "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds")})
        for n, m in enumerate(plan.moves):
            try:
                st = os.stat(m.src, follow_symlinks=False)
                sha = sha256_file(m.src)
            except OSError as exc:
                fail(m.src, f"cannot read file: {exc.strerror or exc}")
                continue
            if not os.path.exists(m.keeper):
                fail(m.src, f"its keeper {m.keeper} is gone; not moved")
                continue
            journal.write({"op": plan.mode, "n": n, "src": m.src, "dst": m.dst, "keeper": m.keeper, "group": m.group,
                           "sha256": sha, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
            try:
                if plan.mode == "move":
                    _move_no_overwrite(m.src, m.dst)
                else:
                    _link(m.src, m.dst, plan.mode)
            except FileExistsError:
                fail(m.src, f"{m.dst} exists; nothing is overwritten")
                continue
            except OSError as exc:
                fail(m.src, f"cannot {plan.mode} to {m.dst}: {exc.strerror or exc}")
                continue
            journal.write({"op": "done", "n": n})
            report.done += 1
    finally:
        journal.close()
    return report


def read_manifest(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]], set[int], set[int]]:
    """``(header, actions, done numbers, undone numbers)`` of a manifest written by :func:`apply_plan`."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CollectionError(f"{p}: cannot read the manifest: {exc.strerror or exc}") from None
    recs = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except ValueError:
            if i == len(lines):  # a line cut short by a crash while it was written
                break
            raise CollectionError(f"{p}:{i}: not a dupes manifest line") from None
    if not recs or recs[0].get("illust2vec_dupes_manifest") != MANIFEST_VERSION:
        raise CollectionError(f"{p}: not a manifest written by 'illust2vec dupes --move-to'")
    actions = [r for r in recs[1:] if r.get("op") in MODES]
    done = {r["n"] for r in recs[1:] if r.get("op") == "done"}
    undone = {r["n"] for r in recs[1:] if r.get("op") == "undone"}
    return recs[0], actions, done, undone


def undo_manifest(path: str | os.PathLike, *, on_error: Callable[[str, str], None] | None = None) -> UndoReport:
    """Put back every file a manifest moved (or remove the links it made), newest first.

    A moved file is restored only when its bytes still have the recorded
    SHA-256 and nothing exists at its original path; its times come back
    with it.  Each undone entry is appended to the manifest, so running the
    undo again does nothing more.  Failures are ``(path, reason)`` (also
    passed to ``on_error``); the rest goes on.
    """
    _, actions, done, undone = read_manifest(path)
    report = UndoReport()

    def fail(p: str, why: str) -> None:
        report.failed.append((p, why))
        if on_error:
            on_error(p, why)

    journal = _Journal(Path(path), create=False)
    try:
        for a in reversed(actions):
            n, src, dst, op = a["n"], a["src"], a["dst"], a["op"]
            if n in undone:
                report.already += 1
                continue
            dst_there = os.path.lexists(dst)
            if op in ("hardlink", "symlink"):
                if not dst_there:
                    report.already += 1
                    continue
                same = (os.path.islink(dst) and os.readlink(dst) == src) if op == "symlink" else \
                    (os.path.exists(src) and os.path.samefile(src, dst))
                if not same:
                    fail(dst, f"is no longer the {op} made to {src}; left as it is")
                    continue
                os.unlink(dst)
            else:
                src_there = os.path.lexists(src)
                if not dst_there:
                    if src_there and n not in done:
                        report.already += 1  # the move never happened
                    else:
                        fail(src, f"its moved copy {dst} is gone; cannot restore")
                    continue
                if src_there:
                    if os.path.samefile(src, dst):  # interrupted between the link and the unlink
                        os.unlink(dst)
                        journal.write({"op": "undone", "n": n})
                        report.restored += 1
                        continue
                    fail(src, f"a file exists at the original path; {dst} left where it is")
                    continue
                try:
                    sha = sha256_file(dst)
                except OSError as exc:
                    fail(dst, f"cannot read file: {exc.strerror or exc}")
                    continue
                if sha != a["sha256"]:
                    fail(dst, "its content changed since it was moved; left where it is")
                    continue
                try:
                    _move_no_overwrite(dst, src)
                except FileExistsError:
                    fail(src, f"a file exists at the original path; {dst} left where it is")
                    continue
                except OSError as exc:
                    fail(src, f"cannot move {dst} back: {exc.strerror or exc}")
                    continue
            journal.write({"op": "undone", "n": n})
            report.restored += 1
    finally:
        journal.close()
    for d in sorted({Path(a["dst"]).parent for a in actions}, reverse=True):
        try:
            d.rmdir()  # the group_NNNN folders we made, when they are empty again
        except OSError:
            pass
    return report


def list_manifests(dest: str | os.PathLike) -> list[Path]:
    """Manifests in ``dest``, newest first."""
    d = Path(dest)
    if not d.is_dir():
        return []
    return sorted(d.glob(f"{MANIFEST_PREFIX}*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def moved_paths(dest: str | os.PathLike) -> set[str]:
    """Original paths of the files that the manifests in ``dest`` moved away and that were not put back."""
    out: set[str] = set()
    for m in list_manifests(dest):
        try:
            _, actions, done, undone = read_manifest(m)
        except CollectionError:
            continue
        out.update(a["src"] for a in actions if a["op"] == "move" and a["n"] in done and a["n"] not in undone)
    return out
