"""GPU benchmark: end-to-end images/s of the i2v tag network at its real size.

Builds a random-weight tag model with the published layout (same size and
shape as illust2vec_tag_ver200.caffemodel), imports it, writes a folder of
256x256 JPEGs, and measures on the chosen device:

* ``decode``: JPEG decode + resize + preprocess alone, in ``--workers`` processes
  (the ceiling the CPU side can feed);
* ``network``: the network alone on pre-made batches (fp32, and fp16 with
  ``--fp16``, with the largest difference of the fp16 probabilities from fp32);
* ``end-to-end``: files in, tag probabilities out, through
  :func:`illust2vec.pipeline.iter_batches` with decoding in worker processes.

It runs on the CPU too (``--device cpu``, small defaults) so the script itself
is tested where no GPU is present.  Results go to stdout as a Markdown table and
to ``OUT/bench_gpu.json``; the card's name comes from ``nvidia-smi`` when present.

Usage:
    python benchmarks/bench_gpu.py --device cuda [--images 4096] [--batch-size 256] [--workers 16] [--fp16]
    python benchmarks/bench_gpu.py --device cpu --images 64 --batch-size 16 --workers 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_model, make_folder  # noqa: E402




def card_name() -> str:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return f"CPU ({os.cpu_count()} logical cores)"


def to_fp16(onnx_path: Path) -> bytes:
    """The graph with float16 weights and compute, float32 inputs/outputs (ONNX Runtime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(onnx_path))
    return convert_float_to_float16(model, keep_io_types=True).SerializeToString()


def _decode(job: tuple[list[Path], object]) -> np.ndarray:
    """Decode and preprocess one batch (runs in a worker process)."""
    from illust2vec.images import load_image
    from illust2vec.preprocess import preprocess

    paths, recipe = job
    return preprocess([load_image(p) for p in paths], recipe)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--images", type=int, help="JPEGs in the folder (default 4096 on cuda, 64 on cpu)")
    ap.add_argument("--batch-size", type=int, help="images per network call (default 256 on cuda, 16 on cpu)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode processes (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fp16", action="store_true", help="also measure a float16 copy of the network")
    ap.add_argument("--allow-cpu-fallback", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    n_images = args.images or (4096 if gpu else 64)
    bs = args.batch_size or (256 if gpu else 16)
    args.out.mkdir(parents=True, exist_ok=True)

    from illust2vec import Illustration2Vec
    from illust2vec.model import ImageModel
    from illust2vec.pipeline import iter_batches

    weights = args.out / "i2v_tag_fullsize.caffemodel"
    t = time.perf_counter()
    make_model(weights)
    files = make_folder(args.out / "jpegs256", n_images)
    print(f"setup: {time.perf_counter() - t:.1f} s; model {weights.stat().st_size / 1e6:.0f} MB; "
          f"{n_images} JPEGs", file=sys.stderr)

    results: dict[str, object] = {
        "card": card_name(), "device": args.device, "images": n_images, "batch_size": bs,
        "workers": args.workers, "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as store:
        model = Illustration2Vec.from_caffemodel(
            weights, model_dir=store, device=args.device, batch_size=bs, allow_fallback=args.allow_cpu_fallback,
        )
        results["providers"] = model.session.get_providers()
        onnx_path = Path(store) / "onnx"
        graph = next(onnx_path.glob("*.onnx"))

        # decode + preprocess alone, in worker processes (what feeds the GPU)
        from concurrent.futures import ProcessPoolExecutor

        chunks = [files[i : i + bs] for i in range(0, len(files), bs)]
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            list(pool.map(_decode, [(c, model.recipe) for c in chunks[: args.workers]]))  # start the workers
            t = time.perf_counter()
            batches = list(pool.map(_decode, [(c, model.recipe) for c in chunks]))
            results["decode_img_s"] = rate(n_images, time.perf_counter() - t)

        # network alone
        model.run(batches[0])  # warm-up (cuDNN algorithm search, arena growth)
        net = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for b in batches:
                model.run(b)
            net.append(rate(n_images, time.perf_counter() - t))
        results["network_fp32_img_s"] = statistics.median(net)

        m16 = None
        if args.fp16:
            m16 = ImageModel(to_fp16(graph), recipe=model.recipe, name="i2v-tag-fp16", device=args.device,
                             batch_size=bs, allow_fallback=args.allow_cpu_fallback)
            ref = model.run(batches[0], "prob")
            got = m16.run(batches[0], "prob")
            results["fp16_max_abs_diff_prob"] = float(np.abs(got - ref).max())
            net16 = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for b in batches:
                    m16.run(b)
                net16.append(rate(n_images, time.perf_counter() - t))
            results["network_fp16_img_s"] = statistics.median(net16)

        # end to end: files in, probabilities out
        e2e = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            n = sum(len(r.indices) for r in iter_batches(model, files, batch_size=bs, workers=args.workers,
                                                          outputs=("prob",)))
            e2e.append(rate(n, time.perf_counter() - t))
        results["end_to_end_fp32_img_s"] = statistics.median(e2e)
        if m16 is not None:
            e2e16 = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                n = sum(len(r.indices) for r in iter_batches(m16, files, batch_size=bs, workers=args.workers,
                                                              outputs=("prob",)))
                e2e16.append(rate(n, time.perf_counter() - t))
            results["end_to_end_fp16_img_s"] = statistics.median(e2e16)

    (args.out / "bench_gpu.json").write_text(json.dumps(results, indent=2))
    print(f"card: {results['card']}; providers: {', '.join(results['providers'])}; batch {bs}; "
          f"{args.workers} decode workers; {n_images} JPEGs 256x256")
    print("| measure | images/s |")
    print("| --- | --- |")
    print(f"| decode + preprocess ({args.workers} processes) | {results['decode_img_s']:.1f} |")
    print(f"| network alone, fp32 (median of {args.repeats}) | {results['network_fp32_img_s']:.1f} |")
    if args.fp16:
        print(f"| network alone, fp16 (max abs diff of prob vs fp32: {results['fp16_max_abs_diff_prob']:.2e}) "
              f"| {results['network_fp16_img_s']:.1f} |")
    print(f"| end-to-end, fp32 (median of {args.repeats}) | {results['end_to_end_fp32_img_s']:.1f} |")
    if args.fp16:
        print(f"| end-to-end, fp16 (median of {args.repeats}) | {results['end_to_end_fp16_img_s']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
