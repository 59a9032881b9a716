"""Decoding real files made with Pillow, bad inputs, and path expansion."""
from __future__ import annotations

import io
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from illust2vec.errors import ImageDecodeError, Illust2VecError
from illust2vec.io.images import IMAGE_EXTENSIONS, iter_image_files, load_image

from conftest import SHARED  # noqa: E402
I2V_IMAGES = SHARED / "fixtures" / "i2v" / "images"
ANIME36 = SHARED / "data" / "anime36"


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- real data
def test_anime36_decodes():
    paths = sorted(ANIME36.glob("*.jpg"))
    assert len(paths) == 36
    for path in paths:
        arr = load_image(path)
        assert arr.shape == (512, 512, 3) and arr.dtype == np.uint8
        assert arr.flags.c_contiguous and arr.flags.writeable
        with Image.open(path) as img:
            np.testing.assert_array_equal(arr, np.asarray(img.convert("RGB")))


def test_fixture_rgba_with_alpha_dropped_equals_the_jpeg():
    jpeg = load_image(I2V_IMAGES / "miku.jpg")
    dropped = load_image(I2V_IMAGES / "miku_rgba.png", alpha="drop")
    np.testing.assert_array_equal(dropped, jpeg)
    with Image.open(I2V_IMAGES / "miku_rgba.png") as img:
        a = np.asarray(img)[:, :, 3]
    white = load_image(I2V_IMAGES / "miku_rgba.png")
    assert (a == 0).any()
    assert np.all(white[a == 0] == 255)
    np.testing.assert_array_equal(white[a == 255], jpeg[a == 255])


def test_fixture_grey_is_copied_to_three_channels():
    arr = load_image(I2V_IMAGES / "miku_gray.png")
    with Image.open(I2V_IMAGES / "miku_gray.png") as img:
        grey = np.asarray(img)
    assert arr.shape == grey.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(arr[:, :, c], grey)


# ---------------------------------------------------------------- modes
def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 tall
    stored[:, :] = (0, 0, 255)
    stored[:8, :8] = (255, 0, 0)  # red block top-left as stored
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # display = rotate 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, quality=95, exif=exif.tobytes())
    arr = load_image(path)
    assert arr.shape == (40, 20, 3)  # now 20 wide, 40 tall
    assert arr[2, -3, 0] > 200 and arr[2, -3, 2] < 60  # red block at the top-right
    assert arr[-3, 2, 2] > 200 and arr[-3, 2, 0] < 60  # blue elsewhere
    with Image.open(path) as raw:  # a PIL image passed in is made upright too
        assert load_image(raw).shape == (40, 20, 3)


def test_rgba_transparency_onto_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # transparent
    rgba[0, 1] = (0, 0, 0, 128)  # half black
    rgba[0, 2] = (200, 100, 50, 255)  # opaque
    rgba[1] = (255, 0, 0, 64)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    arr = load_image(path)
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[0, 1].tolist() == [127, 127, 127]  # 255 * 127 / 255
    assert arr[0, 2].tolist() == [200, 100, 50]
    expected = np.rint((np.array([255, 0, 0]) * 64 + 255 * (255 - 64)) / 255).astype(int)
    assert arr[1, 0].tolist() == expected.tolist()
    assert load_image(path, alpha="drop")[0, 0].tolist() == [10, 20, 30]


def test_la_transparency(tmp_path):
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((1, 1), (50, 255))
    path = tmp_path / "la.png"
    la.save(path)
    arr = load_image(path)
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[1, 1].tolist() == [50, 50, 50]
    assert load_image(path, alpha="drop")[0, 0].tolist() == [0, 0, 0]


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 255, 0, 200, 0, 0] + [0] * 762)
    p.putpixel((2, 2), 1)
    path = tmp_path / "pal.png"
    p.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and check.info.get("transparency") == 0
    arr = load_image(path)
    assert arr[0, 0].tolist() == [255, 255, 255]
    assert arr[2, 2].tolist() == [200, 0, 0]
    assert load_image(path, alpha="drop")[0, 0].tolist() == [0, 255, 0]


def test_gif_with_transparency(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 1)
    path = tmp_path / "t.gif"
    p.save(path, transparency=0)
    arr = load_image(path)
    assert arr[1, 1].tolist() == [255, 255, 255]
    assert arr[0, 0].tolist() == [0, 0, 255]


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # red
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    arr = load_image(path)
    assert arr.shape == (16, 16, 3)
    assert np.all(np.abs(arr.astype(int) - [255, 0, 0]) <= 8)


