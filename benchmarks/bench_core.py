"""Core benchmark: import/load time and throughput of the i2v tag network at its real size.

Builds a random-weight tag model with the published layout (same size as
illust2vec_tag_ver200.caffemodel, ~188 MB), then measures on this machine:

* first import (caffemodel -> ONNX conversion + session), in a fresh store;
* cached load (graph already converted), in a fresh process;
* end-to-end throughput (decode + preprocess + network) on a folder of 256x256
  JPEGs, next to the network alone on pre-made batches of the same size.

Usage: python benchmarks/bench_core.py [--images 48] [--batch-size 16] [--repeats 3] [--out bench-out]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_model, make_folder  # noqa: E402




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from illust2vec import Illustration2Vec
    from illust2vec.runtime.batches import iter_batches

    weights = args.out / "i2v_tag_fullsize.caffemodel"
    make_model(weights)
    print(f"model: {weights} ({weights.stat().st_size / 1e6:.1f} MB)")

    with tempfile.TemporaryDirectory() as store:
        t = time.perf_counter()
        model = Illustration2Vec.from_caffemodel(weights, model_dir=store)
        first_import = time.perf_counter() - t
        code = ("import time,sys;t=time.perf_counter();from illust2vec import Illustration2Vec;"
                f"Illustration2Vec.from_caffemodel({str(weights)!r}, model_dir={store!r});"
                "print(time.perf_counter()-t)")
        cached = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout) for _ in range(args.repeats)]
        files = make_folder(args.out / "jpegs256", args.images)
        bs = args.batch_size
        batches = [model.preprocess(files[i : i + bs]) for i in range(0, len(files), bs)]
        model.run(batches[0][:2])  # warm-up
        net, e2e = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for b in batches:
                model.run(b)
            net.append(len(files) / (time.perf_counter() - t))
            t = time.perf_counter()
            n = sum(len(r) for r in iter_batches(model, files, batch_size=bs))
            e2e.append(n / (time.perf_counter() - t))
    net_m, e2e_m = statistics.median(net), statistics.median(e2e)
    print(f"machine: {os.cpu_count()} CPUs; onnxruntime threads: default; batch size {bs}; {args.images} JPEGs 256x256")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| first import (convert + cache + session) | {first_import:.2f} s |")
    print(f"| cached load, fresh process (median of {args.repeats}, incl. Python start-up of imports) | {statistics.median(cached):.2f} s |")
    print(f"| network alone (median of {args.repeats}) | {net_m:.2f} img/s |")
    print(f"| end-to-end decode+preprocess+network (median of {args.repeats}) | {e2e_m:.2f} img/s |")
    print(f"| end-to-end / network alone | {e2e_m / net_m:.1%} |")


if __name__ == "__main__":
    main()
