"""The fast uint8 path of preprocess and load_image computes exactly what the general path does."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from illust2vec.prep import preprocess as pp
from illust2vec.io.images import _rgb_array, load_image
from illust2vec.prep.preprocess import I2V_MEAN_BGR, I2V_RECIPE, InputRecipe, preprocess, preprocess_one

from conftest import ANIME36  # noqa: E402

RECIPES = {
    "i2v": I2V_RECIPE,
    "i2v-aa": InputRecipe(size=(224, 224), mean=I2V_MEAN_BGR, resize="skimage-bilinear-aa"),
    "nhwc-rgb-scaled": InputRecipe(
        size=(61, 47), layout="NHWC", channel_order="RGB", mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), scale=1 / 255,
    ),
    "nchw-rgb-padded": InputRecipe(size=(33, 90), layout="NCHW", channel_order="RGB", pad_to_square=True,
                                   pad_color=(0, 128, 255), mean=(10.0, 20.0, 30.0)),
    "nhwc-bgr-padded": InputRecipe(size=(50, 50), layout="NHWC", channel_order="BGR", pad_to_square=True),
}

# (height, width): shrinking, enlarging, both at once, odd sizes, single pixels and lines
SHAPES = [
    (256, 256), (512, 512), (1400, 1000), (1000, 1400), (257, 255), (225, 223), (223, 225),
    (300, 17), (17, 300), (80, 50), (3, 3), (1, 1), (1, 7), (7, 1), (2, 500), (672, 672), (448, 224),
]


def reference(image: np.ndarray, recipe: InputRecipe) -> np.ndarray:
    """The general (dtype-agnostic) path, as preprocess_one computed it before the fast path."""
    out = np.empty(recipe.input_shape, dtype=np.float32)
    pp._preprocess_into(image, recipe, out, fast=False)
    return out


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    # also the sign of zeros and any NaN payloads: identical bit patterns
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


def real_crop(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A real illustration resized (Pillow) to ``shape``: smooth areas, edges, flat backgrounds."""
    paths = sorted(ANIME36.glob("*.jpg"))
    with Image.open(paths[seed % len(paths)]) as img:
        return np.asarray(img.convert("RGB").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)).copy()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_fast_path_equals_general_path_on_real_and_random_images(name):
    recipe = RECIPES[name]
    rng = np.random.default_rng(len(name))
    for i, shape in enumerate(SHAPES):
        images = [
            real_crop(shape, i),
            rng.integers(0, 256, shape + (3,), dtype=np.uint8),
            # a narrow value range above 0: the border correction of enlarging is used
            rng.integers(97, 131, shape + (3,), dtype=np.uint8),
        ]
        for image in images:
            expected = reference(image, recipe)
            got = preprocess_one(image, recipe)
            assert_bits_equal(got, expected)
            prepared = pp._prepared_hwc3(image, recipe)  # padded to a square if the recipe asks
            if prepared.shape[:2] != recipe.size and image.min() != image.max():
                # the fast path really ran (the general path is only for other dtypes and trivial cases)
                dst = np.empty(recipe.input_shape, dtype=np.float32)
                assert pp._fast_into(prepared, recipe, dst)
                assert_bits_equal(dst, expected)


def test_fast_path_with_numpy_row_pass(monkeypatch):
    """Where scipy's sparse kernel is unavailable (or not exact), the numpy row pass gives the same bits."""
    monkeypatch.setattr(pp, "_sparse_rows_kernel", lambda: None)
    rng = np.random.default_rng(7)
    for shape in [(256, 256), (1000, 700), (700, 1000), (50, 80), (1, 9)]:
        for recipe in (I2V_RECIPE, RECIPES["i2v-aa"], RECIPES["nhwc-rgb-scaled"]):
            image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
            assert_bits_equal(preprocess_one(image, recipe), reference(image, recipe))


