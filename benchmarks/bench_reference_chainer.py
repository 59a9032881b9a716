"""Reference benchmark: the ORIGINAL stack (Chainer's ``CaffeFunction``) on the i2v tag net.

Measures, on the same random-weight full-size tag model that ``bench_core.py``
uses (``bench-out/i2v_tag_fullsize.caffemodel``, ~188 MB, V1 layers) and the
same folder of 256x256 JPEGs (``bench-out/jpegs256``):

* load time of ``chainer.links.caffe.CaffeFunction(path)`` (and of ``import chainer``);
* network alone: forward to the ``prob`` blob on pre-made batches;
* end-to-end: PIL decode + illustration2vec-style preprocessing + network;
* optionally, the largest absolute difference between Chainer's tag
  probabilities and ours (illust2vec on ONNX Runtime) on the first images.

Preprocessing follows what illustration2vec documents: PIL image -> float32
0-255 RGB -> min-max normalised copy resized with ``skimage.transform.resize``
(224x224, ``order=1``, ``mode='constant'``) and scaled back -> RGB to BGR ->
minus the BGR mean (164.76139251, 167.47864617, 181.13838569) -> NCHW.
illustration2vec predates scikit-image's ``anti_aliasing`` argument, so it is
passed as ``False`` (what our ``I2V_RECIPE`` reproduces); ``--anti-aliasing``
switches to today's scikit-image default instead.

This script is NOT part of the package and never runs in the test suite.  It
needs a throwaway virtual environment OUTSIDE the repository (never install
Chainer into /work/main/.venv)::

    python3 -m venv /tmp/chainer-venv
    /tmp/chainer-venv/bin/pip install 'setuptools<70' wheel
    /tmp/chainer-venv/bin/pip install --no-build-isolation chainer==7.8.1 'numpy<2' \\
        'protobuf<3.21' 'scipy<1.14' 'scikit-image<0.25' pillow

(on Python 3.11 that resolves to chainer 7.8.1, numpy 1.26.4, protobuf 3.20.3 --
the pure-Python protobuf implementation, as no 3.20 C++ wheel exists for 3.11 --
scipy 1.13.1, scikit-image 0.24.0.)

Usage (from the repository root)::

    # 1. model + JPEGs, with our venv (skipped when they already exist)
    .venv/bin/python -c "from pathlib import Path; import sys; sys.path.insert(0,'benchmarks'); \\
        import _common as b; Path('bench-out').mkdir(exist_ok=True); \\
        b.make_model(Path('bench-out/i2v_tag_fullsize.caffemodel')); b.make_folder(Path('bench-out/jpegs256'), 48)"
    # 2. our probabilities (and our preprocessed inputs) on the first 4 JPEGs, with our venv
    .venv/bin/python benchmarks/bench_reference_chainer.py --write-ours bench-out/ours_prob.npy
    # 3. the reference measurements, with the Chainer venv
    /tmp/chainer-venv/bin/python benchmarks/bench_reference_chainer.py --compare bench-out/ours_prob.npy

``--write-ours FILE.npy`` imports illust2vec (not Chainer) and writes the
probabilities to FILE.npy and the preprocessed batch to FILE.input.npy.
``--compare FILE.npy`` then reports the max abs difference of probabilities
from the same JPEGs (preprocessing + network), and, when FILE.input.npy is
there, of Chainer's network on our preprocessed batch (network alone) and of
the two preprocessed batches.
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

#: illustration2vec's BGR mean (its image_mean.npy averaged per channel).
MEAN_BGR = np.array([164.76139251, 167.47864617, 181.13838569], dtype=np.float32)
SIZE = (224, 224)


def input_path(probs_path: Path) -> Path:
    """Where ``--write-ours`` puts the preprocessed batch next to the probabilities."""
    return probs_path.with_name(probs_path.stem + ".input.npy")


def list_jpegs(folder: Path, n: int | None = None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        sys.exit(f"error: {folder}: no JPEGs; generate them with bench_core.make_folder (see --help)")
    return files if n is None else files[:n]


# -- our side (our venv; no Chainer) ------------------------------------------------

def write_ours(model_path: Path, files: list[Path], out: Path) -> None:
    from illust2vec import Illustration2Vec

    with tempfile.TemporaryDirectory() as store:
        model = Illustration2Vec.from_caffemodel(model_path, model_dir=store)
        batch = model.preprocess(files)
        probs = model.run(batch, "prob")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, probs.astype(np.float32))
    np.save(input_path(out), batch.astype(np.float32))
    print(f"wrote {out} {probs.shape} and {input_path(out)} {batch.shape} from {len(files)} images")


# -- reference side (Chainer venv) ---------------------------------------------------

def load_rgb_float(path: Path) -> np.ndarray:
    """PIL decode -> (H, W, 3) float32 RGB in 0-255."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32)


