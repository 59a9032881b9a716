"""Preprocessing: the exact scikit-image / caffe resize, recipes, layouts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from illust2vec.io.images import load_image
from illust2vec.prep.preprocess import (
    I2V_MEAN_BGR,
    I2V_RECIPE,
    InputRecipe,
    preprocess,
    preprocess_one,
    resize_bilinear_skimage,
    resize_caffe,
)

from conftest import SHARED  # noqa: E402
I2V = SHARED / "fixtures" / "i2v"
ANIME36 = SHARED / "data" / "anime36"

skimage_transform = pytest.importorskip("skimage.transform")


def i2v_reference_input(img: Image.Image, *, anti_aliasing: bool) -> np.ndarray:
    """What illustration2vec's ``_forward`` feeds the network, computed with scikit-image.

    Follows i2v: ``np.asarray(img, float32)``, grey copied to 3 channels, alpha
    dropped, ``caffe.io.resize_image`` (min-max normalise, ``skimage resize(order=1,
    mode='constant')``, map back; constant image -> constant), RGB->BGR, minus the
    float64 mean in place on float32, NCHW.
    """
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    else:
        arr = arr[:, :, :3]
    lo, hi = arr.min(), arr.max()
    if hi > lo:
        std = (arr - lo) / (hi - lo)
        resized = skimage_transform.resize(
            std, (224, 224, 3), order=1, mode="constant", anti_aliasing=anti_aliasing
        )
        resized = resized * (hi - lo) + lo
    else:
        resized = np.full((224, 224, 3), lo, dtype=np.float32)
    batch = np.zeros((1, 224, 224, 3), dtype=np.float32)
    batch[0] = resized
    batch = batch[:, :, :, ::-1]
    batch -= np.array(I2V_MEAN_BGR)
    return batch.transpose(0, 3, 1, 2)[0]


# ---------------------------------------------------------------- resize parity
SIZES = [
    ((512, 512), (224, 224)),  # downscale
    ((80, 50), (224, 224)),  # upscale, non-square
    ((224, 224), (224, 224)),  # identity
    ((1, 7), (5, 3)),  # 1xN
    ((7, 1), (224, 224)),
    ((300, 17), (31, 400)),  # shrink one axis, grow the other
    ((1000, 333), (224, 224)),
    ((3, 3), (224, 224)),
    ((225, 223), (224, 224)),
    ((1500, 700), (224, 224)),  # wide Gaussian for anti-aliasing
]


@pytest.mark.parametrize("anti_aliasing", [False, True])
@pytest.mark.parametrize("src,dst", SIZES)
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_resize_matches_skimage(src, dst, channels, anti_aliasing):
    rng = np.random.default_rng(hash((src, dst, channels)) % 2**32)
    shape = src if channels is None else src + (channels,)
    image = rng.random(shape).astype(np.float32)
    expected = skimage_transform.resize(image, dst, order=1, mode="constant", anti_aliasing=anti_aliasing)
    got = resize_bilinear_skimage(image, dst, anti_aliasing=anti_aliasing)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("offset", [0.3, -0.8])
def test_resize_clip_like_skimage_when_range_excludes_cval(offset):
    # Upscaling blends the border with cval=0; scikit-image then clips to the
    # input range unless 0 is inside the output range.  Both cases.
    rng = np.random.default_rng(1)
    image = rng.random((40, 30, 3)) * 0.5 + offset
    expected = skimage_transform.resize(image, (100, 90), order=1, mode="constant", anti_aliasing=False)
    got = resize_bilinear_skimage(image, (100, 90))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_resize_hand_computed_border():
    # 1x2 -> 1x4: samples at -0.25, 0.25, 0.75, 1.25; outside counts as 0.
    image = np.array([[[-4.0], [8.0]]])
    got = resize_bilinear_skimage(image, (1, 4))[0, :, 0]
    np.testing.assert_allclose(got, [0.75 * -4, 0.75 * -4 + 0.25 * 8, 0.25 * -4 + 0.75 * 8, 0.75 * 8], atol=1e-6)
    # ... then clipped to the input range [4, 8] when that excludes 0
    got = resize_bilinear_skimage(np.array([[4.0, 8.0]]), (1, 4))[0]
    np.testing.assert_allclose(got, [4.0, 5.0, 7.0, 6.0], atol=1e-6)


def test_resize_integer_input_is_taken_as_values():
    image = np.random.default_rng(2).integers(0, 256, (60, 40, 3), dtype=np.uint8)
    expected = skimage_transform.resize(
        image.astype(np.float64), (30, 50), order=1, mode="constant", anti_aliasing=False
    )
    np.testing.assert_allclose(resize_bilinear_skimage(image, (30, 50)), expected, atol=1e-3)


def test_resize_caffe_constant_image():
    image = np.full((50, 70, 3), 77, dtype=np.uint8)
    out = resize_caffe(image, (224, 224))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    assert np.all(out == 77.0)


def test_resize_caffe_upscale_border_goes_to_min():
    # caffe.io.resize_image normalises to [0, 1] first, so the zero padding is
    # the image minimum, not 0.
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    image[0, 0] = 100
    out = resize_caffe(image, (8, 8))
    assert out.min() >= 100.0 - 1e-4 and out.max() <= 200.0 + 1e-4
    # bottom-right corner: samples at 7.5 / 4 - 0.5 = 1.375 in both axes, so pixel 1
    # weighs 0.625 per axis and the rest is the minimum: 100 + 0.625**2 * (200 - 100)
    np.testing.assert_allclose(out[-1, -1], 100 + 0.625**2 * 100, atol=1e-3)
    std = (image.astype(np.float32) - 100) / 100
    expected = skimage_transform.resize(std, (8, 8), order=1, mode="constant", anti_aliasing=False) * 100 + 100
    np.testing.assert_allclose(out, expected, atol=1e-4)


# ---------------------------------------------------------------- i2v fixtures
def fixture_images() -> list[Path]:
    order = json.loads((I2V / "reference.json").read_text())["order"]
    return [I2V / "images" / name for name in order]


@pytest.mark.parametrize("anti_aliasing", [False, True])
def test_i2v_fixture_images_match_original_preprocessing(anti_aliasing):
    recipe = I2V_RECIPE if not anti_aliasing else InputRecipe(
        size=(224, 224), mean=I2V_MEAN_BGR, resize="skimage-bilinear-aa"
    )
    paths = fixture_images()
    assert [p.name for p in paths] == sorted(p.name for p in (I2V / "images").iterdir())
    batch = preprocess([load_image(p, alpha="drop") for p in paths], recipe)
    assert batch.shape == (len(paths), 3, 224, 224) and batch.dtype == np.float32
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            expected = i2v_reference_input(img, anti_aliasing=anti_aliasing)
        np.testing.assert_allclose(batch[i], expected, rtol=0, atol=1e-3, err_msg=path.name)


def test_i2v_recipe_differs_from_antialiased_on_shrink():
    # sophie.png is 400x400: the anti-aliased resize must give a visibly different tensor
    image = load_image(I2V / "images" / "sophie.png", alpha="drop")
    aa = InputRecipe(size=(224, 224), mean=I2V_MEAN_BGR, resize="skimage-bilinear-aa")
    assert np.abs(preprocess_one(image, I2V_RECIPE) - preprocess_one(image, aa)).max() > 5.0


def test_same_size_image_is_not_resampled():
    image = load_image(I2V / "images" / "miku_224.png")
    out = preprocess_one(image, I2V_RECIPE)
    expected = image[:, :, ::-1].astype(np.float64).transpose(2, 0, 1) - np.array(I2V_MEAN_BGR)[:, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_anime36_sample_matches_original_preprocessing():
    paths = sorted(ANIME36.glob("*.jpg"))[:3]
    assert paths
    batch = preprocess([load_image(p) for p in paths], I2V_RECIPE)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            np.testing.assert_allclose(batch[i], i2v_reference_input(img, anti_aliasing=False), atol=1e-3)


# ---------------------------------------------------------------- recipes
def test_layout_channel_order_scale_mean_std():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    recipe = InputRecipe(size=(32, 48), layout="NHWC", channel_order="RGB", mean=mean, std=std, scale=1 / 255)
    out = preprocess_one(image, recipe)
    assert out.shape == (32, 48, 3)
    expected = (image / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, atol=1e-5)

    bgr = InputRecipe(size=(32, 48), layout="NCHW", channel_order="BGR")
    out = preprocess_one(image, bgr)
    assert out.shape == (3, 32, 48)
    np.testing.assert_array_equal(out[0], image[:, :, 2])
    np.testing.assert_array_equal(out[2], image[:, :, 0])


@pytest.mark.parametrize("method,pil", [
    ("pil-bilinear", Image.Resampling.BILINEAR),
    ("pil-bicubic", Image.Resampling.BICUBIC),
    ("pil-lanczos", Image.Resampling.LANCZOS),
    ("pil-area", Image.Resampling.BOX),
])
def test_pil_resize_methods(method, pil):
    image = np.random.default_rng(4).integers(0, 256, (90, 60, 3), dtype=np.uint8)
    recipe = InputRecipe(size=(40, 50), layout="NHWC", channel_order="RGB", resize=method)
    expected = np.asarray(Image.fromarray(image).resize((50, 40), pil), dtype=np.float32)
    np.testing.assert_array_equal(preprocess_one(image, recipe), expected)


def test_pad_to_square():
    image = np.zeros((20, 10, 3), dtype=np.uint8)
    recipe = InputRecipe(size=(20, 20), layout="NHWC", channel_order="RGB", resize="pil-bilinear",
                         pad_to_square=True, pad_color=(255, 0, 0))
    out = preprocess_one(image, recipe)
    np.testing.assert_array_equal(out[:, :5], np.broadcast_to([255.0, 0, 0], (20, 5, 3)))
    np.testing.assert_array_equal(out[:, 15:], np.broadcast_to([255.0, 0, 0], (20, 5, 3)))
    np.testing.assert_array_equal(out[:, 5:15], 0.0)


def test_grey_and_rgba_arrays_in_preprocess():
    grey = np.random.default_rng(5).integers(0, 256, (30, 30), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.zeros((30, 30, 1), np.uint8)], axis=2)
    ref = preprocess_one(rgb, I2V_RECIPE)
    np.testing.assert_array_equal(preprocess_one(grey, I2V_RECIPE), ref)
    np.testing.assert_array_equal(preprocess_one(rgba, I2V_RECIPE), ref)  # alpha ignored here
    np.testing.assert_array_equal(preprocess_one(rgb.astype(np.float32), I2V_RECIPE), ref)


def test_batch_out_parameter_and_mixed_sizes():
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(100, 80, 3), (224, 224, 3), (300, 500, 3)]]
    out = np.full((3, 3, 224, 224), np.nan, dtype=np.float32)
    res = preprocess(images, I2V_RECIPE, out=out)
    assert res is out and np.isfinite(out).all()
    for i, image in enumerate(images):
        np.testing.assert_array_equal(out[i], preprocess_one(image, I2V_RECIPE))
    with pytest.raises(ValueError, match="shape"):
        preprocess(images, I2V_RECIPE, out=np.empty((2, 3, 224, 224), np.float32))
    assert preprocess([], I2V_RECIPE).shape == (0, 3, 224, 224)


def test_recipe_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="nearest"):
        InputRecipe(size=(224, 224), resize="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layout"):
        InputRecipe(size=(224, 224), layout="CHW")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        InputRecipe(size=(0, 224))
    with pytest.raises(ValueError, match="mean"):
        InputRecipe(size=(224, 224), mean=(1.0, 2.0))  # type: ignore[arg-type]
    assert I2V_RECIPE.input_shape == (3, 224, 224)
    assert InputRecipe(size=(448, 448), layout="NHWC").input_shape == (448, 448, 3)


def test_preprocess_rejects_non_images():
    with pytest.raises(ValueError, match="shape"):
        preprocess_one(np.zeros((4, 4, 5), np.uint8), I2V_RECIPE)
