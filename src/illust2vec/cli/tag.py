"""``illust2vec tag``: Danbooru tags for images, as JSON/JSONL/CSV/NumPy or caption files."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


from illust2vec.cli.common import (
    ErrorReport, add_exif_argument, add_input_arguments, add_model_arguments, add_output_arguments,
    add_threshold_arguments, model_from_args, output_format, progress_bar,
)
from illust2vec.cli.ray_support import add_in_graph_argument, distributor_from_args
from illust2vec.errors import Illust2VecError
from illust2vec.models.compat import COMPAT_MODES, THRESHOLD_COMPARES, compat_mode

EXAMPLES = """\
examples:
  illust2vec tag pictures/                          JSON on stdout
  illust2vec tag a.jpg b.png --threshold 0.5 -o tags.csv   CSV, a row per tag
  illust2vec tag pictures/ -o tags.parquet          (tags.jsonl: streamed)
  illust2vec tag dataset/ --captions --rating       NAME.txt beside each image
  illust2vec tag dataset/ --captions --caption-dir captions/ --underscores
  illust2vec tag dataset/ --captions --always-first "1girl, 1boy" \\
      --replace "hatsune miku=miku" --separator " | " --rating last \\
      --exclude "*_background" --stats freq.csv
  illust2vec tag dataset/ -m SmilingWolf/wd-vit-tagger-v3 --captions  (Hub cache)
  illust2vec tag "shots/*.png" -o probs.npy         (N, T) + probs.paths.txt
  illust2vec tag x.png --weights tag.caffemodel --tag-list tag_list.json
