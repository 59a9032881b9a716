"""``illust2vec search``: similar images and/or tag queries in a collection."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from illust2vec.errors import Illust2VecError

EXAMPLES = """\
examples:
  illust2vec search query.jpg --db pics.i2v -k 10                 cosine similarity of features
  illust2vec search query.jpg --db pics.i2v --binary               Hamming distance of binary codes
  illust2vec search --db pics.i2v --tags "blue hair, cat ears" --not hat --min 0.5
  illust2vec search --db pics.i2v --tags "character:miku, -hat, user:fav"
  illust2vec search query.jpg --db pics.i2v -o hits.csv           one row per hit (also .jsonl, .parquet)
  illust2vec search query.jpg --db pics.i2v --tags smile --sheet hits.png
  illust2vec search query.jpg --db pics.i2v --plus "blonde hair" --minus "black hair"   move the query
  illust2vec search --db pics.i2v --like "cat ears, smile"                 tags only, no query image
  illust2vec search query.jpg --db gallery.i2v --plus glasses --labels gallery/tags.json
"""


FORMATS = ("json", "jsonl", "csv", "parquet")


def register(sub) -> None:
    from illust2vec.cli.common import add_model_arguments, add_output_arguments, add_sheet_argument, probability
    from illust2vec.cli.common import add_db_argument, add_tagger_choice

    p = sub.add_parser(
        "search", help="find similar images and/or images with given tags in a collection",
        description="Search a collection made with 'illust2vec index'. A query image inside the collection "
                    "uses its stored vector; one outside it is embedded with the collection's model "
                    "(or --model/--weights, which must be the same model).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", nargs="?", metavar="QUERY", help="query image (optional with --tags)")
    add_db_argument(p)
    p.add_argument("-k", type=int, default=20, metavar="N", help="number of results (default 20)")
    p.add_argument("--binary", action="store_true", help="rank by Hamming distance of binary codes")
    p.add_argument("--tags", metavar="TAGS", help='tags all results must have: "blue hair, -hat, user:fav, '
                                                  'smile>=0.8" (user tags count)')
    p.add_argument("--not", dest="not_tags", metavar="TAGS", help="tags no result may have")
    p.add_argument("--min", dest="min_prob", type=probability, default=0.5, metavar="P",
                   help="probability threshold for --tags/--not terms without their own (default 0.5)")
    add_tagger_choice(p)
    p.add_argument("--nprobe", type=int, metavar="N", help="IVF lists to visit (large collections only)")
    p.add_argument("--include-query", action="store_true",
                   help="keep the query image in the results (left out by default when it is in the collection; "
                        "its byte-identical copies under other names are listed either way)")
    a = p.add_argument_group("attribute query (tag directions learned from the collection)")
    a.add_argument("--plus", metavar="TAGS", help='move the query toward these tags: "blonde hair, cat ears"')
    a.add_argument("--minus", metavar="TAGS", help="move the query away from these tags")
    a.add_argument("--like", metavar="TAGS", help="no query image: start from the collection's mean, moved "
                                                  "toward these tags")
    a.add_argument("--strength", type=float, default=1.0, metavar="S",
                   help="how far to move (default 1: one with/without gap past the typical level of the items "
                        "that carry the tag)")
    a.add_argument("--labels", metavar="FILE",
                   help="learn the directions from this labels file ({path: [tags]} JSON such as the demo "
                        "gallery's tags.json, or the JSON/JSONL 'illust2vec tag' writes) or from 'captions' "
                        "(NAME.txt beside each image); default: the collection's tagger")
    out = add_output_arguments(p, FORMATS, what="the hits (default: a table on stdout)")
    out.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)
    add_sheet_argument(out, "also write a contact sheet of the hits")
    add_model_arguments(p, task="feature")
    from illust2vec.cli.helptext import short_help

    short_help(p, "--db", "-k", "--tags", "--binary", "--plus", "--minus", "--like", "--output",
               "--sheet", "--quiet")
    p.set_defaults(func=run)


def _table(hits, binary: bool) -> str:
    lines = []
    head = f"{'#':>3}  {'distance' if binary else 'score':>8}  path"
    tag_names = list(hits[0].tags) if hits and hits[0].tags else []
    if tag_names:
        head += "  " + "  ".join(tag_names)
    lines.append(head)
    for i, h in enumerate(hits, 1):
        val = f"{h.distance:>8d}" if binary and h.distance is not None else (
            f"{h.score:8.4f}" if h.score is not None else f"{'-':>8}")
        line = f"{i:>3}  {val}  {h.ref}"
        if len(h.paths) > 1:
            line += f"  (+{len(h.paths) - 1} copies)"
        if tag_names:
            line += "  " + "  ".join(f"{h.tags[t]:.3f}" for t in tag_names)
        lines.append(line)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from illust2vec.collection import Collection, UnknownTagError

    from illust2vec.cli.common import output_format
    from illust2vec.io.records import write_records

    table = args.output is None and args.format is None
    fmt = None if table else output_format(args, FORMATS)
    attribute = bool(args.plus or args.minus or args.like)
    if args.like and args.query is not None:
        raise Illust2VecError("--like searches by tags alone; with a QUERY image use --plus/--minus")
    if (args.plus or args.minus) and args.query is None and not args.like:
        raise Illust2VecError("--plus/--minus move a QUERY image; without one use --like")
    if args.query is None and not args.tags and not args.not_tags and not args.like:
        raise Illust2VecError("give a QUERY image, --tags, --not or --like (see 'illust2vec search --help')")
    embedder = None
    with Collection.open(args.db, create=False) as col:
        if args.query is not None:
            q = Path(args.query)
            if not q.exists():
                raise Illust2VecError(f"{q}: query image not found")
            if col.row_of_path(q) is None:
                from illust2vec.cli.common import collection_models_from_args

                embedder, _ = collection_models_from_args(args, col.info(), need_tagger=False)
        model_name = col.meta.get("embedder_name")
        tagger = None
        if args.tags or args.not_tags or (attribute and not args.labels):
            t = col.view.tagger(args.tagger)
            tagger = t.name if t is not None else None
            if t is not None and not t.covers(int(col.meta.get("rows", 0))):
                print(f"warning: {args.db}: tagger {t.name!r} has no tags yet for some pictures (adding it was "
                      f"interrupted); 'illust2vec index DIR --db {args.db}' finishes it", file=sys.stderr)
        if attribute:
            from illust2vec.semantic.attributes import attribute_search

            try:
                hits = attribute_search(col, args.query, plus=args.plus, minus=args.minus, like=args.like,
                                        strength=args.strength, labels=args.labels, k=args.k, binary=args.binary,
                                        tags=args.tags, not_tags=args.not_tags, min_prob=args.min_prob,
                                        embedder=embedder, nprobe=args.nprobe, tagger=args.tagger)
            except UnknownTagError as exc:
                if args.like:
                    picture = Path(args.like).is_file()
                    how = (f"for pictures like {args.like}: illust2vec search {args.like} --db {args.db}" if picture
                           else "to start from a picture, give it as QUERY with --plus")
                    raise UnknownTagError(f"{exc} (--like takes tag names, e.g. --like 'cat ears, smile'; "
                                          f"{how})") from None
                raise
        else:
            hits = col.search(image=args.query, k=args.k, binary=args.binary, tags=args.tags,
                              not_tags=args.not_tags, min_prob=args.min_prob, embedder=embedder,
                              nprobe=args.nprobe, include_query=args.include_query, tagger=args.tagger)
    if table:
        print(_table(hits, args.binary) if hits else "no results")
    else:
        extra = {"model": model_name, **({"tagger": tagger} if tagger else {})}
        write_records(({"rank": i, **h.to_dict(), **extra} for i, h in enumerate(hits, 1)), args.output, fmt)
    if args.sheet:
        from illust2vec.collection.sheet import contact_sheet

        items = [(h.path, f"{i}. {Path(h.path).name} "
                  + (f"d={h.distance}" if h.distance is not None else (f"{h.score:.3f}" if h.score is not None else "")))
                 for i, h in enumerate(hits, 1)]
        moves = " ".join(f"{flag} {v}" for flag, v in (("plus:", args.plus), ("minus:", args.minus),
                                                       ("like:", args.like)) if v)
        title = f"query: {args.query or ''} {('tags: ' + args.tags) if args.tags else ''} {moves}"
        contact_sheet(([(args.query, "query")] if args.query else []) + items, args.sheet, title=title.strip())
        print(f"wrote {args.sheet}", file=sys.stderr)
    return 0
