"""The ``--compat kohya`` / ``--compat wd14-webui`` pixel paths against the default WD path, in one run.

Run:  flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_compat.py [--rounds 7]

Pictures (made in a temporary folder from shared/data/anime36): the 512x512 originals
(shrunk to 448 with a non-integer ratio), 1500x1100 JPEGs (a large shrink), 896x896 (the
integer factor-2 path) and 300x200 (kohya: Lanczos enlarging; wd14-webui: a white canvas).
Per picture kind and recipe: decode (``load_image`` with the recipe's EXIF rule) +
``preprocess_one`` into a 448x448 WD input, all recipes interleaved picture by picture,
``--rounds`` times; the median pictures/s is reported with the machine and load average.
Results: benchmarks/results/compat.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from _timing import cpu_model, interleaved_rounds

from illust2vec.io.images import load_image
from illust2vec.models.compat import COMPAT_MODES, compat_recipe
from illust2vec.models.families.wd import wd_recipe
from illust2vec.prep.preprocess import preprocess_one

SHARED = Path(__file__).resolve().parents[2] / "shared"
ANIME36 = SHARED / "data" / "anime36"
RESULTS = Path(__file__).resolve().parent / "results" / "compat.json"


def make_pictures(folder: Path) -> dict[str, list[Path]]:
    sources = sorted(ANIME36.glob("*.jpg"))[:12]
    kinds: dict[str, list[Path]] = {"512x512 (anime36)": sources}
    for label, size in (("1500x1100", (1500, 1100)), ("896x896", (896, 896)), ("300x200", (300, 200))):
        paths = []
        for i, src in enumerate(sources):
            p = folder / f"{label}-{i}.jpg"
            Image.open(src).convert("RGB").resize(size, Image.BICUBIC).save(p, quality=90)
            paths.append(p)
        kinds[label] = paths
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    base = wd_recipe((448, 448))
    recipes = {"default (pil-bicubic, EXIF applied)": base,
               "kohya (area / lanczos, EXIF ignored)": compat_recipe(base, COMPAT_MODES["kohya"]),
               "wd14-webui (canvas + area)": compat_recipe(base, COMPAT_MODES["wd14-webui"])}
    out = np.empty(base.input_shape, np.float32)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kinds = make_pictures(Path(tmp))
        for kind, paths in kinds.items():
            times: dict[str, list[float]] = {name: [] for name in recipes}
            for _ in range(args.rounds):
                for path in paths:  # interleaved picture by picture: the machine's noise hits all alike
                    cases = {name: (lambda r=recipe, p=path: preprocess_one(
                        load_image(p, exif_orientation=r.exif_orientation), r, out=out))
                        for name, recipe in recipes.items()}
                    one = interleaved_rounds(cases, 1)
                    for name, ts in one.items():
                        times[name] += ts
            baseline = statistics.median(times[next(iter(recipes))])
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append({"pictures": kind, "recipe": name, "pictures_per_s": round(1 / med, 1),
                             "ms_per_picture": round(med * 1000, 2), "vs_default": round(baseline / med, 2)})
    report = {"machine": cpu_model(), "cores": os.cpu_count(), "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "rounds": args.rounds, "rows": rows}
    width = max(len(r["recipe"]) for r in rows)
    print(f"{report['machine']} ({report['cores']} cores), load average {load_before} -> {report['loadavg_after']}")
    for r in rows:
        print(f"{r['pictures']:<18} {r['recipe']:<{width}}  {r['pictures_per_s']:>7} pictures/s  "
              f"{r['ms_per_picture']:>7} ms  x{r['vs_default']} of default")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
