"""Caption files for training sets: one image's tags -> one line of text, written beside the image.

:func:`make_caption` (:func:`caption_words` joined) turns one result (``{category: [(tag,
probability), ...]}`` as :func:`illust2vec.models.tags.plausible_tags` returns it, or a record
of ``tag --format json``) into a caption, by the rule set ``CaptionOptions.rules``:
``"kohya"`` is :mod:`illust2vec.datasets.caption_kohya` (kohya-ss' tagger script),
``"wd14-webui"`` :mod:`illust2vec.datasets.caption_webui` (the WD14 web UI extension), and
``"illust2vec"`` (the default) runs these rules in this order, each on what the previous left:

1. **gather** the tags of the categories in ``categories`` (in that order), then those of
   any other category except ``rating``;
2. **replace** tag names (``replace``: pairs ``(old, new)``; names compare
   case-insensitively with underscores and spaces alike); an empty ``new`` drops the tag;
3. **expand character tags** (``expand_characters``): a character tag
   ``name_(series)`` becomes the two tags ``name`` and ``series``;
4. **exclude** tags matching any pattern of ``exclude`` (shell wildcards ``*``, ``?``,
   ``[...]``, compared as in step 2);
5. drop **repeats** (the first, most probable, stays);
6. **order**: ``category`` (categories in the order above, most probable first within
   each), ``confidence`` (most probable first overall), ``alphabetical`` or ``model`` (the
   model's tag-list order: pass ``table=model.tags``); then, with ``character_first``,
   character tags before the others;
7. **always first**: tags named in ``always_first`` that are present move to the front,
   in the order given;
8. **rating**: the most probable rating tag (after steps 2 and 4) goes ``first``,
   ``last`` or nowhere (``none``);
9. **format** each tag: spaces or underscores (``underscores``; emoticon tags such as
   ``^_^`` keep theirs, see :data:`illust2vec.models.tags.KAOMOJI`, or with
   ``keep_underscores_in="short"`` every tag of 3 characters or fewer), ``\\(`` ``\\)``
   escapes (``escape_parentheses``), ``(tag:0.91)`` weights (``weights``), then join
   with ``separator``.

Caption paths: :func:`plan_captions` maps every input image to its caption file and,
before any work, refuses an extension that names images or data files and reports every
group of images that would share one caption (``x.jpg`` and ``x.png`` -> ``x.txt``);
``naming="name"`` gives distinct names (``x.jpg.txt``, ``x.png.txt``).
:func:`write_caption` writes one file atomically and never overwrites a file that is not
a caption (binary content) or appends to one it cannot read as UTF-8; with a
:class:`illust2vec.io.atomic.DurableBatch` (:func:`caption_batch`) thousands of captions cost
a few ``fsync`` rounds instead of two each.

>>> make_caption({"general": [("blue_eyes", 0.9), ("smile", 0.6)], "rating": [("safe", 0.8), ("questionable", 0.2)]},
...              CaptionOptions(rating="last", separator=" | "))
'blue eyes | smile | safe'
"""
from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from illust2vec.datasets.caption_kohya import kohya_words, parse_kohya_replacements
from illust2vec.datasets.caption_options import (
    CAPTION_RULES,
    CaptionOptions,
    display_tag,
    format_tag,
    parse_replacements,
    split_tags,
    tag_key,
)
from illust2vec.datasets.caption_webui import webui_words
from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import DurableBatch, atomic_write
from illust2vec.io.images import IMAGE_EXTENSIONS
from illust2vec.models.tags import KAOMOJI, TagTable

__all__ = [
    "CAPTION_RULES",
    "REFUSED_EXTENSIONS",
    "CaptionClash",
    "CaptionError",
    "CaptionOptions",
    "CaptionPlan",
    "appended_caption",
    "caption_batch",
    "caption_path",
    "caption_words",
    "check_extension",
    "make_caption",
    "normalize_extension",
    "parse_kohya_replacements",
    "parse_replacements",
    "plan_captions",
    "split_tags",
    "write_caption",
]

#: Caption extensions that are refused: they name images, videos or data and model files.
REFUSED_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | frozenset({
    ".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v",
    ".json", ".jsonl", ".csv", ".npy", ".npz", ".parquet", ".onnx", ".caffemodel", ".pth", ".pt",
    ".safetensors", ".ckpt", ".py", ".html", ".db", ".sqlite", ".zip", ".gz", ".tar",
})


