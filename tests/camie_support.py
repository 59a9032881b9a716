"""A tiny tagger in the Camie export's file layout (``deepghs/camie_tagger_onnx``, folder ``initial/``).

``write_camie_repo(folder)`` writes the five files imgutils 0.19 reads: ``initial/model.onnx``
(input ``input`` (N, 3, 512, 512); outputs ``initial/embedding``, ``initial/logits``,
``initial/output`` and the refined ``embedding``, ``logits``, ``output``),
``initial/model_initial_only.onnx`` (the first stage alone: ``embedding``, ``logits``,
``output``), ``initial/selected_tags.csv`` (``name,category``: ratings, general, character,
copyright, artist, meta, year), ``initial/preprocess.json`` (resize to 512x512 bilinear,
to_tensor, ImageNet normalisation) and ``initial/threshold.json`` (every category, every mode).
Seeded random weights, position-sensitive (a 16x16 stride-16 convolution, ReLU, an 8x8 pool, a
linear embedding of the 4x4 grid); the refined stage adds a second embedding of the first.
``python tests/camie_support.py OUT`` writes the repository to ``OUT``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from onnx_support import checked_model, conv_stem, write_csv

SIZE = 512
EMBED = 12
REPO = "deepghs/camie_tagger_onnx"
TAGS: list[tuple[str, int]] = [
    ("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
    ("1girl", 0), ("solo", 0), ("long_hair", 0), ("very_long_hair", 0), ("smile", 0), ("blush", 0),
    ("open_mouth", 0), ("skirt", 0), ("pleated_skirt", 0), ("hair_ornament", 0), ("flower", 0), ("sky", 0),
    ("hatsune_miku", 4), ("hu_tao_(genshin_impact)", 4),
    ("vocaloid", 3), ("genshin_impact", 3),
    ("some_artist", 1), ("highres", 5), ("absurdres", 5), ("year_2021", 10), ("year_2024", 10),
]
MODES = ("balanced", "high_precision", "high_recall", "micro_opt", "macro_opt")
THRESHOLDS = {"rating": 0.5, "year": 0.4, "general": 0.35, "artist": 0.6, "copyright": 0.45, "character": 0.5,
              "meta": 0.3}
PREPROCESS = {"stages": [
    {"type": "resize", "size": [SIZE, SIZE], "interpolation": "bilinear", "max_size": None, "antialias": True},
    {"type": "to_tensor"},
    {"type": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
]}


def _weights(seed: int):
    rng = np.random.default_rng(seed)
    c, t = 5, len(TAGS)
    w = {
        "conv.w": rng.normal(0, 0.02, (c, 3, 16, 16)), "conv.b": rng.normal(0.2, 0.2, c),
        "emb.w": rng.normal(0, 0.15, (EMBED, c * 4 * 4)), "emb.b": rng.normal(0, 0.1, EMBED),
        "head.w": rng.normal(0, 1.2, (t, EMBED)), "head.b": rng.normal(-0.3, 0.8, t),
        "ref.w": rng.normal(0, 0.4, (EMBED, EMBED)), "ref.b": rng.normal(0, 0.1, EMBED),
        "rhead.w": rng.normal(0, 1.2, (t, EMBED)), "rhead.b": rng.normal(-0.3, 0.8, t),
    }
    return {k: v.astype(np.float32) for k, v in w.items()}


def build_camie_model(refined: bool, seed: int = 11):
    """``model.onnx`` (``refined=True``, both stages) or ``model_initial_only.onnx``."""
    from onnx import TensorProto, helper, numpy_helper

    w = _weights(seed)
    t = len(TAGS)
    p = "initial/" if refined else ""
    nodes = [
        *conv_stem("input", 8, pooled="pool"),
        helper.make_node("Gemm", ["f", "emb.w", "emb.b"], [f"{p}embedding"], transB=1),
        helper.make_node("Gemm", [f"{p}embedding", "head.w", "head.b"], [f"{p}logits"], transB=1),
        helper.make_node("Sigmoid", [f"{p}logits"], [f"{p}output"]),
    ]
    names = [f"{p}embedding", f"{p}logits", f"{p}output"]
    if refined:
        nodes += [
            helper.make_node("Gemm", ["initial/embedding", "ref.w", "ref.b"], ["ref"], transB=1),
            helper.make_node("Tanh", ["ref"], ["ref_t"]),
            helper.make_node("Add", ["ref_t", "initial/embedding"], ["embedding"]),
            helper.make_node("Gemm", ["embedding", "rhead.w", "rhead.b"], ["logits"], transB=1),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ]
        names += ["embedding", "logits", "output"]
    used = {i for n in nodes for i in n.input}
    dims = {"embedding": EMBED, "logits": t, "output": t}
    graph = helper.make_graph(
        nodes, "tiny_camie",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", dims[n.rsplit("/", 1)[-1]]]) for n in names],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items() if k in used],
    )
    return checked_model(graph)


def write_camie_repo(folder: Path) -> dict[str, bytes]:
    """The repository's files under ``folder``; returns ``{path in the repository: bytes}``."""
    import onnx

    d = folder / "initial"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(build_camie_model(True), str(d / "model.onnx"))
    onnx.save(build_camie_model(False), str(d / "model_initial_only.onnx"))
    write_csv(d / "selected_tags.csv", ["tag_id", "name", "category", "count"],
              ([i, name, cat, 1000 - i] for i, (name, cat) in enumerate(TAGS)))
    (d / "preprocess.json").write_text(json.dumps(PREPROCESS, indent=2), encoding="utf-8")
    table = {cat: {mode: {"threshold": round(t + 0.02 * k, 2), "f1": 0.5} for k, mode in enumerate(MODES)}
             for cat, t in THRESHOLDS.items()}
    (d / "threshold.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    return {f"initial/{p.name}": p.read_bytes() for p in sorted(d.iterdir())}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items() if name.endswith(".onnx")}


if __name__ == "__main__":
    write_camie_repo(Path(sys.argv[1]))
