"""A tiny tagger in the PixAI tagger v0.9 export's file layout (``deepghs/pixai-tagger-v0.9-onnx``).

``write_pixai_repo(folder)`` writes the four files imgutils 0.19 reads from that repository:

* ``model.onnx``: input ``input`` (N, 3, 448, 448), outputs ``prediction`` (sigmoid),
  ``embedding`` (16-d) and ``logits``; seeded random weights of a position-sensitive
  network (a 16x16 stride-16 convolution, ReLU, a 4x4 average pool, a linear embedding of the
  7x7 grid, a linear head), so probabilities move when pixels move;
* ``selected_tags.csv``: ``name,category,ips`` (general code 0, character code 4, the
  character rows with their series as a JSON list);
* ``preprocess.json``: resize to 448x448 (bicubic), to_tensor, normalize 0.5/0.5;
* ``thresholds.csv``: ``category,name,threshold``.

Its tag names include what ``drop_overlap`` looks at (``long_hair`` / ``very_long_hair``,
``hair`` / ``chair``).  ``tests/fixtures/pixai/README.md`` says how imgutils' outputs were
recorded from it; ``python tests/pixai_support.py OUT`` writes the repository to ``OUT``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from onnx_support import checked_model, conv_stem, write_csv

SIZE = 448
EMBED = 16
REPO = "deepghs/pixai-tagger-v0.9-onnx"
#: (name, category code, series of a character)
TAGS: list[tuple[str, int, list[str]]] = [
    ("1girl", 0, []), ("solo", 0, []), ("long_hair", 0, []), ("very_long_hair", 0, []), ("hair", 0, []),
    ("chair", 0, []), ("breasts", 0, []), ("medium_breasts", 0, []), ("smile", 0, []), ("open_mouth", 0, []),
    ("blue_eyes", 0, []), ("red_eyes", 0, []), ("hair_ornament", 0, []), ("hair_flower", 0, []), ("flower", 0, []),
    ("skirt", 0, []), ("pleated_skirt", 0, []), ("shirt", 0, []), ("white_shirt", 0, []), ("outdoors", 0, []),
    ("sky", 0, []), ("blue_sky", 0, []), ("looking_at_viewer", 0, []), ("blush", 0, []), (":d", 0, []),
    ("^_^", 0, []), ("simple_background", 0, []), ("white_background", 0, []),
    ("hatsune_miku", 4, ["vocaloid"]), ("kagamine_rin", 4, ["vocaloid"]), ("saber_(fate)", 4, ["fate_(series)"]),
    ("hu_tao_(genshin_impact)", 4, ["genshin_impact"]), ("original", 4, []),
]
THRESHOLDS = [(0, "general", 0.3), (4, "character", 0.5)]
PREPROCESS = {"stages": [
    {"type": "resize", "size": [SIZE, SIZE], "interpolation": "bicubic", "max_size": None, "antialias": True},
    {"type": "to_tensor"},
    {"type": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
]}


def build_pixai_model(seed: int = 9):
    """The ONNX graph (``onnx.ModelProto``) of the tiny PixAI-layout tagger."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c, t = 6, len(TAGS)
    wc = rng.normal(0, 0.03, (c, 3, 16, 16)).astype(np.float32)
    bc = rng.normal(0.3, 0.3, c).astype(np.float32)
    we = rng.normal(0, 0.1, (EMBED, c * 7 * 7)).astype(np.float32)
    be = rng.normal(0, 0.1, EMBED).astype(np.float32)
    wh = rng.normal(0, 1.5, (t, EMBED)).astype(np.float32)
    # logits centred on a mid-grey picture (input 0), so tags cross their thresholds on some pictures
    grey = we.astype(np.float64) @ np.repeat(np.maximum(bc, 0), 7 * 7) + be
    bh = (rng.normal(-0.4, 0.8, t) - wh.astype(np.float64) @ grey).astype(np.float32)
    graph = helper.make_graph(
        [
            *conv_stem("input", 4),
            helper.make_node("Gemm", ["f", "emb.w", "emb.b"], ["embedding"], transB=1),
            helper.make_node("Gemm", ["embedding", "head.w", "head.b"], ["logits"], transB=1),
            helper.make_node("Sigmoid", ["logits"], ["prediction"]),
        ],
        "tiny_pixai",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch_size", t]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch_size", EMBED]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", t])],
        initializer=[numpy_helper.from_array(wc, "conv.w"), numpy_helper.from_array(bc, "conv.b"),
                     numpy_helper.from_array(we, "emb.w"), numpy_helper.from_array(be, "emb.b"),
                     numpy_helper.from_array(wh, "head.w"), numpy_helper.from_array(bh, "head.b")],
    )
    return checked_model(graph)


def write_pixai_repo(folder: Path) -> dict[str, bytes]:
    """The four files of the repository in ``folder``; returns ``{file name: bytes}``."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(build_pixai_model(), str(folder / "model.onnx"))
    write_csv(folder / "selected_tags.csv", ["name", "category", "ips"],
              ([name, cat, json.dumps(ips)] for name, cat, ips in TAGS))
    write_csv(folder / "thresholds.csv", ["category", "name", "threshold"], THRESHOLDS)
    (folder / "preprocess.json").write_text(json.dumps(PREPROCESS, indent=2), encoding="utf-8")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def model_digest(files: dict[str, bytes]) -> str:
    return hashlib.sha256(files["model.onnx"]).hexdigest()


if __name__ == "__main__":
    write_pixai_repo(Path(sys.argv[1]))
