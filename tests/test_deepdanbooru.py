"""DeepDanbooru on a tiny model in the layout of its imgutils export, against dghs-imgutils.

``tests/fixtures/deepdanbooru/oracle.json``: imgutils 0.19's outputs on the same tiny model
(``tests/deepdanbooru_support.py``, seeded; the hash is checked); see the README beside it.
The letterbox recipe (resize so the longer side is 512, then a black canvas) is what is new.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ANIME36
from deepdanbooru_support import REPO, TAGS, digests, write_deepdanbooru_repo
from oracle_pixels import compared_keys
from test_hub import hub_env, prefill  # noqa: F401 (fixture)

FIXTURE = Path(__file__).parent / "fixtures" / "deepdanbooru"
ODD = Path(__file__).parent / "fixtures" / "kohya" / "images"
ORACLE = json.loads((FIXTURE / "oracle.json").read_text(encoding="utf-8"))


def test_equal_to_imgutils(hub_env, monkeypatch, tmp_path) -> None:  # noqa: F811
    from illust2vec.models.families.deepdanbooru import load_deepdanbooru_files
    from illust2vec.models.loading import load_model

    files = write_deepdanbooru_repo(tmp_path / "repo")
    assert digests(files) == ORACLE["model_sha256"], "the tiny model is not the one the oracle was made with"
    prefill(hub_env["cache"], REPO, files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("deepdanbooru", task="tag")
    upright = load_model("deepdanbooru", task="tag", exif_orientation="ignore")  # imgutils does not rotate
    d = tmp_path / "repo" / "deepdanbooru"
    real = load_deepdanbooru_files(d / "deepdanbooru.onnx", d / "deepdanbooru_tags.csv", real_names=True)
    assert model.outputs == ("prob",) and len(model.tags) == len(TAGS) and model.recipe.letterbox
    keys = compared_keys(ORACLE)  # all 46 on the oracle's Pillow
    worst = 0.0
    for key in keys:
        want = ORACLE["pictures"][key]
        path = (ANIME36 if key.startswith("anime36/") else ODD) / key.split("/", 1)[1]
        m = upright if "exif" in key else model
        prob = m.predict_proba([path])[0]
        worst = max(worst, float(np.abs(prob - np.array(want["prediction"], float)).max()))
        got = m.estimate_plausible_tags([path], threshold=None)[0]
        assert sorted(t for t, _ in got["rating"]) == want["rating"]
        flat = sorted(t for c, ts in got.items() if c != "rating" for t, _ in ts)
        assert flat == want["tags_default"], key
        at03 = m.estimate_plausible_tags([path], threshold=0.3)[0]
        assert sorted(t for c, ts in at03.items() if c != "rating" for t, _ in ts) == want["tags_0.3"], key
        if "exif" not in key:
            byreal = real.estimate_plausible_tags([path], threshold=None)[0]
            assert sorted(t for c, ts in byreal.items() if c != "rating" for t, _ in ts) == want["tags_real_names"]
    print(f"largest difference from imgutils: probability {worst:.2g}")
    assert worst <= 2e-6


@pytest.mark.parametrize("shape", [(300, 700), (700, 300), (40, 30), (512, 512), (1024, 333)])
def test_letterbox_places_the_picture_like_imgutils(shape) -> None:
    from PIL import Image

    from illust2vec.models.families.deepdanbooru import DDB_RECIPE
    from illust2vec.prep.preprocess import preprocess_one

    rng = np.random.default_rng(shape[0])
    pixels = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    h, w = shape
    scale = 512 / max(h, w)
    fh, fw = int(h * scale), int(w * scale)
    want = np.zeros((512, 512, 3), np.float32)  # written out: resize (bicubic), then a black canvas
    top, left = (512 - fh) // 2, (512 - fw) // 2
    want[top:top + fh, left:left + fw] = np.asarray(Image.fromarray(pixels).resize((fw, fh)), np.float32) / 255
    np.testing.assert_allclose(preprocess_one(pixels, DDB_RECIPE), want, atol=1e-7)
