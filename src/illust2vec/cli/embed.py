"""``illust2vec embed``: feature vectors or binary codes for images, saved with their paths."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


from illust2vec.cli.common import (
    ErrorReport, add_input_arguments, add_model_arguments, add_output_arguments, model_from_args, output_format,
    progress_bar,
)
from illust2vec.cli.ray_support import add_in_graph_argument, distributor_from_args

FORMATS = ("npy", "npz", "parquet")

EXAMPLES = """\
examples:
  illust2vec embed pictures/ -o features.npy        (N, 4096) float32 + features.paths.txt
  illust2vec embed pictures/ -o codes.npy --binary  (N, 512) uint8 packed 4096-bit codes
  illust2vec embed pictures/ -o features.parquet    columns: path, vector
  illust2vec embed pictures/ -o f.npy --model generic-effnet-lite0   1280-d, the bundled embedder
"""


def register(sub) -> None:
    p = sub.add_parser(
        "embed", help="extract semantic feature vectors (or binary codes)",
        description="Extract one feature vector per image (i2v: 4096-d encode1) in input order. Images "
                    "that fail are reported and left out; the paths file says which row is which image.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(p)
    add_model_arguments(p, task="feature")
    add_output_arguments(p, FORMATS, required=True,
                         what="the vectors (FILE.npy + FILE.paths.txt + FILE.meta.json, FILE.npz or FILE.parquet)")
    p.add_argument("--binary", action="store_true", help="packed binary codes (uint8) instead of floats")
    add_in_graph_argument(p)
    from illust2vec.cli.face_options import add_face_arguments

    add_face_arguments(p)  # --faces: one row per face, boxes in FILE.faces.jsonl
    from illust2vec.cli.ray_support import add_ray_arguments

    add_ray_arguments(p, shard_dir_default="a temporary directory, removed at the end")
    from illust2vec.cli.helptext import short_help

    short_help(p, "--model", "--weights", "--device", "--binary", "--output", "--format", "--faces", "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def run(args: argparse.Namespace) -> int:
    """Options -> readers, the model, the matrix writer -> the pipeline (here or on Ray, as ``--ray`` says)."""
    from illust2vec.cli.face_options import face_inputs
    from illust2vec.pipeline import readers, writers as w
    from illust2vec.pipeline.distribute import OnRay
    from illust2vec.pipeline.tasks import run_embedding

    dist = distributor_from_args(args, "--faces")
    fmt = output_format(args, FORMATS)
    output = args.output if Path(args.output).suffix.lower() == f".{fmt}" else f"{args.output}.{fmt}"
    files = readers.source_list(args.paths) if isinstance(dist, OnRay) else readers.image_files(args.paths)
    model = model_from_args(args, task="feature")
    report = ErrorReport()
    faces = face_inputs(files, args, on_error=report)  # None without --faces
    report.bar = bar = progress_bar(args, None if faces is not None else len(files))
    outputs = [w.VectorMatrix(output, model=model, binary=args.binary)]
    with w.writing(outputs) as lines, contextlib.closing(bar):
        done = run_embedding(dist, files, model, outputs, faces=faces, progress=bar, on_error=report)
    for line in lines:
        print(line, file=sys.stderr)
    return report.summary(done, "embedded")
