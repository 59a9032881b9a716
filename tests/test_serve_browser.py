"""The web app's pages in real headless Chromium (Debian chromium through Playwright) against a live uvicorn server."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from serve_support import (
    ORIGINALS,
    XSS_NAME,
    XSS_TAG,
    LiveServer,
    build_collection,
    edit,
)

pytest.importorskip("fastapi")
from illust2vec.collection import Collection
from illust2vec.collection.query import normalize_tag
from illust2vec.serve import CollectionService, create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db, pics, model = build_collection(tmp_path_factory.mktemp("serve-ui"))
    service = CollectionService(db, embedder=model)
    # a hostile user tag on the hostile file name
    xss_id = next(i["id"] for i in service.items(limit=100)["items"] if Path(i["path"]).name == XSS_NAME)
    service.set_user_tags([xss_id], add=[XSS_TAG])
    with LiveServer(create_app(service, map_method="pca")) as srv:  # t-SNE is the default; PCA is instant
        srv.db, srv.pics, srv.service = db, pics, service
        yield srv
    service.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (bash .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class App:
    """One page of the app with its console errors and every request recorded."""

    def __init__(self, browser, url: str) -> None:
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.page.evaluate("() => window.illust2vecApp.ready")
        self.settle()

    def settle(self) -> None:
        self.page.evaluate("() => window.illust2vecApp.settled()")

    def state(self) -> dict:
        return self.page.evaluate("() => window.illust2vecApp.state()")

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def app(browser, server):
    a = App(browser, server.url + "/")
    yield a
    errors = list(a.errors)
    a.close()
    assert errors == [], f"console errors: {errors}"


def _ids(server) -> dict[str, int]:
    return {Path(i["path"]).name: i["id"] for i in server.service.items(limit=100)["items"]}


def test_grid_draws_thumbnails_and_stays_on_this_host(app, server):
    p = app.page
    n = len(list(server.pics.iterdir()))
    assert app.state()["total"] == n and p.text_content("#count") == f"{n} items"
    p.wait_for_function("() => [...document.querySelectorAll('.cell img')].every(i => i.complete && i.naturalWidth > 0)")
    assert p.locator(".cell").count() == n
    caps = p.eval_on_selector_all(".cell .cap", "els => els.map(e => e.textContent)")
    assert sorted(caps) == sorted(x.name for x in server.pics.iterdir())
    assert all(u.startswith((server.url + "/", "blob:", "data:")) for u in app.requests), app.requests


def test_xss_file_name_and_tag_stay_text(app, server):
    p = app.page
    cell = p.locator(".cell", has_text=XSS_NAME[:12])
    assert cell.locator(".cap").text_content() == XSS_NAME
    assert p.evaluate("() => document.querySelectorAll('img[src=x], script:not([src])').length") == 0
    cell.click()
    p.wait_for_selector("#item-view table.tags")
    app.settle()
    assert p.text_content("#item-view .path").endswith(XSS_NAME)
    assert normalize_tag(XSS_TAG) in p.text_content("#item-view table.tags")  # stored normalised, shown as text
    assert p.evaluate("() => window.__xss") is None
    assert p.evaluate("() => document.querySelectorAll('#item-view script, #item-view img[src=x]').length") == 0


def test_tag_filter_with_autocomplete(app, server):
    p = app.page
    items = server.service.items(limit=100, min_prob=0.5)["items"]
    counts: dict[str, int] = {}
    for i in items:
        for t in i["tags"]:
            counts[t] = counts.get(t, 0) + 1
    tag = max(counts, key=lambda t: (counts[t], t))
    p.click("#filter")
    p.keyboard.type(tag[:4])
    p.wait_for_selector("#suggest li")
    options = p.eval_on_selector_all("#suggest li span:first-child", "els => els.map(e => e.textContent)")
    assert tag in options
    for _ in range(options.index(tag)):
        p.keyboard.press("ArrowDown")
    p.keyboard.press("Enter")
    p.wait_for_function(f"() => window.illust2vecApp.state().total === {counts[tag]}")
    app.settle()
    assert p.locator(".cell").count() == counts[tag]
    # negation: the rest
    p.fill("#filter", f"-{tag}")
    p.press("#filter", "Escape")
    p.focus("#filter")
    p.keyboard.press("Enter")
    p.wait_for_function(f"() => window.illust2vecApp.state().total === {len(items) - counts[tag]}")


def test_click_opens_item_with_similar_images(app, server):
    p = app.page
    ids = _ids(server)
    p.click(f".cell[data-id='{ids['c3_crop.jpg']}']")
    p.wait_for_selector("#item-view .strip .card")
    app.settle()
    heads = p.eval_on_selector_all("#item-view h2", "els => els.map(e => e.textContent)")
    assert any(h.startswith("similar by features") for h in heads)
    first = p.eval_on_selector_all("#item-view .strip", "els => els.map(s => s.querySelector('.card') && s.querySelector('.card').dataset.id)")
    # strips: near-duplicates, features, binary codes; both similarity strips start with the original
    assert first[1] == str(ids[ORIGINALS[3].name]) and first[2] == str(ids[ORIGINALS[3].name])
    p.wait_for_function("() => document.querySelector('#item-view img.big').naturalWidth > 0")
    # similar images first, beside the picture; the tag list below both (issue 26)
    box = p.evaluate("""() => {
        const r = e => { const b = e.getBoundingClientRect(); return {top: b.top, bottom: b.bottom, left: b.left, right: b.right}; };
        const v = document.getElementById('item-view');
        return {img: r(v.querySelector('img.big')), similar: r(v.querySelectorAll('.item-top .strip')[1]),
                tags: r(v.querySelector('table.tags')),
                order: Array.from(v.querySelectorAll('h2')).map(h => h.textContent.split(' (')[0])};
    }""")
    assert box["order"] == ["near-duplicates", "similar by features", "similar by binary codes", "tags"]
    assert box["similar"]["left"] >= box["img"]["right"] and box["similar"]["top"] < box["img"]["bottom"]
    assert box["tags"]["top"] >= max(box["img"]["bottom"], box["similar"]["bottom"])
    p.keyboard.press("Escape")
    p.wait_for_function("() => window.illust2vecApp.state().view === 'grid'")


def test_upload_a_query_image(app, server, tmp_path):
    p = app.page
    q = tmp_path / "query.png"
    edit(Image.open(ORIGINALS[6]).convert("RGB"), "crop").save(q)
    p.set_input_files("#upload", str(q))
    p.wait_for_selector("#search-results .card")
    first = p.get_attribute("#search-results .card", "data-id")
    assert first == str(_ids(server)[ORIGINALS[6].name])
    # dropped and pasted images search the same way
    buf = io.BytesIO()
    edit(Image.open(ORIGINALS[7]).convert("RGB"), "recolour").save(buf, "PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    for event in ("drop", "paste"):
        p.evaluate("""([b64, event]) => {
            const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bin], "q.png", {type: "image/png"}));
            document.getElementById("search-view").replaceChildren();
            const ev = event === "drop" ? new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true})
                                        : new ClipboardEvent("paste", {clipboardData: dt, bubbles: true, cancelable: true});
            document.body.dispatchEvent(ev);
        }""", [b64, event])
        p.wait_for_selector("#search-results .card")
        assert p.get_attribute("#search-results .card", "data-id") == str(_ids(server)[ORIGINALS[7].name]), event


def test_keyboard_navigation(app, server):
    p = app.page
    p.focus("#grid")
    cols = app.state()["cols"]
    p.keyboard.press("ArrowRight")
    p.keyboard.press("ArrowRight")
    p.keyboard.press("ArrowDown")
    app.settle()
    st = app.state()
    assert st["focus"] == 2 + cols
    focused = p.get_attribute(".cell.focus", "data-index")
    assert focused == str(2 + cols)
    p.keyboard.press(" ")
    app.settle()
    assert len(app.state()["selected"]) == 1 and p.is_visible("#selbar")
    p.keyboard.press("Escape")
    app.settle()
    assert app.state()["selected"] == []
    p.keyboard.press("End")
    app.settle()
    assert app.state()["focus"] == app.state()["total"] - 1
    p.keyboard.press("Enter")
    p.wait_for_selector("#item-view .path")


def test_user_tags_on_a_selection_reach_the_export(app, server, tmp_path):
    p = app.page
    ids = _ids(server)
    for name in ("03.jpg", "04.jpg"):
        p.click(f".cell[data-id='{ids[name]}']", modifiers=["Control"])
    app.settle()
    assert sorted(app.state()["selected"]) == sorted([ids["03.jpg"], ids["04.jpg"]])
    with p.expect_download() as dl:
        p.click("#sel-export-txt")
    lines = Path(dl.value.path()).read_text().split()
    assert sorted(lines) == sorted(str(server.pics / n) for n in ("03.jpg", "04.jpg"))
    p.fill("#sel-tag", "best of")
    p.click("#sel-add")
    p.wait_for_selector("#message.ok")
    with Collection.open(server.db, create=False) as col:
        col.export(tmp_path / "e.jsonl")
    recs = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    tagged = sorted(Path(r["path"]).name for r in recs if r["tags"].get("best of") == 1.0)
    assert tagged == ["03.jpg", "04.jpg"]
    # and the filter finds them
    p.fill("#filter", "user:best of")
    p.focus("#filter")
    p.keyboard.press("Escape")
    p.focus("#filter")
    p.keyboard.press("Enter")
    p.wait_for_function("() => window.illust2vecApp.state().total === 2")
    server.service.set_user_tags([ids["03.jpg"], ids["04.jpg"]], forget=["best of"])


def _tree(d: Path) -> dict[str, str]:
    return {x.name: hashlib.sha256(x.read_bytes()).hexdigest() for x in d.iterdir()}


def test_review_a_duplicate_group_apply_and_undo(app, server):
    p = app.page
    before = _tree(server.pics)
    p.goto(server.url + "/#/dupes")
    p.wait_for_selector("#dupe-title")
    app.settle()
    groups = server.service.dupes()
    assert p.text_content("#dupe-title").startswith(f"group 1 of {len(groups)}")
    g = groups[0]
    keeper_card = p.locator(".dupe-group .card.keeper")
    assert keeper_card.get_attribute("data-id") == str(g["keeper"])  # the recommended copy is preselected
    # choose the other copy with the keys, then back to the recommended one, keep it; skip the rest
    p.keyboard.press("ArrowRight")
    assert p.locator(".dupe-group .card.keeper").get_attribute("data-id") != str(g["keeper"])
    p.keyboard.press("ArrowLeft")
    p.keyboard.press("k")
    for _ in range(len(groups) - 1):
        p.keyboard.press("s")
    assert p.text_content("#dupe-apply") == "apply 1 decision(s) (a)"
    p.keyboard.press("a")
    p.wait_for_selector("#message.ok")
    moved = [f["path"] for f in g["items"] if f["id"] != g["keeper"]]
    assert all(not Path(m).exists() for m in moved)
    assert all(Path(f["path"]).exists() for f in g["items"] if f["id"] == g["keeper"])
    manifests = list((server.db / "duplicates").glob("dupes-manifest-*.jsonl"))
    assert len(manifests) == 1
    p.wait_for_selector("#manifests button")
    p.click(f"#manifests button[data-manifest='{manifests[0].name}']")
    p.wait_for_function("() => /put back/.test(document.getElementById('message').textContent)")
    assert _tree(server.pics) == before


def test_duplicate_distance_control(app, server):
    """The distance field shows the default; a smaller distance finds fewer groups, typing digits in it
    does not choose copies."""
    p = app.page
    p.goto(server.url + "/#/dupes")
    p.wait_for_selector("#dupe-title")
    app.settle()
    every = len(server.service.dupes())
    assert p.input_value("#dupe-distance") == "819"
    p.fill("#dupe-distance", "0")
    p.press("#dupe-distance", "Enter")
    p.wait_for_function("() => !document.getElementById('dupe-title') && "
                        "/no near-duplicates/.test(document.getElementById('dupes-view').textContent)")
    p.fill("#dupe-distance", "400")
    p.press("#dupe-distance", "Enter")
    p.wait_for_selector("#dupe-title")
    app.settle()
    fewer = len(server.service.dupes(max_distance=400))
    assert 0 < fewer < every and p.text_content("#dupe-title").startswith(f"group 1 of {fewer}")
    assert p.input_value("#dupe-distance") == "400"


def test_map_links_each_picture_to_its_item_view(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        urls: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: urls.append(r.url))
        page.goto(server.url + "/map")
        page.evaluate("() => window.illust2vecViewer.ready")
        page.evaluate("() => window.illust2vecViewer.settled()")
        n = page.evaluate("() => window.illust2vecViewer.count")
        assert n == len(list(server.pics.iterdir()))
        pt = page.evaluate("() => window.illust2vecViewer.pointToScreen(0)")
        with ctx.expect_page() as new:
            page.mouse.click(pt["x"], pt["y"])
        item = new.value
        item.wait_for_load_state()
        assert "/#/item/" in item.url
        item.evaluate("() => window.illust2vecApp.ready")
        item.wait_for_selector("#item-view .path")
        item_id = int(item.url.rsplit("/", 1)[1])
        assert item.text_content("#item-view .path") == server.service.item(item_id)["path"]
        assert errors == [] and all(u.startswith((server.url, "data:", "blob:")) for u in urls)
    finally:
        ctx.close()


def test_csp_blocks_injected_inline_script(browser, server):
    """Defence in depth: even markup injected into the page cannot run script (no 'unsafe-inline')."""
    ctx = browser.new_context()
    try:
        page = ctx.new_page()
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(server.url + "/")
        page.evaluate("() => window.illust2vecApp.ready")
        page.evaluate("""() => {
            document.body.insertAdjacentHTML('beforeend', '<img id=probe src="/thumb/1" onload="window.__csp=1">');
            const s = document.createElement('script'); s.textContent = 'window.__csp = 2'; document.body.append(s);
        }""")
        page.wait_for_function("() => document.getElementById('probe').complete")
        page.wait_for_timeout(100)
        assert page.evaluate("() => window.__csp") is None
        assert refused, "the browser did not report the blocked inline script"
    finally:
        ctx.close()
