"""``illust2vec video``: a tag timeline of a video, frame by frame (JSON/CSV, plot, annotated video)."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from illust2vec.cli.common import (
    add_model_arguments, add_output_arguments, add_threshold_arguments, model_args, model_from_args,
    output_format, progress_bar,
)
from illust2vec.errors import Illust2VecError

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


def _bar(args: argparse.Namespace, total: int | None, desc: str) -> Any:
    return progress_bar(args, total, unit="frame", desc=desc)


def _expected_samples(info: Any, args: argparse.Namespace) -> int | None:
    dur = info.duration
    if dur is None:
        return None
    start = args.start or 0.0
    end = min(dur, args.end) if args.end is not None else dur
    span = max(0.0, end - start)
    if args.every:
        return max(1, math.ceil(span / args.every - 1e-9))
    if args.fps:
        return max(1, math.ceil(span * args.fps - 1e-9))
    if args.scenes:
        return None
    if info.frame_count and args.start is None and args.end is None:
        return info.frame_count
    return round(span * info.average_rate) if info.average_rate else None


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import prepare_outputs
    from illust2vec.cli.tag import _thresholds
    from illust2vec.io.atomic import DurableBatch
    from illust2vec.video import probe_video
    from illust2vec.video.outputs import save_frame, write_timeline, write_timeline_json
    from illust2vec.video.timeline import tag_video

    path: Path = args.file
    fmt = output_format(args, FORMATS)
    if fmt == "csv" and args.output is None:
        raise Illust2VecError("--format csv needs an output file: -o FILE.csv")
    if args.every is not None and args.every <= 0:
        raise Illust2VecError(f"--every {args.every}: must be a positive number of seconds")
    if args.fps is not None and args.fps <= 0:
        raise Illust2VecError(f"--fps {args.fps}: must be a positive number")
    if args.per_shot < 1:
        raise Illust2VecError(f"--per-shot {args.per_shot}: must be at least 1")
    prepare_outputs(args.output, args.plot, args.annotate, dirs=(args.frames,))  # before the work
    try:
        info = probe_video(path)
    except Illust2VecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model = model_from_args(args, task="tag")
    thresholds = _thresholds(args, model)
    feature_model = _feature_model(args) if args.feature_model else None

    scan_bar = None
    if args.scenes:
        scan_bar = _bar(args, info.frame_count, "finding shots")
    bar = None

    def on_scan(n: int) -> None:
        if scan_bar is not None:
            scan_bar.update(n - scan_bar.n)

    def on_progress(done: int, t: float) -> None:
        nonlocal bar
        if bar is None:
            if scan_bar is not None:
                scan_bar.close()
            bar = _bar(args, _expected_samples(info, args), "tagging")
        bar.update(done - bar.n)
        bar.set_postfix_str(f"{t:.1f}s", refresh=False)

    frames = DurableBatch()  # the saved frames, durable when tagging ends

    def sink(frame: Any, shot: int) -> None:
        save_frame(frame.image, args.frames, frame.time, frame.index, shot, ext=args.frame_format, batch=frames)

    try:
        timeline = tag_video(
            path, model, every=args.every, fps=args.fps, scenes=args.scenes, per_shot=args.per_shot,
            representative=args.representative, start=args.start, end=args.end,
            batch_size=args.batch_size, threshold=thresholds, exit_ratio=args.exit_ratio,
            min_gap=args.min_gap, min_duration=args.min_duration, feature_model=feature_model,
            max_side=args.max_side, shots=not args.no_shots, shot_threshold=args.shot_threshold,
            min_shot=args.min_shot, progress=on_progress, scan_progress=on_scan,
            frame_sink=sink if args.frames else None,
        )
    except ValueError as exc:
        raise Illust2VecError(f"{path}: {exc}") from None
    finally:
        if bar is not None:
            bar.close()
        if scan_bar is not None:
            scan_bar.close()
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

        abar = _bar(args, info.frame_count, "annotating")
        try:
            annotate_video(timeline, args.annotate, top=args.annotate_top, progress=lambda n: abar.update(1))
        finally:
            abar.close()

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
