"""The interactive HTML map viewer (illust2vec.maps.viewer), driven in a real headless Chromium.

The browser tests use Debian's chromium through Playwright (never a downloaded
browser) on the 36 real illustrations in ../shared/data/anime36 laid out on a
synthetic 6x6 grid, so every thumbnail's screen position is known.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from illust2vec.errors import Illust2VecError
from illust2vec.maps.viewer import ViewerOptions, ViewerPoint, write_viewer

from conftest import SHARED  # noqa: E402
ANIME36 = SHARED / "data" / "anime36"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
XSS_NAME = "<img src=x onerror=window.__xss=1>.png"
XSS_TAG = "<script>window.__xss=2</script>"
XSS_CLUSTER = '"><img src=y onerror=window.__xss=3>'
FORMULA_NAME = '=HYPERLINK("http://example.invalid/","click"),13.jpg'  # a spreadsheet would run it
BG = np.array([0x17, 0x18, 0x1B], dtype=np.float64)
MATCH_RGB = np.array([255, 206, 84], dtype=np.float64)


# ----------------------------------------------------------------------------- data


def _anime36() -> list[Path]:
    files = sorted(ANIME36.glob("*.jpg"))
    if len(files) != 36:
        pytest.skip(f"{ANIME36} should hold 36 JPEGs (found {len(files)})")
    return files


def _points(files: list[Path], *, xss: bool = False) -> list[ViewerPoint]:
    """6x6 grid; character = first digit of the name, variant = second digit."""
    pts = []
    for k, f in enumerate(files):
        char, var = int(f.stem[0]), int(f.stem[1])
        tags = [("1girl", 0.97), (f"group{char}", 0.81), (f"variant{var}", 0.55)]
        path = f"anime36/{f.name}"
        if xss and k == 7:
            path = XSS_NAME
            tags = tags + [(XSS_TAG, 0.12)]
        if xss and k == 13:
            path = FORMULA_NAME
        pts.append(
            ViewerPoint(
                x=float(k % 6) * 10.0, y=float(k // 6) * 10.0, path=path,
                label=f"character {char}", cluster=char if char < 5 else -1,
                top_tags=tags, href=f.resolve().as_uri(),
            )
        )
    return pts


@pytest.fixture(scope="module")
def files() -> list[Path]:
    return _anime36()


@pytest.fixture(scope="module")
def thumbs(files) -> list[Image.Image]:
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(im.convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory, files, thumbs) -> dict:
    d = tmp_path_factory.mktemp("viewer")
    pts = _points(files, xss=True)
    names = {0: "group zero", 1: XSS_CLUSTER}
    quality = {"trustworthiness": 0.9312, "knn_preservation": 0.4123, "label_accuracy_map": 0.875}
    emb = write_viewer(d / "map.html", pts, thumbs, ViewerOptions(title="anime36 </title><script>window.__xss=4</script>"),
                       cluster_names=names, quality=quality)
    calls: list[int] = []

    def lazy(i: int) -> Image.Image:
        calls.append(i)
        return thumbs[i]

    ext = write_viewer(d / "ext.html", _points(files), lazy, ViewerOptions(embed=False, thumb_size=64))
    return {"embed": emb, "external": ext, "points": pts, "calls": calls, "dir": d}


# ----------------------------------------------------------------------------- Python side (no browser)


def _data_of(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="i2v-data">(.*?)</script>', html, re.S)
    assert m, "data element missing"
    return json.loads(m.group(1))


def test_html_escapes_user_strings(built):
    html = built["embed"].read_text(encoding="utf-8")
    assert XSS_NAME not in html and "<img" not in html
    assert "<script>window.__xss" not in html
    assert "</title><script>" not in html
    data = _data_of(html)  # the escaped JSON still decodes to the exact strings
    assert data["path"][7] == XSS_NAME
    assert XSS_TAG in data["tagNames"]
    assert [1, XSS_CLUSTER] in data["clusters"]
    # no network at view time: no external URLs for scripts, styles or images
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)


def test_lazy_thumbnails_called_once_each_and_files_written(built):
    assert sorted(built["calls"]) == list(range(36))
    files_dir = built["dir"] / "ext_files"
    js = sorted(p.name for p in files_dir.iterdir())
    assert js == ["hi-0000.js"]  # the full-resolution atlas lives beside the page
    html = built["external"].read_text(encoding="utf-8")
    assert 'id="i2v-hi-' not in html and 'id="i2v-base-0"' in html  # the overview stays inside


def test_thumbnail_keeps_aspect_letterboxed(tmp_path):
    wide = Image.new("RGB", (300, 100), (200, 30, 30))
    tall = Image.new("RGBA", (50, 200), (30, 200, 30, 255))
    pts = [ViewerPoint(0, 0, "wide.png"), ViewerPoint(1, 1, "tall.png")]
    out = write_viewer(tmp_path / "a.html", pts, [wide, tall], ViewerOptions(thumb_size=96))
    data = _data_of(out.read_text(encoding="utf-8"))
    assert data["size"][:4] == [96, 32, 32, 11]  # hi w, h; base w, h (32 px base cells)
    assert data["size"][4:6] == [24, 96]
    assert data["atlas"]["hiCell"] == 96 and data["atlas"]["baseCell"] == 32


def test_bad_input_is_reported(tmp_path):
    img = Image.new("RGB", (8, 8))
    with pytest.raises(Illust2VecError, match="2 thumbnails for 1 points"):
        write_viewer(tmp_path / "x.html", [ViewerPoint(0, 0, "a")], [img, img])
    with pytest.raises(Illust2VecError, match="non-finite position"):
        write_viewer(tmp_path / "x.html", [ViewerPoint(float("nan"), 0, "a")], [img])
    with pytest.raises(Illust2VecError, match="thumb_size"):
        write_viewer(tmp_path / "x.html", [ViewerPoint(0, 0, "a")], [img], ViewerOptions(thumb_size=4))
    with pytest.raises(Illust2VecError, match="not a PIL.Image"):
        write_viewer(tmp_path / "x.html", [ViewerPoint(0, 0, "a")], lambda i: "nope")
    assert not list(tmp_path.glob("x.html*"))


def test_unsafe_href_is_dropped(tmp_path):
    img = Image.new("RGB", (8, 8))
    pts = [ViewerPoint(0, 0, "a", href="javascript:alert(1)"), ViewerPoint(1, 0, "b", href="imgs/b.png"),
           ViewerPoint(2, 0, "c", href="file:///tmp/c.png")]
    data = _data_of(write_viewer(tmp_path / "h.html", pts, [img] * 3).read_text(encoding="utf-8"))
    assert data["href"] == [None, "imgs/b.png", "file:///tmp/c.png"]


# ----------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (bash .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """One viewer page with its console errors and every request it made recorded."""

    def __init__(self, browser, html: Path, hash_: str = "") -> None:
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

        def route(r):
            self.requests.append("route:" + r.request.url)
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(html.resolve().as_uri() + hash_)
        self.page.evaluate("() => window.illust2vecViewer.ready")
        self.settle()

    def settle(self) -> None:
        self.page.evaluate("() => window.illust2vecViewer.settled()")

    def hook(self, expr: str):
        return self.page.evaluate(f"() => window.illust2vecViewer.{expr}")

    def shot(self) -> np.ndarray:
        png = self.page.screenshot()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def open_page(browser):
    """A fresh page (own context) for a viewer file; console errors fail the test."""
    pages: list[Page] = []

    def make(html: Path, hash_: str = "") -> Page:
        p = Page(browser, html, hash_)
        pages.append(p)
        return p

    yield make
    for p in pages:
        errors = list(p.errors)
        p.close()
        assert errors == [], f"console errors: {errors}"


@pytest.fixture(scope="module")
def shared_page(browser, built):
    """The embedded map, opened once for the module (each browser start costs seconds)."""
    p = Page(browser, built["embed"])
    yield p
    p.close()


@pytest.fixture
def viewer(shared_page):
    """The shared page reset to its opening state: no search, selection, focus or tooltip; fitted."""
    p = shared_page
    p.page.mouse.move(640, 798)
    p.page.fill("#i2v-search", "")
    p.page.select_option("#i2v-colour", "label")
    if p.page.is_enabled("#i2v-sel-clear"):
        p.page.click("#i2v-sel-clear")
    p.page.click("#i2v-fit")
    p.page.wait_for_function("() => document.getElementById('i2v-search-count').textContent === ''")
    p.page.wait_for_selector("#i2v-tooltip", state="hidden")
    p.settle()
    assert p.hook("highlighted()") == [] and p.hook("selection()") == []
    p.errors.clear()
    yield p
    assert p.errors == [], f"console errors: {p.errors}"


def _screens(p: "Page") -> list[dict]:
    return p.page.evaluate("() => Array.from({length: window.illust2vecViewer.count}, (_, i) => window.illust2vecViewer.pointToScreen(i))")


def _patch(img: np.ndarray, cx: float, cy: float, half: float) -> np.ndarray:
    """The square [cx-half, cx+half] of an HxWx3 array, reduced to 8x8 colours."""
    x0, x1, y0, y1 = int(round(cx - half)), int(round(cx + half)), int(round(cy - half)), int(round(cy + half))
    crop = Image.fromarray(img[y0:y1, x0:x1].astype(np.uint8))
    return np.asarray(crop.resize((8, 8), Image.Resampling.BOX), dtype=np.float64)


def _expected(thumbs: list[Image.Image]) -> list[np.ndarray]:
    out = []
    for t in thumbs:
        a = np.asarray(t, dtype=np.float64)
        s = a.shape[0]
        out.append(_patch(a, s / 2, s / 2, s * 0.4))
    return out


@pytest.mark.browser
@pytest.mark.parametrize("renderer", ["webgl", "canvas"])
def test_thumbnails_are_drawn_where_the_hook_says(request, built, thumbs, renderer):
    p = request.getfixturevalue("open_page")(built["embed"], f"#renderer={renderer}")
    if renderer == "webgl" and p.hook("renderer") != "webgl":
        has_gl = p.page.evaluate("() => !!document.createElement('canvas').getContext('webgl2')")
        assert not has_gl, "WebGL2 is available but the viewer fell back to canvas"
        pytest.skip("this Chromium has no WebGL2; the canvas renderer is tested separately")
    assert p.hook("renderer") == renderer
    assert p.hook("visibleCount()") == 36
    img = p.shot()
    expected = _expected(thumbs)
    for i, pt in enumerate(_screens(p)):
        assert 0 < pt["x"] < 1280 and 0 < pt["y"] < 800
        assert pt["size"] > 40  # 36 images fill the window: real thumbnails, not dots
        got = _patch(img, pt["x"], pt["y"], pt["size"] * 0.4)
        errs = [np.abs(got - e).mean() for e in expected]
        assert int(np.argmin(errs)) == i, f"point {i}: drawn patch looks like thumbnail {int(np.argmin(errs))}"
        assert errs[i] < 25, f"point {i}: mean colour error {errs[i]:.1f}"
    # outside the map the page is the plain background
    far = img[790, 640]
    assert np.abs(far - BG).max() <= 3


@pytest.mark.browser
def test_external_atlas_folder_loads_and_draws(open_page, built, thumbs):
    p = open_page(built["external"])
    img = p.shot()
    expected = _expected(thumbs)
    screen = _screens(p)
    for i in (0, 17, 35):
        pt = screen[i]
        got = _patch(img, pt["x"], pt["y"], pt["size"] * 0.4)
        assert np.abs(got - expected[i]).mean() < 25
    folder = (built["dir"] / "ext_files").resolve().as_uri()
    page_url = built["external"].resolve().as_uri()
    for url in p.requests:
        url = url.removeprefix("route:")
        assert url == page_url or url.startswith(folder + "/") or url.startswith(("data:", "blob:")), url


@pytest.mark.browser
def test_hover_shows_path_label_and_tags(viewer, built):
    p = viewer
    pts = built["points"]
    for i in (0, 7, 20, 35):
        pt = p.hook(f"pointToScreen({i})")
        p.page.mouse.move(pt["x"] + 3, pt["y"] - 2)
        p.page.wait_for_selector("#i2v-tooltip:not([hidden])")
        assert p.hook("hovered()") == i
        assert p.hook(f"screenToPoint({pt['x']}, {pt['y']})") == i
        assert p.page.text_content("#i2v-tip-path") == pts[i].path
        assert pts[i].label in p.page.text_content("#i2v-tip-label")
        rows = p.page.eval_on_selector_all("#i2v-tip-tags tr", "rs => rs.map(r => [r.cells[0].textContent, r.cells[1].textContent])")
        assert rows[: len(pts[i].top_tags)] == [[t, f"{v:.2f}"] for t, v in pts[i].top_tags]
    # a click opens the original in a new tab
    pt = p.hook("pointToScreen(20)")
    with p.ctx.expect_page() as new:
        p.page.mouse.click(pt["x"], pt["y"])
    assert new.value.url == pts[20].href
    new.value.close()
    # off the map: no tooltip
    p.page.mouse.move(640, 795)
    p.page.wait_for_selector("#i2v-tooltip", state="hidden")
    assert p.hook("hovered()") == -1


@pytest.mark.browser
def test_xss_file_name_stays_text(viewer, built):
    p = viewer
    pt = p.hook("pointToScreen(7)")
    p.page.mouse.move(pt["x"], pt["y"])
    p.page.wait_for_selector("#i2v-tooltip:not([hidden])")
    assert p.page.text_content("#i2v-tip-path") == XSS_NAME
    assert XSS_TAG in p.page.text_content("#i2v-tip-tags")
    p.page.select_option("#i2v-colour", "cluster")
    assert XSS_CLUSTER in p.page.text_content("#i2v-legend")
    p.page.fill("#i2v-search", "<img")
    p.page.wait_for_timeout(300)
    assert p.hook("highlighted()") == [7]
    assert p.page.evaluate("() => window.__xss") is None
    assert p.page.evaluate("() => document.querySelectorAll('img, iframe, object, embed').length") == 0
    assert p.page.evaluate("() => document.querySelectorAll('script').length") == p.page.evaluate(
        "() => document.querySelectorAll('script[type=\"application/json\"], script[type=\"text/x-i2v-atlas\"], script[nonce]').length"
    )
    assert "</title>" in p.page.title()


@pytest.mark.browser
def test_search_highlights_matching_images(viewer, built):
    p = viewer
    pts = built["points"]
    before = p.shot()

    def search(q: str) -> list[int]:
        p.page.fill("#i2v-search", q)
        p.page.wait_for_function(
            "(q) => document.getElementById('i2v-search').value === q", arg=q
        )
        p.page.wait_for_timeout(250)  # the box is debounced
        p.settle()
        return p.hook("highlighted()")

    want = [i for i, pt in enumerate(pts) if any(t == "variant2" for t, _ in pt.top_tags)]
    assert len(want) == 6
    assert search("VARIANT2") == want
    assert p.page.text_content("#i2v-search-count") == "6 of 36 match"
    after = p.shot()
    for i, pt in enumerate(_screens(p)):
        cx, cy, half = pt["x"], pt["y"], pt["size"] / 2
        a, b = _patch(before, cx, cy, half * 0.8), _patch(after, cx, cy, half * 0.8)
        if i in want:
            assert np.abs(a - b).mean() < 4, f"matching image {i} changed"
            ring = after[int(round(cy)), int(round(cx - half - 1.0))]
            assert np.abs(ring - MATCH_RGB).max() < 40, f"matching image {i} has no highlight ring: {ring}"
        else:
            # dimmed towards the background
            assert np.abs(b - BG).mean() < 0.5 * np.abs(a - BG).mean(), f"image {i} is not dimmed"
    # comma-separated terms must all match (AND); file names are searched too
    assert search("group3, variant2") == [i for i in want if pts[i].top_tags[1][0] == "group3"]
    assert search("anime36/41.JPG") == [next(i for i, pt in enumerate(pts) if pt.path.endswith("41.jpg"))]
    assert search("no such tag") == []
    assert p.page.text_content("#i2v-search-count") == "0 of 36 match"
    assert search("") == []
    assert p.page.text_content("#i2v-search-count") == ""


def _drag(page, start, end, modifier: str, steps: list | None = None) -> None:
    page.mouse.move(*start)
    page.keyboard.down(modifier)
    page.mouse.down()
    for q in steps or []:
        page.mouse.move(*q, steps=2)
    page.mouse.move(*end, steps=4)
    page.mouse.up()
    page.keyboard.up(modifier)


@pytest.mark.browser
def test_box_selection_exports_csv_and_json(viewer, built):
    p = viewer
    pts = built["points"]
    screen = _screens(p)
    # a box around the centres of the 2x3 block in columns 1-2, rows 2-4
    x0, x1 = (screen[1]["x"] + screen[0]["x"]) / 2, (screen[2]["x"] + screen[3]["x"]) / 2
    y0, y1 = (screen[6]["y"] + screen[12]["y"]) / 2, (screen[24]["y"] + screen[30]["y"]) / 2
    want = sorted(i for i, s in enumerate(screen) if x0 <= s["x"] <= x1 and y0 <= s["y"] <= y1)
    assert len(want) == 6
    _drag(p.page, (x0, y0), (x1, y1), "Shift")
    assert p.hook("selection()") == want
    assert p.page.text_content("#i2v-sel-count") == "6 selected"

    with p.page.expect_download() as dl:
        p.page.click("#i2v-export-csv")
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    assert dl.value.suggested_filename == "selection.csv"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert 13 in want and "'" + FORMULA_NAME in [r["path"] for r in rows]  # not run as a formula
    for r in rows:
        r["path"] = r["path"].removeprefix("'")
    assert sorted(r["path"] for r in rows) == sorted(pts[i].path for i in want)
    for r in rows:
        i = next(k for k, pt in enumerate(pts) if pt.path == r["path"])
        assert float(r["x"]) == pts[i].x and float(r["y"]) == pts[i].y and r["label"] == pts[i].label

    with p.page.expect_download() as dl:
        p.page.click("#i2v-export-json")
    doc = json.loads(Path(dl.value.path()).read_text(encoding="utf-8"))
    assert doc["count"] == 6
    assert [r["path"] for r in doc["points"]] == [pts[i].path for i in want]
    assert [r["cluster"] for r in doc["points"]] == [pts[i].cluster for i in want]


@pytest.mark.browser
def test_lasso_selection_and_clear(viewer, built):
    p = viewer
    screen = _screens(p)
    # a triangle with corners just outside points 0, 5 and 30 (the upper-left half of the grid)
    d = screen[1]["x"] - screen[0]["x"]
    a = (screen[0]["x"] - d * 0.3, screen[0]["y"] - d * 0.3)
    b = (screen[5]["x"] + d * 0.9, screen[5]["y"] - d * 0.3)
    c = (screen[30]["x"] - d * 0.3, screen[30]["y"] + d * 0.9)

    def inside(x, y):
        poly, res = [a, b, c], False
        for k in range(3):
            (xa, ya), (xb, yb) = poly[k], poly[k - 1]
            if (ya > y) != (yb > y) and x < (xb - xa) * (y - ya) / (yb - ya) + xa:
                res = not res
        return res

    want = [i for i, s in enumerate(screen) if inside(s["x"], s["y"])]
    assert 15 <= len(want) <= 25
    _drag(p.page, a, a, "Alt", steps=[b, c])
    assert p.hook("selection()") == want
    p.page.click("#i2v-sel-clear")
    assert p.hook("selection()") == []
    assert p.page.is_disabled("#i2v-export-csv")


@pytest.mark.browser
def test_pan_zoom_fit_and_panels(viewer, built):
    p = viewer
    z0 = p.hook("view()")["zoom"]
    s0 = p.hook("pointToScreen(14)")
    p.page.mouse.move(s0["x"], s0["y"])
    p.page.mouse.wheel(0, -300)
    p.page.mouse.wheel(0, -300)
    p.settle()
    s1 = p.hook("pointToScreen(14)")
    assert p.hook("view()")["zoom"] > z0 * 2
    assert abs(s1["x"] - s0["x"]) < 2 and abs(s1["y"] - s0["y"]) < 2  # zoom keeps the point under the cursor
    assert s1["size"] > s0["size"] * 2
    assert p.hook("visibleCount()") < 36
    p.page.mouse.move(s1["x"] + 5, s1["y"] + 5)
    p.page.mouse.down()
    p.page.mouse.move(s1["x"] - 95, s1["y"] + 45, steps=5)
    p.page.mouse.up()
    s2 = p.hook("pointToScreen(14)")
    assert abs(s2["x"] - (s1["x"] - 100)) < 1 and abs(s2["y"] - (s1["y"] + 40)) < 1
    p.page.click("#i2v-fit")
    assert p.hook("visibleCount()") == 36
    # legend and quality panel
    assert p.page.eval_on_selector_all("#i2v-legend li .i2v-name", "xs => xs.map(x => x.textContent)") == [
        f"character {c}" for c in range(6)
    ]
    q = p.page.eval_on_selector_all("#i2v-quality tr", "rs => rs.map(r => [r.cells[0].textContent, r.cells[1].textContent])")
    assert q == [["trustworthiness", "0.931"], ["knn preservation", "0.412"], ["label accuracy map", "0.875"]]
    # clicking a legend entry highlights that group
    p.page.click("#i2v-legend li:nth-child(3)")
    assert p.hook("highlighted()") == [i for i, pt in enumerate(built["points"]) if pt.label == "character 2"]
    # the hook cannot be replaced or changed
    assert p.page.evaluate("() => { try { window.illust2vecViewer.count = 1; } catch (e) {} return window.illust2vecViewer.count; }") == 36
    assert p.page.evaluate("() => { try { window.illust2vecViewer = null; } catch (e) {} return typeof window.illust2vecViewer; }") == "object"


@pytest.mark.browser
def test_nothing_requested_from_the_network(viewer, built):
    p = viewer
    pt = p.hook("pointToScreen(3)")
    p.page.mouse.move(pt["x"], pt["y"])
    p.page.wait_for_selector("#i2v-tooltip:not([hidden])")
    p.page.fill("#i2v-search", "1girl")
    p.page.wait_for_timeout(250)
    p.page.mouse.wheel(0, -400)
    p.settle()
    page_url = built["embed"].resolve().as_uri()
    urls = [u.removeprefix("route:") for u in p.requests]
    assert page_url in urls
    assert all(u == page_url or u.startswith(("data:", "blob:")) for u in urls), urls


@pytest.mark.browser
def test_level_of_detail_many_points(open_page, tmp_path, thumbs):
    """600 images on 3 hi atlas pages: the overview draws from the base atlas, zooming in
    decodes the hi pages of the visible points and draws them at full resolution."""
    n, cols = 600, 30
    pts = [ViewerPoint(float(k % cols), float(k // cols), f"img_{k:03d}.jpg", label=f"c{k % 36 // 6}") for k in range(n)]
    html = write_viewer(tmp_path / "lod.html", pts, lambda i: thumbs[i % 36], ViewerOptions(thumb_size=128))
    data = _data_of(html.read_text(encoding="utf-8"))
    assert data["atlas"]["hiPages"] == 3 and data["atlas"]["basePages"] == 1
    p = open_page(html)
    assert p.hook("visibleCount()") == n
    expected = _expected(thumbs)
    small = p.hook("pointToScreen(0)")["size"]
    assert 10 < small < 35  # overview: small thumbnails from the 32 px base atlas

    def check(screen, img, idx):
        bad = []
        for i in idx:
            pt = screen[i]
            got = _patch(img, pt["x"], pt["y"], pt["size"] * 0.4)
            errs = [np.abs(got - e).mean() for e in expected]
            if int(np.argmin(errs)) != i % 36 or errs[i % 36] > 30:
                bad.append(i)
        return bad

    screen = _screens(p)
    inside = [i for i, s in enumerate(screen) if 340 < s["x"] < 1000 and 30 < s["y"] < 770]
    assert check(screen, p.shot(), inside[::7]) == []
    # zoom in around the middle: few points visible, drawn big from the hi atlas
    mid = screen[n // 2 + cols // 2]
    p.page.mouse.move(mid["x"], mid["y"])
    for _ in range(4):
        p.page.mouse.wheel(0, -300)
    p.page.mouse.move(150, 150)  # onto the panel: the tooltip goes away
    p.page.wait_for_selector("#i2v-tooltip", state="hidden")
    p.settle()
    screen = _screens(p)
    assert screen[0]["size"] > 100 and p.hook("visibleCount()") < 90
    # fully on screen and clear of the panels on the left and right
    vis = [i for i, s in enumerate(screen)
           if 320 + s["size"] / 2 < s["x"] < 1020 - s["size"] / 2 and s["size"] / 2 < s["y"] < 800 - s["size"] / 2]
    assert 0 < len(vis) < 40
    img = p.shot()
    assert check(screen, img, vis) == []
    # sharpness: the drawn thumbnail has the detail of the 128 px cell, not an upscaled 32 px one
    i = vis[len(vis) // 2]
    pt = screen[i]
    half = pt["size"] * 0.45
    got = img[int(pt["y"] - half):int(pt["y"] + half), int(pt["x"] - half):int(pt["x"] + half)]
    size = (got.shape[1], got.shape[0])
    t = thumbs[i % 36]
    lo = t.resize((32, 32), Image.Resampling.BOX)
    ref_hi = np.asarray(t.resize(size, box=(6.4, 6.4, 121.6, 121.6)), dtype=np.float64)
    ref_lo = np.asarray(lo.resize(size, box=(1.6, 1.6, 30.4, 30.4)), dtype=np.float64)
    assert np.abs(got - ref_hi).mean() < np.abs(got - ref_lo).mean()


def _overlap_share(screen: list[dict]) -> float:
    """Largest share of one thumbnail box that another covers (boxes: size x size around the centres)."""
    xy = np.array([(s["x"], s["y"]) for s in screen])
    size = np.array([s["size"] for s in screen])
    d = np.abs(xy[:, None, :] - xy[None, :, :])
    side = (size[:, None] + size[None, :]) / 2
    inter = np.clip(side[..., None] - d, 0, None).prod(axis=-1)
    np.fill_diagonal(inter, 0)
    return float((inter / (size[:, None] ** 2)).max())


def _tsne_points(files: list[Path], thumbs) -> list[ViewerPoint]:
    """A real t-SNE map of anime36 (pixels as features): characters crowd into clusters."""
    from illust2vec.maps.reduce import reduce

    feats = np.stack([np.asarray(t.resize((24, 24)), dtype=np.float32).ravel() for t in thumbs])
    emb = reduce(feats, method="tsne", seed=0)
    return [ViewerPoint(float(emb[i, 0]), float(emb[i, 1]), f.name, label=f"character {f.stem[0]}")
            for i, f in enumerate(files)]


@pytest.mark.browser
def test_first_zoom_thumbnails_do_not_hide_each_other(open_page, tmp_path, files, thumbs):
    """At the opening (fitted) zoom of a t-SNE map, no thumbnail box covers another; without
    the writer's spreading, the same map's thumbnails do."""
    pts = _tsne_points(files, thumbs)
    crowded = open_page(write_viewer(tmp_path / "raw.html", pts, thumbs, ViewerOptions(avoid_overlap=False)))
    before = _overlap_share(_screens(crowded))
    spread = open_page(write_viewer(tmp_path / "map.html", pts, thumbs))
    screen = _screens(spread)
    after = _overlap_share(screen)
    assert before > 0.2, before  # the raw layout really overlaps (the test can fail)
    assert after <= 0.01, after
    assert all(0 < s["x"] < 1280 and 0 < s["y"] < 800 for s in screen)  # still all on screen
    assert min(s["size"] for s in screen) > 20  # and still thumbnails, not dots


def test_viewer_and_png_share_one_legend(tmp_path, thumbs):
    """The clusters of the PNG legend are the viewer's: same names, counts and order, noise included."""
    from illust2vec.maps.render import legend_entries

    cluster_ids = np.array([0, 0, 1, -1, 1, 1, -1, 0, 2])
    names = {0: "red hair", 1: "blue eyes", 2: "cat ears"}
    pts = [ViewerPoint(float(i), float(i % 3), f"{i}.png", cluster=int(c)) for i, c in enumerate(cluster_ids)]
    data = _data_of(write_viewer(tmp_path / "l.html", pts, [thumbs[0]] * len(pts), cluster_names=names)
                    .read_text(encoding="utf-8"))
    viewer = [(name, int((cluster_ids == c).sum())) for c, name in data["clusters"]]
    _, sections = legend_entries(None, cluster_ids, names)
    png = dict(sections)["Clusters"]
    assert [text for _, text in png] == [f"{name} ({k})" for name, k in viewer]
    assert viewer[0] == ("noise", 2)
    assert png[0][0] == (200, 200, 200)  # noise is grey in the PNG as in the viewer
