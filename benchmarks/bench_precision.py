"""fp32 / int8 / bf16 side by side per family, with the error of each precision against fp32.

Models (all through ``load_model``/``from_caffemodel`` with ``precision=``, as users get them):

* ``i2v-tag`` and ``i2v-feature`` at the published size with **random weights** (the i2v layout;
  the real weights are not available offline); ``--i2v-tag`` / ``--i2v-feature`` reuse caffemodels;
* ``generic-effnet-lite0`` with its **real trained weights**: ``effnet`` as it loads (blocks before 14 float32),
  ``effnet-fast`` with ``keep_fp32=KEEP_FP32_FAST`` (only the stem and blocks 0-1 float32).

Speed: one batch of ``--batch-size`` pictures, fp32 and int8 sessions run in turn for ``--rounds``
rounds (median pictures/s; the ratio is the median of per-round ratios).  bf16: what ONNX Runtime's
CPU build offers is probed (a bfloat16 Conv/MatMul graph; the fp16 graph on the CPU) and reported.
Error: over anime36 + the 75 drawn demo-gallery pictures, int8 against fp32, and over anime36 alone.

    flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_precision.py --out bench-out
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
ANIME36 = SHARED / "data" / "anime36"
TAG_LIST = SHARED / "fixtures" / "i2v" / "tag_list.json"  # i2v's 1539 tags, for the tag network's default thresholds
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_tile")


def machine() -> dict:
    import onnxruntime as ort

    from illust2vec.models.quantize import cpu_flags

    model = platform.processor()
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    return {"cpu": model, "cpus": os.cpu_count(), "flags": {f: f in flags for f in FLAGS},
            "onnxruntime": ort.__version__, "python": platform.python_version()}


def speed(models: dict, batch: np.ndarray, rounds: int) -> dict:
    out = {k: [] for k in models}
    for m in models.values():
        m.run_all(batch)  # warm-up
    for _ in range(rounds):
        for k, m in models.items():
            t = time.perf_counter()
            m.run_all(batch)
            out[k].append(len(batch) / (time.perf_counter() - t))
    res = {f"{k}_pics_per_s": round(statistics.median(v), 2) for k, v in out.items()}
    res["int8_over_fp32"] = round(statistics.median(a / b for a, b in zip(out["int8"], out["fp32"])), 2)
    return res


def errors(fp32, int8, pictures) -> dict:
    x = fp32.preprocess(pictures)
    a, b = fp32.run_all(x), int8.run_all(x)
    res: dict = {"pictures": len(pictures)}
    if "prob" in a:
        p, q = a["prob"], b["prob"]
        d = np.abs(p - q)
        t = fp32.thresholds_for(None)
        res.update(prob_max_abs=float(d.max()), prob_mean_abs=float(d.mean()),
                   tag_set_unchanged=float(np.mean([((u >= t) == (v >= t)).all() for u, v in zip(p, q)])),
                   top10_overlap=float(np.mean([len(set(np.argsort(-u)[:10]) & set(np.argsort(-v)[:10])) / 10
                                                for u, v in zip(p, q)])))
        if fp32.name == "generic-effnet-lite0":
            t5r, t5q = np.argsort(-p, 1)[:, :5], np.argsort(-q, 1)[:, :5]
            res.update(top1_in_int8_top5=float(np.mean([r[0] in s for r, s in zip(t5r, t5q)])),
                       top5_set_equal=float(np.mean([set(r) == set(s) for r, s in zip(t5r, t5q)])),
                       top5_overlap=float(np.mean([len(set(r) & set(s)) / 5 for r, s in zip(t5r, t5q)])),
                       top1_equal=float(np.mean(t5r[:, 0] == t5q[:, 0])))
    if "feature" in a:
        f, g = a["feature"], b["feature"]
        cos = np.sum(f * g, 1) / np.linalg.norm(f, axis=1) / np.linalg.norm(g, axis=1)
        norm = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)

        def knn(v):
            s = norm(v) @ norm(v).T
            np.fill_diagonal(s, -np.inf)
            return np.argsort(-s, 1)[:, :10]

        kf, kg = knn(f), knn(g)
        bits = np.unpackbits(fp32.binarize_features(f), axis=1) != np.unpackbits(int8.binarize_features(g), axis=1)
        res.update(feature_cos_mean=float(cos.mean()), feature_cos_min=float(cos.min()),
                   recall_at_10=float(np.mean([len(set(u) & set(v)) / 10 for u, v in zip(kf, kg)])),
                   code_bits_differing=float(bits.mean()), code_bits_differing_max=float(bits.mean(1).max()))
    return res


def bf16_probe(fp32_graph: Path, batch: np.ndarray) -> dict:
    """What runs in bf16 on ONNX Runtime's CPU: a bfloat16 MatMul/Conv session, the fp16 graph's speed."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from illust2vec.runtime.session import to_float16

    res = {}
    for op, shapes in (("MatMul", ([4, 64], [64, 64])), ("Conv", ([1, 8, 16, 16], [8, 8, 3, 3]))):
        g = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], "p",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, shapes[0]),
                               helper.make_tensor_value_info("w", TensorProto.BFLOAT16, shapes[1])],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        try:
            ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            res[f"bf16_{op}"] = "session opens"
        except Exception as exc:  # noqa: BLE001 - the message is the measurement
            res[f"bf16_{op}"] = str(exc).splitlines()[0][:200]
    sessions = {"fp32": ort.InferenceSession(str(fp32_graph), providers=["CPUExecutionProvider"]),
                "fp16_on_cpu": ort.InferenceSession(to_float16(fp32_graph), providers=["CPUExecutionProvider"])}
    name = sessions["fp32"].get_inputs()[0].name
    times = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {name: batch})
    for _ in range(3):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {name: batch})
            times[k].append(len(batch) / (time.perf_counter() - t))
    res.update({f"{k}_pics_per_s": round(statistics.median(v), 2) for k, v in times.items()})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--i2v-tag", type=Path, help="a full-size i2v tag caffemodel (default: written under --out)")
    ap.add_argument("--i2v-feature", type=Path, help="a full-size i2v feature caffemodel (default: written)")
    ap.add_argument("--models", default="i2v-tag,i2v-feature,effnet,effnet-fast")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "precision.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from illust2vec import Illustration2Vec
    from illust2vec.io.gallery import draw_character, make_characters
    from illust2vec.models.families.effnet import KEEP_FP32_FAST
    from caffe_writer import i2v_layers, write_caffemodel
    from illust2vec.models.loading import load_model

    info = machine()
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, onnxruntime {info['onnxruntime']}")
    print("instruction sets: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["flags"].items()))
    pictures = sorted(ANIME36.glob("*.jpg")) + [draw_character(c, v) for c in make_characters(25) for v in range(3)]
    store = args.out / "precision-store"
    results = {"machine": info, "load_before": os.getloadavg(), "models": {}}
    for which in args.models.split(","):
        if which == "i2v-tag":
            path = args.i2v_tag or make_model(args.out / "i2v_tag_fullsize.caffemodel")
            load = lambda **kw: Illustration2Vec.from_caffemodel(path, tags=TAG_LIST, model_dir=store, name=which,
                                                                 **kw)
        elif which == "i2v-feature":
            path = args.i2v_feature or args.out / "i2v_feature_fullsize.caffemodel"
            if not path.exists():
                write_caffemodel(path, i2v_layers(head="feature"), v1=True)
            load = lambda **kw: Illustration2Vec.from_caffemodel(path, model_dir=store, name=which, **kw)
        elif which == "effnet-fast":  # the faster trade: only the stem and blocks 0-1 stay float32
            load = lambda **kw: load_model("generic-effnet-lite0", model_dir=store, keep_fp32=KEEP_FP32_FAST, **kw)
        else:
            load = lambda **kw: load_model("generic-effnet-lite0", model_dir=store, **kw)
        fp32 = load()
        t = time.perf_counter()
        int8 = load(precision="int8")
        made = time.perf_counter() - t
        batch = fp32.preprocess(pictures[: args.batch_size])
        anime36 = len(sorted(ANIME36.glob("*.jpg")))
        row = {"weights": "real (ImageNet)" if which.startswith("effnet") else "random, published layout",
               "int8_load_or_quantize_s": round(made, 1), **speed({"fp32": fp32, "int8": int8}, batch, args.rounds),
               "errors": errors(fp32, int8, pictures), "errors_anime36": errors(fp32, int8, pictures[:anime36]),
               "load": os.getloadavg()}
        if which == "effnet":
            row["bf16_probe"] = bf16_probe(Path(fp32.onnx_source), batch)
        results["models"][which] = row
        print(f"{which:12s} fp32 {row['fp32_pics_per_s']:7.2f}/s  int8 {row['int8_pics_per_s']:7.2f}/s  "
              f"x{row['int8_over_fp32']:.2f}  bf16 = fp32 (no kernels)  load {row['load'][0]:.2f}", flush=True)
        for part in ("errors", "errors_anime36"):
            print(f"   {part} vs fp32: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in row[part].items()), flush=True)
        if "bf16_probe" in row:
            print(f"   bf16 probe: {row['bf16_probe']}", flush=True)
        del fp32, int8
    results["load_after"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
