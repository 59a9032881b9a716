"""A tiny tagger in the layout of DeepDanbooru's ONNX export as imgutils reads it (``deepghs/imgutils-models``).

``write_deepdanbooru_repo(folder)`` writes ``deepdanbooru/deepdanbooru.onnx`` (input
``input_1`` (N, 512, 512, 3) RGB 0-1, NHWC; output ``activation`` (sigmoid)) and
``deepdanbooru/deepdanbooru_tags.csv`` (``name,real_name,category``: 3 ratings, general,
character).  Seeded random weights, position-sensitive (a 16x16 stride-16 convolution, ReLU,
an 8x8 pool, a linear head on the 4x4 grid), so the black letterbox bands and the scaling show.
``python tests/deepdanbooru_support.py OUT`` writes the repository to ``OUT``.
"""
from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np

SIZE = 512
REPO = "deepghs/imgutils-models"
TAGS: list[tuple[str, str, int]] = [
    ("rating:safe", "rating:safe", 9), ("rating:questionable", "rating:questionable", 9),
    ("rating:explicit", "rating:explicit", 9),
    ("1girl", "1girl", 0), ("solo", "solo", 0), ("long_hair", "long_hair", 0), ("very_long_hair", "very_long_hair", 0),
    ("bangs", "blunt_bangs", 0), ("letterboxed", "letterboxed", 0), ("pillarboxed", "pillarboxed", 0),
    ("smile", "smile", 0), ("skirt", "skirt", 0), ("sky", "sky", 0), ("blue_sky", "blue_sky", 0),
    ("hatsune_miku", "hatsune_miku", 4), ("saber", "artoria_pendragon_(fate)", 4),
]


def build_deepdanbooru_model(seed: int = 13):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, t = 5, len(TAGS)
    wc = rng.normal(0, 0.08, (c, 3, 16, 16)).astype(np.float32)
    bc = rng.normal(-0.2, 0.3, c).astype(np.float32)
    wh = rng.normal(0, 0.3, (t, c * 4 * 4)).astype(np.float32)
    bh = rng.normal(-1.0, 0.8, t).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["input_1"], ["x"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], kernel_shape=[16, 16], strides=[16, 16]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Flatten", ["p"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "head.w", "head.b"], ["logits"], transB=1),
            helper.make_node("Sigmoid", ["logits"], ["activation"]),
        ],
        "tiny_deepdanbooru",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("activation", TensorProto.FLOAT, ["N", t])],
        initializer=[numpy_helper.from_array(wc, "conv.w"), numpy_helper.from_array(bc, "conv.b"),
                     numpy_helper.from_array(wh, "head.w"), numpy_helper.from_array(bh, "head.b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_deepdanbooru_repo(folder: Path) -> dict[str, bytes]:
    import onnx

    d = folder / "deepdanbooru"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(build_deepdanbooru_model(), str(d / "deepdanbooru.onnx"))
    with open(d / "deepdanbooru_tags.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "real_name", "category", "count"])
        for i, (name, real, cat) in enumerate(TAGS):
            w.writerow([i, name, real, cat, 100 - i])
    return {f"deepdanbooru/{p.name}": p.read_bytes() for p in sorted(d.iterdir())}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {n: hashlib.sha256(b).hexdigest() for n, b in files.items() if n.endswith(".onnx")}


if __name__ == "__main__":
    write_deepdanbooru_repo(Path(sys.argv[1]))
