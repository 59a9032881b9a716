"""PNG renderer on the anime36 illustrations: every image once, inside the canvas, no overlaps."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from illust2vec.maps.grid import snap_to_grid
from illust2vec.maps.reduce import reduce
from illust2vec.maps.options import RenderOptions
from illust2vec.maps.render import remove_overlaps, render_map

from conftest import SHARED  # noqa: E402
ANIME = SHARED / "data" / "anime36"


@pytest.fixture(scope="module")
def anime():
    paths = sorted(ANIME.glob("*.jpg"))
    assert len(paths) == 36
    small = [np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), np.float32)
             for p in paths]
    feats = np.stack([s.ravel() for s in small])
    pos = reduce(feats, method="tsne", seed=0)  # a real clumpy layout
    return paths, pos


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _check_every_image_once(png: Path, result, paths):
    im = Image.open(png).convert("RGB")
    assert im.size == result.size
    w, h = im.size
    rects = result.rects
    assert rects.shape == (len(paths), 4)
    # inside the canvas
    assert (rects[:, 0] >= 0).all() and (rects[:, 1] >= 0).all()
    assert (rects[:, 2] <= w).all() and (rects[:, 3] <= h).all()
    # no image covers another
    for i, j in itertools.combinations(range(len(rects)), 2):
        assert not _overlap(rects[i], rects[j]), (paths[i].name, paths[j].name)
    # every frame has its own colour, and the picture inside is that image and no other
    assert len(set(result.colors)) == len(paths)
    arr = np.asarray(im, dtype=np.float32)
    fw = result.frame_width
    originals = [Image.open(p).convert("RGB") for p in paths]
    for i, (x0, y0, x1, y1) in enumerate(rects):
        assert tuple(arr[y0, x0].astype(int)) == result.colors[i]
        assert tuple(arr[y1 - 1, x1 - 1].astype(int)) == result.colors[i]
        crop = arr[y0 + fw : y1 - fw, x0 + fw : x1 - fw]
        size = (crop.shape[1], crop.shape[0])
        errors = [np.mean((np.asarray(o.resize(size, Image.Resampling.BILINEAR), np.float32) - crop) ** 2)
                  for o in originals]
        assert int(np.argmin(errors)) == i, paths[i].name
        assert errors[i] < 150  # the same picture, up to resampling


def test_png_of_anime36_shows_every_image_once_inside_canvas(tmp_path, anime):
    paths, pos = anime
    out = tmp_path / "map.png"
    labels = [p.stem for p in paths]  # one label per image: 36 distinct frame colours
    res = render_map(out, pos, paths, labels=labels, options=RenderOptions(title="anime36", max_size=2048))
    assert max(res.size) <= 2048
    assert res.failed == []
    _check_every_image_once(out, res, paths)
    # the layout follows the map: left-most point on the map is drawn left of the right-most one
    left, right = int(np.argmin(pos[:, 0])), int(np.argmax(pos[:, 0]))
    assert res.rects[left, 0] < res.rects[right, 0]


def test_grid_png_has_no_overlaps_and_uses_the_cells(tmp_path, anime):
    paths, pos = anime
    layout = snap_to_grid(pos)
    out = tmp_path / "grid.png"
    res = render_map(out, pos, paths, labels=[p.stem for p in paths], grid=layout, options=RenderOptions(max_size=1500))
    _check_every_image_once(out, res, paths)
    # same column -> same x centre, same row -> same y centre
    cx = (res.rects[:, 0] + res.rects[:, 2]) / 2
    cy = (res.rects[:, 1] + res.rects[:, 3]) / 2
    for c in range(layout.cols):
        m = layout.cells[:, 0] == c
        if m.sum() > 1:
            assert np.ptp(cx[m]) <= 1
    for r in range(layout.rows):
        m = layout.cells[:, 1] == r
        if m.sum() > 1:
            assert np.ptp(cy[m]) <= 1


def test_canvas_is_bounded_for_many_images_and_bad_files_become_placeholders(tmp_path):
    n = 3000
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((n, 2))
    colours = rng.integers(0, 255, size=(n, 3))
    calls = []

    def thumb(i: int):
        calls.append(i)
        if i == 7:
            return tmp_path / "missing.png"
        return Image.new("RGB", (40 + i % 30, 30), tuple(int(c) for c in colours[i]))

    res = render_map(tmp_path / "big.png", pos, thumb, options=RenderOptions(max_size=1024), labels=[str(i % 50) for i in range(n)])
    w, h = res.size
    assert w <= 1024 and h <= 1024
    assert (res.rects[:, 0] >= 0).all() and (res.rects[:, 2] <= w).all()
    assert (res.rects[:, 1] >= 0).all() and (res.rects[:, 3] <= h).all()
    assert sorted(calls) == list(range(n))  # each thumbnail loaded once, lazily
    assert res.failed == [7]
    assert Image.open(tmp_path / "big.png").size == (w, h)


def test_remove_overlaps_separates_coincident_boxes():
    x = np.array([10.0, 10.0, 10.0, 200.0])
    y = np.array([10.0, 10.0, 11.0, 200.0])
    nx, ny = remove_overlaps(x, y, 20, (0, 0, 300, 300))
    r = np.round(np.column_stack([nx, ny, nx + 20, ny + 20]))
    for i, j in itertools.combinations(range(4), 2):
        assert not _overlap(r[i], r[j])
    assert (nx >= 0).all() and (nx <= 300).all()
