"""The options record of captions, and the tag-name helpers every caption rule set shares.

:class:`CaptionOptions` says how one image's tags become one caption line.  Its ``rules``
field picks the rule set: ``"illust2vec"`` (the default, :mod:`illust2vec.datasets.captions`),
``"kohya"`` (kohya-ss' ``tag_images_by_wd14_tagger.py``, :mod:`illust2vec.datasets.caption_kohya`)
or ``"wd14-webui"`` (the WD14 tagger extension of the Stable Diffusion web UI,
:mod:`illust2vec.datasets.caption_webui`).  :meth:`CaptionOptions.defaults_for` gives the
defaults each of those tools starts from.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, Literal

from illust2vec.errors import Illust2VecError
from illust2vec.models.tags import KAOMOJI

__all__ = [
    "CAPTION_RULES",
    "CaptionOptions",
    "display_tag",
    "format_tag",
    "parse_replacements",
    "raw_tag",
    "split_tags",
    "tag_key",
]

Rating = Literal["first", "last", "none"]
Order = Literal["category", "confidence", "alphabetical", "model"]
CaptionMode = Literal["overwrite", "append", "skip"]
Naming = Literal["stem", "name"]
Rules = Literal["illust2vec", "kohya", "wd14-webui"]
KeepUnderscores = Literal["emoticons", "short"]

#: The caption rule sets, by name (``--compat``).
CAPTION_RULES: tuple[str, ...] = ("illust2vec", "kohya", "wd14-webui")
ORDERS: tuple[str, ...] = ("category", "confidence", "alphabetical", "model")


@dataclass(frozen=True)
class CaptionOptions:
    """How one image's tags become one caption line, and how the caption file is written.

    Attributes
    ----------
    separator:
        Between tags (default ``", "``).
    underscores:
        ``True`` writes ``blue_eyes``; ``False`` writes ``blue eyes`` except in the tags
        ``keep_underscores_in`` names.  (Under ``rules="kohya"``: ``True`` is kohya-ss'
        default, ``False`` its ``--remove_underscore``.)
    keep_underscores_in:
        Which tags keep their underscores when ``underscores`` is false: ``"emoticons"``
        (the WD front-ends' list, :data:`~illust2vec.models.tags.KAOMOJI`: ``^_^``, ``0_0``...)
        or ``"short"`` (every tag of 3 characters or fewer: kohya-ss' ``--remove_underscore``).
    always_first, replace, exclude:
        Tags moved to the front when present; ``(old, new)`` renames (``new`` empty drops
        the tag); tags left out (names, or shell wildcards under the illust2vec rules).
    rating:
        Where the most probable rating tag goes: ``first``, ``last`` or ``none``.
    categories, order:
        Category order, and the order of the tags: ``category`` (by ``categories``, most
        probable first within each), ``confidence`` (most probable first), ``alphabetical``,
        or ``model`` (the order of the model's tag list, ``selected_tags.csv`` order).
    character_first:
        Character tags before the others whatever ``order`` says (kohya-ss'
        ``--character_tags_first``).
    expand_characters:
        ``name_(series)`` becomes ``name`` and ``series``.
    weights, escape_parentheses:
        ``(tag:0.91)``; ``\\(`` ``\\)`` for prompt syntaxes.
    extension, naming, mode:
        The caption file: its extension, ``x.txt`` or ``x.png.txt``, and what to do with an
        existing one (``overwrite``, ``append`` the new tags, ``skip``).
    rules:
        ``illust2vec``, ``kohya`` or ``wd14-webui`` (see the module docstring).
    """

    separator: str = ", "
    underscores: bool = False
    keep_underscores_in: KeepUnderscores = "emoticons"
    always_first: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()
    rating: Rating = "none"
    categories: tuple[str, ...] = ("character", "copyright", "general")
    order: Order = "category"
    character_first: bool = False
    expand_characters: bool = False
    weights: bool = False
    escape_parentheses: bool = False
    extension: str = ".txt"
    naming: Naming = "stem"
    mode: CaptionMode = "overwrite"
    rules: Rules = "illust2vec"

    def __post_init__(self) -> None:
        choices = {"rating": ("first", "last", "none"), "order": ORDERS, "mode": ("overwrite", "append", "skip"),
                   "naming": ("stem", "name"), "rules": CAPTION_RULES,
                   "keep_underscores_in": ("emoticons", "short")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise Illust2VecError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if not self.separator or "\n" in self.separator or "\r" in self.separator:
            raise Illust2VecError("the caption separator must be non-empty and on one line")

    @classmethod
    def defaults_for(cls, rules: str, **changes: Any) -> CaptionOptions:
        """The options a rule set starts from, with ``changes`` applied.

        ``kohya``: underscores kept, tags in model order, an existing caption overwritten.
        ``wd14-webui``: underscores replaced except in emoticons, most probable first, an
        existing caption left alone (the extension's default action, "ignore").
        """
        base: dict[str, Any] = {"rules": rules}
        if rules == "kohya":
            base.update(underscores=True, order="model")
        elif rules == "wd14-webui":
            base.update(order="confidence", mode="skip")
        elif rules not in CAPTION_RULES:
            raise Illust2VecError(f"rules must be one of {', '.join(CAPTION_RULES)}, not {rules!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown caption options: {', '.join(sorted(unknown))}")
        return cls(**{**base, **changes})

    @property
    def list_separator(self) -> str:
        """What tag lists typed by the user (always-first, exclude) are split on.

        A comma, except under the kohya rules: the caption separator without its spaces
        (kohya-ss splits ``--undesired_tags`` and ``--always_first_tags`` so), or the
        separator itself when it is only spaces.
        """
        if self.rules != "kohya":
            return ","
        return self.separator.strip() or self.separator

    @property
    def final_newline(self) -> bool:
        """Whether the caption file ends with a newline (the WD14 web UI writes none)."""
        return self.rules != "wd14-webui"


def tag_key(tag: str) -> str:
    """How tags compare under the illust2vec rules: case-insensitive, underscores and spaces alike."""
    t = tag.strip()
    return t.lower() if t in KAOMOJI else t.replace("_", " ").lower()


def display_tag(tag: str, underscores: bool, keep: KeepUnderscores = "emoticons") -> str:
    """A tag as a caption writes it: ``blue_eyes`` or ``blue eyes`` (see :class:`CaptionOptions`)."""
    if underscores:
        return raw_tag(tag)
    if keep == "short":  # kohya-ss' rule: by length only, emoticons included
        raw = raw_tag(tag)
        return raw if len(raw) <= 3 else raw.replace("_", " ")
    return tag if tag in KAOMOJI else tag.replace("_", " ")


def raw_tag(tag: str) -> str:
    """The tag as the model's tag file spells it (WD: underscores): ``long hair`` -> ``long_hair``."""
    return tag if tag in KAOMOJI else tag.replace(" ", "_")


def split_tags(text: str | Iterable[str], sep: str = ",") -> list[str]:
    """``"a, b,c"`` (or several such strings) -> ``["a", "b", "c"]``, blanks dropped."""
    groups = [text] if isinstance(text, str) else list(text)
    return [t.strip() for g in groups for t in g.split(sep) if t.strip()]


def parse_replacements(pairs: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``["old=new", "x="]`` -> ``(("old", "new"), ("x", ""))``; a pair without ``=`` is an error."""
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise Illust2VecError(f"--replace {pair!r}: expected OLD=NEW (NEW may be empty to drop the tag)")
        old, new = pair.split("=", 1)
        if not old.strip():
            raise Illust2VecError(f"--replace {pair!r}: the old tag is empty")
        out.append((old.strip(), new.strip()))
    return tuple(out)


def format_tag(text: str, p: float, options: CaptionOptions) -> str:
    """``\\(`` ``\\)`` escapes (``escape_parentheses``: backslash and round brackets, as the web UI's
    ``re_special``) and ``(tag:weight)`` (``weights``: two decimals; the full float under the
    wd14-webui rules, as the extension writes it)."""
    if options.escape_parentheses:
        text = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    if options.weights:
        text = f"({text}:{p})" if options.rules == "wd14-webui" else f"({text}:{p:.2f})"
    return text
