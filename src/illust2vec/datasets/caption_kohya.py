"""The caption rules of kohya-ss' ``finetune/tag_images_by_wd14_tagger.py`` (``rules="kohya"``).

What kohya-ss' script writes for a model with a ``selected_tags.csv`` (the WD taggers), rule by
rule, as its documentation describes it and its code does it (sd-scripts at commit 48d368f):

1. **names** are the tag file's (underscores kept); each tag name goes through, in this order:
   character **expansion** (``expand_characters``, ``--character_tag_expand``): a character tag
   ending in ``)`` becomes ``NAME<separator>SERIES``, where ``SERIES`` is the text after the
   last ``(`` with every ``)`` removed and ``NAME`` the text before it less one trailing ``_``
   (``name_(costume)_(series)`` -> ``name_(costume), series``), still one tag;
   **underscores** (``underscores=False``, ``--remove_underscore``): replaced by spaces in every
   tag longer than 3 characters (so ``^_^`` keeps them, ``(o)_(o)`` does not);
   **replacement** (``replace``, ``--tag_replacement``): a whole name equal to a source becomes
   its target (so sources are written as the steps before left the name);
2. **thresholds**: ``p >= threshold`` at float32 (the caller's thresholds; kohya-ss' defaults
   are 0.35 for general and character tags alike); only general and character tags are
   captioned (other categories of the file are not read);
3. **undesired** tags (``exclude``, ``--undesired_tags``): whole names, compared exactly with the
   names of step 1, are left out (and not counted);
4. **order**: the tag file's order (general tags, then character tags); with
   ``character_first`` (``--character_tags_first``) each character tag is put in front as it
   is met, so the character tags come first in the *reverse* of the file's order;
5. **rating** (``--use_rating_tags`` / ``--use_rating_tags_as_last_tag``): the most probable
   rating tag (the first on a tie), unless undesired, goes first or last;
6. **always first** (``--always_first_tags``): each tag of the list that is present is moved to
   the front in turn, so the *last* one listed ends up first, and they come before the rating;
7. the tags are joined with the separator.

Where the script's code does not do what its documentation says, the documentation is followed:

* ``--tag_replacement`` does nothing at all for a ``selected_tags.csv`` model (its replacement
  loop writes into the pair it has just split instead of the tag list); here it replaces, as
  documented.  A trailing ``;`` (an empty pair), which the script rejects with an assertion,
  is ignored.
* ``--always_first_tags "1girl, 1boy"`` (a space after the comma, with the default separator)
  never moves ``1boy`` in the script (the entries are not stripped); here entries are stripped.
* ``--caption_separator`` of spaces only crashes the script (it splits the tag lists on the
  separator without its spaces, an empty string); here the lists are split on the separator.

>>> from illust2vec.datasets.caption_options import CaptionOptions
>>> tags = {"general": [("1girl", 0.9), ("long hair", 0.5)], "character": [("hatsune miku", 0.9)],
...         "rating": [("general", 0.7), ("sensitive", 0.2)]}
>>> column = {"general": 0, "sensitive": 1, "1girl": 4, "long hair": 5, "hatsune miku": 9}
>>> kohya_words(tags, CaptionOptions.defaults_for("kohya", rating="first", always_first=("1girl",)), column)
['1girl', 'general', 'long_hair', 'hatsune_miku']
"""
from __future__ import annotations

from collections.abc import Mapping

from illust2vec.datasets.caption_options import CaptionOptions, format_tag, raw_tag
from illust2vec.errors import Illust2VecError

__all__ = ["expand_character", "kohya_words", "parse_kohya_replacements"]

_COMMA, _SEMICOLON = "\x00c", "\x00s"  # placeholders for escaped "\," and "\;"


def expand_character(tag: str, separator: str) -> str:
    """kohya-ss' character expansion of one tag name (see the module docstring, step 1)."""
    if not tag.endswith(")"):
        return tag
    parts = tag.split("(")
    name = "(".join(parts[:-1])
    if name.endswith("_"):
        name = name[:-1]
    return name + separator + parts[-1].replace(")", "")


def remove_underscore(tag: str) -> str:
    """kohya-ss' ``--remove_underscore``: spaces for underscores in tags longer than 3 characters."""
    return tag.replace("_", " ") if len(tag) > 3 else tag


def parse_kohya_replacements(text: str) -> tuple[tuple[str, str], ...]:
    """``--tag_replacement "a,b;c\\,d,e"`` -> ``(("a", "b"), ("c,d", "e"))``.

    Pairs are separated by ``;``, source and target by ``,``; ``\\,`` and ``\\;`` stand for a
    literal comma and semicolon.  Entries are stripped; an empty pair is ignored; a pair that is
    not ``source,target`` is an error naming it.
    """
    escaped = text.replace("\\,", _COMMA).replace("\\;", _SEMICOLON)
    out = []
    for item in escaped.split(";"):
        if not item.strip():
            continue
        parts = item.split(",")
        if len(parts) != 2:
            shown = item.replace(_COMMA, "\\,").replace(_SEMICOLON, "\\;")
            raise Illust2VecError(f"--tag_replacement {shown!r}: expected source,target (escape a comma or "
                                  "semicolon inside a tag as \\, or \\;)")
        source, target = (p.replace(_COMMA, ",").replace(_SEMICOLON, ";").strip() for p in parts)
        if not source:
            raise Illust2VecError(f"--tag_replacement {text!r}: an empty source tag")
        out.append((source, target))
    return tuple(out)


def kohya_words(tags: Mapping[str, list[tuple[str, float]]], options: CaptionOptions,
                column: Mapping[str, int]) -> list[str]:
    """One caption's tags by kohya-ss' rules (the module docstring), formatted.

    ``tags`` is one thresholded result (``{category: [(tag, probability)]}``, ratings whole and
    most probable first); ``column`` gives each tag's position in the model's tag list.
    """
    sep = options.separator
    replace = dict(options.replace)
    undesired = {t.strip() for t in options.exclude}

    def name(tag: str, category: str) -> str:
        t = raw_tag(tag)
        if category == "character" and options.expand_characters:
            t = expand_character(t, sep)
        if not options.underscores:
            t = remove_underscore(t)
        return replace.get(t, t)

    found = sorted((column[t], cat, t, p) for cat in ("general", "character") for t, p in tags.get(cat, []))
    combined: list[tuple[str, float]] = []
    for _, cat, tag, p in found:
        n = name(tag, cat)
        if not n or n in undesired:
            continue
        if cat == "character" and options.character_first:
            combined.insert(0, (n, p))
        else:
            combined.append((n, p))
    ratings = tags.get("rating") or []
    if options.rating != "none" and ratings:
        tag, p = ratings[0]
        n = name(tag, "rating")
        if n and n not in undesired:
            combined.insert(0 if options.rating == "first" else len(combined), (n, p))
    for first in (t.strip() for t in options.always_first if t.strip()):
        at = next((i for i, (n, _) in enumerate(combined) if n == first), None)
        if at is not None:
            combined.insert(0, combined.pop(at))
    return [format_tag(n, p, options) for n, p in combined]