"""


RECORD_FORMATS = ("json", "jsonl", "csv", "parquet")
MATRIX_FORMATS = ("npy", "npz")


def register(sub) -> None:
    p = sub.add_parser(
        "tag", help="estimate Danbooru tags (general, character, copyright, rating)",
        description="Estimate Danbooru tags with probabilities for each image. Tags above a threshold are "
                    "reported per category; rating is always reported whole.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(p)
    add_model_arguments(p, task="tag")
    add_exif_argument(p)
    add_in_graph_argument(p)
    t = add_threshold_arguments(p, ("constant", "f0.5", "f1", "f2", "mcut"))
    t.add_argument("--threshold-compare", choices=THRESHOLD_COMPARES, default=None,
                   help="gt: keep tags with probability > threshold (default; i2v, imgutils, the WD reference); "
                        "ge: >= (kohya-ss, the WD14 web UI extension)")
    t.add_argument("--drop-overlap", nargs="?", const="auto", default=None, metavar="TABLE",
                   help="drop general tags implied by a more specific present tag ('long hair' under 'very long "
                        "hair'), as dghs-imgutils' drop_overlap; TABLE: an overlap table (JSON), default imgutils' "
                        "table from the Hugging Face cache when downloaded, else the substring rule alone")
    add_compat_argument(p)
    add_output_arguments(p, RECORD_FORMATS + MATRIX_FORMATS, what="tags (with --captions: only when given)")
    add_caption_arguments(p)
    s = p.add_argument_group("tag statistics")
    s.add_argument("--stats", metavar="FILE", type=Path,
                   help="tag frequencies of this run (per category: count, share of images, mean probability) "
                        "as FILE.csv or FILE.json; the top tags are printed as a table on stderr")
    s.add_argument("--stats-chart", metavar="PNG", type=Path, help="bar chart of the most frequent tags")
    s.add_argument("--stats-top", type=int, default=20, metavar="N",
                   help="tags per category in the printed table and the chart (default 20)")
    s.add_argument("--frequency-tags", dest="frequency_tags", action="store_true",
                   help="print 'Tag frequencies:' and one 'tag: count' line per caption tag on stdout at the end, "
                        "most frequent first (kohya-ss' --frequency_tags)")
    from illust2vec.cli.face_options import add_face_arguments

    add_face_arguments(p)  # --faces: one record per face with face_index, box, likelihood
    from illust2vec.cli.ray_support import add_ray_arguments

    add_ray_arguments(p, shard_dir_default="a temporary directory, removed at the end")
    from illust2vec.cli.helptext import short_help
    from illust2vec.cli.kohya_flags import add_kohya_aliases

    add_kohya_aliases(p)  # --caption_extension, --general_threshold, ... (hidden; docs: KOHYA_FLAGS)
    short_help(p, "--model", "--device", "--threshold", "--output", "--captions", "--rating",
               "--exclude", "--compat", "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def add_compat_argument(p: argparse.ArgumentParser) -> None:
    """``--compat``: the defaults of another tagger front-end, for byte-identical captions."""
    p.add_argument_group("compatibility").add_argument(
        "--compat", choices=tuple(COMPAT_MODES), default=None, metavar="TOOL",
        help="kohya or wd14-webui: their captions, byte for byte")


def add_caption_arguments(p: argparse.ArgumentParser) -> None:
    """The caption options (docs/guides/tagging.md maps each kohya-ss tagger flag to one of these)."""
    c = p.add_argument_group("captions (training sets)")
    c.add_argument("--captions", action="store_true", help="write a caption file per image")
    c.add_argument("--caption-dir", type=Path, metavar="DIR",
                   help="write captions under DIR (mirroring folders) instead of beside the images")
    c.add_argument("--caption-ext", default=".txt", metavar="EXT",
                   help="caption file extension (default .txt); image and data extensions are refused")
    c.add_argument("--caption-name", choices=("stem", "name"), default="stem",
                   help="stem: x.jpg -> x.txt (default); name: x.jpg -> x.jpg.txt, so that x.jpg and x.png "
                        "in one folder get distinct captions (with stem they get none, and an error each)")
    c.add_argument("--separator", default=", ", metavar="TEXT", help="between tags (default ', ')")
    c.add_argument("--underscores", action="store_const", const=True, default=None,
                   help="blue_eyes instead of 'blue eyes' (emoticons such as ^_^ keep theirs either way)")
    c.add_argument("--exclude", action="append", default=[], metavar="TAGS",
                   help="comma-separated tags to leave out, shell wildcards allowed ('*_background') (repeatable)")
    c.add_argument("--always-first", action="append", default=[], metavar="TAGS",
                   help="comma-separated tags moved to the front when present, in this order (repeatable)")
    c.add_argument("--replace", action="append", default=[], metavar="OLD=NEW",
                   help="rename a tag (repeatable); 'OLD=' drops it. Applies to character tags too")
    c.add_argument("--expand-characters", action="store_true",
                   help="a character tag 'name_(series)' becomes the two tags 'name, series'")
    c.add_argument("--rating", nargs="?", const="first", default=None, choices=("first", "last", "none"),
                   help="put the most likely rating tag first (--rating alone), last, or nowhere (default)")
    c.add_argument("--sort", choices=("category", "confidence", "alphabetical", "model"), default=None,
                   help="category: by --category-order, most likely first within each (default); "
                        "confidence: most likely first; alphabetical; model: the model's tag-list order "
                        "(selected_tags.csv order, as kohya-ss writes them)")
    c.add_argument("--character-first", dest="character_first", action="store_const", const=True, default=None,
                   help="character tags before the others whatever --sort says")
    c.add_argument("--category-order", "--order", dest="category_order", default="character,copyright,general",
                   metavar="CATS", help="category order in captions (default character,copyright,general)")
    c.add_argument("--tag-weights", dest="tag_weights", action="store_true", help="write each tag as (tag:0.91), its probability")
    c.add_argument("--escape-parentheses", action="store_true", help=r"write \( \) for prompt syntaxes")
    c.add_argument("--if-exists", dest="caption_mode", choices=("overwrite", "append", "skip"),
                   default=None, help="what to do with an existing caption file (default overwrite; "
                                      "--compat wd14-webui: skip)")
    c.add_argument("--no-recursive", dest="recursive", action="store_false",
                   help="take only the images directly in each folder given, not those in subfolders")


def caption_options(args: argparse.Namespace):
    """The library's caption options from the flags (checks the extension before any work).

    ``--compat`` picks the rule set and its defaults; flags given explicitly win.  kohya-ss'
    spellings (:mod:`illust2vec.cli.kohya_flags`) are read here with kohya-ss' meaning.
    """
    from illust2vec.datasets.captions import (
        CaptionOptions, check_extension, parse_kohya_replacements, parse_replacements, split_tags,
    )

    rules = compat_mode(getattr(args, "compat", None)).caption_rules
    kohya_lists = args.separator.strip() or args.separator  # kohya-ss splits its tag lists so
    lists = kohya_lists if rules == "kohya" else ","
    replace = parse_replacements(args.replace) + tuple(
        pair for text in getattr(args, "kohya_replace", None) or [] for pair in parse_kohya_replacements(text))
    rating = args.rating
    if getattr(args, "kohya_rating_first", False):
        rating = "first"  # --use_rating_tags wins over --use_rating_tags_as_last_tag, as in kohya-ss
    elif getattr(args, "kohya_rating_last", False) and rating is None:
        rating = "last"
    optional = dict(underscores=args.underscores, keep_underscores_in=getattr(args, "keep_underscores_in", None),
                    rating=rating, order=args.sort, character_first=args.character_first, mode=args.caption_mode)
    return CaptionOptions.defaults_for(
        rules, separator=args.separator,
        always_first=tuple(split_tags(args.always_first, lists)
                           + split_tags(getattr(args, "kohya_always_first", None) or [], kohya_lists)),
        replace=replace,
        exclude=tuple(split_tags(args.exclude, lists)
                      + split_tags(getattr(args, "kohya_exclude", None) or [], kohya_lists)),
        categories=tuple(split_tags(args.category_order)), expand_characters=args.expand_characters,
        weights=args.tag_weights, escape_parentheses=args.escape_parentheses,
        extension=check_extension(args.caption_ext), naming=args.caption_name,
        **{k: v for k, v in optional.items() if v is not None},
    )


def _thresholds(args, model):
    """Per-tag thresholds (``None``: MCut) from the flags, the ``--compat`` defaults, the model's."""
    from illust2vec.pipeline.tasks import tag_thresholds

    return tag_thresholds(model, threshold=args.threshold, rule=args.threshold_rule,
                          categories={c: getattr(args, c) for c in ("general", "character", "copyright")},
                          compare=getattr(args, "threshold_compare", None), compat=getattr(args, "compat", None))


