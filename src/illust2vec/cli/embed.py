"""``illust2vec embed``: feature vectors or binary codes for images, saved with their paths."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from illust2vec.cli.common import (
    ErrorReport, add_input_arguments, add_model_arguments, add_output_arguments, expand_inputs, model_from_args,
    output_format, progress_bar,
)

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
    from illust2vec.cli.face_options import add_face_arguments

    add_face_arguments(p)  # --faces: one row per face, boxes in FILE.faces.jsonl
    from illust2vec.cli.ray_support import add_ray_arguments

    add_ray_arguments(p, shard_dir_default="a temporary directory, removed at the end")
    from illust2vec.cli.helptext import short_help

    short_help(p, "--model", "--weights", "--device", "--binary", "--output", "--format", "--faces", "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from illust2vec.cli.face_options import face_inputs, faces_requested, write_face_sidecar
    from illust2vec.io.writers import write_matrix
    from illust2vec.runtime.batches import iter_batches

    if getattr(args, "ray", None) is not None:
        return run_ray(args)
    fmt = output_format(args, FORMATS)
    output = args.output if Path(args.output).suffix.lower() == f".{fmt}" else f"{args.output}.{fmt}"
    files = expand_inputs(args.paths)
    model = model_from_args(args, task="feature")
    bar = progress_bar(args, None if faces_requested(args) else len(files))
    report = ErrorReport(bar)
    faces = face_inputs(files, args, on_error=report)  # None without --faces
    face_rows: list[dict] = []
    rows: list[np.ndarray] = []
    paths: list[str] = []
    try:
        for batch in iter_batches(model, files if faces is None else faces, batch_size=args.batch_size,
                                  workers=args.workers,
                                  outputs=("feature",), progress=bar, on_error=report):
            if not batch.indices:
                continue
            feats = batch.outputs["feature"]
            rows.append(model.binarize_features(feats) if args.binary else feats)
            if faces is None:
                paths.extend(str(files[i]) for i in batch.indices)
            else:
                paths.extend(faces.source(i) for i in batch.indices)
                face_rows.extend(faces.meta[i] for i in batch.indices)
    finally:
        bar.close()
    if rows:
        matrix = np.concatenate(rows)
        written = write_matrix(output, matrix, paths, model=model.name)
        if faces is not None:
            written.append(write_face_sidecar(output, face_rows))
        print(f"wrote {', '.join(map(str, written))} ({matrix.shape[0]}x{matrix.shape[1]} {matrix.dtype}, "
              f"model {model.name})", file=sys.stderr)
    return report.summary(len(paths), "embedded")


def run_ray(args: argparse.Namespace) -> int:
    """``embed --ray``: the embedder runs on a Ray cluster into shards, gathered here in input order."""
    from illust2vec.cli.ray_support import report_reused_errors, reject_with_ray, run_on_ray, shard_directory
    from illust2vec.distributed import expand_sources, iter_shards
    import numpy as np

    from illust2vec.errors import Illust2VecError
    from illust2vec.io.writers import write_matrix

    reject_with_ray(args, "--faces")
    sources = expand_sources(args.paths)
    if not sources:
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
    model = model_from_args(args, task="feature")
    report = ErrorReport()
    rows: list[np.ndarray] = []
    paths: list[str] = []
    column = "codes" if args.binary else "feature"
    with shard_directory(args) as directory:
        run = run_on_ray(args, sources, directory, embedder=model, report=report)
        report_reused_errors(run, report)
        for shard in iter_shards(directory):
            rows.append(shard.vectors[column])
            paths.extend(shard.path[q] for q in np.flatnonzero(shard.ok))
    if paths:
        matrix = np.concatenate(rows)
        written = write_matrix(args.output, matrix, paths, model=model.name)
        print(f"wrote {', '.join(map(str, written))} ({matrix.shape[0]}x{matrix.shape[1]} {matrix.dtype}, "
              f"model {model.name})", file=sys.stderr)
    return report.summary(len(paths), "embedded")
