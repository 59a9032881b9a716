"""Face detection speed and its share of an end-to-end ``--faces`` run.

Run:  .venv/bin/python benchmarks/bench_faces.py [--workers 2] [--n2048 8] [--skip-e2e]

Measures, on this machine:
  1. 512x512: the 36 anime36 pictures, detect_faces() in one process
     (pictures/s, faces/s, ms/picture), then iter_detections() with decoding in
     --workers processes;
  2. 2048x2048: anime36 pictures upscaled 4x (bicubic), detected with the
     default max_side=1024 (downscaled for detection, boxes scaled back), and a
     few at full size (max_side=None) for comparison;
  3. end to end: ``illust2vec map --faces`` on anime36 (``embed --faces`` when
     the map command has no --faces) with the default feature model, against
     detection alone with the same workers: the share of wall time detection
     takes.  Detection overlaps with the network (it runs ahead in worker
     processes), so the share is an upper bound of what detection costs.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
ANIME36 = SHARED / "data" / "anime36"


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def bench_512(files: list[Path], workers: int) -> None:
    from illust2vec.faces import detect_faces, iter_detections
    from illust2vec.io.images import load_image

    images = [load_image(f) for f in files]
    detect_faces(images[0])  # load the library
    t0, c0 = time.perf_counter(), time.process_time()
    n_faces = sum(len(detect_faces(im)) for im in images)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"512x512, 1 process:   {len(images)} pictures in {dt:.2f} s = {len(images) / dt:.2f} pictures/s, "
          f"{n_faces / dt:.2f} faces/s, {dt / len(images) * 1e3:.0f} ms/picture ({n_faces} faces); "
          f"CPU {cpu / len(images) * 1e3:.0f} ms/picture")
    t0, c0 = time.perf_counter(), time.process_time()
    fast = [detect_faces(im, scan="fast") for im in images]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_fast = sum(map(len, fast))
    print(f"512x512, 1 process, scan='fast': {len(images) / dt:.2f} pictures/s, {n_fast / dt:.2f} faces/s, "
          f"CPU {cpu / len(images) * 1e3:.0f} ms/picture ({n_fast} faces, {sum(map(bool, fast))} pictures with a face)")
    t0 = time.perf_counter()
    dets = list(iter_detections(files, workers=workers))
    dt = time.perf_counter() - t0
    n_faces = sum(len(d.faces) for d in dets)
    with_face = sum(1 for d in dets if d.faces)
    print(f"512x512, {workers} workers:   {len(files)} files in {dt:.2f} s = {len(files) / dt:.2f} pictures/s, "
          f"{n_faces / dt:.2f} faces/s (decode included; {with_face}/{len(files)} pictures with a face)")


def bench_2048(files: list[Path], workers: int, n_full: int) -> None:
    from illust2vec.faces import detect_faces, iter_detections

    with tempfile.TemporaryDirectory() as tmp:
        big = []
        for f in files:
            with Image.open(f) as im:
                out = Path(tmp) / (f.stem + ".png")
                im.convert("RGB").resize((2048, 2048), Image.Resampling.BICUBIC).save(out, compress_level=1)
                big.append(out)
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in big]
        t0, c0 = time.perf_counter(), time.process_time()
        n_faces = sum(len(detect_faces(a)) for a in arrays)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"2048x2048, max_side=1024, 1 process: {len(arrays)} pictures in {dt:.2f} s = "
              f"{len(arrays) / dt:.2f} pictures/s, {n_faces / dt:.2f} faces/s, {dt / len(arrays) * 1e3:.0f} ms/picture; "
              f"CPU {cpu / len(arrays) * 1e3:.0f} ms/picture")
        t0 = time.perf_counter()
        dets = list(iter_detections(big, workers=workers))
        dt = time.perf_counter() - t0
        n_faces = sum(len(d.faces) for d in dets)
        print(f"2048x2048, max_side=1024, {workers} workers: {len(big)} files in {dt:.2f} s = "
              f"{len(big) / dt:.2f} pictures/s, {n_faces / dt:.2f} faces/s (PNG decode included)")
        if n_full:
            t0, c0 = time.perf_counter(), time.process_time()
            n_faces = sum(len(detect_faces(a, max_side=None)) for a in arrays[:n_full])
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"2048x2048, full size (max_side=None), 1 process: {n_full} pictures in {dt:.2f} s = "
                  f"{dt / n_full:.1f} s/picture, {n_faces / dt:.2f} faces/s; CPU {cpu / n_full:.1f} s/picture")


def bench_end_to_end(files: list[Path], workers: int) -> None:
    from illust2vec.cli.main import build_parser, main
    from illust2vec.faces import iter_detections

    parser = build_parser()
    command = "map"
    try:
        parser.parse_args(["map", str(files[0]), "--faces", "-o", "x.png"])
    except SystemExit:
        command = "embed"
    import contextlib
    import io

    with tempfile.TemporaryDirectory() as tmp:
        if command == "map":
            argv = ["map", *map(str, files), "--faces", "--face-workers", str(workers), "-o", f"{tmp}/map.png",
                    "--html", f"{tmp}/map.html", "-q"]
        else:
            argv = ["embed", *map(str, files), "--faces", "--face-workers", str(workers), "-o", f"{tmp}/f.npy", "-q"]
        with contextlib.redirect_stdout(io.StringIO()):  # warm-up: model load/convert, library load
            main(argv[:1] + [str(files[0]), str(files[1])] + argv[1 + len(files):])
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        total = time.perf_counter() - t0
    t0 = time.perf_counter()
    dets = list(iter_detections(files, workers=workers))
    detect = time.perf_counter() - t0
    n_faces = sum(len(d.faces) for d in dets)
    print(f"end to end: 'illust2vec {command} --faces' on {len(files)} pictures ({n_faces} faces): {total:.2f} s "
          f"(exit {rc}); detection alone with {workers} workers: {detect:.2f} s = {detect / total:.0%} of the run; "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="detection processes (default 2)")
    ap.add_argument("--n2048", type=int, default=8, help="pictures for the 2048x2048 test (default 8)")
    ap.add_argument("--full", type=int, default=2, help="2048 pictures detected at full size (default 2)")
    ap.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end run")
    args = ap.parse_args()
    import PIL

    files = sorted(ANIME36.glob("*.jpg"))
    if not files:
        print(f"no pictures in {ANIME36}", file=sys.stderr)
        return 1
    print(f"machine: {_machine()}; Pillow {PIL.__version__}; load average {os.getloadavg()[0]:.1f}")
    bench_512(files, args.workers)
    bench_2048(files[: args.n2048], args.workers, args.full)
    if not args.skip_e2e:
        bench_end_to_end(files, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
