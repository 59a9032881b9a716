"""Pictures/s of each new tagger family's graph shape at its input size, beside WD v3, in one run.

Run:  flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_families.py [--rounds 5]

The published networks (EVA02-L for PixAI v0.9, Camie's ViT, the WD v1.4 MOAT/ConvNeXt/SwinV2/
ViT) cannot be fetched here and are not rebuilt at real size with ONNX helpers, so every family
runs its **tiny layout** (the seeded models of the tests: ``tests/pixai_support.py``,
``tests/camie_support.py``, ``tests/kohya_support.py`` for the WD layout, which WD v3 and
WD v1.4 share) at its **real input size and preprocessing**: PixAI 448 NCHW RGB (bicubic,
/255, normalise 0.5), Camie 512 NCHW RGB (bilinear, ImageNet mean/std), WD 448 NHWC BGR (white
square pad, bicubic, 0-255).  What differs between families here is the decode + preprocessing
+ ONNX Runtime path of their input shapes; the real networks' own cost comes on top and must be
measured with the real files.  36 anime36 pictures per round, batch 8, one ONNX Runtime thread;
the families are interleaved round by round and the median is reported with the machine and
load average.  Results: benchmarks/results/families.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from _timing import cpu_model, interleaved_rounds  # noqa: E402

SHARED = HERE.parents[1] / "shared"
ANIME36 = SHARED / "data" / "anime36"
RESULTS = HERE / "results" / "families.json"


def build_models(tmp: Path) -> dict[str, object]:
    from camie_support import write_camie_repo
    from kohya_support import write_parity_model
    from pixai_support import write_pixai_repo

    from illust2vec.models.families.camie import load_camie_files
    from illust2vec.models.families.pixai import load_pixai_files
    from illust2vec.models.families.wd import load_wd_files
    from illust2vec.models.store import ModelStore

    store = ModelStore(tmp / "store")
    opts = dict(store=store, threads=1, batch_size=8)
    wd = write_parity_model(tmp / "wd")
    px = tmp / "pixai"
    write_pixai_repo(px)
    cm = tmp / "camie"
    write_camie_repo(cm)
    c = cm / "initial"
    return {
        "wd-v3 / wd14 layout (baseline), 448 NHWC": load_wd_files(wd / "model.onnx", wd / "selected_tags.csv", **opts),
        "pixai-v0.9 layout, 448 NCHW": load_pixai_files(px / "model.onnx", px / "selected_tags.csv",
                                                        px / "preprocess.json", px / "thresholds.csv", **opts),
        "camie-refined layout, 512 NCHW": load_camie_files(c / "model.onnx", c / "selected_tags.csv",
                                                           c / "preprocess.json", c / "threshold.json", **opts),
        "camie-initial layout, 512 NCHW": load_camie_files(c / "model_initial_only.onnx", c / "selected_tags.csv",
                                                           c / "preprocess.json", c / "threshold.json",
                                                           stage="initial", **opts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pictures = sorted(ANIME36.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp))
        for m in models.values():
            m.predict_proba(pictures[:2])  # warm up: session, taps
        times = interleaved_rounds({name: (lambda m=m: m.predict_proba(pictures)) for name, m in models.items()},
                                   args.rounds)
        rates = {name: [len(pictures) / t for t in ts] for name, ts in times.items()}
    base = statistics.median(rates[next(iter(rates))])
    out = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg": os.getloadavg()},
        "pictures": len(pictures), "rounds": args.rounds, "weights": "tiny layouts at real input size (see docstring)",
        "results": {k: {"median_pictures_per_s": round(statistics.median(v), 1),
                        "ratio_to_wd": round(statistics.median(v) / base, 2),
                        "all": [round(x, 1) for x in v]} for k, v in rates.items()},
    }
    print(f"{out['machine']['cpu']}, load {tuple(round(x, 2) for x in out['machine']['loadavg'])}")
    for k, v in out["results"].items():
        print(f"  {k:44s} {v['median_pictures_per_s']:7.1f} pictures/s  ({v['ratio_to_wd']:.2f}x WD)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
