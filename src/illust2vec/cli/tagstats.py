"""``illust2vec tag-stats``: tag frequencies of a collection or of saved ``tag`` results."""
from __future__ import annotations

import argparse
from pathlib import Path

from illust2vec.errors import Illust2VecError

EXAMPLES = """\
examples:
  illust2vec tag-stats --db pics.i2v                      per category: count, share of images, mean probability
  illust2vec tag-stats --db pics.i2v --general 0.35 --character 0.85 -o freq.csv --chart top.png
  illust2vec tag-stats --db pics.i2v --tagger wd-vit-v3           one of the collection's taggers
  illust2vec tag-stats tags.json more.jsonl -o freq.json  from 'illust2vec tag' outputs
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_db_argument, add_quiet_argument, add_tagger_choice, probability

    p = sub.add_parser(
        "tag-stats", help="tag frequencies of a collection or of saved tag results (table, CSV/JSON, chart)",
        description="Count how many images have each tag (per category: count, share of images, mean "
                    "probability over those images), like kohya's --frequency_tags. Reads tag JSON/JSONL files "
                    "written by 'illust2vec tag', or a collection's stored probabilities (--db). "
                    "For ratings only the most likely one of each image counts.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="*", metavar="FILE", help="tag --format json/jsonl outputs")
    add_db_argument(p)
    add_tagger_choice(p)
    t = p.add_argument_group("thresholds (with --db)")
    t.add_argument("--threshold", type=probability, default=0.5, metavar="P", help="a tag counts above P (default 0.5)")
    t.add_argument("--general", type=probability, metavar="P", help="threshold for general tags")
    t.add_argument("--character", type=probability, metavar="P", help="threshold for character tags")
    t.add_argument("--copyright", type=probability, metavar="P", help="threshold for copyright tags")
    o = p.add_argument_group("output")
    o.add_argument("--output", "-o", dest="stats", type=Path, metavar="FILE", help="write FILE.csv or FILE.json")
    o.add_argument("--chart", dest="stats_chart", type=Path, metavar="PNG", help="bar chart of the top tags")
    o.add_argument("--top", dest="stats_top", type=int, default=20, metavar="N",
                   help="tags per category in the table and the chart (default 20)")
    add_quiet_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import ErrorReport
    from illust2vec.cli.tag import write_stats_outputs
    from illust2vec.datasets.tagstats import collection_tag_statistics, read_tag_records, tag_statistics

    if args.stats is not None and args.stats.suffix.lower() not in (".csv", ".json"):
        raise Illust2VecError(f"--output {args.stats}: give a .csv or .json file")
    report = ErrorReport()
    if args.results:
        records = []
        for path in args.results:
            try:
                records.extend(read_tag_records(path))
            except Illust2VecError as exc:
                report(exc)
        stats = tag_statistics(records)
    else:
        from illust2vec.collection import Collection

        thresholds = {"default": args.threshold}
        thresholds.update({c: getattr(args, c) for c in ("general", "character", "copyright")
                           if getattr(args, c) is not None})
        with Collection.open(args.db, create=False) as col:
            categories = set(col.view.categories(args.tagger))
            thresholds = {c: v for c, v in thresholds.items() if c == "default" or c in categories}
            stats = collection_tag_statistics(col, thresholds, tagger=args.tagger)
    write_stats_outputs(args, stats)
    return 1 if report.count else 0
