"""The argument parser of every command: mistakes answered with the command's usage and "did you mean".

:class:`Parser` is :class:`~illust2vec.cli.helptext.Illust2VecParser` (``--help`` on one screen,
``--help-all``) with two changes:

* an unknown option is reported by the sub-command that got it (``illust2vec tag: error:
  unrecognized arguments: --caption_extenson .txt. Did you mean --caption_extension?``) with
  that command's usage, not the top-level one;
* a value outside an option's choices, or an unknown command, names the close choices
  (``invalid choice: 'tagg'. Did you mean tag?``).

Sub-parsers made with ``add_subparsers`` are of the same class.
"""
from __future__ import annotations

import argparse
from typing import Any

from illust2vec.cli.helptext import Illust2VecParser
from illust2vec.errors import close_matches, did_you_mean

__all__ = ["Parser", "option_strings"]


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every long option a parser accepts, kohya-ss' hidden spellings included."""
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _close_options(parser: argparse.ArgumentParser, word: str, n: int) -> list[str]:
    """The options closest to ``word``, one per option (not two spellings of one)."""
    action_of = {s: a for a in parser._actions for s in a.option_strings if s.startswith("--")}
    found, seen = [], set()
    for option in close_matches(word, action_of, n=3 * n):
        if id(action_of[option]) not in seen:
            seen.add(id(action_of[option]))
            found.append(option)
    return found[:n]


class Parser(Illust2VecParser):
    """The CLI's parser that suggests the option, command or choice meant (module docstring)."""

    def __init__(self, *args: Any, top_level: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._top_level = top_level

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not self._top_level:  # a sub-command's own unknown options: its own usage
            self.error(self.unrecognized_message(extras))
        return namespace, extras

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized_message(extras))
        return namespace

    def unrecognized_message(self, extras: list[str]) -> str:
        """``unrecognized arguments: A B. Did you mean --x?`` (one hint per unknown option)."""
        unknown = [a.split("=", 1)[0] for a in extras if a.startswith("--")]
        text = f"unrecognized arguments: {' '.join(extras)}"
        if len(unknown) == 1:
            return text + did_you_mean(unknown[0], _close_options(self, unknown[0], 3)).replace(" Did", ". Did", 1)
        hints = [f"{found[0]} (for {u})" for u in unknown if (found := _close_options(self, u, 1))]
        return text + (f". Did you mean {', '.join(hints)}?" if hints else "")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            hint = did_you_mean(str(value), choices)
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}.{hint} (choose from {', '.join(choices)})")
        super()._check_value(action, value)
