"""The area filter (``--resize area``) against OpenCV's INTER_AREA, and the pixel-path switches."""
from __future__ import annotations

import numpy as np
import pytest

from illust2vec.prep.area import resize_area

cv2 = pytest.importorskip("cv2")  # opencv-python-headless, in the test extra: the reference only

SIZES_IN = [(448, 448), (449, 449), (500, 500), (512, 512), (640, 640), (896, 896), (897, 897), (1000, 1000),
            (1344, 1344), (600, 800), (1234, 987), (448, 900), (2000, 513), (37, 91)]
SIZES_OUT = [(448, 448), (224, 224), (300, 200), (17, 33), (1, 1)]


@pytest.mark.parametrize("channels", [3, 1])
def test_equals_opencv_inter_area_when_shrinking(channels) -> None:
    rng = np.random.default_rng(0)
    cases = 0
    for h, w in SIZES_IN:
        for oh, ow in SIZES_OUT:
            if oh > h or ow > w:
                continue
            x = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            if cases % 3 == 0:
                x = x // 64 * 64  # flat areas: many exact halves, where the rounding rule shows
            want = cv2.resize(x, (ow, oh), interpolation=cv2.INTER_AREA).reshape(oh, ow, channels)
            np.testing.assert_array_equal(resize_area(x, (oh, ow)), want, err_msg=f"{h}x{w} -> {oh}x{ow}")
            cases += 1
    assert cases > 50


def test_is_an_area_average_unlike_pillows_box() -> None:
    """pil-area (Pillow BOX) ignores partial coverage; area does not (3 -> 2 pixels)."""
    from illust2vec.prep.preprocess import InputRecipe, preprocess_one

    x = np.array([[0, 90, 180]], np.uint8)[:, :, None].repeat(3, axis=2)
    assert resize_area(x, (1, 2))[0, :, 0].tolist() == [30, 150]  # (0 + 90/2) / 1.5, (90/2 + 180) / 1.5
    box = preprocess_one(x, InputRecipe(size=(1, 2), layout="NHWC", channel_order="RGB", resize="pil-area"))
    assert box[0, :, 0].tolist() != [30.0, 150.0]
    up = resize_area(np.array([[0, 255]], np.uint8)[:, :, None], (1, 4))[0, :, 0].tolist()
    assert up == [0, 0, 255, 255]  # enlarging: each output pixel is still the mean of what it covers


def test_wd14_canvas_and_area_equal_the_extensions_opencv_calls() -> None:
    """--compat wd14-webui: white canvas of the input side for small pictures, INTER_AREA for large ones."""
    import dataclasses

    from illust2vec.models.compat import COMPAT_MODES, compat_recipe
    from illust2vec.models.families.wd import wd_recipe
    from illust2vec.prep.preprocess import preprocess_one

    recipe = compat_recipe(wd_recipe((64, 64)), COMPAT_MODES["wd14-webui"])
    assert recipe.pad_to_input and recipe.resize == "area" and recipe.exif_orientation == "ignore"
    rng = np.random.default_rng(1)
    for h, w in ((30, 40), (64, 20), (100, 70), (128, 128)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        side = max(h, w, 64)
        top, left = (side - h) // 2, (side - w) // 2
        square = cv2.copyMakeBorder(bgr, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT,
                                    value=[255, 255, 255])
        if side > 64:
            square = cv2.resize(square, (64, 64), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(preprocess_one(rgb, recipe), square.astype(np.float32))
    plain = dataclasses.replace(recipe, pad_to_input=False)  # without the canvas a small picture is enlarged
    assert not np.array_equal(preprocess_one(rgb[:30, :40], plain), preprocess_one(rgb[:30, :40], recipe))


def test_exif_orientation_switch(tmp_path) -> None:
    from PIL import Image

    from illust2vec.io.images import load_image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").shape == (40, 20, 3)  # upright, as viewers show it
    assert load_image(tmp_path / "r.jpg", exif_orientation="ignore").shape == (20, 40, 3)  # as stored


def test_threshold_compare_and_float32() -> None:
    from illust2vec.models.tags import TagTable, plausible_tags, resolve_thresholds

    table = TagTable(("a", "b", "c"), ("general", "general", "general"))
    prob = np.array([[np.float32(0.35), 0.5, 0.3499]], np.float32)
    kept = lambda thr: [t for t, _ in plausible_tags(prob, table, thr)[0]["general"]]  # noqa: E731
    assert kept(resolve_thresholds(table, 0.35)) == ["b"]
    assert kept(resolve_thresholds(table, 0.35, compare="ge")) == ["b"]  # float32(0.35) < 0.35 in double
    assert kept(resolve_thresholds(table, 0.35, compare="ge", float32=True)) == ["b", "a"]  # numpy 2's float32 compare
    assert kept(resolve_thresholds(table, 1.5, compare="ge")) == []  # above 1: off