def test_sparse_row_kernel_is_exact_here():
    kernel = pp._sparse_rows_kernel()
    if kernel is None:
        pytest.skip("scipy's csr_matvecs is not available or not exact on this build")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (513, 40), dtype=np.uint8).astype(np.float32)
    for n_out, aa in ((224, False), (224, True), (1001, False)):
        idx, w, _ = pp._axis_taps(513, n_out, aa)
        want = np.empty((n_out, 40), dtype=np.float32)
        pp._row_pass_numpy(x, idx, w, want)
        got = np.zeros((n_out, 40), dtype=np.float32)
        k = idx.shape[1]
        kernel(n_out, 513, 40, np.arange(0, n_out * k + 1, k, dtype=np.int32), idx.astype(np.int32).ravel(),
               w.ravel(), x.ravel(), got.ravel())
        assert_bits_equal(got, want)


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_grey_alpha_palette_and_array_inputs():
    """Inputs that reach preprocess as other shapes or through load_image's conversions."""
    base = real_crop((181, 243), 5)
    rgba = np.dstack([base, np.linspace(0, 255, 243, dtype=np.uint8)[None, :].repeat(181, 0)])
    pil = Image.fromarray(base)
    sources = {
        "grey png": png_bytes(pil.convert("L")),
        "grey+alpha png": png_bytes(Image.fromarray(rgba).convert("LA")),
        "rgba png": png_bytes(Image.fromarray(rgba)),
        "palette png": png_bytes(pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=37)),
        "palette png with transparency": png_bytes(pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
                                                   transparency=3),
        "1-bit png": png_bytes(pil.convert("1")),
        "one pixel": png_bytes(Image.new("RGB", (1, 1), (200, 10, 30))),
    }
    for name, data in sources.items():
        for alpha in ("white", "drop"):
            image = load_image(data, alpha=alpha)
            assert image.dtype == np.uint8 and image.shape[2] == 3, name
            for recipe in (I2V_RECIPE, RECIPES["nhwc-rgb-scaled"]):
                assert_bits_equal(preprocess_one(image, recipe), reference(image, recipe))
    # arrays preprocess accepts directly: (H, W) and (H, W, 1) grey, RGBA (alpha ignored), float
    grey = base[:, :, 1]
    for image in (grey, grey[:, :, None], rgba, base.astype(np.float32), base[::2, ::3]):
        assert_bits_equal(preprocess_one(image, I2V_RECIPE), reference(image, I2V_RECIPE))


def test_constant_and_same_size_images():
    for image in (np.full((300, 200, 3), 77, np.uint8), np.zeros((5, 9, 3), np.uint8),
                  real_crop((224, 224), 2)):
        assert_bits_equal(preprocess_one(image, I2V_RECIPE), reference(image, I2V_RECIPE))


def test_out_parameter_writes_in_place():
    images = [real_crop((256, 256), 1), real_crop((300, 170), 2)]
    batch = np.full((2, *I2V_RECIPE.input_shape), np.nan, dtype=np.float32)
    for i, image in enumerate(images):
        got = preprocess_one(image, I2V_RECIPE, out=batch[i])
        assert np.shares_memory(got, batch[i])
        assert_bits_equal(batch[i], reference(image, I2V_RECIPE))
    row = np.empty(I2V_RECIPE.input_shape, dtype=np.float32)
    assert preprocess_one(images[0], I2V_RECIPE, out=row) is row
    assert_bits_equal(preprocess(images, I2V_RECIPE), batch)
    with pytest.raises(ValueError, match="float32"):
        preprocess_one(images[0], I2V_RECIPE, out=np.empty(I2V_RECIPE.input_shape, dtype=np.float16))
    with pytest.raises(ValueError, match=r"\(3, 224, 224\)"):
        preprocess_one(images[0], I2V_RECIPE, out=np.empty((224, 224, 3), dtype=np.float32))


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (256, 256), (1000, 13), (23000, 2)])
def test_rgb_array_equals_pillows_own_conversion(size):
    """load_image's single-copy RGB extraction gives Pillow's bytes (incl. lines longer than one 64 KiB piece)."""
    rng = np.random.default_rng(size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    got = _rgb_array(img)
    assert got.flags.c_contiguous and got.flags.writeable and got.shape == pixels.shape
    np.testing.assert_array_equal(got, np.asarray(img))
    np.testing.assert_array_equal(got, pixels)


def test_load_image_real_jpegs_equal_pillow():
    for path in sorted(ANIME36.glob("*.jpg"))[:6]:
        with Image.open(path) as img:
            np.testing.assert_array_equal(load_image(path), np.asarray(img.convert("RGB")))


def test_linear_taps_equal_the_general_tap_builder():
    """The lean per-size tap builder (no prefilter) returns the general builder's arrays, bit for bit."""
    sizes_in = list(range(1, 70)) + [223, 224, 225, 256, 257, 333, 511, 512, 513, 672, 1000, 1023, 1400, 4001]
    for n_in in sizes_in:
        for n_out in (1, 2, 3, 7, 64, 224, 225, 448):
            lean = pp._linear_taps(n_in, n_out)
            general = pp._filtered_taps(n_in, n_out, 0.0, 0)
            for a, b in zip(lean, general):
                assert a.dtype == b.dtype and a.shape == b.shape, (n_in, n_out)
                np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
