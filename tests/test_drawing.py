"""io/drawing: the one module for the font, thumbnails, contact sheets and bar charts."""
from __future__ import annotations

import numpy as np
from PIL import Image

from illust2vec.io.drawing import bar_chart, contact_sheet, font, thumbnail


def test_thumbnail_fits_the_box_from_a_path_an_array_and_a_transparent_picture(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 100), (10, 200, 30)).save(path)
    assert thumbnail(path, 64).size == (64, 16)
    assert thumbnail(np.zeros((50, 20, 3), np.uint8), 64).size == (20, 50)  # never enlarged
    clear = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    px = thumbnail(clear, 16).getpixel((8, 8))
    assert px == (255, 255, 255)  # transparency onto white


def test_contact_sheet_lays_out_cells_and_marks_the_unreadable_one(tmp_path):
    good = tmp_path / "a.png"
    Image.new("RGB", (80, 80), (0, 0, 255)).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a picture")
    sheet = contact_sheet([("a.png", good), ("broken.jpg", bad), ("none", None)], cell=64, columns=3, pad=0,
                          caption_lines=1)
    assert sheet.size == (3 * 64, 64 + 14)
    arr = np.asarray(sheet)
    assert tuple(arr[32, 32]) == (0, 0, 255)  # the picture, centred in its cell
    assert tuple(arr[5, 64 + 5]) == (200, 200, 200) and tuple(arr[5, 128 + 5]) == (200, 200, 200)
    dark = contact_sheet([("x" * 200, good)], cell=32, dark=True, title="t")
    assert tuple(np.asarray(dark)[1, 1]) == (40, 40, 40)


def test_bar_chart_draws_each_bar_in_its_colour():
    img = bar_chart([("smile", 1.0, "10 (100%)", (70, 130, 180)), ("hat", 0.5, "5 (50%)", (200, 80, 80))],
                    "top 2", label_width=100, bar_width=200)
    arr = np.asarray(img)
    assert ((arr == (70, 130, 180)).all(axis=2)).sum() > ((arr == (200, 80, 80)).all(axis=2)).sum() > 0
    assert font(12) is not None and font() is not None
