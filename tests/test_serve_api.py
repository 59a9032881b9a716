"""The web app's JSON API (illust2vec.serve) on a real collection, through an in-process client and a live server.

The collection: 9 anime36 originals, five edited copies (JPEG q60, half size,
mirror, crop, recolour) and one file with a hostile name, embedded and tagged
by the bundled generic-effnet-lite0 (ImageNet classes as tags).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from serve_support import (
    COPIES,
    ORIGINALS,
    XSS_NAME,
    LiveServer,
    build_collection,
    edit,
    free_port,
)

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from illust2vec.collection import Collection
from illust2vec.serve import CollectionService, create_app

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_collection(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(built):
    db, _, model = built
    service = CollectionService(db, embedder=model)
    with TestClient(create_app(service), base_url=BASE) as c:
        yield c
    service.close()


def _all_items(client, **params) -> list[dict]:
    out, offset = [], 0
    while True:
        r = client.get("/api/items", params={**params, "offset": offset, "limit": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["items"]
        offset += 4
        if offset >= body["total"]:
            assert len(out) == body["total"]
            return out


def _ids(client) -> dict[str, int]:
    return {Path(i["path"]).name: i["id"] for i in _all_items(client)}


def test_items_lists_every_file_with_sizes(client, built):
    _, pics, _ = built
    items = _all_items(client)
    files = sorted(str(p) for p in pics.iterdir())
    assert [i["path"] for i in items] == files  # every file once, sorted by path, across pages
    assert len({i["id"] for i in items}) == len(files)
    for i in items:
        with Image.open(i["path"]) as im:
            assert (i["width"], i["height"]) == im.size
        assert all(0.5 <= p <= 1 for p in i["tags"].values())
    one = client.get(f"/api/items/{items[0]['id']}").json()
    assert one["path"] == items[0]["path"] and one["bytes"] == Path(items[0]["path"]).stat().st_size
    floor = 0.01
    assert one["tags"] and all(p >= floor for p in one["tags"].values())
    assert client.get("/api/items", params={"limit": 0}).status_code == 400


@pytest.mark.parametrize("binary", [0, 1])
def test_similar_of_each_copy_is_its_original_and_never_itself(client, binary):
    ids = _ids(client)
    for name, (i, _) in COPIES.items():
        hits = client.get(f"/api/items/{ids[name]}/similar", params={"k": 5, "binary": binary}).json()["items"]
        assert len(hits) == 5 and ids[name] not in [h["id"] for h in hits]
        assert Path(hits[0]["path"]).name == ORIGINALS[i].name, (name, hits[:2])
        key = "distance" if binary else "score"
        vals = [h[key] for h in hits]
        assert vals == sorted(vals, reverse=not binary)


def test_upload_search_finds_the_original(client, tmp_path):
    ids = _ids(client)
    for i, kind in ((5, "crop"), (6, "flip"), (7, "recolour")):
        buf = io.BytesIO()
        edit(Image.open(ORIGINALS[i]).convert("RGB"), kind).save(buf, "PNG")
        r = client.post("/api/search", files={"image": ("q.png", buf.getvalue(), "image/png")}, data={"k": "3"})
        assert r.status_code == 200, r.text
        hits = r.json()["items"]
        assert hits[0]["id"] == ids[ORIGINALS[i].name] and len(hits) == 3
    bad = client.post("/api/search", files={"image": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 400 and "Traceback" not in bad.text and bad.json()["detail"]


@pytest.mark.parametrize("url", [
    "/image/999999", "/thumb/999999", "/api/items/999999", "/api/items/999999/similar",
    "/image/..%2F..%2F..%2Fetc%2Fpasswd", "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/thumb/..%2Fconftest.py",
    "/api/items/..%2F1", "/image/1%2F..%2F..%2Fetc%2Fpasswd", "/static/..%2F..%2Fservice.py",
    "/static/%2e%2e/app.py", "/image/-1", "/image/1.0",
])
def test_unknown_ids_and_traversal_are_404(client, url):
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code, r.text[:200])
    assert b"root:" not in r.content and b"def create_app" not in r.content


def test_images_and_thumbnails_by_id(client, built):
    db, pics, _ = built
    ids = _ids(client)
    r = client.get(f"/image/{ids['00.jpg']}")
    assert r.status_code == 200 and r.content == (pics / "00.jpg").read_bytes()
    assert r.headers["content-type"] == "image/jpeg" and r.headers["x-content-type-options"] == "nosniff"
    t = client.get(f"/thumb/{ids['00.jpg']}", params={"size": 128})
    with Image.open(io.BytesIO(t.content)) as im:
        assert im.format == "JPEG" and max(im.size) == 128
    cached = list((db / "thumbs" / "128").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == t.content
    assert client.get(f"/thumb/{ids['00.jpg']}", params={"size": 100}).status_code == 400
    # the hostile name is served by id like any other
    assert client.get(f"/image/{ids[XSS_NAME]}").content == (pics / XSS_NAME).read_bytes()


def test_tag_filter_negation_threshold_and_autocomplete(client):
    items = _all_items(client, min=0.3)
    tag = max({t for i in items for t in i["tags"]}, key=lambda t: sum(t in i["tags"] for i in items))
    want = {i["id"] for i in items if tag in i["tags"]}
    got = _all_items(client, tags=tag, min=0.3)
    assert {i["id"] for i in got} == want and all(i["tags"][tag] >= 0.3 for i in got)
    rest = _all_items(client, **{"not": tag, "min": 0.3})
    assert {i["id"] for i in rest} == {i["id"] for i in items} - want
    # a higher threshold keeps a subset
    assert {i["id"] for i in _all_items(client, tags=tag, min=0.9)} <= want
    # autocomplete: prefix, category prefix, counts equal the filter's totals
    sugg = client.get("/api/tags", params={"prefix": tag[:3], "min": 0.3, "limit": 50}).json()
    entry = next(e for e in sugg if e["tag"] == tag)
    assert entry["count"] == len(want) and all(e["tag"].lower().startswith(tag[:3].lower()) for e in sugg)
    assert [e["count"] for e in sugg] == sorted((e["count"] for e in sugg), reverse=True)
    cat = client.get("/api/tags", params={"prefix": f"{entry['category']}:{tag[:3]}", "min": 0.3}).json()
    assert tag in [e["tag"] for e in cat]
    r = client.get("/api/items", params={"tags": "no such tagg"})
    assert r.status_code == 400 and r.json()["unknown_tag"] is True


def test_user_tags_take_precedence_and_reach_the_export(client, built, tmp_path):
    db, pics, _ = built
    ids = _ids(client)
    a, b = ids["01.jpg"], ids["02.jpg"]
    r = client.post("/api/user-tags", json={"ids": [a, b], "add": ["My Pick"]})
    assert r.status_code == 200 and r.json()["changed"] == 2
    picked = _all_items(client, tags="user:my pick")
    assert {i["id"] for i in picked} == {a, b} and all(i["tags"]["my pick"] == 1.0 for i in picked)
    assert "my pick" in [e["tag"] for e in client.get("/api/tags", params={"prefix": "my"}).json()]
    # removing a model tag hides it in the item and in filters
    item = client.get(f"/api/items/{a}").json()
    model_tag = max(item["model_tags"], key=item["model_tags"].get)
    client.post("/api/user-tags", json={"ids": [a], "remove": [model_tag]})
    item = client.get(f"/api/items/{a}").json()
    assert model_tag not in item["tags"] and item["user_tags"][model_tag.lower()] is False
    assert a not in {i["id"] for i in _all_items(client, tags=model_tag, min=0.01)}
    # the export applies them (and keeps the model's own probabilities elsewhere)
    with Collection.open(db, create=False) as col:
        col.export(tmp_path / "e.jsonl")
    recs = {r["path"]: r for r in map(json.loads, (tmp_path / "e.jsonl").read_text().splitlines())}
    ra = recs[str(pics / "01.jpg")]
    assert ra["tags"]["my pick"] == 1.0 and model_tag not in ra["tags"]
    assert ra["user_tags"] == {"my pick": True, model_tag.lower(): False}
    # CSV: one flat column per user tag, no JSON in a cell (issue 26)
    import csv

    with Collection.open(db, create=False) as col:
        col.export(tmp_path / "e.csv", vectors=False, codes=False)
    with open(tmp_path / "e.csv", newline="", encoding="utf-8") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert rows[str(pics / "01.jpg")]["user:my pick"] == "1" and rows[str(pics / "02.jpg")]["user:my pick"] == "1"
    assert rows[str(pics / "01.jpg")][f"user:{model_tag.lower()}"] == "0"
    assert rows[str(pics / "02.jpg")][f"user:{model_tag.lower()}"] == ""
    assert not any(v.startswith(("{", "[")) for r in rows.values() for v in r.values())
    # forget both decisions: back to the model
    client.post("/api/user-tags", json={"ids": [a, b], "forget": ["my pick", model_tag]})
    assert client.get(f"/api/items/{a}").json()["user_tags"] == {}
    bad = client.post("/api/user-tags", json={"ids": [a], "add": [" , "]})
    assert bad.status_code == 400


def test_user_tags_survive_rebuild(tmp_path, built):
    _, pics, model = built
    with Collection.open(tmp_path / "db") as col:
        col.add([pics / "00.jpg", pics / "01.jpg"], embedder=model, workers=0, progress=False)
    s = CollectionService(tmp_path / "db")
    first = s.items()["items"][0]
    s.set_user_tags([first["id"]], add=["keeper"])
    s.close()
    with Collection.open(tmp_path / "db") as col:
        col.add([pics / "00.jpg", pics / "01.jpg"], embedder=model, workers=0, progress=False, rebuild=True)
    s = CollectionService(tmp_path / "db")
    assert [i["path"] for i in s.items(tags="user:keeper")["items"]] == [first["path"]]
    s.close()


def _tree(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir() if p.is_file()}


def _dupes(client) -> dict:
    """``GET /api/dupes``, asked again while the groups are being found (a background thread)."""
    deadline = time.monotonic() + 120
    while True:
        body = client.get("/api/dupes").json()
        if not body["computing"]:
            return body
        assert time.monotonic() < deadline, "duplicates never finished"
        time.sleep(0.1)


def test_dupes_review_apply_and_undo(client, built):
    db, pics, _ = built
    before = _tree(pics)
    body = _dupes(client)
    groups = body["groups"]
    names = sorted(sorted(Path(f["path"]).name for f in g["items"]) for g in groups)
    assert ["00.jpg", "c0_jpeg.jpg"] in names and ["01.jpg", "c1_half.jpg"] in names
    for g in groups:
        for f in g["items"]:
            with Image.open(f["path"]) as im:
                assert (f["width"], f["height"], f["format"]) == (*im.size, im.format)
            assert f["bytes"] == Path(f["path"]).stat().st_size
        assert [f["id"] for f in g["items"] if f["keep"]] == [g["keeper"]]
    half = next(g for g in groups if any(Path(f["path"]).name == "c1_half.jpg" for f in g["items"]))
    assert Path(next(f["path"] for f in half["items"] if f["id"] == half["keeper"])).name == "01.jpg"  # more pixels
    # a keeper outside its group is refused; nothing moves
    bad = client.post("/api/dupes/apply", json={"groups": [{"ids": [f["id"] for f in half["items"]], "keeper": 999}]})
    assert bad.status_code == 400 and _tree(pics) == before
    r = client.post("/api/dupes/apply", json={"groups": [{"ids": [f["id"] for f in half["items"]], "keeper": half["keeper"]}]})
    assert r.status_code == 200 and r.json()["done"] == 1
    manifest = r.json()["manifest"]
    assert "c1_half.jpg" not in _tree(pics) and (db / "duplicates" / manifest).is_file()
    # the moved copy leaves the items (the database is not changed), and comes back with the undo
    assert "c1_half.jpg" not in _ids(client) and len(_ids(client)) == len(before) - 1
    after = _dupes(client)
    assert manifest in after["manifests"] and not any(
        Path(f["path"]).name == "c1_half.jpg" for g in after["groups"] for f in g["items"])
    # undo by manifest name only; other names are refused
    for name in ("../collection.sqlite", "/etc/passwd", "dupes-manifest-x.jsonl"):
        assert client.post("/api/dupes/undo", json={"manifest": name}).status_code == 404
    u = client.post("/api/dupes/undo", json={"manifest": manifest})
    assert u.status_code == 200 and u.json()["restored"] == 1
    assert _tree(pics) == before and "c1_half.jpg" in _ids(client)


def test_guard_token_origin_host_and_headers(built):
    db, _, model = built
    service = CollectionService(db, embedder=model)
    try:
        plain = TestClient(create_app(service), base_url=BASE)
        r = plain.get("/api/info")
        assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        # DNS rebinding: another host name is refused without a token
        assert plain.get("/api/info", headers={"host": "evil.example:8765"}).status_code == 403
        # CSRF: a POST from another origin, or marked cross-site, is refused before it does anything
        r = plain.post("/api/user-tags", json={"ids": [1], "add": ["x"]}, headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        r = plain.post("/api/user-tags", json={"ids": [1], "add": ["x"]}, headers={"sec-fetch-site": "cross-site"})
        assert r.status_code == 403
        assert "x" not in plain.get("/api/items/1").json()["user_tags"]
        ok = plain.post("/api/user-tags", json={"ids": [1], "forget": ["x"]}, headers={"origin": BASE})
        assert ok.status_code == 200
        # with a token: refused without it, accepted with a bearer header or the cookie the ?token= link sets
        guarded = TestClient(create_app(service, token="s3cret-token"), base_url="http://192.0.2.7:8765",
                             follow_redirects=False)
        assert guarded.get("/api/info").status_code == 401
        assert guarded.get("/").status_code == 401
        assert guarded.get("/api/info", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert guarded.get("/api/info", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        r = guarded.get("/", params={"token": "s3cret-token"})
        assert r.status_code == 303 and r.headers["location"] == "/" and "HttpOnly" in r.headers["set-cookie"]
        assert guarded.get("/api/info").status_code == 200  # the client kept the cookie
        assert client_openapi(plain)
    finally:
        service.close()


def client_openapi(c) -> bool:
    spec = c.get("/api/openapi.json").json()
    return {"/api/items", "/api/items/{item_id}/similar", "/api/search", "/api/tags", "/api/dupes"} <= set(spec["paths"])


def test_new_items_show_while_a_writer_indexes(built, tmp_path):
    """WAL: a live server answers while another connection adds images, and shows them on the next call."""
    _, pics, model = built
    db = tmp_path / "db"
    with Collection.open(db) as col:
        col.add([pics / "00.jpg"], embedder=model, workers=0, progress=False)
    service = CollectionService(db)
    with LiveServer(create_app(service)) as srv:
        def total() -> int:
            with urllib.request.urlopen(f"{srv.url}/api/items") as r:
                return json.load(r)["total"]

        assert total() == 1
        # raw dot segments and encoded ones, sent as they are (no client-side normalisation) to the real server
        for bad in ("/image/../../../../etc/passwd", "/static/../app.py", "/static/%2e%2e/%2e%2e/serve/app.py",
                    "/thumb/..%2f..%2fcollection.sqlite", "/image/%00"):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.sendall(f"GET {bad} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nConnection: close\r\n\r\n".encode())
                answer = b"".join(iter(lambda: sock.recv(65536), b""))
            assert answer.split(b" ", 2)[1] in (b"404", b"400"), (bad, answer[:200])
            assert b"root:" not in answer and b"create_app" not in answer and b"SQLite format" not in answer
        with Collection.open(db) as writer:
            writer.add([pics / "01.jpg", pics / "02.jpg"], embedder=model, workers=0, progress=False)
            assert total() == 3
    service.close()


def test_cli_on_another_host_requires_the_printed_token(built):
    db, _, _ = built
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "illust2vec", "serve", "--db", str(db), "--host", "0.0.0.0",
                             "--port", str(port)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "serving" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            line = proc.stderr.readline()
        token = re.search(r"\?token=(\S+)", line).group(1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=10)
        assert err.value.code == 401
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/info", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["items"] == len(list(built[1].iterdir()))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dupes_distance_control(client):
    """``?distance=``: the groups within that many bits; the default and the code length come with them."""
    body = _dupes(client)
    assert body["distance"] is None and body["code_bits"] == 4096 and body["default_distance"] == 819
    # the default finds the flipped, cropped and recoloured copies too
    names = [sorted(Path(f["path"]).name for f in g["items"]) for g in body["groups"]]
    for name, (i, _) in COPIES.items():
        assert sorted([ORIGINALS[i].name, name]) in names
    deadline = time.monotonic() + 120
    while (tight := client.get("/api/dupes", params={"distance": 400}).json())["computing"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    tight_names = [sorted(Path(f["path"]).name for f in g["items"]) for g in tight["groups"]]
    assert tight["distance"] == 400 and ["00.jpg", "c0_jpeg.jpg"] in tight_names
    assert all(g["max_distance"] <= 400 for g in tight["groups"]) and len(tight_names) < len(names)
    assert client.get("/api/dupes", params={"distance": -1}).status_code == 422
