"""A tiny tagger in the layout of DeepDanbooru's ONNX export as imgutils reads it (``deepghs/imgutils-models``).

``write_deepdanbooru_repo(folder)`` writes ``deepdanbooru/deepdanbooru.onnx`` (input
``input_1`` (N, 512, 512, 3) RGB 0-1, NHWC; output ``activation`` (sigmoid)) and
``deepdanbooru/deepdanbooru_tags.csv`` (``name,real_name,category``: 3 ratings, general,
character).  Seeded random weights, position-sensitive (a 16x16 stride-16 convolution, ReLU,
an 8x8 pool, a linear head on the 4x4 grid), so the black letterbox bands and the scaling show.
``python tests/deepdanbooru_support.py OUT`` writes the repository to ``OUT``.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from onnx_support import checked_model, conv_stem, write_csv

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
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, t = 5, len(TAGS)
    wc = rng.normal(0, 0.08, (c, 3, 16, 16)).astype(np.float32)
    bc = rng.normal(-0.2, 0.3, c).astype(np.float32)
    wh = rng.normal(0, 0.3, (t, c * 4 * 4)).astype(np.float32)
    bh = rng.normal(-1.0, 0.8, t).astype(np.float32)
    graph = helper.make_graph(
        [
            *conv_stem("input_1", 8, nhwc=True),
            helper.make_node("Gemm", ["f", "head.w", "head.b"], ["logits"], transB=1),
            helper.make_node("Sigmoid", ["logits"], ["activation"]),
        ],
        "tiny_deepdanbooru",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("activation", TensorProto.FLOAT, ["N", t])],
        initializer=[numpy_helper.from_array(wc, "conv.w"), numpy_helper.from_array(bc, "conv.b"),
                     numpy_helper.from_array(wh, "head.w"), numpy_helper.from_array(bh, "head.b")],
    )
    return checked_model(graph)


def write_deepdanbooru_repo(folder: Path) -> dict[str, bytes]:
    import onnx

    d = folder / "deepdanbooru"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(build_deepdanbooru_model(), str(d / "deepdanbooru.onnx"))
    write_csv(d / "deepdanbooru_tags.csv", ["tag_id", "name", "real_name", "category", "count"],
              ([i, name, real, cat, 100 - i] for i, (name, real, cat) in enumerate(TAGS)))
    return {f"deepdanbooru/{p.name}": p.read_bytes() for p in sorted(d.iterdir())}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {n: hashlib.sha256(b).hexdigest() for n, b in files.items() if n.endswith(".onnx")}


if __name__ == "__main__":
    write_deepdanbooru_repo(Path(sys.argv[1]))