def _overlap_table(args):
    """``--drop-overlap``: ``None`` (off), the table, or ``{}`` (on, the substring rule alone)."""
    choice = getattr(args, "drop_overlap", None)
    if choice is None:
        return None
    import logging

    from illust2vec.models.overlap import OVERLAP_DATASET, OVERLAP_FILE, overlap_table

    table = overlap_table(choice)
    if table is None:
        logging.getLogger("illust2vec").warning(
            "note: --drop-overlap: imgutils' overlap table is not in the Hugging Face cache (hf download %s %s "
            "--repo-type dataset); dropping only the tags that are part of another tag", OVERLAP_DATASET, OVERLAP_FILE)
        return {}
    return table


def run(args: argparse.Namespace) -> int:
    """Options -> readers, the model, writers -> the pipeline (here or on Ray: ``--ray`` picks the distributor)."""
    from illust2vec.cli.face_options import face_inputs, faces_requested
    from illust2vec.pipeline import readers, writers as w
    from illust2vec.pipeline.distribute import OnRay
    from illust2vec.pipeline.tasks import TagRule, run_tagging

    fmt = output_format(args, RECORD_FORMATS + MATRIX_FORMATS)
    dist = distributor_from_args(args, "--captions", "--faces")
    if isinstance(dist, OnRay) and getattr(args, "drop_overlap", None) is not None:
        raise Illust2VecError("--drop-overlap is not supported with --ray yet; run without --ray")
    if args.captions and faces_requested(args):
        raise Illust2VecError("--captions writes one caption per picture; it cannot be combined with --faces")
    if args.stats is not None and args.stats.suffix.lower() not in (".csv", ".json"):
        raise Illust2VecError(f"--stats {args.stats}: give a .csv or .json file")
    caption_opts = caption_options(args) if args.captions else None
    files = (readers.source_list(args.paths) if isinstance(dist, OnRay)
             else readers.image_files(args.paths, recursive=args.recursive))
    report = ErrorReport()
    model = model_from_args(args, task="tag")
    rule = TagRule(_thresholds(args, model), _overlap_table(args))
    faces = face_inputs(files, args, on_error=report)  # None without --faces
    stats = w.TagStatistics() if args.stats is not None or args.stats_chart is not None else None
    frequencies = w.TagFrequencies() if args.frequency_tags else None
    outputs: list[w.Writer] = [x for x in (stats, frequencies) if x is not None]
    captions = None
    if caption_opts is not None:
        captions = w.Captions(files, caption_opts, table=model.tags, caption_dir=args.caption_dir,
                              on_error=report, frequencies=frequencies)
        outputs.append(captions)
    if fmt in MATRIX_FORMATS:
        outputs.insert(0, w.TagMatrix(args.output, files, model=model, columns=fmt == "npz") if faces is None
                       else w.FaceTagMatrix(args.output, model=model, columns=fmt == "npz"))
    elif not (args.captions and args.output is None and args.format is None):  # captions alone: quiet stdout
        outputs.insert(0, w.TagRecords(args.output, fmt, model=model.name, raw_csv=args.csv_raw))  # opened last
    report.bar = bar = progress_bar(args, None if faces is not None else len(files))
    with w.writing(outputs) as lines, contextlib.closing(bar):
        done = run_tagging(dist, files, model, rule, outputs, faces=faces, progress=bar, on_error=report)
    if captions is not None:
        done -= captions.failed  # counted when written, lost when the batch committed
    for line in lines:
        print(line, file=sys.stderr)
    if stats is not None:
        write_stats_outputs(args, stats.stats())
    return report.summary(done, "tagged")


def write_stats_outputs(args: argparse.Namespace, stats) -> None:
    """Print the top tags, write the CSV/JSON report and the chart (shared with ``tag-stats``)."""
    print(stats.table(args.stats_top), file=sys.stderr)
    if args.stats is not None:
        stats.write(args.stats)
        print(f"wrote {args.stats}", file=sys.stderr)
    if args.stats_chart is not None:
        stats.chart(args.stats_chart, top=args.stats_top)
        print(f"wrote {args.stats_chart}", file=sys.stderr)