def test_16_bit_png_keeps_the_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 32768], [40000, 65280, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I")
    arr = load_image(path)
    np.testing.assert_array_equal(arr[:, :, 0], values >> 8)
    np.testing.assert_array_equal(arr[:, :, 0], arr[:, :, 2])


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    assert load_image(path)[4, 4].tolist() == [255, 0, 0]


def test_animated_webp_and_apng_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 0, 255), (255, 0, 0)]]
    for name in ["anim.png", "anim.webp"]:
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True)
        with Image.open(path) as check:
            assert getattr(check, "n_frames", 1) == 2, name
        assert load_image(path)[4, 4].tolist() == [0, 0, 255], name


def test_one_bit_image(tmp_path):
    img = Image.new("1", (5, 5), 0)
    img.putpixel((2, 3), 1)
    path = tmp_path / "bw.png"
    img.save(path)
    arr = load_image(path)
    assert arr[3, 2].tolist() == [255, 255, 255]
    assert arr[0, 0].tolist() == [0, 0, 0]


def test_float_and_32_bit_integer_pil_images(tmp_path):
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert f.mode == "F"
    assert load_image(f)[0, :, 0].tolist() == [0, 128, 255]  # 0-1 floats
    f = Image.fromarray(np.array([[0.0, 127.6, 300.0]], dtype=np.float32))
    assert load_image(f)[0, :, 0].tolist() == [0, 128, 255]  # 0-255 floats, clipped
    i32 = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))
    assert i32.mode == "I"
    assert load_image(i32)[0, :, 0].tolist() == [0, 100, 255]  # fits in 8 bits: as is
    path = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 512, 65535]], dtype=np.int32)).save(path)
    assert load_image(path)[0, :, 0].tolist() == [0, 2, 255]  # 16-bit data in an I image


def test_paths_with_spaces_and_non_ascii(tmp_path):
    d = tmp_path / "my pictures" / "画像 ñ"
    d.mkdir(parents=True)
    path = d / "ミク 1.png"
    Image.fromarray(noise(5, 6)).save(path)
    np.testing.assert_array_equal(load_image(path), noise(5, 6))
    np.testing.assert_array_equal(load_image(str(path)), noise(5, 6))
    assert iter_image_files([tmp_path]) == [path]


def test_bytes_and_pil_sources(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(noise(7, 9)).save(buf, format="PNG")
    np.testing.assert_array_equal(load_image(buf.getvalue()), noise(7, 9))
    np.testing.assert_array_equal(load_image(Image.fromarray(noise(7, 9))), noise(7, 9))
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_image(b"definitely not an image")
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


# ---------------------------------------------------------------- numpy input
def test_numpy_inputs():
    rgb = noise(4, 5)
    out = load_image(rgb)
    np.testing.assert_array_equal(out, rgb)
    assert out is not rgb  # never shares memory with the caller's array
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(load_image(grey), np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(load_image(grey[:, :, None]), load_image(grey))
    np.testing.assert_array_equal(load_image(rgb.astype(np.float32)), rgb)  # 0-255 floats
    np.testing.assert_array_equal(load_image(rgb / 255.0), rgb)  # 0-1 floats
    np.testing.assert_array_equal(load_image(rgb.astype(np.uint16) * 257), rgb)  # 16-bit
    assert load_image(np.array([[True, False]])).tolist() == [[[255] * 3, [0] * 3]]
    la = np.array([[[10, 0], [10, 255]]], dtype=np.uint8)
    assert load_image(la).tolist() == [[[255] * 3, [10] * 3]]
    rgba = np.concatenate([rgb, np.zeros((4, 5, 1), np.uint8)], axis=2)
    assert np.all(load_image(rgba) == 255)
    np.testing.assert_array_equal(load_image(rgba, alpha="drop"), rgb)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4, 5), np.uint8), np.zeros((4,), np.uint8), np.zeros((0, 4, 3), np.uint8),
    np.array([[np.nan, 1.0]]), np.zeros((2, 2), dtype=complex),
])
def test_bad_arrays(bad):
    with pytest.raises(ImageDecodeError, match="<array>"):
        load_image(bad)


