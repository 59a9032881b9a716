"""Caption files at the speed of the model: per-file ``fsync`` (before) against one durable batch (after).

Run:  flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_captions.py [--files 10000]
      [--pictures 2000] [--rounds 3] [--threshold 0.67]

1. **10k caption files** (``--files``, ~30 tags each, drawn from the i2v tag list, seeded):
   ``per_file_fsync`` -- the code path before the batch: :func:`write_caption` without a batch,
   i.e. :func:`~illust2vec.io.atomic.atomic_write` per file (write, ``fsync``, rename, ``fsync``
   the directory) -- against :func:`write_caption` into :func:`caption_batch` (write all,
   ``fsync`` in parallel, rename, ``fsync`` each directory once).  Same texts, a fresh folder
   each time; the two interleaved, ``--rounds`` times, medians.
2. **tag end to end** on ``--pictures`` copies of the shared anime36 pictures with the i2v
   fixture tagger (``tag_w8_v1.caffemodel``, as the tests build it), one fresh ``illust2vec``
   process per run, interleaved, medians: ``tag DIR -o x.json`` beside ``tag DIR --captions``
   (the acceptance: within 10%), and ``--captions`` with the batch reduced to one file
   (``max_pending=1, workers=1``: the per-file I/O of before).  ``--threshold`` keeps the
   random fixture model's captions at a realistic length (~20-40 tags instead of ~1500).

Results: benchmarks/results/captions.json (with the machine and load average).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _timing import interleaved_rounds, machine
from illust2vec.datasets.captions import CaptionOptions, caption_batch, write_caption

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "captions.json"
SHARED = HERE.parents[1] / "shared"
I2V = SHARED / "fixtures" / "i2v"
ANIME36 = SHARED / "data" / "anime36"

#: ``--captions`` with every caption committed on its own (the I/O of the per-file code path).
PER_FILE_TAG = (
    "import sys, illust2vec.datasets.captions as c, illust2vec.io.atomic as a\n"
    "c.DurableBatch = lambda **kw: a.DurableBatch(max_pending=1, workers=1, **kw)\n"
    "from illust2vec.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def caption_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` captions of 20-40 tags from the i2v tag list (names as captions write them)."""
    names = [t.replace("_", " ") for t in json.loads((I2V / "tag_list.json").read_text())]
    rng = np.random.default_rng(seed)
    return [", ".join(names[i] for i in rng.choice(len(names), int(rng.integers(20, 41)), replace=False))
            for _ in range(n)]


def per_file_fsync(targets: list[Path], texts: list[str], options: CaptionOptions) -> None:
    """The baseline: each caption written, fsync'ed, renamed and its directory fsync'ed on its own."""
    for target, text in zip(targets, texts):
        write_caption(target, text, options)


def one_batch(targets: list[Path], texts: list[str], options: CaptionOptions) -> None:
    errors: list = []
    with caption_batch(errors.append) as batch:
        for target, text in zip(targets, texts):
            write_caption(target, text, options, batch=batch)
    if errors:
        raise SystemExit(f"caption errors: {errors[:3]}")


def bench_files(work: Path, n: int, rounds: int) -> dict:
    texts = caption_texts(n)
    options = CaptionOptions()
    folder = work / "captions"
    targets = [folder / f"{i:06d}.txt" for i in range(n)]

    def fresh(_name: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    times = interleaved_rounds({"per_file_fsync": lambda: per_file_fsync(targets, texts, options),
                                "durable_batch": lambda: one_batch(targets, texts, options)}, rounds, before=fresh)
    assert all(t.read_text(encoding="utf-8") == x + "\n" for t, x in zip(targets, texts))
    shutil.rmtree(folder, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"files": n, "bytes_per_caption": round(sum(len(x) + 1 for x in texts) / n),
            "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "median_s": {k: round(v, 3) for k, v in med.items()},
            "ms_per_file": {k: round(1000 * v / n, 3) for k, v in med.items()},
            "speedup": round(med["per_file_fsync"] / med["durable_batch"], 1)}


def picture_folder(work: Path, n: int) -> Path:
    folder = work / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(ANIME36.glob("*.jpg"))
    for i in range(n):
        target = folder / f"{i:05d}.jpg"
        if not target.exists():
            shutil.copyfile(sources[i % len(sources)], target)
    return folder


def bench_tag(work: Path, n: int, rounds: int, threshold: float) -> dict:
    folder = picture_folder(work, n)
    model = ["--weights", str(I2V / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V / "tag_list.json"),
             "--model-dir", str(work / "models"), "--threshold", str(threshold), "-q"]
    exe = [sys.executable, "-m", "illust2vec"]
    runs = {
        "tag -o x.json": exe + ["tag", str(folder), *model, "-o", str(work / "x.json")],
        "tag --captions": exe + ["tag", str(folder), *model, "--captions"],
        "tag --captions, per-file fsync": [sys.executable, "-c", PER_FILE_TAG, "tag", str(folder), *model,
                                           "--captions"],
    }
    subprocess.run(runs["tag -o x.json"], check=True)  # converts the model once, warms the page cache

    def clean(_name: str) -> None:
        for p in folder.glob("*.txt"):
            p.unlink()
        (work / "x.json").unlink(missing_ok=True)

    def call(argv: list[str]):
        return lambda: subprocess.run(argv, check=True)

    times = interleaved_rounds({k: call(v) for k, v in runs.items()}, rounds, before=clean)
    captions = sorted(folder.glob("*.txt"))
    words = [len(p.read_text(encoding="utf-8").split(", ")) for p in captions[:200]]
    clean("")
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["tag -o x.json"]
    return {"pictures": n, "threshold": threshold, "captions_written": len(captions),
            "median_tags_per_caption": statistics.median(words) if words else 0,
            "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "median_s": {k: round(v, 2) for k, v in med.items()},
            "vs_json": {k: f"{100 * (v / base - 1):+.1f}%" for k, v in med.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--pictures", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.67)
    ap.add_argument("--work", type=Path, default=None, help="folder for the files (default: a temporary one)")
    args = ap.parse_args()
    out: dict = {"machine_before": machine()}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        df = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True)
        out["filesystem"] = df.stdout.split("\n")[1:2]
        if args.files:
            out["caption_files"] = bench_files(work, args.files, args.rounds)
            print(json.dumps(out["caption_files"]["median_s"]), out["caption_files"]["speedup"], "x", flush=True)
        if args.pictures:
            out["tag"] = bench_tag(work, args.pictures, args.rounds, args.threshold)
            print(json.dumps(out["tag"]["median_s"]), json.dumps(out["tag"]["vs_json"]), flush=True)
    out["machine_after"] = machine()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
