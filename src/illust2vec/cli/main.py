"""``illust2vec`` entry point.

Each sub-command lives in its own module under :mod:`illust2vec.cli` and
exposes ``register(subparsers) -> None``; ``register`` adds a parser and sets
``func`` (``handler(args) -> int`` exit code) with ``parser.set_defaults``.
Add a command by adding its module name to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from illust2vec.errors import Illust2VecError

#: Modules of ``illust2vec.cli`` that define sub-commands, in ``--help`` order.
COMMANDS: list[str] = [
    "tag",
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
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    from illust2vec import __version__

    parser = argparse.ArgumentParser(
        prog="illust2vec",
        description=(
            "Tags, feature vectors, similarity search and image maps for "
            "anime-style illustrations (illustration2vec and WD taggers on ONNX Runtime)."
        ),
        epilog="Run 'illust2vec COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from illust2vec.cli.common import resolve_engine_defaults

    resolve_engine_defaults(args)
    try:
        return int(args.func(args) or 0)
    except Illust2VecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