class CaptionError(Illust2VecError):
    """A caption file that cannot be written; ``str()`` is ``PATH: reason``."""


def _expand_character(tag: str) -> list[str]:
    """``name_(series)`` / ``name (series)`` -> ``[name, series]``; other tags unchanged."""
    t = tag.strip()
    if t.endswith(")") and "(" in t and t not in KAOMOJI:
        name, _, series = t[:-1].rpartition("(")
        name = name.rstrip(" _")
        if name and series.strip():
            return [name, series.strip()]
    return [tag]


def _as_result(result: Mapping[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """Accept ``plausible_tags`` output, a JSON record's ``tags`` or the whole record."""
    tags = result.get("tags") if isinstance(result.get("tags"), Mapping) else result
    out: dict[str, list[tuple[str, float]]] = {}
    for cat, value in tags.items():
        if isinstance(value, Mapping):
            pairs = sorted(((str(t), float(p)) for t, p in value.items()), key=lambda tp: -tp[1])
        else:
            pairs = [(str(t), float(p)) for t, p in value]
        out[str(cat)] = pairs
    return out


@functools.lru_cache(maxsize=32)
def _exclusion(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for all the wildcard patterns (compared as :func:`tag_key` does)."""
    return re.compile("|".join(fnmatch.translate(tag_key(p)) for p in patterns)) if patterns else None


def caption_words(result: Mapping[str, Any], options: CaptionOptions = CaptionOptions(),
                  table: TagTable | None = None) -> list[str]:
    """The tags of one image's caption, in order and formatted, by the rule set ``options.rules``.

    ``table`` (the model's :class:`~illust2vec.models.tags.TagTable`) gives the model's tag
    order; ``order="model"`` and the kohya rules need it.
    """
    tags = _as_result(result)
    if options.rules == "kohya":
        return kohya_words(tags, options, _model_order(tags, table, options))
    if options.rules == "wd14-webui":
        return webui_words(tags, options, _model_order(tags, table, options) if table is not None else None)
    return _illust2vec_words(tags, options, table)


def make_caption(result: Mapping[str, Any], options: CaptionOptions = CaptionOptions(),
                 table: TagTable | None = None) -> str:
    """The caption line of one image's result (:func:`caption_words` joined with the separator)."""
    return options.separator.join(caption_words(result, options, table))


def _model_order(tags: Mapping[str, list[tuple[str, float]]], table: TagTable | None,
                 options: CaptionOptions) -> dict[str, int]:
    """Column of each tag of ``tags`` in the model's tag list (``order="model"``, the kohya rules)."""
    if table is None:
        raise Illust2VecError(f"{'the kohya rules' if options.rules == 'kohya' else 'order=model'} need the "
                              "model's tag order: pass table=model.tags")
    return {t: table.index(t) for pairs in tags.values() for t, _ in pairs}


def _illust2vec_words(tags: dict[str, list[tuple[str, float]]], options: CaptionOptions,
                      table: TagTable | None) -> list[str]:
    """The illust2vec rules, in the order of the module docstring."""
    replace = {tag_key(old): new for old, new in options.replace}
    excluded = _exclusion(options.exclude)
    column = _model_order(tags, table, options) if options.order == "model" else {}

    def is_excluded(key: str) -> bool:
        return excluded is not None and excluded.match(key) is not None

    categories = list(options.categories) + [c for c in tags if c not in options.categories and c != "rating"]
    seen: set[str] = set()
    kept: list[tuple[str, float, str, str, int]] = []  # (tag, probability, key, category, column)
    for cat in categories:
        expand = options.expand_characters and cat == "character"
        for tag, p in tags.get(cat, []):
            col = column.get(tag, 0)
            if replace:
                tag = replace.get(tag_key(tag), tag)
                if not tag:
                    continue
            for part in _expand_character(tag) if expand else (tag,):
                k = tag_key(part)
                if k not in seen and not is_excluded(k):
                    seen.add(k)
                    kept.append((part, p, k, cat, col))
    if options.order == "confidence":
        kept.sort(key=lambda it: -it[1])
    elif options.order == "alphabetical":
        kept.sort(key=lambda it: it[2])
    elif options.order == "model":
        kept.sort(key=lambda it: it[4])
    if options.character_first:
        kept.sort(key=lambda it: it[3] != "character")
    if options.always_first:
        position = {tag_key(t): i for i, t in reversed(list(enumerate(options.always_first)))}
        first = sorted((it for it in kept if it[2] in position), key=lambda it: position[it[2]])
        kept = first + [it for it in kept if it[2] not in position]
    words = [(t, p) for t, p, *_ in kept]
    if options.rating != "none":
        for tag, p in sorted(tags.get("rating", []), key=lambda tp: -tp[1]):
            tag = replace.get(tag_key(tag), tag) if replace else tag
            if tag and not is_excluded(tag_key(tag)) and tag_key(tag) not in seen:
                words.insert(0 if options.rating == "first" else len(words), (tag, p))
                break
    return [format_tag(display_tag(t, options.underscores, options.keep_underscores_in), p, options)
            for t, p in words]


# --------------------------------------------------------------------------- caption paths


def normalize_extension(ext: str) -> str:
    """``"txt"`` -> ``".txt"``."""
    ext = ext.strip()
    return ext if ext.startswith(".") else "." + ext


def check_extension(ext: str) -> str:
    """The normalised extension, or an error when captions with it could overwrite images or data."""
    ext = normalize_extension(ext)
    if ext == "." or "/" in ext or os.sep in ext:
        raise Illust2VecError(f"--caption-ext {ext!r}: give a file extension such as .txt or .caption")
    if ext.lower() in REFUSED_EXTENSIONS:
        raise Illust2VecError(
            f"--caption-ext {ext}: refused, caption files with this extension would overwrite images or data "
            "files (use .txt, .caption or .tags); nothing was written"
        )
    return ext


def caption_path(image: Path, options: CaptionOptions, caption_dir: Path | None = None,
                 root: Path | None = None) -> Path:
    """Where the caption of ``image`` goes: beside it, or mirrored under ``caption_dir`` from ``root``."""
    name = image.name if options.naming == "name" else image.stem
    if caption_dir is None:
        return image.with_name(name + options.extension)
    rel = Path(name)
    if root is not None:
        try:
            rel = image.resolve().parent.relative_to(root) / name
        except ValueError:
            pass
    return caption_dir / (str(rel) + options.extension)


def _common_root(images: Sequence[Path]) -> Path | None:
    parents = [str(p.resolve().parent) for p in images]
    return Path(os.path.commonpath(parents)) if parents else None


@dataclass(frozen=True)
class CaptionClash:
    """Several inputs whose captions would be one file, or a caption that would be an input."""

    target: Path
    images: tuple[Path, ...]
    is_input: bool = False

    def __str__(self) -> str:
        if self.is_input:
            return (f"{self.target}: the caption of {', '.join(map(str, self.images))} would overwrite this "
                    "input file; choose another --caption-ext")
        return (f"{self.target}: would be the caption of {len(self.images)} images "
                f"({', '.join(map(str, self.images))}); none of them gets a caption. "
                "Use --caption-name name for distinct names (x.jpg.txt, x.png.txt)")


@dataclass
class CaptionPlan:
    """Caption path of each input image; images in a clash have none."""

    targets: dict[Path, Path] = field(default_factory=dict)
    clashes: list[CaptionClash] = field(default_factory=list)

    def target(self, image: Path) -> Path | None:
        return self.targets.get(image)


def plan_captions(images: Sequence[Path], options: CaptionOptions, caption_dir: Path | None = None) -> CaptionPlan:
    """Map every image to its caption file, before any work.

    Raises :class:`Illust2VecError` for a refused extension (:func:`check_extension`).
    Images whose caption would be shared with another image, or would be one of the
    inputs, are left out of :attr:`CaptionPlan.targets` and listed in
    :attr:`CaptionPlan.clashes` (every group, not only the first).
    """
    check_extension(options.extension)
    root = _common_root(images) if caption_dir is not None else None
    by_target: dict[str, list[Path]] = {}
    paths: dict[str, Path] = {}
    for image in images:
        target = caption_path(image, options, caption_dir, root)
        k = os.path.normcase(os.path.abspath(target))
        by_target.setdefault(k, []).append(image)
        paths.setdefault(k, target)
    inputs = {os.path.normcase(os.path.abspath(p)) for p in images}
    plan = CaptionPlan()
    for k, group in by_target.items():
        if k in inputs:
            plan.clashes.append(CaptionClash(paths[k], tuple(group), is_input=True))
        elif len(group) > 1:
            plan.clashes.append(CaptionClash(paths[k], tuple(group)))
        else:
            plan.targets[group[0]] = paths[k]
    return plan


# --------------------------------------------------------------------------- writing


def _read_existing(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CaptionError(f"{path}: is a directory, not a caption file; left as it is") from None
    except OSError as exc:
        raise CaptionError(f"{path}: cannot read the existing caption ({exc.strerror or exc})") from None


def appended_caption(old_text: str, text: str, options: CaptionOptions = CaptionOptions()) -> str:
    """An existing caption with the new caption's tags added (``mode="append"``).

    The new caption is split on the separator and its tags that the old one has are dropped.
    illust2vec rules: the old text is kept as it is and tags compare as names do (``blue_eyes``
    is ``blue eyes``).  kohya rules: the old text is split on the separator less its spaces,
    each tag stripped, empty ones dropped, and written back joined with the separator
    (normalised), tags comparing exactly.  wd14-webui rules: ``old + ", " + new``, nothing dropped.
    """
    old_text = old_text.strip() if options.rules == "wd14-webui" else old_text.rstrip()
    if not old_text:
        return text
    if options.rules == "wd14-webui":
        return ", ".join([old_text, text])
    words = [w for w in text.split(options.separator) if w.strip()]
    if options.rules == "kohya":
        have = [w.strip() for w in old_text.strip("\n").split(options.list_separator) if w.strip()]
        return options.separator.join(have + [w for w in words if w not in have])
    sep = options.separator.strip() or options.separator
    have_keys = {tag_key(w) for w in old_text.split(sep)}  # "blue_eyes" is "blue eyes"
    return options.separator.join([old_text, *[w for w in words if tag_key(w) not in have_keys]])


def caption_batch(on_error: Callable[[CaptionError], Any]) -> DurableBatch:
    """A :class:`~illust2vec.io.atomic.DurableBatch` for :func:`write_caption`'s ``batch``.

    A caption that fails when the batch commits (``fsync`` or rename) goes to ``on_error``
    as a :class:`CaptionError` naming the file; leave the ``with`` block (or call
    ``commit()``) before the captions must be on disk.
    """
    def failed(path: Path, exc: OSError) -> None:
        on_error(CaptionError(f"{path}: cannot write the caption ({exc.strerror or exc})"))

    return DurableBatch(on_error=failed)


def write_caption(path: Path, text: str, options: CaptionOptions = CaptionOptions(), *,
                  batch: DurableBatch | None = None) -> str:
    """Write one caption file atomically; returns ``"written"``, ``"appended"`` or ``"skipped"``.

    ``options.mode``: ``overwrite`` replaces the file, ``append`` adds the tags it does not
    have yet (:func:`appended_caption`), ``skip`` leaves an existing file alone.  The file ends
    with a newline except under the wd14-webui rules.  Raises
    :class:`CaptionError` (``PATH: reason``, the file untouched) when the path is a directory,
    the existing file is not text (it holds NUL bytes: not a caption), an append finds a
    file that is not UTF-8, or the write fails.  With ``batch`` (:func:`caption_batch`) the
    file is complete under a temporary name on return and appears, durably, when the batch
    commits.
    """
    path = Path(path)
    if path.is_dir():
        raise CaptionError(f"{path}: is a directory, not a caption file; left as it is")
    old = _read_existing(path)
    if old is not None:
        if options.mode == "skip":
            return "skipped"
        if b"\0" in old[:8192]:
            raise CaptionError(f"{path}: exists and is not a text file; refusing to overwrite it with a caption")
        if options.mode == "append":
            try:
                old_text = old.decode("utf-8-sig").rstrip()
            except UnicodeDecodeError as exc:
                raise CaptionError(
                    f"{path}: the existing caption is not UTF-8 (byte 0x{old[exc.start]:02x} at offset {exc.start}); "
                    "left as it is: convert it to UTF-8, or use --if-exists overwrite or skip"
                ) from None
            text = appended_caption(old_text, text, options)
    end = "\n" if options.final_newline else ""
    try:
        if batch is not None:
            batch.write(path, text + end)
        else:
            atomic_write(path, lambda fh: fh.write(text + end), text=True)
    except OSError as exc:
        raise CaptionError(f"{path}: cannot write the caption ({exc.strerror or exc})") from None
    return "appended" if old is not None and options.mode == "append" else "written"
