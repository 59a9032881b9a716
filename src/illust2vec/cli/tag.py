"""``illust2vec tag``: Danbooru tags for images, as JSON/JSONL/CSV/NumPy or caption files."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


from illust2vec.cli.common import (
    ErrorReport, add_exif_argument, add_input_arguments, add_model_arguments, add_output_arguments,
    add_threshold_arguments, expand_inputs, model_from_args, output_format, progress_bar,
)
from illust2vec.errors import Illust2VecError
from illust2vec.models.compat import COMPAT_MODES, compat_mode
from illust2vec.models.tags import THRESHOLD_COMPARES

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


def tag_rows(record: dict) -> list[dict]:
    """CSV/Parquet rows of one tag record: one per tag (path, [face columns], category, tag, probability, model)."""
    base = {k: v for k, v in record.items() if k not in ("tags", "model")}
    return [{**base, "category": cat, "tag": tag, "probability": p, "model": record.get("model")}
            for cat, tags in record["tags"].items() for tag, p in tags.items()]


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
    """Per-tag thresholds for ``plausible_tags`` (``>``): the flags, the ``--compat`` defaults, the model's."""
    from illust2vec.models.tags import resolve_thresholds

    compat = getattr(args, "compat", None)
    mode = compat_mode(compat)
    own = compat is None  # the model's own front-end rule (imgutils' >= for PixAI), unless --compat says
    compare = getattr(args, "threshold_compare", None) or (model.threshold_compare if own else mode.threshold_compare)
    float32 = model.thresholds_float32 if own else mode.thresholds_float32
    if args.threshold_rule in ("f0.5", "f1", "f2"):
        return resolve_thresholds(model.tags, model.thresholds_for(None, args.threshold_rule), compare=compare)
    mapping = dict(mode.thresholds) if mode.thresholds is not None else dict(model.thresholds)
    if args.threshold is not None:
        mapping = {"default": args.threshold}
    for cat in ("general", "character", "copyright"):
        value = getattr(args, cat)
        if value is not None:
            if cat not in model.tags.category_names:
                raise Illust2VecError(f"--{cat}: {model.name} has no {cat} tags "
                                      f"(categories: {', '.join(model.tags.category_names)})")
            mapping[cat] = value
    return resolve_thresholds(model.tags, mapping, compare=compare, float32=float32)


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
    import numpy as np

    from illust2vec.cli.face_options import face_inputs, faces_requested, write_face_sidecar
    from illust2vec.cli.kohya_flags import TagFrequencies
    from illust2vec.datasets.captions import CaptionError, caption_batch, caption_words, plan_captions, write_caption
    from illust2vec.datasets.tagstats import TagCounter
    from illust2vec.io.records import RecordSink
    from illust2vec.io.writers import tag_record, write_matrix
    from illust2vec.models.overlap import drop_overlap_result
    from illust2vec.models.tags import plausible_tags, plausible_tags_mcut
    from illust2vec.runtime.batches import iter_batches

    fmt = output_format(args, RECORD_FORMATS + MATRIX_FORMATS)
    if getattr(args, "ray", None) is not None:
        if getattr(args, "drop_overlap", None) is not None:
            raise Illust2VecError("--drop-overlap is not supported with --ray yet; run without --ray")
        return run_ray(args, fmt)
    records = not (args.captions and args.output is None and args.format is None)  # captions alone: quiet stdout
    if args.captions and faces_requested(args):
        raise Illust2VecError("--captions writes one caption per picture; it cannot be combined with --faces")
    if args.stats is not None and args.stats.suffix.lower() not in (".csv", ".json"):
        raise Illust2VecError(f"--stats {args.stats}: give a .csv or .json file")
    caption_opts = caption_options(args) if args.captions else None
    files = expand_inputs(args.paths, recursive=args.recursive)
    plan = plan_captions(files, caption_opts, args.caption_dir) if caption_opts is not None else None
    report = ErrorReport()
    if plan is not None:
        for clash in plan.clashes:  # before any work: one line per image that gets no caption
            for image in clash.images:
                report(_clash_line(image, clash))
    implied = _overlap_table(args)
    model = model_from_args(args, task="tag")
    thresholds = None if args.threshold_rule == "mcut" else _thresholds(args, model)
    npy = fmt in MATRIX_FORMATS and not faces_requested(args)
    matrix = np.full((len(files), len(model.tags)), np.nan, np.float32) if npy else None
    face_probs: list[np.ndarray] = []
    face_rows: list[dict] = []
    bar = progress_bar(args, None if faces_requested(args) else len(files))
    report.bar = bar
    faces = face_inputs(files, args, on_error=report)  # None without --faces
    counter = TagCounter() if args.stats is not None or args.stats_chart is not None else None
    frequencies = TagFrequencies() if args.frequency_tags else None
    done = 0
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        writer = (stack.enter_context(RecordSink(args.output, fmt, rows=tag_rows, raw_csv=args.csv_raw))
                  if records and fmt in RECORD_FORMATS else None)
        def caption_failed(exc: CaptionError) -> None:  # at commit time, after it was counted
            nonlocal done
            done -= 1
            report(exc)

        captions = stack.enter_context(caption_batch(caption_failed)) if plan is not None else None  # durable on exit
        for batch in iter_batches(model, files if faces is None else faces, batch_size=args.batch_size,
                                  workers=args.workers,
                                  outputs=("prob",), progress=bar, on_error=report):
            prob = batch.outputs["prob"]
            batch_tags = (plausible_tags_mcut(prob, model.tags) if args.threshold_rule == "mcut"
                          else plausible_tags(prob, model.tags, thresholds)) if len(batch) else []
            for j, index in enumerate(batch.indices):
                tags = batch_tags[j] if implied is None else drop_overlap_result(batch_tags[j], implied or None)
                if matrix is not None:
                    matrix[index] = prob[j]
                elif faces is not None and fmt in MATRIX_FORMATS:
                    face_probs.append(prob[j])
                    face_rows.append(faces.meta[index])
                if writer is not None and faces is not None:  # csv: path column "PATH#faceK [x,y,w,h]"
                    path = faces.ref(index) if fmt == "csv" else faces.source(index)
                    writer.write(tag_record(path, tags, **faces.fields(index), model=model.name))
                elif writer is not None:
                    writer.write(tag_record(str(files[index]), tags, model=model.name))
                if counter is not None:
                    counter.add(tags)
                if frequencies is not None and plan is None:
                    frequencies.add(files[index], [t for c, ts in tags.items() if c != "rating" for t, _ in ts])
                if plan is not None:
                    target = plan.target(files[index])
                    if target is None:
                        continue  # in a clash, reported above
                    words = caption_words(tags, caption_opts, model.tags)
                    if frequencies is not None:
                        frequencies.add(files[index], words)
                    try:
                        write_caption(target, caption_opts.separator.join(words), caption_opts, batch=captions)
                    except CaptionError as exc:
                        report(exc)
                        continue
                done += 1
    if matrix is not None:
        write_matrix(args.output, matrix, [str(f) for f in files], model=model.name,
                     column_names=list(model.tags.names) if fmt == "npz" else None)
        print(f"wrote {args.output} ({matrix.shape[0]}x{matrix.shape[1]}; failed rows are NaN)", file=sys.stderr)
    elif face_probs:
        write_matrix(args.output, np.stack(face_probs), [m["source"] for m in face_rows], model=model.name,
                     column_names=list(model.tags.names) if fmt == "npz" else None)
        side = write_face_sidecar(args.output, face_rows)
        print(f"wrote {args.output} ({len(face_probs)}x{len(model.tags)}, one row per face) and {side}",
              file=sys.stderr)
    if counter is not None:
        write_stats_outputs(args, counter.stats())
    if frequencies is not None:
        frequencies.print()
    return report.summary(done, "tagged")


