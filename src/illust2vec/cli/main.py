"""``illust2vec`` entry point.

Each sub-command lives in its own module under :mod:`illust2vec.cli` and
exposes ``register(subparsers) -> None``; ``register`` adds a parser and sets
``func`` (``handler(args) -> int`` exit code) with ``parser.set_defaults``.
Add a command by adding its module name to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sqlite3
import sys
import traceback

from illust2vec.cli.parsing import Parser
from illust2vec.errors import Illust2VecError, describe_os_error, missing_extra_message, one_line

#: Modules of ``illust2vec.cli`` that define sub-commands, in ``--help`` order.
COMMANDS: list[str] = [
    "tag",
    "tagstats",
    "embed",
    "models",
    "video",
    "index",
    "search",
    "morph",
    "dupes",
    "export",
    "faces",
    "map",
    "check",
    "compact",
    "demo",
    "explain",
    "edit",
    "generate",
    "serve",
]


def build_parser() -> argparse.ArgumentParser:
    from illust2vec.version import __version__

    parser = Parser(
        prog="illust2vec", top_level=True,
        description=(
            "Tags, feature vectors, similarity search and image maps for "
            "anime-style illustrations (illustration2vec and WD taggers on ONNX Runtime)."
        ),
        epilog="Run 'illust2vec COMMAND --help' for the common options of one command, "
               "'illust2vec COMMAND --help-all' for all of them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also ILLUST2VEC_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"illust2vec.cli.{name}")
        module.register(sub)
    return parser


def _setup_logging() -> None:
    import logging

    logger = logging.getLogger("illust2vec")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _debug(args: argparse.Namespace) -> bool:
    env = os.environ.get("ILLUST2VEC_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(getattr(args, "debug", False)) or env


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected faults (bad input, storage, database) end as one ``error:`` line, exit 1.

    ``--debug`` (or ``ILLUST2VEC_DEBUG=1``) prints the traceback too.
    """
    _setup_logging()
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as their bytes
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="surrogateescape" if stream is sys.stdout else "backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from illust2vec.cli.common import preflight, resolve_engine_defaults

    resolve_engine_defaults(args)
    try:
        preflight(args)  # what the command needs, before any work
        return int(args.func(args) or 0)
    except Illust2VecError as exc:
        _traceback(args)
        print(f"error: {exc}", file=sys.stderr)
        if _debug(args) and getattr(exc, "details", ""):
            print(exc.details, file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        hint = missing_extra_message(exc.name)
        if hint is None:
            raise
        print(f"error: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        _traceback(args)
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        _traceback(args)
        print(f"error: {_database_error(args, exc)}", file=sys.stderr)
        return 1
    except UnicodeError as exc:  # text that cannot be decoded (a file in another encoding...)
        _traceback(args)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except MemoryError:
        _traceback(args)
        print("error: out of memory (try a smaller --batch-size or fewer --workers)", file=sys.stderr)
        return 1


def _database_error(args: argparse.Namespace, exc: sqlite3.Error) -> str:
    """One line for an SQLite error, naming the collection's database when the command has one."""
    from pathlib import Path

    from illust2vec.collection import DB_NAME, database_error

    folder = getattr(args, "db", None)
    if folder is None:
        paths = getattr(args, "paths", None) or []
        folder = next((p for p in paths if (Path(p) / DB_NAME).is_file()), None)
    if folder is None:
        return f"database: {one_line(exc)} (run 'illust2vec check --db DIR' to examine the collection)"
    return one_line(database_error(folder, exc))


def _traceback(args: argparse.Namespace) -> None:
    if _debug(args):
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
