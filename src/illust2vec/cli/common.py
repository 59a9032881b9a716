"""Options shared by the commands that run a model, and the per-input error report."""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any

from illust2vec.errors import Illust2VecError, one_line
from illust2vec.io.records import EXTENSIONS
from illust2vec.prep.resize_names import RESIZE_METHODS



def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, directories (searched recursively) or glob patterns")


def probability(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


class DeprecatedAlias(argparse.Action):
    """Stores like the option it stands for, with a one-line warning naming the new option."""

    def __init__(self, option_strings, dest, *, new_option: str, **kwargs) -> None:
        self.new_option = new_option
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"warning: {option_string} is deprecated; use {self.new_option}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_quiet_argument(parser: argparse.ArgumentParser, *, default: Any = False) -> None:
    """``--quiet/-q`` (no progress bars); ``default=argparse.SUPPRESS`` on sub-subcommands."""
    parser.add_argument("--quiet", "-q", action="store_true", default=default, help="no progress bars")


def add_model_arguments(parser: argparse.ArgumentParser, task: str, *, tags_alias: bool = True) -> None:
    """``--model``/``--weights``/``--tag-list`` and the engine options (flags map onto :func:`load_model`).

    ``tags_alias``: also accept the deprecated ``--tags FILE``; commands whose ``--tags``
    names tags (search, explain, edit, generate) pass ``False``.
    """
    g = parser.add_argument_group("model")
    default = ("the best tagger present: i2v-tag, else WD v3" if task == "tag"
               else "the best embedder present: i2v-feature, else generic-effnet-lite0")
    g.add_argument("--model", "-m", metavar="NAME",
                   help="a name from 'illust2vec models list', or a Hugging Face repository ORG/NAME[@REV] "
                        f"with model.onnx + selected_tags.csv (default: {default})")
    g.add_argument("--weights", metavar="FILE", type=Path,
                   help="use this model file directly (.caffemodel or .onnx) instead of the zoo")
    if task == "tag":
        g.add_argument("--tag-list", dest="tag_file", metavar="FILE", type=Path,
                       help="tag list for --weights (i2v tag_list.json[.gz] or WD selected_tags.csv)")
        if tags_alias:
            g.add_argument("--tags", dest="tag_file", metavar="FILE", type=Path, action=DeprecatedAlias,
                           new_option="--tag-list", help=argparse.SUPPRESS)
        g.add_argument("--thresholds", dest="threshold_file", metavar="FILE", type=Path,
                       help="i2v calibrated threshold file (for --threshold-rule f0.5/f1/f2)")
    g.add_argument("--model-dir", metavar="DIR", type=Path,
                   help="model store directory (default: $ILLUST2VEC_HOME or the user cache dir)")
    g.add_argument("--download", action="store_true",
                   help="download the model's files if they are not in the store (nothing is downloaded "
                        "without this flag or 'illust2vec models download')")
    g.add_argument("--offline", action="store_true", default=None,
                   help="never download, even with --download (also ILLUST2VEC_OFFLINE=1)")
    e = parser.add_argument_group("engine")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (needs illust2vec[gpu])")
    e.add_argument("--allow-cpu-fallback", action="store_true",
                   help="run on the CPU with a warning when CUDA is requested but not usable")
    e.add_argument("--fp16", action="store_true",
                   help="with --device cuda: half-precision weights and arithmetic (faster; results differ "
                        "from fp32 in the last digits: docs/benchmarks.md, GPU)")
    e.add_argument("--precision", choices=("fp32", "int8", "bf16", "auto", "fp16"), default=None,
                   help="fp32 (default); int8: ~3x faster on the CPU, tags and features within the measured "
                        "error of docs/incoming/h27.md (graph calibrated once, cached); bf16 runs fp32 here; "
                        "auto: int8 where the CPU has VNNI/AMX; fp16: CUDA only (= --fp16)")
    e.add_argument("--calibrate", metavar="DIR", type=Path, default=None,
                   help="with --precision int8: calibrate on these pictures (default: the drawn demo gallery)")
    e.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per network call (default: 16 on the CPU, 128 with --device cuda)")
    e.add_argument("--threads", type=int, metavar="N", help="inference threads (default: one per core)")
    e.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decode in N processes (default: one background thread on the CPU; with --device cuda "
                        "one process per CPU core but one, so the GPU is not starved)")
    p = parser.add_argument_group("preprocessing")
    p.add_argument("--alpha", choices=("white", "drop"), default="white",
                   help="transparency: composite onto white (default) or drop alpha like the original i2v")
    p.add_argument("--resize", choices=RESIZE_METHODS, metavar="RULE",
                   help="resize rule (default: the model's; i2v: skimage-bilinear, as the models were published; "
                        "WD: pil-bicubic). area: a real area average (OpenCV INTER_AREA bit for bit when "
                        "shrinking); pil-area is Pillow's BOX filter. One of: " + ", ".join(RESIZE_METHODS))
    if not any("--quiet" in a.option_strings for a in parser._actions):
        add_quiet_argument(parser)


def add_exif_argument(parser: argparse.ArgumentParser) -> None:
    """``--exif-orientation apply|ignore`` (commands whose decoding honours the model's recipe)."""
    group = next((g for g in parser._action_groups if g.title == "preprocessing"), parser)
    group.add_argument("--exif-orientation", choices=("apply", "ignore"), default=None,
                       help="apply: turn pictures upright by their EXIF orientation, as viewers show them (default); "
                            "ignore: the stored pixels, as kohya-ss, the WD14 web UI and most trainers read them")


def add_threshold_arguments(parser: argparse.ArgumentParser, rules: tuple[str, ...], title: str = "thresholds"):
    """``--threshold``, per-category thresholds (validated to 0..1) and ``--threshold-rule``; returns the group."""
    t = parser.add_argument_group(title)
    t.add_argument("--threshold", type=probability, metavar="P",
                   help="report tags with probability > P (default: the model's, i2v 0.25)")
    t.add_argument("--general", type=probability, metavar="P", help="threshold for general tags")
    t.add_argument("--character", type=probability, metavar="P", help="threshold for character tags")
    t.add_argument("--copyright", type=probability, metavar="P", help="threshold for copyright tags")
    t.add_argument("--threshold-rule", choices=rules, default="constant",
                   help="constant (default); f0.5/f1/f2 use i2v's calibrated file (--thresholds)"
                        + ("; mcut picks the largest probability gap per image and category" if "mcut" in rules else ""))
    return t


def add_output_arguments(parser: argparse.ArgumentParser, formats: tuple[str, ...], *, default: str = "json",
                         required: bool = False, what: str = "results", default_help: Any = None) -> Any:
    """``-o/--output PATH`` and ``-f/--format`` (default: from the extension, else ``default`` on stdout)."""
    o = parser.add_argument_group("output")
    exts = ", ".join(sorted(e for e, f in EXTENSIONS.items() if f in formats and e not in (".ndjson", ".pq")))
    o.add_argument("--output", "-o", metavar="PATH", required=required, default=default_help,
                   help=f"write {what} here; the format follows the extension ({exts})"
                        + ("" if required else f"; default: {default} on stdout"))
    o.add_argument("--format", "-f", choices=formats, default=default_help, metavar="FORMAT",
                   help=f"override the format the extension implies: {', '.join(formats)}")
    if "csv" in formats:
        o.add_argument("--csv-raw", action="store_true",
                       help="csv: write cells as they are (by default text starting with = + - @ gets a leading ' "
                            "so that spreadsheets do not run it as a formula)")
    return o


def add_sheet_argument(group: Any, help: str, *, metavar: str = "PNG", aliases: tuple[str, ...] = ()) -> None:
    """``--sheet PATH``: the contact sheet option every command that draws one shares."""
    group.add_argument("--sheet", metavar=metavar, type=Path, help=help)
    for alias in aliases:
        group.add_argument(alias, dest="sheet", metavar=metavar, type=Path, action=DeprecatedAlias,
                           new_option="--sheet", help=argparse.SUPPRESS)


def output_format(args: argparse.Namespace, formats: tuple[str, ...], default: str = "json") -> str:
    """The format of ``args.output`` (see :func:`illust2vec.io.records.infer_format`), checked now, before
    the work: Parquet needs pyarrow, and a folder is no place for a result file (its own folder is made
    or refused by :func:`preflight`)."""
    from illust2vec.errors import require_modules
    from illust2vec.io.records import infer_format

    output = getattr(args, "output", None)
    fmt = infer_format(output, getattr(args, "format", None), formats, default)
    if fmt == "parquet":
        require_modules("pyarrow")
    if output not in (None, "-") and Path(output).is_dir():
        raise Illust2VecError(f"{output}: is a folder; give a file name for -o (e.g. {Path(output) / 'out'}.{fmt})")
    prepare_outputs(output)
    return fmt


#: Options (by ``dest``) naming a file or folder a command writes, on every command that has them.
OUTPUT_OPTIONS = ("output", "sheet", "html", "report", "plot", "annotate", "frames", "stats", "stats_chart",
                  "caption_dir", "crops", "out")


def preflight(args: argparse.Namespace) -> None:
    """Before any work, for every command (``cli.main`` calls it before the command's handler):

    * the optional libraries it needs are installed: what the command declares with
      ``set_defaults(requires=...)`` (a tuple of module names such as ``"onnxruntime"``, or a
      function of ``args`` returning one: commands that do not always run a model, such as
      ``search`` by tags, declare nothing), the face detector for
      ``--faces``/``--faces-only`` and commands that set ``face_detector=True``;
    * every place it writes (:data:`OUTPUT_OPTIONS`) can be written: a folder that exists must be
      writable, otherwise its parent is made and must be.

    Each problem is one :class:`Illust2VecError` line now, not an error per picture after
    thousands have been decoded.
    """
    from illust2vec.errors import require_modules

    requires = getattr(args, "requires", ())
    require_modules(*(requires(args) if callable(requires) else requires))
    if getattr(args, "face_detector", False) or getattr(args, "faces", False) or getattr(args, "faces_only", False):
        from illust2vec.faces.native import get_detector

        get_detector()
    files, folders = [], []
    for dest in OUTPUT_OPTIONS:
        value = getattr(args, dest, None)
        if value is None or value == "-" or "://" in str(value):
            continue
        (folders if Path(value).is_dir() else files).append(value)
    prepare_outputs(*files, dirs=tuple(folders))


def resolve_engine_defaults(args: argparse.Namespace) -> None:
    """Fill ``--batch-size`` and ``--workers`` left unset with what suits ``--device``.

    The CPU is kept busy by the network, so one decode thread and small
    batches do; a GPU needs large batches and every core decoding.
    """
    if not hasattr(args, "device"):
        return
    gpu = str(args.device or "").lower().startswith("cuda")
    if getattr(args, "batch_size", 0) is None:
        args.batch_size = 128 if gpu else 16
    if getattr(args, "workers", 0) is None:
        args.workers = max(2, (os.cpu_count() or 2) - 1) if gpu else 0


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~illust2vec.models.image_model.ImageModel` keywords the engine flags set.

    A command without the engine flags (:func:`add_model_arguments`) gets none: the defaults.
    """
    if not hasattr(args, "allow_cpu_fallback"):
        return {}
    return dict(device=args.device, threads=args.threads, batch_size=args.batch_size, alpha=args.alpha,
                allow_fallback=args.allow_cpu_fallback, calibration=getattr(args, "calibrate", None),
                precision=getattr(args, "precision", None) or ("fp16" if getattr(args, "fp16", False) else "fp32"))


def model_args(args: argparse.Namespace, name: str | None = None, *, weights: Path | None = None,
               tag_file: Path | None = None, **changes: Any) -> argparse.Namespace:
    """``args`` for another model than the flags name (a second model of the command, or a command's own
    NAME argument): the same engine and store options, this model, no threshold file or resize rule."""
    a = copy.copy(args)
    a.model, a.weights, a.tag_file = name, weights, tag_file
    a.threshold_file = None
    a.resize = None
    for key, value in changes.items():
        setattr(a, key, value)
    return a


def model_from_args(args: argparse.Namespace, task: str | None):
    """The model the flags describe, through the one route :func:`~illust2vec.models.loading.load_model`.

    ``task`` ``"tag"`` or ``"feature"`` picks the default model and refuses one that cannot do it;
    ``None`` takes any model.  Flags the command does not have take their defaults.
    """
    from illust2vec.cli.kohya_flags import kohya_model_files
    from illust2vec.models.loading import load_model

    name, tags = (args.weights if getattr(args, "weights", None) is not None else args.model,
                  getattr(args, "tag_file", None))
    kohya = kohya_model_files(args)  # kohya-ss' --model_dir DIR --repo_id ORG/NAME
    if kohya is not None:
        name, tags = kohya
    model = load_model(
        name, task=task or "feature", tags=tags, thresholds=getattr(args, "threshold_file", None),
        model_dir=getattr(args, "model_dir", None), download=getattr(args, "download", False),
        offline=getattr(args, "offline", None), progress=not getattr(args, "quiet", False),
        resize=getattr(args, "resize", None),
        exif_orientation=getattr(args, "exif_orientation", None), compat=getattr(args, "compat", None),
        **engine_options(args),
    )
    if task == "tag" and not model.is_tagger:
        raise Illust2VecError(f"{model.name} is not a tagger; choose a tag model (e.g. --model i2v-tag)")
    if task == "feature" and not model.is_embedder:
        raise Illust2VecError(f"{model.name} has no feature output; choose an embedder (e.g. --model i2v-feature)")
    return model


# -- collections --------------------------------------------------------------

DEFAULT_DB = "illust2vec-collection"


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="DIR", default=os.environ.get("ILLUST2VEC_DB", DEFAULT_DB),
                        help=f"collection directory (default: $ILLUST2VEC_DB or ./{DEFAULT_DB})")


def add_tagger_arguments(parser: argparse.ArgumentParser) -> None:
    """``index``'s tagger options: which tag models' probabilities to store (a collection may hold several)."""
    g = parser.add_argument_group("tagger (stores tag probabilities for tag queries)")
    g.add_argument("--tagger", metavar="NAME",
                   help="store this tag model's tags too (e.g. wd-vit-v3): stored pictures are tagged "
                        "without re-embedding. Default: the collection's taggers, or the best present")
    g.add_argument("--tagger-weights", metavar="FILE", type=Path,
                   help="use this tag model file directly (.caffemodel or .onnx)")
    g.add_argument("--tag-list", dest="tagger_tag_file", metavar="FILE", type=Path,
                   help="tag list for --tagger-weights (i2v tag_list.json[.gz] or WD selected_tags.csv)")


def add_tagger_choice(parser: argparse.ArgumentParser) -> None:
    """``--tagger NAME`` of the commands that read a collection's tags (search, export, tag-stats, map)."""
    parser.add_argument("--tagger", metavar="NAME",
                        help="whose tags to read when the collection holds several taggers (a name as "
                             "'illust2vec index' lists them, or an identity); default: the most recently added")


def _registered(name: str | None) -> bool:
    from illust2vec.models.catalog import MODELS

    return bool(name) and name in MODELS


def collection_models_from_args(args: argparse.Namespace, info: dict[str, Any] | None = None, *,
                                need_tagger: bool = True):
    """``(embedder, taggers)`` from the model flags, defaulting to the collection's models.

    ``info`` is the collection's :meth:`~illust2vec.collection.Collection.info`
    when it exists (``None`` for a new collection, or with ``--rebuild``).
    ``taggers`` is every tagger the collection holds (loaded by name), plus the
    one ``--tagger``/``--tagger-weights`` names when the collection does not
    hold it yet; for a new collection with no model flags at all, the best
    tagger in the model store (or the embedder when it also tags).
    """
    info = info or {}
    a = copy.copy(args)
    if a.weights is None and a.model is None and info.get("embedder"):
        if not _registered(info["embedder"]):
            raise Illust2VecError(
                f"{args.db}: indexed with the model file {info['embedder']!r}; pass it again with --weights FILE"
            )
        a.model = info["embedder"]
    embedder = model_from_args(a, task="feature")
    if not need_tagger:
        return embedder, []

    flag = getattr(args, "tagger", None)
    if flag == "none":
        return embedder, []
    weights = getattr(args, "tagger_weights", None)
    named = None
    if flag is not None or weights is not None:
        named = model_from_args(
            model_args(args, flag, weights=weights, tag_file=getattr(args, "tagger_tag_file", None)), task="tag")
    out = []
    for stored in info.get("taggers", []):
        if named is not None and named.identity == stored["identity"]:
            out.append(named)
            continue
        if stored["identity"] == getattr(embedder, "identity", None) and getattr(embedder, "is_tagger", False):
            out.append(embedder)
            continue
        if not _registered(stored["name"]):
            raise Illust2VecError(
                f"{args.db}: tag probabilities come from the model file {stored['name']!r}; pass it again with "
                "--tagger-weights FILE (and --tag-list FILE)"
            )
        out.append(model_from_args(model_args(args, stored["name"]), task="tag"))
    if named is not None:
        if all(named.identity != m.identity for m in out):
            out.append(named)
    elif not info.get("embedder"):  # a new collection: tags by default
        default = None if (args.model is not None or args.weights is not None) else _default_tagger(args)
        if default is not None:
            out.append(model_from_args(model_args(args, default), task="tag"))
        elif getattr(embedder, "is_tagger", False):
            out.append(embedder)
    return embedder, out


def _default_tagger(args: argparse.Namespace) -> str | None:
    """The best tagger whose files are in the model store, or ``None``."""
    from illust2vec.models.catalog import get_spec
    from illust2vec.models.loading import default_model_name, model_available
    from illust2vec.models.store import ModelStore

    store = ModelStore(getattr(args, "model_dir", None))
    name = default_model_name("tag", store)
    return name if model_available(get_spec(name), store) else None


def prepare_outputs(*paths: str | os.PathLike | None, dirs: tuple[str | os.PathLike | None, ...] = ()) -> None:
    """Before any work: create the folders the outputs go to, and check they can be written.

    ``paths`` are output files (``None`` and ``-`` for stdout are skipped),
    ``dirs`` output folders.  A folder that cannot be made or written is an
    :class:`Illust2VecError` now, not a crash after the work is done.
    """
    folders = [Path(p).parent for p in paths if p not in (None, "-")]
    folders += [Path(d) for d in dirs if d is not None]
    for folder in folders:
        folder = folder if str(folder) else Path(".")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise Illust2VecError(f"{folder}: is a file, not a folder; choose another output path") from None
        except OSError as exc:
            raise Illust2VecError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            read_only = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1))
            why = "on a read-only file system" if read_only else "permission denied"
            raise Illust2VecError(f"{folder}: the output folder is not writable ({why}); write somewhere else")


class ErrorReport:
    """Prints one ``error: PATH: message`` line per failed input and the closing summary."""

    def __init__(self, bar=None) -> None:
        self.count = 0
        self.bar = bar

    def __call__(self, error) -> None:
        self.count += 1
        line = f"error: {one_line(error)}"  # a newline in a file name must not split the line
        if self.bar is not None and hasattr(self.bar, "write"):
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def summary(self, done: int, verb: str) -> int:
        total = done + self.count
        msg = f"{verb} {done} of {total} image{'s' if total != 1 else ''}"
        if self.count:
            msg += f"; {self.count} failed (see the error lines above)"
        print(msg, file=sys.stderr)
        return 1 if self.count else 0


def progress_bar(args: argparse.Namespace, total: int | None, unit: str = "img", desc: str | None = None):
    """The command's :class:`~illust2vec.runtime.progress.ProgressBar`, silent with ``--quiet``."""
    from illust2vec.runtime.progress import ProgressBar

    return ProgressBar(desc, unit=unit, total=total, enabled=not getattr(args, "quiet", False))


def split_tags(values: str | list[str] | None) -> list[str]:
    """Tag names from repeatable comma-separated options (``--tags "blue hair, cat ears"``)."""
    from illust2vec.datasets.captions import split_tags as split

    return split(values or [])
