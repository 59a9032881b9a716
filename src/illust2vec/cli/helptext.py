"""``--help`` on one screen, ``--help-all`` for everything, and a walk over every parser.

Every parser of the CLI is an :class:`Illust2VecParser`.  A command names the
options a newcomer needs with :func:`short_help`; ``COMMAND --help`` then shows
the usage, the description, those options (under their groups) and the
examples, and one footer line counting the options left out and the groups
they are in.  ``COMMAND --help-all`` shows every option, as plain argparse
would.  A parser that names no short options shows all of them in both.

Options added later (by any engineer, in any group) are in ``--help-all`` and
the generated CLI reference at once, and in ``--help`` only once a command
lists them: the short help cannot grow past a screen by accident
(``tests/test_cli_help.py`` checks the line counts).
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Iterator

HELP_ALL = "--help-all"


class _HelpAll(argparse.Action):
    """``--help-all``: every option of the parser, then exit."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None) -> None:
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser._print_message(parser.format_help(full=True), sys.stdout)
        parser.exit()


class Illust2VecParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose ``--help`` shows the short help (see the module docstring).

    Sub-parsers made with ``add_subparsers().add_parser`` are of this class too.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: ids of the actions ``--help`` shows; ``None``: every action (no short list given).
        self.short_actions: set[int] | None = None
        if self.add_help:
            self.add_argument(HELP_ALL, action=_HelpAll, help="show every option (this help shows the common ones)")

    # -- what the short help shows -------------------------------------------------------------
    def _shown(self, action: argparse.Action) -> bool:
        if action.help == argparse.SUPPRESS:
            return False
        if self.short_actions is None or not action.option_strings:
            return True  # positionals (and sub-commands) are always shown
        if isinstance(action, (argparse._HelpAction, _HelpAll)):
            return True
        return id(action) in self.short_actions

    def hidden_actions(self) -> list[argparse.Action]:
        """The documented options ``--help`` leaves out (shown by ``--help-all``)."""
        return [a for a in self._actions if a.help != argparse.SUPPRESS and not self._shown(a)]

    def format_usage(self) -> str:
        formatter = self._help_formatter()
        formatter.add_usage(self.usage, self._short_usage_actions(), [])
        return formatter.format_help()

    def _short_usage_actions(self) -> list[argparse.Action]:
        # The usage line names the positionals only, after "[options]": the full usage of a
        # command with 60 options is itself longer than a screen.
        return [a for a in self._actions if not a.option_strings]

    def _help_formatter(self) -> argparse.HelpFormatter:
        # (not _get_formatter: argparse also uses that to name sub-parsers' prog)
        prog = self.prog if self.usage is not None else f"{self.prog} [options]"
        return self.formatter_class(prog=prog)

    def format_help(self, full: bool = False) -> str:  # type: ignore[override]
        formatter = self._help_formatter()
        formatter.add_usage(self.usage, self._short_usage_actions(), [])
        formatter.add_text(_fill(self.description, formatter))
        if full or self.short_actions is None:
            for group in self._action_groups:
                if group._group_actions:
                    formatter.start_section(group.title)
                    formatter.add_text(_fill(group.description, formatter))
                    formatter.add_arguments(group._group_actions)
                    formatter.end_section()
        else:  # one screen: the positionals, then the common options in one list (in group order)
            for title, actions in (("positional arguments", [a for a in self._actions if not a.option_strings]),
                                   ("options", [a for g in self._action_groups for a in g._group_actions
                                                if a.option_strings and self._shown(a)])):
                if actions:
                    formatter.start_section(title)
                    formatter.add_arguments(actions)
                    formatter.end_section()
        formatter.add_text(self.epilog)
        text = formatter.format_help()
        hidden = [] if full else self.hidden_actions()
        if hidden:
            text = text.rstrip("\n") + "\n\n" + self._footer(hidden) + "\n"
        return text

    def _footer(self, hidden: list[argparse.Action]) -> str:
        groups: list[str] = []
        for group in self._action_groups:
            title = (group.title or "options").split(" (")[0]
            if any(a in hidden for a in group._group_actions) and title not in groups:
                groups.append(title)
        line = (f"{len(hidden)} more option{'s' if len(hidden) != 1 else ''} ({', '.join(groups)}): "
                f"{self.prog} {HELP_ALL}")
        return textwrap.fill(line, width=_width(self._help_formatter()))


def _width(formatter: argparse.HelpFormatter) -> int:
    return max(40, getattr(formatter, "_width", 78))


def _fill(text: str | None, formatter: argparse.HelpFormatter) -> str | None:
    """The description wrapped to the terminal, paragraph by paragraph (the raw formatters keep lines)."""
    if not text:
        return text
    return "\n\n".join(textwrap.fill(" ".join(par.split()), width=_width(formatter))
                        for par in text.split("\n\n"))


def short_help(parser: argparse.ArgumentParser, *options: str) -> None:
    """Show only these options (and the positionals) in ``parser``'s ``--help``; the rest go to ``--help-all``.

    ``options`` are option strings (``"--model"``, ``"-o"``); a name the parser does not have is
    a ``ValueError`` when the parser is built, so a renamed option cannot silently drop out.
    """
    if not isinstance(parser, Illust2VecParser):
        raise TypeError(f"{parser.prog}: short help needs an Illust2VecParser")
    by_string = {s: a for a in parser._actions for s in a.option_strings}
    missing = [o for o in options if o not in by_string]
    if missing:
        raise ValueError(f"{parser.prog}: no option {', '.join(missing)} to show in --help")
    parser.short_actions = (parser.short_actions or set()) | {id(by_string[o]) for o in options}


def walk_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(command path, parser)`` for ``parser`` and every sub-command under it, in ``--help`` order.

    Aliases of a sub-command are visited once (under the name it was made with).
    """
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                yield from walk_parsers(sub, path + (name,))


def sub_command_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{name: one-line help}`` of the sub-commands directly under ``parser``."""
    out: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                out[choice.dest] = choice.help or ""
    return out
