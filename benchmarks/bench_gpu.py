"""GPU benchmark: end-to-end images/s of the i2v tag network at its real size.

Builds a random-weight tag model with the published layout (same size and
shape as illust2vec_tag_ver200.caffemodel), imports it, writes a folder of
256x256 JPEGs, and measures on the chosen device:

* ``decode``: JPEG decode + resize + preprocess alone, in ``--workers`` processes
  that send nothing back (the ceiling the CPU side can feed);
* ``network``: the network alone on pre-made batches (fp32, and fp16 with
  ``--fp16``, with the largest difference of the fp16 probabilities from fp32);
* ``end-to-end``: files in, tag probabilities out, through
  :func:`illust2vec.runtime.batches.iter_batches` with decoding in worker processes
  that write into shared batch buffers, and (``--compare-pipe``) the same with
  the pipe fallback, where workers pickle their arrays back to the parent.

With ``--in-graph`` (issue 19: preprocessing on the device) it also measures,
in the same run so the rows above are the baseline:

* ``decode only``: JPEG decode to uint8 alone in the worker processes (what the
  CPU must still do when the device preprocesses);
* ``in-graph network``: pre-decoded uint8 batches through the preprocessing
  graph + the network (:class:`illust2vec.runtime.device_batches.InGraphRunner`), with
  and without I/O binding, fp32 and fp16, and (on CUDA) CUDA provider variants
  (``prefer_nhwc``, exhaustive cuDNN search, and with ``--trt`` TensorRT when its provider loads);
* the largest difference of the device's preprocessing from the CPU's, and of
  the resulting probabilities;
* ``end-to-end in-graph``: files in, probabilities out through
  :func:`illust2vec.runtime.device_batches.iter_batches_in_graph` with CPU decoding in
  ``--workers`` processes, and with nvImageCodec (``--gpu-decode``; its
  probability difference from CPU decoding is reported).

It runs on the CPU too (``--device cpu``, small defaults) so the script itself
is tested where no GPU is present.  Results go to stdout as a Markdown table and
to ``OUT/bench_gpu.json``; the card's name comes from ``nvidia-smi`` when present.

Usage:
    python benchmarks/bench_gpu.py --device cuda [--images 4096] [--batch-size 256] [--workers 16] [--fp16]
        [--in-graph [--gpu-decode]]
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
from _common import StandInEngine, make_folder, make_model


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


def _decode(job: tuple[list[Path], object, bool]) -> np.ndarray | float:
    """Decode and preprocess one batch in a worker; the batch itself only when ``keep``."""
    from illust2vec.io.images import load_image
    from illust2vec.prep.preprocess import preprocess

    paths, recipe, keep = job
    batch = preprocess([load_image(p) for p in paths], recipe)
    return batch if keep else float(batch[:, 0, 0, 0].sum())


def diagnose(model, batch, files, bs, workers, batch_seconds, results) -> None:
    """Does a GPU run hold the GIL, and how fast is the pipeline when the engine never blocks it?"""
    import threading

    from illust2vec.runtime.batches import iter_batches

    def count_during(work) -> float:
        counter, stop = [0], threading.Event()

        def spin():
            while not stop.is_set():
                counter[0] += 1

        th = threading.Thread(target=spin)
        th.start()
        t = time.perf_counter()
        work()
        dt = time.perf_counter() - t
        stop.set()
        th.join()
        return counter[0] / dt

    during_run = count_during(lambda: [model.run(batch) for _ in range(5)])
    during_sleep = count_during(lambda: time.sleep(5 * batch_seconds))
    results["gil_free_during_run"] = during_run / during_sleep
    t = time.perf_counter()
    stand_in = StandInEngine(batch_seconds, recipe=model.recipe, batch_size=bs, input_dtype=model.input_dtype)
    n = sum(len(r.indices) for r in iter_batches(stand_in, files, batch_size=bs,
                                                  workers=workers))
    results["pipeline_with_sleeping_engine_img_s"] = rate(n, time.perf_counter() - t)
    print(f"a Python thread runs at {results['gil_free_during_run']:.2f}x its idle speed during GPU runs; "
          f"pipeline with an engine that sleeps {batch_seconds * 1e3:.0f} ms per batch: "
          f"{results['pipeline_with_sleeping_engine_img_s']:.0f} img/s", file=sys.stderr, flush=True)


def _decode_only(paths: list[Path]) -> list[np.ndarray]:
    """Decode one batch to uint8 in a worker (no resize: the device does it)."""
    from illust2vec.io.images import load_image

    return [load_image(p) for p in paths]


def _decode_only_count(paths: list[Path]) -> int:
    return len(_decode_only(paths))


def _variant(model, path: str, providers):
    """``model`` with its network (the graph file ``path``) in a new session on ``providers``."""
    import copy

    import onnxruntime as ort

    from illust2vec.runtime.session import to_float16

    source = to_float16(path, half_input=True) if model.precision == "fp16" else path
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    twin = copy.copy(model)
    twin.session = ort.InferenceSession(source, sess_options=options, providers=providers)
    if twin.session.get_providers()[0] != providers[0][0]:
        raise RuntimeError(f"{providers[0][0]} did not load (session providers: {twin.session.get_providers()})")
    return twin


def in_graph(args, model, m16, files, bs, results) -> None:
    """Issue 19's measures: preprocessing on the device, decode only on the CPU (see the module docstring)."""
    from concurrent.futures import ProcessPoolExecutor

    from illust2vec.runtime.device_batches import InGraphRunner, iter_batches_in_graph
    from illust2vec.prep.preprocess import preprocess

    n_images = len(files)
    chunks = [files[i : i + bs] for i in range(0, len(files), bs)]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        list(pool.map(_decode_only_count, chunks[: args.workers]))
        t = time.perf_counter()
        list(pool.map(_decode_only_count, chunks))
        results["decode_only_img_s"] = rate(n_images, time.perf_counter() - t)
        print(f"decode only (uint8): {results['decode_only_img_s']:.0f} img/s", file=sys.stderr, flush=True)
        pixels = [np.stack(b) for b in pool.map(_decode_only, chunks)]

    def timed(runner) -> list[float]:
        runner.run(pixels[0])  # warm-up: sessions, cuDNN algorithm search, arena growth
        runs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for p in pixels:
                runner.run(p)
            runs.append(rate(n_images, time.perf_counter() - t))
        return runs

    runner = InGraphRunner(model)
    graph_path = model.session._model_path  # the fp32 graph file (the fp16 session was opened from bytes)
    # exactness on this device: the graph's preprocessing vs the CPU's, and the probabilities
    cpu_batch = preprocess(list(pixels[0]), model.recipe)
    dev_batch = runner.preprocessor.run(pixels[0])
    results["in_graph_prep_max_abs_diff_vs_cpu"] = float(np.abs(dev_batch - cpu_batch).max())
    results["in_graph_prep_bit_equal"] = bool(np.array_equal(dev_batch, cpu_batch))
    ref_prob = model.run(cpu_batch, "prob")
    results["in_graph_prob_max_abs_diff"] = float(np.abs(runner.run(pixels[0], ["prob"])["prob"] - ref_prob).max())
    print(f"in-graph preprocessing vs CPU: max diff {results['in_graph_prep_max_abs_diff_vs_cpu']:.3g} "
          f"(bit-equal: {results['in_graph_prep_bit_equal']}); probabilities "
          f"{results['in_graph_prob_max_abs_diff']:.3g}", file=sys.stderr, flush=True)

    variants = [("fp32", runner), ("fp32, no I/O binding", InGraphRunner(model, io_binding=False))]
    if m16 is not None:
        r16 = InGraphRunner(m16)
        variants.append(("fp16", r16))
        results["in_graph_fp16_max_abs_diff_prob"] = float(
            np.abs(r16.run(pixels[0], ["prob"])["prob"] - ref_prob).max())
    if args.device.startswith("cuda"):
        cuda = {"device_id": runner.device_id}
        tries = [("prefer_nhwc", [("CUDAExecutionProvider", {**cuda, "prefer_nhwc": "1"})]),
                 ("exhaustive cuDNN search", [("CUDAExecutionProvider", {**cuda, "cudnn_conv_algo_search": "EXHAUSTIVE",
                                                                         "cudnn_conv_use_max_workspace": "1"})]),
                 ]
        if args.trt:  # opt-in: building TensorRT engines can take minutes
            tries.append(("TensorRT", [("TensorrtExecutionProvider", {**cuda, "trt_fp16_enable": "1"}),
                                       ("CUDAExecutionProvider", cuda)]))
        for base, tag in ((model, "fp32"), (m16, "fp16")):
            for label, providers in tries:
                if base is None or (label == "TensorRT" and tag == "fp16"):
                    continue  # TensorRT makes its own fp16 kernels from the fp32 graph
                try:
                    variants.append((f"{tag}, {label}", InGraphRunner(_variant(base, graph_path, [*providers,
                                                                                     "CPUExecutionProvider"]))))
                except Exception as exc:  # noqa: BLE001 - a variant that does not load is reported, not fatal
                    print(f"variant {tag}, {label}: not available ({exc})", file=sys.stderr, flush=True)
                    results[f"in_graph_network_{tag}, {label}_error"] = str(exc)[:300]
    for label, r in variants:
        runs = timed(r)
        results[f"in_graph_network_{label}_img_s"] = statistics.median(runs)
        print(f"in-graph network {label}: {runs}", file=sys.stderr, flush=True)
    pixels = None  # before the end-to-end runs fork their workers

    def end_to_end(m, decode: str, label: str) -> list[np.ndarray]:
        runner = InGraphRunner(m)
        runs, steady, probs = [], [], None
        for _ in range(args.repeats):
            t = time.perf_counter()
            n = n_first = 0
            t_first = t
            parts = []
            for r in iter_batches_in_graph(m, files, batch_size=bs, workers=args.workers, decode=decode,
                                           outputs=("prob",), runner=runner):
                if not n:
                    t_first, n_first = time.perf_counter(), len(r.indices)
                n += len(r.indices)
                parts.append(r.outputs["prob"][:4])
            end = time.perf_counter()
            runs.append(rate(n, end - t))
            steady.append(rate(n - n_first, end - t_first))
            probs = parts
        results[f"end_to_end_in_graph_{label}_img_s"] = statistics.median(runs)
        results[f"end_to_end_in_graph_steady_{label}_img_s"] = statistics.median(steady)
        print(f"end-to-end in-graph {label}: {runs}; after the first batch {steady}", file=sys.stderr, flush=True)
        return probs

    cpu_probs = end_to_end(model, "cpu", "fp32")
    if m16 is not None:
        end_to_end(m16, "cpu", "fp16")
    if args.gpu_decode:
        from illust2vec.io.gpu_decode import BatchDecoder

        decoder = BatchDecoder("auto", device=args.device)
        results["gpu_decode_backend"] = decoder.backend
        if decoder.backend != "nvimgcodec":  # one decoding thread would say nothing about GPU decoding
            results["gpu_decode_skipped"] = decoder.fallback_reason or f"device {args.device}"
            print(f"GPU decoding not measured: {results['gpu_decode_skipped']}", file=sys.stderr, flush=True)
            return
        gpu_probs = end_to_end(model, "nvimgcodec", "fp32_gpu_decode")
        results["gpu_decode_max_abs_diff_prob"] = float(max(
            np.abs(a - b).max() for a, b in zip(gpu_probs, cpu_probs)))
        if m16 is not None:
            end_to_end(m16, "nvimgcodec", "fp16_gpu_decode")


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
    ap.add_argument("--diagnose", action="store_true",
                    help="also check whether engine runs hold the GIL and time the pipeline around a sleeping engine")
    ap.add_argument("--compare-pipe", action="store_true",
                    help="also measure end-to-end with the pipe fallback instead of shared batch buffers")
    ap.add_argument("--in-graph", action="store_true",
                    help="also measure preprocessing on the device (uint8 in) against the rows above")
    ap.add_argument("--gpu-decode", action="store_true",
                    help="with --in-graph: also end-to-end with nvImageCodec JPEG decoding (CPU when missing)")
    ap.add_argument("--trt", action="store_true",
                    help="with --in-graph on CUDA: also try the TensorRT provider (engine builds take minutes)")
    ap.add_argument("--allow-cpu-fallback", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    if args.fp16 and not gpu:
        print("--fp16 ignored: fp16 runs on a GPU only", file=sys.stderr)
        args.fp16 = False
    n_images = args.images or (4096 if gpu else 64)
    bs = args.batch_size or (256 if gpu else 16)
    args.out.mkdir(parents=True, exist_ok=True)

    from illust2vec import Illustration2Vec

    from illust2vec.runtime import batches as pipeline
    from illust2vec.runtime.batches import iter_batches

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

        # decode + preprocess alone, in worker processes (what feeds the GPU)
        from concurrent.futures import ProcessPoolExecutor

        chunks = [files[i : i + bs] for i in range(0, len(files), bs)]
        with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
            list(pool.map(_decode, [(c, model.recipe, False) for c in chunks[: args.workers]]))  # start them
            t = time.perf_counter()
            list(pool.map(_decode, [(c, model.recipe, False) for c in chunks]))
            results["decode_img_s"] = rate(n_images, time.perf_counter() - t)
            print(f"decode: {results['decode_img_s']:.0f} img/s", file=sys.stderr, flush=True)
            batches = list(pool.map(_decode, [(c, model.recipe, True) for c in chunks]))

        # network alone
        def network_alone(m, prepared) -> list[float]:
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for b in prepared:
                    m.run(b)
                runs.append(rate(n_images, time.perf_counter() - t))
            return runs

        model.run(batches[0])  # warm-up (cuDNN algorithm search, arena growth)
        net = network_alone(model, batches)
        results["network_fp32_img_s"] = statistics.median(net)
        print(f"network fp32: {net}", file=sys.stderr, flush=True)

        m16 = None
        if args.fp16:
            m16 = Illustration2Vec.from_caffemodel(
                weights, model_dir=store, device=args.device, batch_size=bs, precision="fp16",
                allow_fallback=args.allow_cpu_fallback)
            if m16.precision != "fp16":
                print("fp16 is not available here (CPU fallback): the fp16 rows ran in fp32", file=sys.stderr)
            ref = model.run(batches[0], "prob")
            got = m16.run(batches[0], "prob")
            results["fp16_max_abs_diff_prob"] = float(np.abs(got - ref).max())
            batches16 = [b.astype(m16.input_dtype) for b in batches]  # as the worker ring holds them
            net16 = network_alone(m16, batches16)
            results["network_fp16_img_s"] = statistics.median(net16)
            print(f"network fp16: {net16}; max diff {results['fp16_max_abs_diff_prob']:.2e}",
                  file=sys.stderr, flush=True)

        if args.diagnose:
            diagnose(model, batches[0], files, bs, args.workers, bs / results["network_fp32_img_s"], results)

        # model load time (converted graph cached): part of a whole run's start-up
        t = time.perf_counter()
        Illustration2Vec.from_caffemodel(weights, model_dir=store, device=args.device, batch_size=bs,
                                         allow_fallback=args.allow_cpu_fallback)
        results["model_load_s"] = time.perf_counter() - t

        # end to end: files in, probabilities out (the pre-made batches go first: a parent
        # holding gigabytes would make every worker fork slow, which no real run does)
        batches = batches16 = None

        def end_to_end(m) -> float:
            runs, steady, first = [], [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                n = n_first = 0
                t_first = t
                for r in iter_batches(m, files, batch_size=bs, workers=args.workers, outputs=("prob",)):
                    if not n:
                        t_first, n_first = time.perf_counter(), len(r.indices)
                    n += len(r.indices)
                end = time.perf_counter()
                runs.append(rate(n, end - t))
                steady.append(rate(n - n_first, end - t_first))
                first.append(t_first - t)
            print(f"end-to-end {m.precision}: {runs}; after the first batch {steady}; first batch after "
                  f"{first} s", file=sys.stderr, flush=True)
            results[f"end_to_end_steady_{m.precision}_img_s"] = statistics.median(steady)
            return statistics.median(runs)

        results["end_to_end_fp32_img_s"] = end_to_end(model)
        if m16 is not None:
            results["end_to_end_fp16_img_s"] = end_to_end(m16)
        if args.in_graph:
            in_graph(args, model, m16, files, bs, results)
        if args.compare_pipe:
            shared = pipeline._shared_buffer
            pipeline._shared_buffer = lambda nbytes: None
            try:
                results["end_to_end_pipe_fp32_img_s"] = end_to_end(model)
                if m16 is not None:
                    results["end_to_end_pipe_fp16_img_s"] = end_to_end(m16)
            finally:
                pipeline._shared_buffer = shared

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
    for key, label in (("end_to_end_pipe_fp32_img_s", "fp32"), ("end_to_end_pipe_fp16_img_s", "fp16")):
        if key in results:
            print(f"| end-to-end, {label}, pipe fallback instead of shared buffers | {results[key]:.1f} |")
    if args.in_graph:
        print(f"| decode only, uint8 ({args.workers} processes) | {results['decode_only_img_s']:.1f} |")
        for key, value in results.items():
            if key.startswith("in_graph_network_") and key.endswith("_img_s"):
                print(f"| in-graph preprocessing + network, {key[17:-6]} | {value:.1f} |")
            elif key.startswith("end_to_end_in_graph_") and key.endswith("_img_s"):
                label = key[20:-6].replace("_gpu_decode", ", nvImageCodec decode").replace("_", " ")
                if label.startswith("steady "):
                    label = label[7:] + ", after the first batch"
                print(f"| end-to-end in-graph, {label} | {value:.1f} |")
        print(f"\nin-graph preprocessing vs CPU: max abs diff {results['in_graph_prep_max_abs_diff_vs_cpu']:.3g}, "
              f"bit-equal {results['in_graph_prep_bit_equal']}; probabilities max abs diff "
              f"{results['in_graph_prob_max_abs_diff']:.3g}")
        for key in ("in_graph_fp16_max_abs_diff_prob", "gpu_decode_backend", "gpu_decode_skipped",
                    "gpu_decode_max_abs_diff_prob"):
            if key in results:
                print(f"{key}: {results[key]}")
    print(f"model load (cached graph): {results['model_load_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
