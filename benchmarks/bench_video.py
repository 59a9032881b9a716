"""Video benchmark: frames/s of ``tag_video`` on a 1080p H.264 clip next to the image pipeline.

Builds (once, under --out) a random-weight i2v tag model of the real size
(``tests/caffe_writer.py``'s ``i2v_layers``, as in bench_core.py) and a synthetic
1920x1080 H.264 clip (moving gradients and shapes, keyframe every --gop
frames), then measures on this machine, each the median of --repeats runs:

* ``tag_video`` at ``--every 1`` and at every frame (decode + shot detection +
  preprocess + network, end to end);
* decoding alone (every frame to RGB, no model);
* the image pipeline (``pipeline.iter_batches``) on the clip's frames saved as
  1080p JPEGs, at the same batch size with the same model;
* the network alone on pre-made batches.

Usage: python benchmarks/bench_video.py [--seconds 10] [--rate 24] [--batch-size 16] [--repeats 2]
       [--images 48] [--out bench-out] [--small]   (--small: the fixture-sized tag model, for a quick run)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"



def make_clip(path: Path, seconds: float, rate: int, gop: int, width: int = 1920, height: int = 1080) -> None:
    from illust2vec.video.encode import VideoWriter

    if path.exists():
        return
    n = int(round(seconds * rate))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    patterns = []  # one background per "shot", scrolled frame by frame
    for shot in range(4):
        base = np.stack([
            128 + 100 * np.sin(xx / (60 + 40 * shot)),
            128 + 100 * np.sin(yy / (40 + 30 * shot)),
            128 + 100 * np.sin((xx + yy) / 90 + shot),
        ], axis=-1)
        patterns.append(np.clip(base, 0, 255).astype(np.uint8))
    del xx, yy
    with VideoWriter(path, width, height, rate=rate, gop=gop,
                     options={"preset": "veryfast", "crf": "23", "sc_threshold": "0"}) as w:
        for i in range(n):
            shot = (i // (rate * 3)) % 4  # a cut every 3 s
            frame = np.roll(patterns[shot], shift=(i * 6) % width, axis=1)
            x0 = int((i * 17) % (width - 400))
            frame[300:700, x0 : x0 + 400] = (40 * shot, 200, 255 - 40 * shot)
            w.write(frame)


def save_frames(clip: Path, folder: Path, n: int) -> list[Path]:
    from illust2vec.video import iter_video_frames

    folder.mkdir(parents=True, exist_ok=True)
    paths = sorted(folder.glob("*.jpg"))
    if len(paths) >= n:
        return paths[:n]
    for k, fr in enumerate(iter_video_frames(clip)):
        if k >= n:
            break
        p = folder / f"{k:04d}.jpg"
        Image.fromarray(fr.image).save(p, quality=90)
    return sorted(folder.glob("*.jpg"))[:n]


def measure(fn, count_fn) -> tuple[int, float, float]:
    """(items, wall seconds, CPU seconds of this process, all threads)."""
    w, c = time.perf_counter(), time.process_time()
    n = count_fn(fn())
    return n, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=int, default=24)
    ap.add_argument("--gop", type=int, default=48, help="keyframe interval of the clip in frames (default 48)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--small", action="store_true", help="use the fixture tag model (widths / 8)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from illust2vec import Illustration2Vec
    from illust2vec.runtime.batches import iter_batches
    from illust2vec.video import iter_video_frames
    from illust2vec.video.options import SamplingOptions, VideoOptions
    from illust2vec.video.timeline import tag_video

    clip = args.out / f"clip_1080p_{args.seconds:g}s_{args.rate}fps_gop{args.gop}.mp4"
    t = time.perf_counter()
    make_clip(clip, args.seconds, args.rate, args.gop)
    print(f"clip: {clip} ({clip.stat().st_size / 1e6:.1f} MB, made in {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    store = tempfile.mkdtemp(prefix="i2v-bench-store-")
    if args.small:
        fix = SHARED / "fixtures" / "i2v"
        model = Illustration2Vec.from_caffemodel(fix / "tag_w8_v1.caffemodel", tags=fix / "tag_list.json",
                                                 model_dir=store)
        model_desc = "fixture tag model (tag_w8_v1, trunk widths / 8, 1539 tags)"
    else:
        weights = args.out / "i2v_tag_fullsize.caffemodel"
        make_model(weights)
        tags = SHARED / "fixtures" / "i2v" / "tag_list.json"
        model = Illustration2Vec.from_caffemodel(weights, tags=tags, model_dir=store)
        model_desc = f"random-weight i2v tag model of the real size ({weights.stat().st_size / 1e6:.0f} MB)"
    bs = args.batch_size
    files = save_frames(clip, args.out / "frames1080", args.images)
    model.run(model.preprocess(files[:2]))  # warm-up

    n_frames = int(round(args.seconds * args.rate))
    n_all = min(n_frames, len(files))
    end_all = n_all / args.rate  # every-frame runs tag the first n_all frames, as many as the JPEGs
    runs: dict[str, list[tuple[int, float, float]]] = {k: [] for k in ("decode", "net", "images", "every", "all")}
    batches = [model.preprocess(files[i : i + bs]) for i in range(0, len(files), bs)]
    every_tl = None
    # Interleaved repeats, so that load from other processes hits every measure alike.
    for _ in range(args.repeats):
        runs["decode"].append(measure(lambda: iter_video_frames(clip), lambda it: sum(1 for _ in it)))
        runs["net"].append(measure(lambda: [model.run(b) for b in batches], lambda r: sum(len(x) for x in r)))
        runs["images"].append(measure(lambda: list(iter_batches(model, files, batch_size=bs)),
                                      lambda r: sum(len(x) for x in r)))
        runs["all"].append(measure(lambda: tag_video(clip, model, VideoOptions(SamplingOptions(end=end_all + 1e-3), batch_size=bs)), len))
        every_tl = tag_video(clip, model, VideoOptions(SamplingOptions(every=1.0), batch_size=bs))
        runs["every"].append((len(every_tl), every_tl.seconds, float("nan")))

    def rate(key: str) -> float:
        return statistics.median(n / w for n, w, _ in runs[key])

    def cpu_ms(key: str) -> float:
        return statistics.median(1000 * c / n for n, _, c in runs[key])

    img = rate("images")
    print(f"machine: {os.cpu_count()} CPUs (shared: load average {os.getloadavg()[0]:.1f}); model: {model_desc}; "
          f"batch size {bs}; clip 1920x1080 H.264 {args.seconds:g} s at {args.rate} fps ({n_frames} frames, "
          f"{clip.stat().st_size / 1e6:.1f} MB), keyframe every {args.gop} frames; image pipeline on "
          f"{len(files)} 1080p JPEGs of the clip; every-frame video run on the first {n_all} frames; "
          f"median of {args.repeats}, runs interleaved")
    print("| measure | frames (images)/s | vs image pipeline | CPU ms per frame (all threads) |")
    print("| --- | --- | --- | --- |")
    print(f"| decoding alone, every frame to RGB | {rate('decode'):.1f} | | {cpu_ms('decode'):.0f} |")
    print(f"| network alone (pre-made batches) | {rate('net'):.2f} | {rate('net') / img:.0%} | {cpu_ms('net'):.0f} |")
    print(f"| image pipeline, 1080p JPEGs (iter_batches) | {img:.2f} | 100% | {cpu_ms('images'):.0f} |")
    print(f"| video, every frame ({n_all} frames) | {rate('all'):.2f} | {rate('all') / img:.0%} | {cpu_ms('all'):.0f} |")
    assert every_tl is not None
    print(f"| video --every 1 ({len(every_tl)} frames, {every_tl.frames_decoded} decoded, one batch) | "
          f"{rate('every'):.2f} | {rate('every') / img:.0%} | |")


if __name__ == "__main__":
    main()
