"""The held-out tiny WD-contract model and pictures of the kohya-ss / WD14 web UI parity fixtures.

``build_parity_model()`` is a seeded, position-sensitive 448x448 tagger in the real WD file
layout (``model.onnx`` + ``selected_tags.csv``): a 16x16 stride-16 convolution, ReLU, a 4x4
average pool and a classifier over the whole 7x7 grid, so probabilities move when pixels
move (a resize or an EXIF rotation shows).  Its tag list has what caption rules trip on:
emoticons of 3 and more characters, tags of 1-3 characters, ``name_(series)`` and
``name_(costume)_(series)`` characters.  ``tests/fixtures/kohya/README.md`` says how the
recorded captions were made from it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from conftest import SHARED
from onnx_support import checked_model, conv_stem, write_csv

ANIME36 = SHARED / "data" / "anime36"
FIXTURES = Path(__file__).parent / "fixtures" / "kohya"
SIZE = 448

#: (name, category code) in selected_tags.csv order: 4 ratings, general tags, character tags.
TAGS: list[tuple[str, int]] = [
    ("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
    ("1girl", 0), ("solo", 0), ("long_hair", 0), ("short_hair", 0), ("blue_eyes", 0), ("smile", 0),
    ("open_mouth", 0), ("hair_between_eyes", 0), ("^_^", 0), ("(o)_(o)", 0), ("0_0", 0), (":d", 0), ("v", 0),
    ("!?", 0), ("no_humans", 0), ("white_background", 0), ("simple_background", 0), ("looking_at_viewer", 0),
    ("blush", 0), ("hair_ornament", 0), ("thighhighs", 0), ("1boy", 0), ("multiple_girls", 0),
    ("school_uniform", 0),
    ("hatsune_miku", 4), ("kagamine_rin", 4), ("saber_(fate)", 4), ("artoria_pendragon_(lancer)_(fate)", 4),
    ("rem_(re:zero)", 4),
]
#: Pictures of the fixtures: a third of anime36 and the odd ones in tests/fixtures/kohya/images.
ANIME36_PICKS = ("00.jpg", "03.jpg", "10.jpg", "13.jpg", "20.jpg", "23.jpg", "30.jpg", "33.jpg", "40.jpg",
                 "43.jpg", "50.jpg", "53.jpg")
REPO = "parity/wd-tiny-tagger"
WEIGHT_SD = 0.02


def write_selected_tags(path: Path) -> Path:
    return write_csv(path, ["tag_id", "name", "category", "count"],
                     ([2000 + i, name, cat, 9000 - i] for i, (name, cat) in enumerate(TAGS)))


def build_parity_model(seed: int = 25):
    """The ONNX graph (``onnx.ModelProto``) of the held-out tagger."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    d, t = 6, len(TAGS)
    wc = rng.normal(0, 0.004, (d, 3, 16, 16)).astype(np.float32)
    bc = rng.normal(0, 1.0, d).astype(np.float32)
    wh = rng.normal(0, WEIGHT_SD, (t, d * 7 * 7)).astype(np.float32)
    # logits centred on a mid-grey picture: each tag's probability crosses the thresholds on some pictures
    grey = np.repeat(np.maximum(wc.sum(axis=(1, 2, 3)) * 128.0 + bc, 0), 7 * 7)
    bh = (rng.normal(-0.5, 0.6, t) - wh.astype(np.float64) @ grey).astype(np.float32)
    name = "input_1:0"
    graph = helper.make_graph(
        [
            *conv_stem(name, 4, nhwc=True),
            helper.make_node("Gemm", ["f", "head.w", "head.b"], ["logits"], transB=1),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "parity_wd",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", t])],
        initializer=[numpy_helper.from_array(wc, "conv.w"), numpy_helper.from_array(bc, "conv.b"),
                     numpy_helper.from_array(wh, "head.w"), numpy_helper.from_array(bh, "head.b")],
    )
    return checked_model(graph)


def write_parity_model(folder: Path) -> Path:
    """``folder/model.onnx`` + ``folder/selected_tags.csv``; returns ``folder``."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(build_parity_model(), str(folder / "model.onnx"))
    write_selected_tags(folder / "selected_tags.csv")
    return folder


def copy_pictures(dest: Path) -> list[Path]:
    """The fixture pictures, copied into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ANIME36_PICKS:
        out.append(Path(shutil.copy(ANIME36 / name, dest / name)))
    for src in sorted((FIXTURES / "images").iterdir()):
        out.append(Path(shutil.copy(src, dest / src.name)))
    return out


def make_odd_pictures(dest: Path) -> None:
    """The odd pictures of the fixtures (run once; the files are committed, so encoders cannot drift)."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    base = Image.open(ANIME36 / "01.jpg").convert("RGB")
    rgba = base.resize((360, 360)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 360, dtype=np.uint8), (360, 1))
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(dest / "odd_rgba.png")
    pal = Image.open(ANIME36 / "02.jpg").convert("RGB").resize((300, 300)).quantize(64)
    pal.info["transparency"] = 0
    pal.save(dest / "odd_palette_transparent.png", transparency=0)
    Image.open(ANIME36 / "04.jpg").convert("L").save(dest / "odd_grey.png")
    Image.open(ANIME36 / "05.jpg").resize((400, 400)).convert("CMYK").save(dest / "odd_cmyk.jpg", quality=80)
    Image.open(ANIME36 / "11.jpg").resize((40, 30)).save(dest / "odd_40x30.png")
    Image.open(ANIME36 / "12.jpg").resize((300, 700)).save(dest / "odd_300x700.jpg", quality=90)
    Image.open(ANIME36 / "14.jpg").resize((896, 896)).save(dest / "odd_896.jpg", quality=80)
    Image.open(ANIME36 / "15.jpg").resize((448, 448)).save(dest / "odd_448.jpg", quality=80)
    Image.open(ANIME36 / "21.jpg").resize((1000, 700)).save(dest / "odd_1000x700.webp", quality=70)
    rotated = Image.open(ANIME36 / "22.jpg").resize((500, 380))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    rotated.save(dest / "odd_exif_rotated.jpg", exif=exif.tobytes(), quality=90)
