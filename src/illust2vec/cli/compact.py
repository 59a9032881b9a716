"""``illust2vec compact``: give back the disk of pictures dropped from a collection."""
from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
examples:
  illust2vec index pictures/ --db pics.i2v --prune    drop deleted files and give back their disk (as compact does)
  illust2vec compact --db pics.i2v                    give it back now, e.g. after a prune that said it had to wait
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_db_argument, add_quiet_argument

    p = sub.add_parser(
        "compact", help="give back the disk of pictures dropped from a collection (index --prune does it too)",
        description="Free the disk that the vectors and database rows of dropped pictures take: the vector "
                    "files get holes where those rows were (every other row keeps its place, so open readers "
                    "and search indexes stay valid) and the database gives its free pages back. Waits for "
                    "nothing: while a reader (a running 'serve', a search or export in progress) still reads "
                    "an older state of the collection, its rows are kept and a later run frees them.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    add_quiet_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.collection import Collection

    with Collection.open(args.db, create=False) as col:
        rep = col.compact()
    print(f"{args.db}: {rep.describe(args.db)}", file=sys.stderr)
    return 0
