"""Preprocessing speed: decode + preprocess per image, and the resize vs scikit-image.

Run:  .venv/bin/python benchmarks/bench_preprocess.py [--parts pieces,skimage] [--rounds 15]

Part "pieces" (what a pipeline worker does per image, on JPEG/PNG files made
from shared/data/anime36 in a temporary folder: 256x256 and 1000x1400 JPEGs,
the 512x512 originals, 256x256 PNGs, and JPEGs of 24 different sizes so that
the per-size setup counts), all variants interleaved image by image, --rounds
times; medians per image of wall time and of the thread's CPU time (the CPU
time is what the code costs when the machine is shared):
  * decode:            Pillow open + load (the floor for load_image)
  * asarray route:     decode + np.array(np.asarray(img)), how load_image got its array before
  * load_image
  * preprocess general: the dtype-agnostic path (float inputs; what uint8 took before)
  * preprocess fast:   preprocess_one(x, I2V_RECIPE, out=row), the uint8 path
  * before / after:    asarray route + general path vs load_image + fast path
plus preprocess_one alone for the anti-aliased i2v, WD and EfficientNet recipes.

Part "skimage" (median of --repeat runs, single image):
  * resize only:   resize_bilinear_skimage vs skimage.transform.resize(order=1, mode='constant')
  * i2v preprocess: preprocess([img], I2V_RECIPE) vs the original i2v path done with
    scikit-image (float32, min-max normalise, resize, map back, BGR, mean, NCHW)
with and without anti-aliasing.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from illust2vec.io.images import load_image
from illust2vec.prep.preprocess import (
    I2V_MEAN_BGR,
    I2V_RECIPE,
    InputRecipe,
    _preprocess_into,
    preprocess,
    preprocess_one,
    resize_bilinear_skimage,
)

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


def make_image_sets(folder: Path) -> dict[str, list[Path]]:
    """Write the benchmark's image files (from anime36) into ``folder``."""
    sources = sorted((SHARED / "data" / "anime36").glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no JPEGs in {SHARED / 'data' / 'anime36'}")
    rng = np.random.default_rng(0)
    sets: dict[str, list[Path]] = {"256x256 JPEG": [], "512x512 JPEG": sources[:12], "1000x1400 JPEG": [],
                                   "256x256 PNG": [], "24 sizes JPEG": []}
    for i, src in enumerate(sources[:24]):
        with Image.open(src) as img:
            rgb = img.convert("RGB")
        if i < 12:
            small = rgb.resize((256, 256), Image.Resampling.BICUBIC)
            for key, ext, kw in (("256x256 JPEG", "jpg", {"quality": 90}), ("256x256 PNG", "png", {})):
                sets[key].append(folder / f"s{i:02d}.{ext}")
                small.save(sets[key][-1], **kw)
        if i < 6:
            sets["1000x1400 JPEG"].append(folder / f"l{i:02d}.jpg")
            rgb.resize((1000, 1400), Image.Resampling.BICUBIC).save(sets["1000x1400 JPEG"][-1], quality=90)
        w, h = (int(v) for v in rng.integers(300, 1200, 2))
        sets["24 sizes JPEG"].append(folder / f"v{i:02d}_{w}x{h}.jpg")
        rgb.resize((w, h), Image.Resampling.BICUBIC).save(sets["24 sizes JPEG"][-1], quality=90)
    return sets


def interleaved(variants: dict[str, object], items: list, rounds: int) -> dict[str, tuple[float, float]]:
    """Per-item medians ``(wall ms, CPU ms)`` of each variant, run item by item in rotating order."""
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds + 1):
        for i, item in enumerate(items):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                t0, c0 = time.perf_counter(), time.thread_time()
                variants[name](item)
                t1, c1 = time.perf_counter(), time.thread_time()
                if r:  # round 0 warms up (imports, per-size taps, scratch buffers)
                    wall[name].append((t1 - t0) * 1e3)
                    cpu[name].append((c1 - c0) * 1e3)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in names}


def asarray_route(path: Path) -> np.ndarray:
    """Decode and take the array the way load_image did before: np.asarray, then a writable copy."""
    with Image.open(path) as img:
        img.load()
        return np.array(np.asarray(img.convert("RGB") if img.mode != "RGB" else img))


def decode_only(path: Path) -> None:
    with Image.open(path) as img:
        img.load()


def general_path(image: np.ndarray, recipe: InputRecipe, out: np.ndarray) -> np.ndarray:
    _preprocess_into(image, recipe, out, fast=False)
    return out


