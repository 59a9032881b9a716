"""Gradient engine and tag-guided editing on the full-size (random-weight) i2v tag model, CPU.

Measures, on one machine and one process:
- one forward pass vs one ``input_gradient`` call (forward + generated backward graph), batch 1;
- ``explain`` for 10 tags (class activation maps: one forward pass);
- ``edit`` with default settings on a 512x512 picture.

Run: ``PYTHONPATH=src python benchmarks/bench_explain.py [--repeat 3] [--cache DIR]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import make_model


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/illust2vec-bench"))
    ap.add_argument("--picture", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/anime36")
    args = ap.parse_args()

    from illust2vec import Illustration2Vec
    from illust2vec.semantic.edit import edit_image
    from illust2vec.semantic.explain import explain

    weights = make_model(args.cache / "i2v_tag_full.caffemodel")
    tag_list = Path(__file__).resolve().parents[2] / "shared/fixtures/i2v/tag_list.json"
    model = Illustration2Vec.from_caffemodel(weights, tags=tag_list, model_dir=args.cache / "store")
    picture = min(args.picture.glob("*.jpg")) if args.picture.is_dir() else args.picture
    batch = model.preprocess([picture])
    model.run(batch)
    model.input_gradient(batch, tags=[0])  # builds the gradient graph once
    forward = best(lambda: model.run(batch), args.repeat)
    gradient = best(lambda: model.input_gradient(batch, tags=[0, 9, 600]), args.repeat)
    tags = list(np.argsort(-model.predict_proba(picture)[0])[:10])
    explain(model, picture, tags)
    cam = best(lambda: explain(model, picture, tags), args.repeat)
    t = time.perf_counter()
    prob = model.predict_proba(picture)[0]
    add = model.tags.names[int(np.argmin(np.abs(prob[:512] - 0.3)))]  # a general tag near 0.3
    result = edit_image(model, picture, add=[add], goal=2.0)  # default settings, but no early stop: all 25 steps
    edit_s = time.perf_counter() - t
    out = {
        "picture": str(picture), "size": list(model.load(picture).shape[:2]),
        "forward_s": round(forward, 4), "input_gradient_s": round(gradient, 4),
        "gradient_over_forward": round(gradient / forward, 2),
        "explain_10_tags_s": round(cam, 4), "edit_default_s": round(edit_s, 2), "edit_steps": result.steps,
        "edit_tag": add, "edit_before": round(result.before[add], 4), "edit_after": round(result.after[add], 4),
        "edit_psnr": round(result.psnr, 2),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
