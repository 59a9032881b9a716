"""Does the caller's work on one batch overlap the engine's work on the next?

``iter_batches`` with worker processes runs the model in its own thread, so a
caller that spends Python time per batch (writing JSON, captions) no longer
leaves the engine idle.  This measures it with a stand-in engine that takes
``--engine-ms`` per batch without holding the GIL (as an ONNX Runtime GPU run
does) and a caller that busies the GIL for ``--caller-ms`` per batch; the same
run also measures the pipeline of an earlier commit (``--baseline-rev``, read
with ``git show``) for comparison.

Run:  .venv/bin/python benchmarks/bench_pipeline.py [--baseline-rev 72f21cf] [--images 160]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import StandInEngine, make_folder

from illust2vec.runtime import batches as pipeline


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def load_revision(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:src/illust2vec/pipeline.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp()) / f"pipeline_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engine-ms", type=float, default=60.0)
    ap.add_argument("--caller-ms", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-rev", default="72f21cf", help="commit whose pipeline ran the engine in the caller's thread")
    args = ap.parse_args()
    files = make_folder(Path(tempfile.gettempdir()) / "i2v-bench-jpegs256", args.images)
    engine = StandInEngine(args.engine_ms / 1000, batch_size=args.batch_size)
    rows = []
    for name, module in ((f"{args.baseline_rev} (engine in the caller's thread)", load_revision(args.baseline_rev)),
                         ("this tree (engine thread)", pipeline)):
        rates = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for _batch in module.iter_batches(engine, files, batch_size=args.batch_size, workers=args.workers):
                busy(args.caller_ms / 1000)
            rates.append(len(files) / (time.perf_counter() - t))
        rows.append((name, statistics.median(rates)))
    per_batch = max(args.engine_ms, args.caller_ms) / 1000
    print(f"engine {args.engine_ms:.0f} ms + caller {args.caller_ms:.0f} ms per batch of {args.batch_size}; "
          f"bound if they overlap: {args.batch_size / per_batch:.0f} img/s, if not: "
          f"{args.batch_size / ((args.engine_ms + args.caller_ms) / 1000):.0f} img/s")
    print("| pipeline | images/s (median) |\n| --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
