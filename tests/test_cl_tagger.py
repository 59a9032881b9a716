"""cl_tagger on a tiny model in its published layout (``model.onnx`` with logits + ``tag_mapping.json``).

dghs-imgutils has no cl_tagger, so the comparison is with the published front-end's steps
written out here with PIL and numpy (white square pad, bicubic 448, / 255, NCHW, the raw graph
on onnxruntime, a numpy sigmoid, ``p >= 0.45``), not with a peer tool's recorded outputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from conftest import ANIME36
from test_hub import hub_env, prefill  # noqa: F401 (fixture)

ODD = Path(__file__).parent / "fixtures" / "kohya" / "images"
TAGS = [("general", "Rating"), ("sensitive", "Rating"), ("1girl", "General"), ("solo", "General"),
        ("long_hair", "General"), ("smile", "General"), ("sky", "General"), ("hatsune_miku", "Character"),
        ("vocaloid", "Copyright"), ("some_artist", "Artist"), ("highres", "Meta"), ("best_quality", "Quality"),
        ("model_x", "Model")]


def build(path: Path, seed: int = 17) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    t = len(TAGS)
    wc = rng.normal(0, 0.03, (4, 3, 16, 16)).astype(np.float32)
    bc = rng.normal(0.1, 0.2, 4).astype(np.float32)
    wh = rng.normal(0, 0.8, (t, 4 * 7 * 7)).astype(np.float32)
    bh = rng.normal(0, 0.5, t).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["pixel_values", "w", "b"], ["c"], kernel_shape=[16, 16], strides=[16, 16]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
         helper.make_node("Flatten", ["p"], ["f"], axis=1),
         helper.make_node("Gemm", ["f", "hw", "hb"], ["logits"], transB=1)],
        "tiny_cl", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, 448, 448])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", t])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((wc, "w"), (bc, "b"), (wh, "hw"), (bh, "hb"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def mapping(form: str) -> dict:
    if form == "idx_to_tag":
        return {"idx_to_tag": {str(i): n for i, (n, _) in enumerate(TAGS)}, "tag_to_category": dict(TAGS)}
    if form == "nested":
        return {str(i): {"tag": n, "category": c} for i, (n, c) in enumerate(TAGS)}
    out: dict = {"names": [n for n, _ in TAGS]}
    for i, (_, c) in enumerate(TAGS):
        out.setdefault(c.lower(), []).append(i)
    return out


def front_end(path: Path) -> np.ndarray:
    """The published front-end's preprocessing, written out."""
    img = Image.open(path)
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.split()[3])
        img = bg
    side = max(img.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    arr = np.asarray(canvas.resize((448, 448), Image.BICUBIC), np.float32) / 255.0
    return arr.transpose(2, 0, 1)[None]


@pytest.mark.parametrize("form", ["idx_to_tag", "nested", "names"])
def test_equal_to_the_published_front_end(form, hub_env, monkeypatch, tmp_path) -> None:  # noqa: F811
    from illust2vec.models.loading import load_model

    src = tmp_path / "src"
    src.mkdir()
    build(src / "model.onnx")
    (src / "tag_mapping.json").write_text(json.dumps(mapping(form)))
    prefill(hub_env["cache"], "cella110n/cl_tagger",
            {f"cl_tagger_1_02/{n}": (src / n).read_bytes() for n in ("model.onnx", "tag_mapping.json")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("cl-tagger-1.02", task="tag", exif_orientation="ignore")  # the front-end does not rotate
    assert model.tags.category_names == ("rating", "general", "character", "copyright", "artist", "meta", "quality",
                                         "model")
    raw = ort.InferenceSession(str(src / "model.onnx"), providers=["CPUExecutionProvider"])
    pics = [ANIME36 / "00.jpg", ANIME36 / "31.jpg", *(ODD / n for n in ("odd_rgba.png", "odd_palette_transparent.png",
                                                                        "odd_grey.png", "odd_300x700.jpg",
                                                                        "odd_40x30.png", "odd_exif_rotated.jpg"))]
    got = model.predict_proba(pics)
    results = model.estimate_plausible_tags(pics, threshold=None)
    for path, p, res in zip(pics, got, results):
        logits = raw.run(None, {"pixel_values": front_end(path)})[0][0]
        want = 1 / (1 + np.exp(-logits.astype(np.float64)))
        np.testing.assert_allclose(p, want, atol=2e-6, err_msg=str(path))
        kept = sorted(n for (n, c), q in zip(TAGS, want) if c != "Rating" and q >= 0.45)
        assert sorted(t for cat, ts in res.items() if cat != "rating" for t, _ in ts) == kept, path


def test_bad_mapping_is_a_clear_error(tmp_path) -> None:
    from illust2vec.errors import ModelFormatError
    from illust2vec.models.families.cl_tagger import read_tag_mapping

    path = tmp_path / "tag_mapping.json"
    path.write_text(json.dumps({"0": {"tag": "a"}, "2": {"tag": "b"}}))
    with pytest.raises(ModelFormatError, match="indices"):
        read_tag_mapping(path)
    path.write_text(json.dumps({"tags": ["a"]}))
    with pytest.raises(ModelFormatError, match="not a cl_tagger tag mapping"):
        read_tag_mapping(path)
