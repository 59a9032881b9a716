"""``illust2vec check``: examine a collection, and rebuild a damaged database with ``--repair``."""
from __future__ import annotations

import argparse
import sys

from illust2vec.errors import one_line


EXAMPLES = """\
examples:
  illust2vec check --db pics.i2v             integrity of the database and the vector files
  illust2vec check --db pics.i2v --repair    rebuild a damaged database, then: illust2vec index pics/ --db pics.i2v
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_db_argument, add_quiet_argument

    p = sub.add_parser(
        "check", help="examine a collection; --repair rebuilds a damaged database",
        description="Check a collection's database (SQLite integrity_check) and vector files. With --repair, "
                    "a database SQLite cannot read is renamed collection.sqlite.damaged-TIME (never deleted), "
                    "every row that can still be read is copied into a new one, and the vectors those rows "
                    "describe are kept. Then run 'illust2vec index FOLDER --db DIR' to rescan: files whose "
                    "content survived are linked again, the rest is embedded anew. Images are only read.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    p.add_argument("--repair", action="store_true", help="rebuild the database from what can be read")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.collection.repair import check_collection, repair_collection

    report = check_collection(args.db)
    if report.ok:
        print(f"{args.db}: ok ({report.files} files, {report.contents} contents, {report.rows} vector rows)",
              file=sys.stderr)
        return 0
    for problem in report.problems:
        print(f"problem: {one_line(problem)}", file=sys.stderr)
    if not args.repair:
        print(f"{args.db}: {len(report.problems)} problem(s); run 'illust2vec check --db {args.db} --repair' to "
              "rebuild the database from what can be read", file=sys.stderr)
        return 1
    fixed = repair_collection(args.db)
    for p in fixed.set_aside:
        print(f"set aside: {p}", file=sys.stderr)
    lost = sum(fixed.unreadable.values())
    print(f"{args.db}: repaired: {fixed.files_kept} files and {fixed.contents_kept} contents kept"
          + (" with their vectors" if fixed.vectors_reused else " (the models' record was lost: vectors set aside)")
          + (f"; {lost} unreadable part(s) skipped" if lost else "")
          + f". Now run 'illust2vec index FOLDER... --db {args.db}' to rescan the images", file=sys.stderr)
    after = check_collection(args.db)
    for problem in after.problems:
        print(f"problem: {one_line(problem)}", file=sys.stderr)
    return 0 if after.ok else 1
