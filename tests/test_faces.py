"""Anime face detection (AnimeFace 2009 through ctypes), crops, face items and the ``faces`` command."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image, ImageDraw

from illust2vec.faces import (
    FaceItem,
    FaceItemError,
    crop_region,
    detect_faces,
    face_crops,
    face_label,
    iter_face_items,
)
from illust2vec.faces.native import get_detector

from conftest import SHARED  # noqa: E402
ANIME36 = SHARED / "data" / "anime36"

SKIN = (255, 228, 210)
IRIS = (40, 90, 200)
HAIR = (120, 70, 40)

# Boxes (x, y, w, h) the original binding (animeface 2.0.3 + Pillow 11.3, its own
# C extension) reports for a few anime36 pictures; the ctypes path must agree.
ORIGINAL_BINDING_BOXES = {
    "00.jpg": [],
    "01.jpg": [(81, 81, 218, 218)],
    "05.jpg": [(160, 140, 80, 80), (281, 110, 80, 80)],
    "12.jpg": [],
    "21.jpg": [(118, 300, 56, 56), (313, 120, 96, 96), (337, 253, 96, 96)],
    "24.jpg": [(132, 94, 152, 152), (332, 110, 127, 127)],
}


def draw_anime_face(size: int = 320, *, eyes: bool = True) -> np.ndarray:
    """A simple anime face drawn with Pillow: hair, spiky fringe, skin, pointed chin, big eyes, mouth."""
    s = size / 320
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)

    def sc(*v: float) -> list[int]:
        return [int(round(x * s)) for x in v]

    d.ellipse(sc(50, 30, 270, 260), fill=HAIR)
    d.rectangle(sc(50, 140, 270, 300), fill=HAIR)
    d.polygon([tuple(sc(x, y)) for x, y in [(75, 130), (245, 130), (240, 200), (190, 265), (160, 280), (130, 265), (80, 200)]], fill=SKIN)
    d.rectangle(sc(75, 100, 245, 200), fill=SKIN)
    fringe = [tuple(sc(55, 150))]
    for i, x in enumerate(range(60, 271, 30)):
        fringe += [tuple(sc(x, 40)), tuple(sc(x + 15, 140 if i % 2 else 125))]
    fringe += [tuple(sc(265, 150)), tuple(sc(265, 40))]
    d.polygon(fringe, fill=HAIR)
    d.ellipse(sc(60, 20, 260, 110), fill=HAIR)
    if eyes:
        w = max(1, int(3 * s))
        for cx in (120, 200):
            d.ellipse(sc(cx - 25, 150, cx + 25, 215), fill=(255, 255, 255), outline=(30, 20, 20), width=w)
            d.ellipse(sc(cx - 18, 157, cx + 18, 213), fill=IRIS)
            d.ellipse(sc(cx - 9, 172, cx + 9, 200), fill=(20, 20, 40))
            d.ellipse(sc(cx - 12, 162, cx - 2, 174), fill=(255, 255, 255))
            d.line(sc(cx - 28, 148, cx + 28, 145), fill=(30, 20, 20), width=max(1, int(5 * s)))
    d.line(sc(158, 222, 162, 228), fill=(210, 150, 140), width=max(1, int(2 * s)))
    d.arc(sc(145, 235, 175, 255), 20, 160, fill=(150, 60, 60), width=max(1, int(3 * s)))
    return np.asarray(im)


def test_bundled_native_library_is_used():
    det = get_detector()
    assert "nvxs" in Path(det.path).name
    # the library that ships inside the animeface wheel, not a system copy
    assert "animeface" in str(det.path) or "ILLUST2VEC_NVXS_LIBRARY" in str(det.path)


def test_drawn_face_is_found_with_landmarks():
    img = draw_anime_face(320)
    faces = detect_faces(img)
    assert len(faces) == 1, faces
    face = faces[0]
    assert face.likelihood > 0.9
    x, y, w, h = face.box
    # the face sits between the fringe and the chin of the drawing, around the eyes
    assert 60 <= x <= 110 and 100 <= y <= 160 and 120 <= w <= 200 and w == h
    lx, ly, lw, lh = face.landmarks["left_eye"]
    rx, ry, rw, rh = face.landmarks["right_eye"]
    # character's left eye is on the image's right; both near the drawn eye centres (120/200, 182)
    assert abs((lx + lw / 2) - 200) < 20 and abs((rx + rw / 2) - 120) < 20
    assert abs((ly + lh / 2) - 182) < 25 and abs((ry + rh / 2) - 182) < 25
    nose_x, nose_y = face.landmarks["nose"]
    chin_x, chin_y = face.landmarks["chin"]
    mx, my, mw, mh = face.landmarks["mouth"]
    assert ly < nose_y < my + mh < chin_y + 10
    assert abs(chin_x - 160) < 25
    assert np.abs(np.subtract(face.colors["skin"], SKIN)).max() <= 8
    assert np.abs(np.subtract(face.colors["left_eye"], IRIS)).max() <= 8
    assert np.abs(np.subtract(face.colors["right_eye"], IRIS)).max() <= 8


def test_drawn_face_position_follows_the_drawing():
    canvas = np.full((480, 640, 3), 255, np.uint8)
    canvas[100:420, 250:570] = draw_anime_face(320)
    (moved,) = detect_faces(canvas)
    (alone,) = detect_faces(draw_anime_face(320))
    # same window size; position within the scan step (4 px at this scale)
    assert moved.box[2:] == alone.box[2:]
    assert abs(moved.box[0] - (alone.box[0] + 250)) <= 4 and abs(moved.box[1] - (alone.box[1] + 100)) <= 4


def _noise():
    return np.random.default_rng(0).integers(0, 256, (320, 400, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name,image",
    [
        ("noise", _noise()),
        ("white", np.full((256, 256, 3), 255, np.uint8)),
        ("black", np.zeros((200, 300, 3), np.uint8)),
        ("skin", np.full((240, 320, 3), SKIN, np.uint8)),
        ("gradient", np.dstack([np.tile(np.linspace(0, 255, 320), (256, 1))] * 3).astype(np.uint8)),
        ("face without eyes", draw_anime_face(320, eyes=False)),
    ],
)
def test_no_face_on_noise_and_plain_backgrounds(name, image):
    assert detect_faces(image) == []


def test_fast_scan(tmp_path, capsys):
    img = draw_anime_face(320)
    (fine,) = detect_faces(img)
    (fast,) = detect_faces(img, scan="fast")
    # same face, window sizes on a coarser scale ladder
    cx = lambda b: (b[0] + b[2] / 2, b[1] + b[3] / 2)  # noqa: E731
    assert np.abs(np.subtract(cx(fast.box), cx(fine.box))).max() < 0.15 * fine.box[2]
    assert detect_faces(_noise(), scan="fast") == []
    with pytest.raises(Exception, match="scan"):
        detect_faces(img, scan="slow")
    path = tmp_path / "drawn.png"
    Image.fromarray(img).save(path)
    rc, out, _ = _run_cli(["faces", path, "--scan", "fast", "-q", "--workers", "0"], capsys)
    assert rc == 0 and json.loads(out)[0]["faces"][0]["box"] == list(fast.box)


def test_boxes_are_scaled_back_from_downscaled_detection():
    small = draw_anime_face(320)
    (ref,) = detect_faces(small)
    big = np.asarray(Image.fromarray(small).resize((640, 640), Image.Resampling.NEAREST))
    (scaled,) = detect_faces(big, max_side=320)  # detected on a 320 px copy
    for a, b in zip(scaled.box, ref.box):
        assert abs(a - 2 * b) <= 2, (scaled.box, ref.box)
    for name in ("left_eye", "right_eye", "mouth", "nose", "chin"):
        for a, b in zip(scaled.landmarks[name], ref.landmarks[name]):
            assert abs(a - 2 * b) <= 3, (name, scaled.landmarks[name], ref.landmarks[name])
    (full,) = detect_faces(big, max_side=None)  # detected at full size: same face, ~2x
    assert abs(full.box[2] / ref.box[2] - 2) < 0.25
    assert abs((full.box[0] + full.box[2] / 2) - 2 * (ref.box[0] + ref.box[2] / 2)) < 20


def test_min_likelihood_filters():
    img = np.asarray(Image.open(ANIME36 / "21.jpg").convert("RGB"))
    all_faces = detect_faces(img)
    confident = detect_faces(img, min_likelihood=0.9)
    assert confident
    assert len(confident) < len(all_faces)
    assert all(f.likelihood >= 0.9 for f in confident)
    assert [f.likelihood for f in all_faces] == sorted((f.likelihood for f in all_faces), reverse=True)


def test_works_with_installed_pillow_and_pil_or_path_inputs(tmp_path):
    # animeface's own extension finds nothing under Pillow >= 12; ours never touches Pillow internals
    path = tmp_path / "drawn.png"
    Image.fromarray(draw_anime_face(240)).save(path)
    from_path = detect_faces(path)
    from_pil = detect_faces(Image.open(path))
    from_array = detect_faces(np.asarray(Image.open(path).convert("RGB")))
    # The eye colours are left out: libnvxs's k-means for the eyes gives different colours in different
    # processes now and then (seen as a rare failure across CI runs; it reads memory we do not control).
    # Boxes, likelihood, landmarks and the skin and hair colours are compared whole.
    def stable(faces):
        return [(f.box, f.likelihood, f.landmarks, f.colors["skin"], f.colors["hair"]) for f in faces]

    assert len(from_path) == 1 and stable(from_path) == stable(from_pil) == stable(from_array), \
        f"Pillow {PIL.__version__}"
    assert {"left_eye", "right_eye"} <= set(from_path[0].colors)
    assert stable(detect_faces(path)) == stable(from_path)


def test_crop_region_margin_and_square():
    assert crop_region((100, 50, 40, 40), margin=0.25) == (90, 40, 60, 60)
    assert crop_region((100, 50, 40, 40), margin=0.0) == (100, 50, 40, 40)
    x, y, w, h = crop_region((100, 50, 40, 20), margin=0.5, square=True)
    assert w == h == 80 and (x + w / 2, y + h / 2) == (120, 60)
    assert crop_region((100, 50, 40, 20), margin=0.5, square=False) == (80, 40, 80, 40)


def test_face_crops_are_square_with_margin_and_padded_at_borders():
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 0] = np.arange(200, dtype=np.uint8)[None, :]
    img[..., 1] = np.arange(100, dtype=np.uint8)[:, None]
    inside, corner = face_crops(img, [(80, 30, 40, 40), (-10, -10, 30, 20)], margin=0.25)
    assert inside.shape == (60, 60, 3)
    np.testing.assert_array_equal(inside, img[20:80, 70:130])
    # a face at the top-left corner: square 45 px crop, outside parts white
    assert corner.shape == (45, 45, 3)
    x, y, w, h = crop_region((-10, -10, 30, 20), margin=0.25)
    assert (corner[: -y, :] == 255).all() and (corner[:, : -x] == 255).all()
    np.testing.assert_array_equal(corner[-y:, -x:], img[0 : y + h, 0 : x + w])


def test_iter_face_items_in_worker_processes(tmp_path):
    face = tmp_path / "face.png"
    Image.fromarray(draw_anime_face(320)).save(face)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (300, 200), (200, 220, 240)).save(plain)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [face, plain, broken, tmp_path / "missing.png"]

    items = list(iter_face_items(paths, workers=2, chunksize=1, margin=0.5))
    assert [type(i) for i in items] == [FaceItem, FaceItem, FaceItemError, FaceItemError]
    f, whole = items[0], items[1]
    assert f.source == str(face) and f.face_index == 0 and f.likelihood > 0.9
    assert f.crop.shape[0] == f.crop.shape[1] == crop_region(f.box, margin=0.5)[2]
    assert f.label == f"face.png#face0 [{','.join(map(str, f.box))}]"
    assert f.meta() == {"source": str(face), "face_index": 0, "box": list(f.box), "likelihood": round(f.likelihood, 6)}
    assert whole.face_index is None and whole.box is None and whole.crop.shape == (200, 300, 3)
    assert whole.label == "plain.png"
    assert items[2].source == str(broken) and items[2].message

    only = list(iter_face_items(paths, workers=0, faces_only=True))
    assert [type(i) for i in only] == [FaceItem, FaceItemError, FaceItemError]
    assert only[0].box == f.box


def test_face_label():
    assert face_label("/x/y/NAME.jpg", 0, (1, 2, 3, 4)) == "NAME.jpg#face0 [1,2,3,4]"
    assert face_label("/x/y/NAME.jpg", None, None) == "NAME.jpg"


def _run_cli(argv, capsys):
    from illust2vec.cli.main import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _run_faces_cli(argv, capsys):
    return _run_cli(["faces", *argv], capsys)


def test_faces_cli_json_sheet_crops(tmp_path, capsys):
    names = ["00.jpg", "05.jpg", "24.jpg"]
    paths = [str(ANIME36 / n) for n in names]
    sheet = tmp_path / "sheet.png"
    crops = tmp_path / "crops"
    rc, out, err = _run_faces_cli(
        [*paths, str(tmp_path / "nope.jpg"), "--sheet", str(sheet), "--crops", str(crops), "--workers", "1", "-q"], capsys
    )
    assert rc == 1
    assert err.strip().splitlines() == [f"error: {tmp_path / 'nope.jpg'}: no such file"]
    records = json.loads(out)
    assert [r["source"] for r in records] == paths
    for rec in records:
        expected = sorted(ORIGINAL_BINDING_BOXES[Path(rec["source"]).name])
        assert sorted(tuple(f["box"]) for f in rec["faces"]) == expected
        assert [f["face_index"] for f in rec["faces"]] == list(range(len(expected)))
        for f in rec["faces"]:
            assert set(f["landmarks"]) == {"left_eye", "right_eye", "mouth", "nose", "chin"}
            assert set(f["colors"]) == {"skin", "hair", "left_eye", "right_eye"}
    written = sorted(p.name for p in crops.iterdir())
    assert written == ["05_face0.png", "05_face1.png", "24_face0.png", "24_face1.png"]
    box = records[1]["faces"][1]["box"]
    with Image.open(crops / "05_face1.png") as im:
        side = crop_region(box, margin=0.25)[2]
        assert im.size == (side, side)
    with Image.open(sheet) as im:
        # 3 pictures -> 2 x 2 grid of 256 px cells with a caption line
        assert im.size == (512, 2 * (256 + 14))
        arr = np.asarray(im.convert("RGB"))
        # red box outline drawn somewhere on the sheet for the faces found
        assert ((arr[..., 0] == 255) & (arr[..., 1] == 40) & (arr[..., 2] == 40)).sum() > 100


def test_faces_cli_csv(tmp_path, capsys):
    face = tmp_path / "drawn.png"
    Image.fromarray(draw_anime_face(320)).save(face)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (100, 80), "white").save(plain)
    rc, out, err = _run_faces_cli([str(tmp_path), "--format", "csv", "-q", "--workers", "0"], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["source"] for r in rows] == [str(face), str(plain)]
    (face_obj,) = detect_faces(face)
    assert (int(rows[0]["x"]), int(rows[0]["y"]), int(rows[0]["w"]), int(rows[0]["h"])) == face_obj.box
    assert rows[0]["face_index"] == "0" and rows[1]["face_index"] == "" and rows[1]["width"] == "100"


I2V = SHARED / "fixtures" / "i2v"
FEAT = ["--weights", I2V / "feature_w16_e1024.caffemodel"]
TAG = ["--weights", I2V / "tag_w8_v1.caffemodel", "--tag-list", I2V / "tag_list.json"]


@pytest.fixture()
def offline_store(model_store, monkeypatch):
    monkeypatch.setenv("ILLUST2VEC_HOME", str(model_store))
    monkeypatch.setenv("ILLUST2VEC_OFFLINE", "1")
    return model_store


def test_embed_faces_one_row_per_face(offline_store, i2v_features, tmp_path, capsys):
    names = ["00.jpg", "05.jpg", "24.jpg"]
    paths = [ANIME36 / n for n in names]
    out = tmp_path / "f.npy"
    rc, _, err = _run_cli(["embed", *paths, *FEAT, "-o", out, "--faces", "--face-workers", "2", "-q"], capsys)
    assert rc == 0, err
    matrix = np.load(out)
    rows = [json.loads(line) for line in (tmp_path / "f.faces.jsonl").read_text().splitlines()]
    listed = (tmp_path / "f.paths.txt").read_text().splitlines()
    # 00.jpg has no face: whole picture; 05 and 24 have two faces each (boxes as the original binding)
    assert [(Path(r["source"]).name, r["face_index"]) for r in rows] == [
        ("00.jpg", None), ("05.jpg", 0), ("05.jpg", 1), ("24.jpg", 0), ("24.jpg", 1)]
    assert listed == [r["source"] for r in rows] and [r["row"] for r in rows] == list(range(5))
    for name in ("05.jpg", "24.jpg"):
        assert sorted(tuple(r["box"]) for r in rows if r["source"].endswith(name)) == ORIGINAL_BINDING_BOXES[name]
    assert matrix.shape == (5, i2v_features.feature_dim)
    # each row is the feature of that face's crop (25 % margin, square), the first of the whole picture
    crops = [np.asarray(Image.open(paths[0]).convert("RGB"))]
    for r in rows[1:]:
        crops += face_crops(r["source"], [r["box"]], margin=0.25)
    np.testing.assert_allclose(matrix, i2v_features.extract_feature(crops, alpha="white"), atol=1e-5)

    rc, _, err = _run_cli(["embed", *paths, *FEAT, "-o", tmp_path / "g.parquet", "--faces-only",
                           "--face-margin", "0", "--face-workers", "0", "-q"], capsys)
    assert rc == 0, err
    only = [json.loads(line) for line in (tmp_path / "g.faces.jsonl").read_text().splitlines()]
    assert [r["face_index"] for r in only] == [0, 1, 0, 1]
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "g.parquet")
    assert table.num_rows == 4 and table.column("path").to_pylist() == [r["source"] for r in only]


def test_tag_faces_records_carry_boxes(offline_store, i2v_tagger, tmp_path, capsys):
    paths = [ANIME36 / "00.jpg", ANIME36 / "05.jpg", tmp_path / "missing.jpg"]
    rc, out, err = _run_cli(["tag", *paths, *TAG, "--faces", "--face-workers", "0", "-q"], capsys)
    assert rc == 1 and f"error: {paths[2]}: no such file" in err
    records = json.loads(out)
    assert [(Path(r["path"]).name, r["face_index"]) for r in records] == [("00.jpg", None), ("05.jpg", 0), ("05.jpg", 1)]
    assert records[0]["box"] is None and records[0]["likelihood"] is None
    assert sorted(tuple(r["box"]) for r in records[1:]) == ORIGINAL_BINDING_BOXES["05.jpg"]
    assert all(r["likelihood"] > 0.5 and set(r["tags"]) >= {"general", "rating"} for r in records[1:])
    # the tag probabilities are those of the crops
    crop = face_crops(paths[1], [records[2]["box"]])
    probs = i2v_tagger.predict_proba(crop)[0]
    rating = {t: p for t, p in zip(i2v_tagger.tags.names, probs) if t in records[2]["tags"]["rating"]}
    for tag, p in records[2]["tags"]["rating"].items():
        assert abs(rating[tag] - p) < 1e-4

    rc, out, _ = _run_cli(["tag", paths[1], *TAG, "--faces", "--format", "csv", "-q", "--face-workers", "0"], capsys)
    assert rc == 0
    refs = {row["path"] for row in csv.DictReader(io.StringIO(out))}
    assert refs == {f"{paths[1]}#face{i} [{','.join(map(str, r['box']))}]" for i, r in enumerate(records[1:])}

    rc, _, err = _run_cli(["tag", paths[1], *TAG, "--faces", "--captions", "-q"], capsys)
    assert rc == 1 and "--captions" in err and "--faces" in err


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def face_map(tmp_path_factory, model_store):
    """``illust2vec map --faces`` over all of anime36: PNG, HTML viewer and JSON report (with the run time)."""
    import os

    out = tmp_path_factory.mktemp("face-map")
    env = {"ILLUST2VEC_HOME": str(model_store), "ILLUST2VEC_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from illust2vec.cli.main import main

        t0 = time.perf_counter()
        rc = main([*map(str, ["map", ANIME36, "--faces", "--method", "pca", "-o", out / "map.png",
                              "--html", out / "map.html", "--report", out / "report.json",
                              "--face-workers", "2", "-q", *FEAT])])
        seconds = time.perf_counter() - t0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    report = json.loads((out / "report.json").read_text())
    return {"rc": rc, "out": out, "report": report, "seconds": seconds}


def _points_by_source(face_map):
    from illust2vec.faces import parse_face_ref

    by_source: dict[str, list] = {}
    for pt in face_map["report"]["points"]:
        source, index, box = parse_face_ref(pt["path"])
        by_source.setdefault(Path(source).name, []).append((index, box))
    return by_source


def test_anime36_faces(face_map):
    assert face_map["rc"] == 0
    by_source = _points_by_source(face_map)
    assert sorted(by_source) == sorted(p.name for p in ANIME36.glob("*.jpg"))
    with_face = [name for name, items in by_source.items() if items[0][0] is not None]
    assert len(with_face) >= 32, f"{len(with_face)}/36 pictures with a face ({face_map['seconds']:.1f} s for the map)"
    for name, items in by_source.items():
        if items[0][0] is None:  # no face: the whole picture, once
            assert items == [(None, None)]
            continue
        assert sorted(i for i, _ in items) == list(range(len(items)))
        for _, (x, y, w, h) in items:
            assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512 and w >= 42
    for name, boxes in ORIGINAL_BINDING_BOXES.items():
        assert sorted(box for _, box in by_source[name] if box is not None) == boxes, name


def test_map_of_face_crops_renders_and_traces_each_crop(face_map):
    points = face_map["report"]["points"]
    assert len(points) == sum(len(v) for v in _points_by_source(face_map).values()) >= 36
    with Image.open(face_map["out"] / "map.png") as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] >= 256 and (arr < 250).any(axis=2).mean() > 0.05
    html = (face_map["out"] / "map.html").read_text(encoding="utf-8")
    for pt in points:  # every point named SOURCE#faceK [x,y,w,h] (or SOURCE for a picture without a face)
        assert pt["path"].startswith(str(ANIME36))
        assert json.dumps(pt["path"], ensure_ascii=False)[1:-1] in html


@pytest.mark.browser
def test_face_map_viewer_shows_face_refs(face_map):
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (bash .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    points = face_map["report"]["points"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--headless=new", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
            page.goto((face_map["out"] / "map.html").resolve().as_uri())
            page.evaluate("() => window.illust2vecViewer.ready")
            page.evaluate("() => window.illust2vecViewer.settled()")
            assert page.evaluate("() => window.illust2vecViewer.count") == len(points)
            shown = set()
            for i in range(0, len(points), max(1, len(points) // 10)):
                pt = page.evaluate(f"() => window.illust2vecViewer.pointToScreen({i})")
                page.mouse.move(pt["x"] + 2, pt["y"] - 1)
                page.wait_for_selector("#i2v-tooltip:not([hidden])")
                j = page.evaluate("() => window.illust2vecViewer.hovered()")
                if j >= 0:
                    shown.add(page.text_content("#i2v-tip-path"))
            assert shown and shown <= {p["path"] for p in points}
            assert any("#face" in s for s in shown)
            assert errors == []
        finally:
            browser.close()


def test_expand_face_items_and_option_errors(offline_store, tmp_path, capsys):
    import argparse

    from illust2vec.cli.face_options import add_face_arguments, expand_face_items

    parser = argparse.ArgumentParser()
    add_face_arguments(parser)
    face = tmp_path / "face.png"
    Image.fromarray(draw_anime_face(240)).save(face)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 48), "white").save(plain)
    inputs = [face, plain, tmp_path / "gone.png"]

    items, meta, errors = expand_face_items(inputs, parser.parse_args(["--faces", "--face-margin", "0"]), workers=0)
    assert [m["face_index"] for m in meta] == [0, None]
    assert items[0].shape[:2] == (meta[0]["box"][3], meta[0]["box"][2])  # margin 0: the box itself
    assert items[1].shape == (48, 64, 3)
    assert meta[0]["label"] == f"face.png#face0 [{','.join(map(str, meta[0]['box']))}]"
    assert errors == [(str(tmp_path / "gone.png"), "no such file")]
    items, meta, errors = expand_face_items(inputs, parser.parse_args(["--faces-only"]), workers=0)
    assert [m["source"] for m in meta] == [str(face)]

    with pytest.raises(SystemExit):
        parser.parse_args(["--faces", "--face-margin", "-1"])
    capsys.readouterr()
    rc, _, err = _run_cli(["embed", face, *FEAT, "-o", tmp_path / "x.npy", "--faces", "--face-max-side", "10"], capsys)
    assert rc == 1 and "--face-max-side 10" in err
