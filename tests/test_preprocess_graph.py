"""In-graph preprocessing (ONNX Runtime, CPU provider) equals the CPU preprocessing bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import ANIME36, I2V_FIXTURES

from illust2vec.models.families import effnet

from illust2vec.models.families import wd
from illust2vec.errors import Illust2VecError
from illust2vec.io.images import load_image
from illust2vec.prep.preprocess import I2V_MEAN_BGR, I2V_RECIPE, InputRecipe, preprocess
from illust2vec.prep.graph import (
    GraphPreprocessor,
    pillow_coefficients,
    preprocess_in_graph,
)

RECIPES = {
    "i2v": I2V_RECIPE,
    "i2v-aa": InputRecipe(size=(224, 224), mean=I2V_MEAN_BGR, resize="skimage-bilinear-aa"),
    "effnet": effnet.recipe(),
    "wd-448": wd.wd_recipe((448, 448)),
    "skimage-nhwc-rgb-std": InputRecipe(size=(61, 47), layout="NHWC", channel_order="RGB",
                                        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255),
    "pil-lanczos-nhwc": InputRecipe(size=(50, 70), resize="pil-lanczos", channel_order="RGB", layout="NHWC"),
    "pil-area-padded": InputRecipe(size=(50, 70), resize="pil-area", pad_to_square=True, pad_color=(0, 128, 255)),
    "skimage-nchw-rgb-padded": InputRecipe(size=(33, 90), layout="NCHW", channel_order="RGB", pad_to_square=True,
                                           pad_color=(0, 128, 255), mean=(10.0, 20.0, 30.0)),
    "skimage-nhwc-bgr-padded": InputRecipe(size=(50, 50), layout="NHWC", channel_order="BGR", pad_to_square=True),
    "pil-bilinear-scaled": InputRecipe(size=(33, 90), resize="pil-bilinear", scale=1 / 255,
                                       mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25)),
}

# shrinking, enlarging, both at once, odd sizes, the target size itself, single pixels and lines
SHAPES = [(256, 256), (300, 200), (200, 300), (80, 50), (224, 224), (448, 448), (513, 130), (1, 1), (1, 7),
          (7, 1), (2, 500), (61, 47)]


def bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    np.testing.assert_array_equal(actual.view(np.uint8), expected.view(np.uint8))  # signs of zeros too


@pytest.fixture(scope="module")
def preprocessors():
    return {name: GraphPreprocessor(recipe) for name, recipe in RECIPES.items()}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_random_sizes_equal_the_cpu_path(name, preprocessors):
    recipe, prep = RECIPES[name], preprocessors[name]
    rng = np.random.default_rng(len(name))
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in SHAPES]
    images.append(np.full((90, 40, 3), 77, np.uint8))  # constant: min == max
    images.append(np.zeros((40, 90, 3), np.uint8))
    ramp = np.linspace(3, 250, 120 * 90 * 3).reshape(120, 90, 3)
    images.append(ramp.astype(np.uint8))  # no 0 and no 255: the border correction matters
    bits_equal(preprocess_in_graph(images, recipe, preprocessor=prep), preprocess(images, recipe))


@pytest.mark.parametrize("name", ["i2v", "i2v-aa", "effnet", "wd-448"])
def test_anime36_equals_the_cpu_path(name, preprocessors):
    paths = sorted(ANIME36.glob("*.jpg"))
    if not paths:
        pytest.skip(f"{ANIME36} is missing (the shared data set)")
    recipe = RECIPES[name]
    n_crops = 6
    if recipe.resize.startswith("pil"):
        paths, n_crops = paths[::6], 3  # Pillow's float64 products are slower on a CPU; 6 pictures show it
    images = [load_image(p) for p in paths]
    # the originals (512x512) and crops of other shapes, as collections have them
    images += [img[: 100 + 37 * i, : 480 - 29 * i] for i, img in enumerate(images[:n_crops])]
    bits_equal(preprocess_in_graph(images, recipe, preprocessor=preprocessors[name]), preprocess(images, recipe))


def test_i2v_fixture_images_equal_the_cpu_path_and_the_reference_input(preprocessors):
    paths = sorted((I2V_FIXTURES / "images").glob("*"))
    if not paths:
        pytest.skip(f"{I2V_FIXTURES} is missing (the shared fixtures)")
    images = [load_image(p, alpha="drop") for p in paths]  # grey, RGBA, 80x50 (enlarging), 224x224 (no resize)
    got = preprocess_in_graph(images, I2V_RECIPE, preprocessor=preprocessors["i2v"])
    bits_equal(got, preprocess(images, I2V_RECIPE))


def test_float16_output_is_the_rounded_float32(preprocessors):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (3, 300, 200, 3), dtype=np.uint8)
    half = GraphPreprocessor(I2V_RECIPE, output_dtype=np.float16).run(pixels)
    bits_equal(half, preprocess(list(pixels), I2V_RECIPE).astype(np.float16))


def test_pillow_coefficients_reproduce_pillow_on_one_axis():
    from PIL import Image

    rng = np.random.default_rng(9)
    for resize, filt in (("pil-bicubic", Image.Resampling.BICUBIC), ("pil-lanczos", Image.Resampling.LANCZOS),
                         ("pil-area", Image.Resampling.BOX), ("pil-bilinear", Image.Resampling.BILINEAR)):
        for n_in, n_out in ((64, 70), (130, 70), (7, 3), (1000, 224), (3, 448)):
            x = rng.integers(0, 256, (4, n_in), dtype=np.uint8)
            want = np.asarray(Image.fromarray(x, "L").resize((n_out, 4), filt))
            s = x.astype(np.float64) @ pillow_coefficients(n_in, n_out, resize).T
            got = np.clip(np.floor((s + 2.0**21) / 2.0**22), 0, 255)
            np.testing.assert_array_equal(got, want, err_msg=f"{resize} {n_in}->{n_out}")


def test_sizes_share_graph_variants(preprocessors):
    prep = preprocessors["i2v"]
    keys = {prep.plan(h, w).key for h in range(150, 400, 7) for w in range(150, 400, 11)}
    assert len(keys) <= 2  # rows or columns first (taps padded to 2): the graph is not rebuilt per size


def test_bad_pixels_are_refused_with_a_clear_error(preprocessors):
    prep = preprocessors["i2v"]
    with pytest.raises(Illust2VecError, match="uint8 .N, H, W, 3."):
        prep.run(np.zeros((2, 10, 10, 3), np.float32))
    with pytest.raises(Illust2VecError, match="uint8 .N, H, W, 3."):
        prep.run(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(Illust2VecError, match="float32 or float16"):
        GraphPreprocessor(I2V_RECIPE, output_dtype=np.float64)
