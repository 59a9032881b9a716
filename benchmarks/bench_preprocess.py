"""Preprocessing speed: illust2vec's numpy resize vs scikit-image, and decoding.

Run:  .venv/bin/python benchmarks/bench_preprocess.py [--repeat 30]

For each source size it times (median of --repeat runs, single image):
  * resize only:   resize_bilinear_skimage vs skimage.transform.resize(order=1, mode='constant')
  * i2v preprocess: preprocess([img], I2V_RECIPE) vs the original i2v path done with
    scikit-image (float32, min-max normalise, resize, map back, BGR, mean, NCHW)
with and without anti-aliasing, then the decode time of load_image on real JPEGs.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from illust2vec.images import load_image
from illust2vec.preprocess import I2V_MEAN_BGR, I2V_RECIPE, InputRecipe, preprocess, resize_bilinear_skimage

SHARED = Path(__file__).resolve().parents[2] / "shared"


def timings_ms(fn, repeat: int) -> tuple[float, float]:
    """(median, best) of ``repeat`` timed calls after one warm-up, in ms.

    The best run is what the code costs on an idle core; the median is what
    you get on a busy shared machine.
    """
    fn()  # warm-up (caches, scratch buffers)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def median_ms(fn, repeat: int) -> float:
    return timings_ms(fn, repeat)[0]


def i2v_with_skimage(image: np.ndarray, anti_aliasing: bool) -> np.ndarray:
    from skimage.transform import resize

    arr = np.asarray(image, dtype=np.float32)
    lo, hi = arr.min(), arr.max()
    std = (arr - lo) / (hi - lo)
    resized = resize(std, (224, 224, 3), order=1, mode="constant", anti_aliasing=anti_aliasing)
    batch = np.zeros((1, 224, 224, 3), dtype=np.float32)
    batch[0] = resized * (hi - lo) + lo
    batch = batch[:, :, :, ::-1]
    batch -= np.array(I2V_MEAN_BGR)
    return batch.transpose(0, 3, 1, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per cell (median reported)")
    args = parser.parse_args(argv)
    try:
        from skimage.transform import resize
    except ImportError:
        print("scikit-image is needed for the comparison: pip install scikit-image", file=sys.stderr)
        return 1

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, load average {os.getloadavg()[0]:.1f} at start")
    rng = np.random.default_rng(0)
    aa_recipe = InputRecipe(size=(224, 224), mean=I2V_MEAN_BGR, resize="skimage-bilinear-aa")
    rows = []
    for shape in [(512, 512), (256, 256), (80, 50), (1024, 768), (2048, 2048)]:
        img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        img01 = img.astype(np.float32) / 255
        out = np.empty((1, 3, 224, 224), dtype=np.float32)
        for aa in (False, True):
            recipe = aa_recipe if aa else I2V_RECIPE
            label = f"{shape[0]}x{shape[1]}{' aa' if aa else ''}"
            ours = timings_ms(lambda: resize_bilinear_skimage(img01, (224, 224), anti_aliasing=aa), args.repeat)
            ref = timings_ms(lambda: resize(img01, (224, 224), order=1, mode="constant", anti_aliasing=aa),
                             args.repeat)
            rows.append((label, "resize only", ours, ref))
            ours = timings_ms(lambda: preprocess([img], recipe, out), args.repeat)
            ref = timings_ms(lambda: i2v_with_skimage(img, aa), args.repeat)
            rows.append((label, "i2v preprocess", ours, ref))

    print()
    print("times in ms, median (best) of", args.repeat, "runs; speed-up of the medians")
    print(f"{'source':<14} {'step':<16} {'illust2vec':>16} {'scikit-image':>16} {'speed-up':>9}")
    for label, step, ours, ref in rows:
        print(f"{label:<14} {step:<16} {ours[0]:>7.2f} ({ours[1]:>6.2f}) {ref[0]:>7.2f} ({ref[1]:>6.2f})"
              f" {ref[0] / ours[0]:>8.1f}x")

    jpegs = sorted((SHARED / "data" / "anime36").glob("*.jpg"))
    if jpegs:
        per = []
        for path in jpegs:
            per.append(median_ms(lambda: load_image(path), max(3, args.repeat // 5)))
        print()
        print(f"load_image on {len(jpegs)} 512x512 JPEGs (anime36): median {statistics.median(per):.2f} ms/image")
        images = [load_image(p) for p in jpegs]
        batch = np.empty((len(images), 3, 224, 224), dtype=np.float32)
        t = median_ms(lambda: preprocess(images, I2V_RECIPE, batch), max(3, args.repeat // 5))
        print(f"preprocess batch of {len(images)} (I2V_RECIPE): {t:.1f} ms = {t / len(images):.2f} ms/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