def _clash_line(image: Path, clash) -> str:
    others = [str(p) for p in clash.images if p != image]
    if clash.is_input:
        return f"{image}: its caption {clash.target} would overwrite an input file; no caption written"
    return (f"{image}: its caption {clash.target} would also be the caption of {', '.join(others)}; "
            "no caption written (--caption-name name gives x.jpg.txt, x.png.txt)")


def write_stats_outputs(args: argparse.Namespace, stats) -> None:
    """Print the top tags, write the CSV/JSON report and the chart (shared with ``tag-stats``)."""
    print(stats.table(args.stats_top), file=sys.stderr)
    if args.stats is not None:
        stats.write(args.stats)
        print(f"wrote {args.stats}", file=sys.stderr)
    if args.stats_chart is not None:
        stats.chart(args.stats_chart, top=args.stats_top)
        print(f"wrote {args.stats_chart}", file=sys.stderr)


def run_ray(args: argparse.Namespace, fmt: str) -> int:
    """``tag --ray``: the tagger runs on a Ray cluster into shards, read back here in input order."""
    import numpy as np

    from illust2vec.cli.ray_support import report_reused_errors, reject_with_ray, run_on_ray, shard_directory
    from illust2vec.distributed import expand_sources, iter_shards
    from illust2vec.io.records import RecordSink
    from illust2vec.io.writers import tag_record, write_matrix
    from illust2vec.models.tags import plausible_tags, plausible_tags_mcut

    reject_with_ray(args, "--captions", "--faces")
    sources = expand_sources(args.paths)
    if not sources:
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
    implied = _overlap_table(args)
    model = model_from_args(args, task="tag")
    thresholds = None if args.threshold_rule == "mcut" else _thresholds(args, model)
    report = ErrorReport()
    done = 0
    with shard_directory(args) as directory:
        run = run_on_ray(args, sources, directory, tagger=model, report=report)
        report_reused_errors(run, report)
        if fmt in MATRIX_FORMATS:
            matrix = np.full((len(sources), len(model.tags)), np.nan, np.float32)
            for shard in iter_shards(directory):
                matrix[shard.index[shard.ok]] = shard.vectors["prob"]
                done += int(shard.ok.sum())
            write_matrix(args.output, matrix, sources, model=model.name,
                         column_names=list(model.tags.names) if fmt == "npz" else None)
            print(f"wrote {args.output} ({matrix.shape[0]}x{matrix.shape[1]}; failed rows are NaN)", file=sys.stderr)
            return report.summary(done, "tagged")
        with RecordSink(args.output, fmt, rows=tag_rows, raw_csv=args.csv_raw) as writer:
            for shard in iter_shards(directory):
                prob = shard.vectors["prob"]
                if not len(prob):
                    continue
                tags = (plausible_tags_mcut(prob, model.tags) if args.threshold_rule == "mcut"
                        else plausible_tags(prob, model.tags, thresholds))
                for j, q in enumerate(np.flatnonzero(shard.ok)):
                    writer.write(tag_record(shard.path[q], tags[j], model=model.name))
                    done += 1
    return report.summary(done, "tagged")