# ---------------------------------------------------------------- bad files
def _assert_decode_error(path, *words):
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    for word in words:
        assert word in message.lower(), message
    assert isinstance(info.value, Illust2VecError)


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(noise(256, 256)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_decode_error(path, "truncated")


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(noise(256, 256)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_decode_error(path)


def test_corrupted_png_data(tmp_path):
    path = tmp_path / "bad.png"
    Image.fromarray(noise(64, 64)).save(path)
    data = bytearray(path.read_bytes())
    data[100:140] = b"\x00" * 40  # inside IDAT: zlib/CRC error
    path.write_bytes(bytes(data))
    _assert_decode_error(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _assert_decode_error(path, "empty")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am not a picture\n" * 10)
    _assert_decode_error(path, "not an image")


def test_missing_file_directory_and_unreadable(tmp_path):
    _assert_decode_error(tmp_path / "nope.png", "no such file")
    _assert_decode_error(tmp_path, "directory")
    a_file = tmp_path / "file.png"
    Image.fromarray(noise(2, 2)).save(a_file)
    _assert_decode_error(a_file / "inside.png", "cannot read")  # NotADirectoryError
    with pytest.raises(ImageDecodeError) as info:
        load_image(tmp_path / "nope.png")
    assert info.value.source == str(tmp_path / "nope.png") and info.value.reason == "no such file"


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs POSIX fifos")
def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    _assert_decode_error(fifo, "not a regular file")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root can read files without permission")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.png"
    Image.fromarray(noise(2, 2)).save(path)
    path.chmod(0)
    try:
        _assert_decode_error(path, "permission")
    finally:
        path.chmod(0o644)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge 1-bit image (the data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_without_allocating(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(30000, 30000))
    assert path.stat().st_size < 200
    between = tmp_path / "big.png"  # above our default limit, below Pillow's hard limit
    between.write_bytes(_png_claiming(12000, 12000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _assert_decode_error(path, "bomb")
    _assert_decode_error(between, "12000x12000", "bomb")
    # also when the caller lifts our limit: Pillow's own hard limit still applies
    with pytest.raises(ImageDecodeError, match="bomb"):
        load_image(path, max_pixels=None)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (after - before) * 1024 < 50 * 2**20  # KiB on Linux; a decoded bomb would be >100 MiB


def test_max_pixels_is_configurable(tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(noise(100, 100)).save(path)
    _assert_decode_error_kw(path, max_pixels=5000)
    assert load_image(path, max_pixels=10000).shape == (100, 100, 3)
    with pytest.raises(ImageDecodeError, match="limit"):
        load_image(Image.fromarray(noise(100, 100)), max_pixels=5000)


def _assert_decode_error_kw(path, **kw):
    with pytest.raises(ImageDecodeError, match="limit") as info:
        load_image(path, **kw)
    assert str(info.value).startswith(str(path))


def test_bad_alpha_argument():
    with pytest.raises(ValueError, match="alpha"):
        load_image(noise(2, 2), alpha="black")  # type: ignore[arg-type]


# ---------------------------------------------------------------- iter_image_files
@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "root"
    for rel in ["a.png", "b10.jpg", "b2.JPG", "notes.txt", "sub/c.webp", "sub/deeper/f.tif",
                ".hidden/d.png", ".e.png", "sub/readme.md"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return root


def test_iter_directory_recursive_natural_order(tree):
    got = iter_image_files([tree])
    assert got == [tree / "a.png", tree / "b2.JPG", tree / "b10.jpg", tree / "sub" / "c.webp",
                   tree / "sub" / "deeper" / "f.tif"]
    assert iter_image_files([tree], recursive=False) == [tree / "a.png", tree / "b2.JPG", tree / "b10.jpg"]


def test_iter_named_files_are_kept_and_order_of_arguments(tree):
    got = iter_image_files([tree / "sub", tree / "notes.txt", str(tree / "a.png")])
    assert got == [tree / "sub" / "c.webp", tree / "sub" / "deeper" / "f.tif", tree / "notes.txt", tree / "a.png"]


def test_iter_globs(tree):
    assert iter_image_files([str(tree / "*.png")]) == [tree / "a.png"]
    assert iter_image_files([str(tree / "b*")]) == [tree / "b2.JPG", tree / "b10.jpg"]
    assert iter_image_files([str(tree / "**" / "*.tif")]) == [tree / "sub" / "deeper" / "f.tif"]
    assert iter_image_files([str(tree / "s*")]) == [tree / "sub" / "c.webp", tree / "sub" / "deeper" / "f.tif"]
    assert iter_image_files([str(tree / "*.txt")]) == [tree / "*.txt"]  # matched no image: reported by caller


def test_iter_missing_paths_are_returned_and_duplicates_dropped(tree):
    missing = tree / "missing.png"
    got = iter_image_files([tree / "a.png", missing, tree, str(missing)])
    assert got[:2] == [tree / "a.png", missing]
    assert got.count(tree / "a.png") == 1 and got.count(missing) == 1
    assert len(got) == 6
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(missing)


def test_image_extensions():
    assert {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".jfif"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