def resize_minmax(img: np.ndarray, anti_aliasing: bool) -> np.ndarray:
    """Bilinear resize of a min-max normalised copy, scaled back to the original range."""
    from skimage.transform import resize

    lo, hi = float(img.min()), float(img.max())
    if hi > lo:
        unit = (img - lo) / (hi - lo)
        out = resize(unit, SIZE, order=1, mode="constant", anti_aliasing=anti_aliasing)
        return (out * (hi - lo) + lo).astype(np.float32)
    # flat image: resizing cannot change it
    return np.full(SIZE + (img.shape[2],), lo, dtype=np.float32)


def prepare(images: list[np.ndarray], anti_aliasing: bool) -> np.ndarray:
    """List of float32 RGB images -> (N, 3, 224, 224) float32 BGR mean-subtracted batch."""
    batch = np.stack([resize_minmax(im, anti_aliasing) for im in images])
    batch = batch[:, :, :, ::-1] - MEAN_BGR
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)


def forward(net, batch: np.ndarray) -> np.ndarray:
    import chainer

    with chainer.using_config("train", False), chainer.no_backprop_mode():
        (prob,) = net(inputs={"data": batch}, outputs=["prob"])
    return prob.array.reshape(len(batch), -1)


def run_reference(args: argparse.Namespace) -> None:
    t = time.perf_counter()
    import chainer
    from chainer.links.caffe import CaffeFunction
    import_s = time.perf_counter() - t

    try:
        from google.protobuf.internal import api_implementation
        pb_impl = api_implementation.Type()
    except Exception:  # pragma: no cover - depends on the protobuf build
        pb_impl = "unknown"
    import google.protobuf
    import PIL
    import skimage

    files = list_jpegs(args.images, args.n_images)
    bs = args.batch_size
    print(f"chainer {chainer.__version__}, numpy {np.__version__}, protobuf {google.protobuf.__version__} "
          f"({pb_impl} implementation), scikit-image {skimage.__version__}, pillow {PIL.__version__}, "
          f"Python {sys.version.split()[0]}", flush=True)
    print(f"model: {args.model} ({args.model.stat().st_size / 1e6:.1f} MB); loading with CaffeFunction ...",
          flush=True)
    loads, load_cpu = [], []
    for _ in range(args.load_repeats):
        t, c = time.perf_counter(), time.process_time()
        net = CaffeFunction(str(args.model))
        loads.append(time.perf_counter() - t)
        load_cpu.append(time.process_time() - c)
        print(f"  CaffeFunction load: {loads[-1]:.1f} s wall, {load_cpu[-1]:.1f} s CPU", flush=True)

    diffs: dict[str, float] = {}
    prob_range: tuple[float, float] | None = None
    unsaturated = 0.0
    if args.compare is not None:
        ours = np.load(args.compare)
        n = len(ours)
        ref = forward(net, prepare([load_rgb_float(p) for p in files[:n]], args.anti_aliasing))
        diffs["probabilities, same JPEGs (preprocessing + network)"] = float(np.abs(ref - ours).max())
        ours_in = input_path(args.compare)
        if ours_in.exists():
            x_ours = np.load(ours_in)
            x_ref = prepare([load_rgb_float(p) for p in files[:n]], args.anti_aliasing)
            diffs["preprocessed input (0-255 scale)"] = float(np.abs(x_ref - x_ours).max())
            ref2 = forward(net, x_ours)
            diffs["probabilities, our preprocessed batch (network alone)"] = float(np.abs(ref2 - ours).max())
        prob_range = (float(ours.min()), float(ours.max()))
        unsaturated = float(np.mean((ours > 1e-3) & (ours < 1 - 1e-3)))
        args.n_compare_done = n
        print(f"  compared {n} images", flush=True)

    batches = [prepare([load_rgb_float(p) for p in files[i : i + bs]], args.anti_aliasing)
               for i in range(0, len(files), bs)]
    forward(net, batches[0][:2])  # warm-up
    net_rates, e2e_rates = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        for b in batches:
            forward(net, b)
        net_rates.append(len(files) / (time.perf_counter() - t))
        t = time.perf_counter()
        done = 0
        for i in range(0, len(files), bs):
            probs = forward(net, prepare([load_rgb_float(p) for p in files[i : i + bs]], args.anti_aliasing))
            done += len(probs)
        e2e_rates.append(done / (time.perf_counter() - t))
        print(f"  run {r + 1}: network {net_rates[-1]:.2f} img/s, end-to-end {e2e_rates[-1]:.2f} img/s", flush=True)

    net_m, e2e_m = statistics.median(net_rates), statistics.median(e2e_rates)
    load_label = "CaffeFunction load" + (f" (median of {len(loads)})" if len(loads) > 1 else "")
    print(f"machine: {os.cpu_count()} CPUs (load average now: {' '.join(f'{v:.1f}' for v in os.getloadavg())}); "
          f"numpy BLAS threads: default; batch size {bs}; "
          f"{len(files)} JPEGs; anti_aliasing={args.anti_aliasing}")
    print("| measure (Chainer CaffeFunction reference) | value |")
    print("| --- | --- |")
    print(f"| import chainer + CaffeFunction | {import_s:.2f} s |")
    print(f"| {load_label} | {statistics.median(loads):.2f} s |")
    print(f"| {load_label}, CPU time of this process | {statistics.median(load_cpu):.2f} s |")
    print(f"| network alone (median of {args.repeats}) | {net_m:.2f} img/s |")
    print(f"| end-to-end decode+preprocess+network (median of {args.repeats}) | {e2e_m:.2f} img/s |")
    print(f"| end-to-end / network alone | {e2e_m / net_m:.1%} |")
    for name, value in diffs.items():
        print(f"| max abs difference vs ours ({args.n_compare_done} images): {name} | {value:.3g} |")
    if prob_range is not None:
        print(f"| our probabilities compared: min / max; share inside (0.001, 0.999) "
              f"| {prob_range[0]:.4g} / {prob_range[1]:.4g}; {unsaturated:.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("bench-out/i2v_tag_fullsize.caffemodel"))
    ap.add_argument("--images", type=Path, default=Path("bench-out/jpegs256"), help="folder of JPEGs")
    ap.add_argument("--n-images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load-repeats", type=int, default=1)
    ap.add_argument("--anti-aliasing", action="store_true",
                    help="use scikit-image's Gaussian anti-aliasing when shrinking (off in original i2v)")
    ap.add_argument("--compare", type=Path, help="probabilities written by --write-ours (our venv)")
    ap.add_argument("--write-ours", type=Path, metavar="FILE.npy",
                    help="run OUR model (our venv, no Chainer) on the first --n-compare JPEGs and write them")
    ap.add_argument("--n-compare", type=int, default=4)
    args = ap.parse_args()
    if not args.model.is_file():
        sys.exit(f"error: {args.model}: no such caffemodel; generate it with bench_core.make_model (see --help)")
    if args.write_ours is not None:
        write_ours(args.model, list_jpegs(args.images, args.n_compare), args.write_ours)
    else:
        run_reference(args)


if __name__ == "__main__":
    main()