def bench_pieces(rounds: int) -> None:
    from illust2vec.models.families.effnet import recipe as effnet_recipe
    from illust2vec.models.families.wd import wd_recipe

    with tempfile.TemporaryDirectory() as tmp:
        sets = make_image_sets(Path(tmp))
        out = np.empty(I2V_RECIPE.input_shape, dtype=np.float32)
        print()
        print(f"per image, median of {rounds} rounds (variants interleaved): wall ms / CPU ms")
        header = (f"{'images':<15} {'decode':>11} {'asarray rt':>11} {'load_image':>11} {'prep gen.':>11} "
                  f"{'prep fast':>11} {'before':>11} {'after':>11} {'load x':>7} {'prep x':>7} {'both x':>7}")
        print(header)
        for label, paths in sets.items():
            arrays = {p: load_image(p) for p in paths}
            res = interleaved({
                "decode": decode_only,
                "asarray": asarray_route,
                "load": load_image,
                "gen": lambda p: general_path(arrays[p], I2V_RECIPE, out),
                "fast": lambda p: preprocess_one(arrays[p], I2V_RECIPE, out=out),
                "before": lambda p: general_path(asarray_route(p), I2V_RECIPE, out),
                "after": lambda p: preprocess_one(load_image(p), I2V_RECIPE, out=out),
            }, paths, rounds)
            cells = " ".join(f"{res[k][0]:>5.2f}/{res[k][1]:<5.2f}" for k in
                             ("decode", "asarray", "load", "gen", "fast", "before", "after"))
            ratios = " ".join(f"{res[a][1] / res[b][1]:>6.2f}x" for a, b in
                              (("asarray", "load"), ("gen", "fast"), ("before", "after")))
            print(f"{label:<15} {cells} {ratios}")
        print("(speed-ups: ratios of the CPU-time medians; 'before' = asarray route + general path)")

        images = [load_image(p) for p in sets["512x512 JPEG"][:6] + sets["24 sizes JPEG"][:6]]
        print()
        print("preprocess_one per image on 512x512 and mixed-size JPEGs, other recipes: wall ms / CPU ms")
        for name, recipe in (
            ("i2v", I2V_RECIPE),
            ("i2v anti-aliased", InputRecipe(size=(224, 224), mean=I2V_MEAN_BGR, resize="skimage-bilinear-aa")),
            ("WD 448 NHWC pad", wd_recipe()),
            ("EfficientNet-Lite0", effnet_recipe()),
        ):
            buf = np.empty(recipe.input_shape, dtype=np.float32)
            res = interleaved({
                "general": lambda x: general_path(x, recipe, buf),
                "fast": lambda x: preprocess_one(x, recipe, out=buf),
            }, images, max(3, rounds // 2))
            same = recipe.resize.startswith("pil-")
            print(f"  {name:<20} general {res['general'][0]:6.2f}/{res['general'][1]:<6.2f} "
                  f"preprocess_one {res['fast'][0]:6.2f}/{res['fast'][1]:<6.2f}"
                  + ("  (Pillow resize: same code path)" if same else
                     f"  {res['general'][1] / res['fast'][1]:.2f}x"))


def bench_skimage(repeat: int) -> int:
    try:
        from skimage.transform import resize
    except ImportError:
        print("scikit-image is needed for the comparison: pip install scikit-image", file=sys.stderr)
        return 1
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
            ours = timings_ms(lambda: resize_bilinear_skimage(img01, (224, 224), anti_aliasing=aa), repeat)
            ref = timings_ms(lambda: resize(img01, (224, 224), order=1, mode="constant", anti_aliasing=aa),
                             repeat)
            rows.append((label, "resize only", ours, ref))
            ours = timings_ms(lambda: preprocess([img], recipe, out), repeat)
            ref = timings_ms(lambda: i2v_with_skimage(img, aa), repeat)
            rows.append((label, "i2v preprocess", ours, ref))

    print()
    print("times in ms, median (best) of", repeat, "runs; speed-up of the medians")
    print(f"{'source':<14} {'step':<16} {'illust2vec':>16} {'scikit-image':>16} {'speed-up':>9}")
    for label, step, ours, ref in rows:
        print(f"{label:<14} {step:<16} {ours[0]:>7.2f} ({ours[1]:>6.2f}) {ref[0]:>7.2f} ({ref[1]:>6.2f})"
              f" {ref[0] / ours[0]:>8.1f}x")

    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="pieces,skimage", help="comma-separated: pieces, skimage")
    parser.add_argument("--rounds", type=int, default=15, help="rounds over each image set (part pieces)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per cell (part skimage)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}, load average {os.getloadavg()[0]:.1f} at start")
    if "pieces" in parts:
        bench_pieces(args.rounds)
    if "skimage" in parts:
        return bench_skimage(args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
