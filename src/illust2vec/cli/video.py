"""``illust2vec video``: a tag timeline of a video, frame by frame (JSON/CSV, plot, annotated video)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from illust2vec.cli.common import (
    add_model_arguments, add_output_arguments, add_threshold_arguments, model_args,
    model_from_args, output_format,
)
from illust2vec.errors import Illust2VecError

if TYPE_CHECKING:
    from illust2vec.video.options import VideoOptions

EXAMPLES = """\
examples:
  illust2vec video clip.mp4 --every 1 -o timeline.json          tag one frame per second
  illust2vec video clip.mp4 --scenes -o shots.csv --frames shots/   one frame per shot, saved as JPEG
  illust2vec video clip.mp4 --fps 4 -o t.json --plot t.png --annotate tagged.mp4
  illust2vec video clip.mp4 --every 0.5 --threshold 0.4 --min-gap 2 -o t.json
"""


FORMATS = ("json", "csv")


def register(sub) -> None:
    p = sub.add_parser(
        "video", help="tag a video frame by frame: timeline, shots, tag intervals, plot, annotated video",
        description="Tag the frames of a video (sampled every N seconds, at N frames per second, one per "
                    "shot, or all of them) and report a timeline: per-frame tags, shots, per-shot tags and "
                    "the intervals in which each tag appears.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the video file (mp4, mkv, webm, mov, avi, ...)")
    s = p.add_argument_group("sampling (default: every frame)")
    m = s.add_mutually_exclusive_group()
    m.add_argument("--every", type=float, metavar="SECONDS", help="tag the frame on screen every SECONDS")
    m.add_argument("--fps", type=float, metavar="N", help="tag N frames per second")
    m.add_argument("--scenes", action="store_true",
                   help="find the shots first and tag representative frames of each shot")
    s.add_argument("--per-shot", type=int, default=1, metavar="K", help="frames per shot with --scenes (default 1)")
    s.add_argument("--representative", choices=("middle", "typical"), default="middle",
                   help="with --scenes: evenly spaced frames (middle) or the most typical-looking ones")
    s.add_argument("--start", type=float, metavar="SECONDS", help="start here")
    s.add_argument("--end", type=float, metavar="SECONDS", help="stop here")
    s.add_argument("--max-side", type=int, metavar="PX",
                   help="downscale frames while decoding (faster for large videos; the model resizes anyway)")
    add_model_arguments(p, task="tag")
    t = add_threshold_arguments(p, ("constant", "f0.5", "f1", "f2"), title="thresholds and intervals")
    t.add_argument("--exit-ratio", type=float, default=0.7, metavar="R",
                   help="an interval ends when the probability falls below R x threshold (default 0.7)")
    t.add_argument("--min-gap", type=float, default=1.0, metavar="SECONDS",
                   help="merge intervals of a tag closer than this (default 1)")
    t.add_argument("--min-duration", type=float, default=0.0, metavar="SECONDS",
                   help="drop intervals shorter than this (default 0)")
    sh = p.add_argument_group("shots")
    sh.add_argument("--shot-threshold", type=float, default=0.3, metavar="S",
                    help="cut detector sensitivity, 0-1 (default 0.3; lower finds more cuts)")
    sh.add_argument("--min-shot", type=float, default=0.4, metavar="SECONDS", help="shortest shot (default 0.4)")
    sh.add_argument("--no-shots", action="store_true", help="do not look for shot changes between sampled frames")
    o = add_output_arguments(p, FORMATS, what="the timeline (csv: one row per sampled frame)")
    o.add_argument("--top", type=int, metavar="N", help="at most N tags per frame and shot in the outputs")
    o.add_argument("--feature-model", metavar="NAME|FILE",
                   help="also store feature vectors from this model (zoo name or .caffemodel) in the JSON")
    o.add_argument("--plot", metavar="PNG", type=Path, help="draw the timeline (tags as lanes over time)")
    o.add_argument("--plot-tags", type=int, default=12, metavar="N", help="lanes in the plot (default 12)")
    o.add_argument("--plot-width", type=int, default=1200, metavar="PX", help="plot width (default 1200)")
    o.add_argument("--annotate", metavar="VIDEO", type=Path,
                   help="write a copy of the video with the top tags drawn on every frame (.mp4)")
    o.add_argument("--annotate-top", type=int, default=5, metavar="N", help="tags drawn per frame (default 5)")
    o.add_argument("--frames", metavar="DIR", type=Path,
                   help="save the tagged (representative) frames as images in DIR")
    o.add_argument("--frame-format", choices=("jpg", "png"), default="jpg", help="image format for --frames")
    from illust2vec.cli.helptext import short_help

    short_help(p, "--every", "--scenes", "--model", "--threshold", "--output", "--plot", "--annotate",
               "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def _feature_model(args: argparse.Namespace) -> Any:
    return model_from_args(model_args(args, args.feature_model), task="feature")


def video_options(args: argparse.Namespace, threshold: Any = None) -> VideoOptions:
    """The video's option records from its flags, one field per flag (``threshold``: resolved for the model)."""
    from illust2vec.video.options import IntervalOptions, SamplingOptions, ShotOptions, VideoOptions

    return VideoOptions(
        sampling=SamplingOptions(every=args.every, fps=args.fps, scenes=args.scenes, per_shot=args.per_shot,
                                 representative=args.representative, start=args.start, end=args.end,
                                 max_side=args.max_side),
        shots=ShotOptions(detect=not args.no_shots, threshold=args.shot_threshold, min_shot=args.min_shot),
        intervals=IntervalOptions(threshold=threshold, exit_ratio=args.exit_ratio, min_gap=args.min_gap,
                                  min_duration=args.min_duration),
        batch_size=args.batch_size,
    )


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import prepare_outputs
    from illust2vec.cli.tag import _thresholds
    from illust2vec.io.atomic import DurableBatch
    from illust2vec.runtime.progress import ProgressBar
    from illust2vec.video import probe_video
    from illust2vec.video.outputs import save_frame, write_timeline, write_timeline_json
    from illust2vec.video.timeline import tag_video

    path: Path = args.file
    fmt = output_format(args, FORMATS)
    if fmt == "csv" and args.output is None:
        raise Illust2VecError("--format csv needs an output file: -o FILE.csv")
    try:
        video_options(args).sampling.check()
    except ValueError as exc:  # name the flag, not the field
        flag = str(exc).split("=", 1)[0].replace("_", "-")
        raise Illust2VecError(f"--{flag} {str(exc).split('=', 1)[1]}") from None
    prepare_outputs(args.output, args.plot, args.annotate, dirs=(args.frames,))  # before the work
    try:
        info = probe_video(path)
    except Illust2VecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model = model_from_args(args, task="tag")
    thresholds = _thresholds(args, model)
    feature_model = _feature_model(args) if args.feature_model else None

    frames = DurableBatch()  # the saved frames, durable when tagging ends

    def sink(frame: Any, shot: int) -> None:
        save_frame(frame.image, args.frames, frame.time, frame.index, shot, ext=args.frame_format, batch=frames)

    bars = ProgressBar(unit="frame", enabled=not args.quiet)
    try:
        timeline = tag_video(path, model, video_options(args, thresholds), feature_model=feature_model,
                             progress=bars, frame_sink=sink if args.frames else None)
    except ValueError as exc:
        raise Illust2VecError(f"{path}: {exc}") from None
    finally:
        bars.close()
        frames.commit()

    if args.output is None:
        import json

        json.dump(timeline.to_dict(include_features=feature_model is not None, top=args.top), sys.stdout,
                  ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
    elif fmt == "json":
        write_timeline_json(timeline, args.output, include_features=feature_model is not None, top=args.top)
    else:
        write_timeline(timeline, args.output, top=args.top)
    if args.plot:
        from illust2vec.video.plot import plot_timeline

        plot_timeline(timeline, args.plot, top=args.plot_tags, width=args.plot_width)
    if args.annotate:
        from illust2vec.video.annotate import annotate_video

        with ProgressBar("annotating", unit="frame", total=info.frame_count, enabled=not args.quiet) as abar:
            annotate_video(timeline, args.annotate, top=args.annotate_top, progress=abar)

    rate = len(timeline) / timeline.seconds if timeline.seconds > 0 else 0.0
    print(
        f"tagged {len(timeline)} frame{'s' if len(timeline) != 1 else ''} of {path} "
        f"({len(timeline.shots)} shots, {timeline.frames_decoded} decoded) in {timeline.seconds:.1f} s "
        f"({rate:.1f} frames/s)",
        file=sys.stderr,
    )
    if timeline.problem:
        print(f"error: {timeline.problem}; the timeline covers 0-{timeline.end_time:.2f} s", file=sys.stderr)
        return 1
    return 0
