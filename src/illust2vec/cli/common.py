"""Options shared by the commands that run a model, and the per-input error report."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from illust2vec.errors import Illust2VecError

RESIZE_CHOICES = ("skimage-bilinear", "skimage-bilinear-aa", "pil-bilinear", "pil-bicubic", "pil-lanczos", "pil-area")


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, directories (searched recursively) or glob patterns")


def add_model_arguments(parser: argparse.ArgumentParser, task: str,
                        tag_file_flags: tuple[str, ...] = ("--tags", "--tag-list")) -> None:
    """``--model``/``--weights``/``--tags`` and the engine options (flags map onto library keywords).

    ``tag_file_flags``: the spellings of the tag-list option; commands whose
    ``--tags`` names tags (explain, edit, generate) keep only ``--tag-list``.
    """
    g = parser.add_argument_group("model")
    default = "i2v-tag" if task == "tag" else "the best available (i2v-feature, else generic-effnet-lite0)"
    g.add_argument("--model", "-m", metavar="NAME",
                   help=f"zoo model name (default: {default}); see 'illust2vec models list'")
    g.add_argument("--weights", metavar="FILE", type=Path,
                   help="use this model file directly (.caffemodel or .onnx) instead of the zoo")
    if task == "tag":
        g.add_argument(*tag_file_flags, dest="tag_file", metavar="FILE", type=Path,
                       help="tag list for --weights (i2v tag_list.json[.gz] or WD selected_tags.csv)")
        g.add_argument("--thresholds", dest="threshold_file", metavar="FILE", type=Path,
                       help="i2v calibrated threshold file (for --threshold-rule f0.5/f1/f2)")
    g.add_argument("--model-dir", metavar="DIR", type=Path,
                   help="model store directory (default: $ILLUST2VEC_HOME or the user cache dir)")
    g.add_argument("--offline", action="store_true", default=None,
                   help="never download; fail with instructions if files are missing (also ILLUST2VEC_OFFLINE=1)")
    e = parser.add_argument_group("engine")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N (needs illust2vec[gpu])")
    e.add_argument("--allow-cpu-fallback", action="store_true",
                   help="run on the CPU with a warning when CUDA is requested but not usable")
    e.add_argument("--fp16", action="store_true",
                   help="with --device cuda: half-precision weights and arithmetic (faster; results differ "
                        "from fp32 in the last digits, see the README's GPU table)")
    e.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images per network call (default: 16 on the CPU, 128 with --device cuda)")
    e.add_argument("--threads", type=int, metavar="N", help="inference threads (default: one per core)")
    e.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decode in N processes (default: one background thread on the CPU; with --device cuda "
                        "one process per CPU core but one, so the GPU is not starved)")
    p = parser.add_argument_group("preprocessing")
    p.add_argument("--alpha", choices=("white", "drop"), default="white",
                   help="transparency: composite onto white (default) or drop alpha like the original i2v")
    p.add_argument("--resize", choices=RESIZE_CHOICES, metavar="RULE",
                   help="resize rule (default: the model's; i2v: skimage-bilinear, as the models were published). "
                        f"One of: {', '.join(RESIZE_CHOICES)}")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


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


def model_from_args(args: argparse.Namespace, task: str):
    """Build the model the flags describe."""
    from illust2vec.model import Illustration2Vec, load_model

    options: dict[str, Any] = dict(device=args.device, threads=args.threads, batch_size=args.batch_size,
                                   alpha=args.alpha, allow_fallback=args.allow_cpu_fallback,
                                   precision="fp16" if getattr(args, "fp16", False) else "fp32")
    weights: Path | None = getattr(args, "weights", None)
    if weights is not None:
        suffix = weights.suffix.lower()
        if suffix == ".caffemodel":
            model = Illustration2Vec.from_caffemodel(
                weights, tags=getattr(args, "tag_file", None), thresholds=getattr(args, "threshold_file", None),
                model_dir=args.model_dir, **options,
            )
        elif suffix == ".onnx":
            from illust2vec.model import load_onnx_model

            model = load_onnx_model(weights, tags=getattr(args, "tag_file", None), **options)
        else:
            raise Illust2VecError(f"{weights}: --weights takes a .caffemodel or .onnx file")
    else:
        model = load_model(args.model, task=task, model_dir=args.model_dir, offline=args.offline,
                           progress=not args.quiet, **options)
    if getattr(args, "resize", None):
        model.recipe = dataclasses.replace(model.recipe, resize=args.resize)
    if task == "tag" and not model.is_tagger:
        raise Illust2VecError(f"{model.name} is not a tagger; choose a tag model (e.g. --model i2v-tag)")
    if task == "feature" and not model.is_embedder:
        raise Illust2VecError(f"{model.name} has no feature output; choose an embedder (e.g. --model i2v-feature)")
    return model


def expand_inputs(paths: list[str]) -> list[Path]:
    from illust2vec.images import iter_image_files

    files = iter_image_files(paths)
    if not files:
        raise Illust2VecError(f"no images found in: {', '.join(paths)}")
    return files


class ErrorReport:
    """Prints one ``error: PATH: message`` line per failed input and the closing summary."""

    def __init__(self, bar=None) -> None:
        self.count = 0
        self.bar = bar

    def __call__(self, error) -> None:
        self.count += 1
        line = f"error: {error}"
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


def progress_bar(args: argparse.Namespace, total: int, unit: str = "img"):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=bool(getattr(args, "quiet", False)),
                dynamic_ncols=True, smoothing=0.1)


def split_tags(values: list[str] | None) -> list[str]:
    """Tag names from repeatable comma-separated options (``--tags "blue hair, cat ears"``)."""
    return [t.strip() for value in values or [] for t in value.split(",") if t.strip()]
