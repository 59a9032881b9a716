"""``illust2vec index --faces``: one searchable collection item per detected anime face."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from illust2vec.cli.main import main
from illust2vec.collection import Collection
from illust2vec.faces import detect_faces
from illust2vec.faces.detect import DEFAULT_MARGIN, crop_padded, crop_region
from illust2vec.io.images import load_image

from conftest import SHARED  # noqa: E402
ANIME36 = SHARED / "data" / "anime36"
I2V = SHARED / "fixtures" / "i2v"
# one face, two faces, three faces, no face (as the detector sees them)
PICTURES = ["01.jpg", "05.jpg", "21.jpg", "00.jpg"]


@pytest.fixture(scope="module")
def face_db(tmp_path_factory, model_store):
    root = tmp_path_factory.mktemp("faces")
    imgs = root / "imgs"
    imgs.mkdir()
    for name in PICTURES:
        shutil.copy(ANIME36 / name, imgs / name)
    db = root / "db"
    model = ["--weights", str(I2V / "feature_w16_e1024.caffemodel"), "--model-dir", str(model_store)]
    rc = main(["index", str(imgs), "--db", str(db), "--quiet", "--faces", "--face-workers", "0", *model])
    assert rc == 0
    return root, imgs, db, model


def _items(db: Path) -> list[tuple[str, int | None, list[int] | None, int]]:
    con = sqlite3.connect(db / "collection.sqlite")
    try:
        rows = con.execute(
            "SELECT files.path, faces.face_index, faces.x, faces.y, faces.w, faces.h, faces.row FROM faces "
            "JOIN files ON files.row = faces.content ORDER BY faces.row"
        ).fetchall()
    finally:
        con.close()
    return [(p, fi, None if fi is None else [x, y, w, h], r) for p, fi, x, y, w, h, r in rows]


def test_one_row_per_face_with_the_detector_boxes(face_db):
    _, imgs, db, _ = face_db
    items = _items(db)
    for name in PICTURES:
        path = str((imgs / name).resolve())
        got = [(fi, box) for p, fi, box, _ in items if p == path]
        faces = detect_faces(imgs / name)
        if faces:
            assert got == [(i, list(f.box)) for i, f in enumerate(faces)], name
        else:  # no face: the whole picture, once
            assert got == [(None, None)], name
    with Collection.open(db, create=False) as col:
        assert col.meta["schema_version"] == "3"
        assert len(col.live_rows()) == len(items) == sum(max(1, len(detect_faces(imgs / n))) for n in PICTURES)
        assert len(col) == len(PICTURES)
        assert col.vectors("feature").shape[0] == len(items)
        assert sorted(col.rows_to_paths([r for *_, r in items]).values()) == sorted([p] for p, *_ in items)


def test_search_by_a_face_crop_finds_that_face_first(face_db, tmp_path, capsys):
    _, imgs, db, model = face_db
    src = imgs / "21.jpg"
    for k, face in enumerate(detect_faces(src)):
        crop = crop_padded(load_image(src), crop_region(face.box, margin=DEFAULT_MARGIN, square=True))
        q = tmp_path / f"crop{k}.png"
        Image.fromarray(crop).save(q)
        capsys.readouterr()
        assert main(["search", str(q), "--db", str(db), "-k", "3", "--json", *model]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert hits[0]["path"] == str(src.resolve())
        assert hits[0]["face_index"] == k and hits[0]["box"] == list(face.box)
        assert hits[0]["score"] > 0.999 and hits[1]["score"] < hits[0]["score"]
    # the table names the face: PATH#faceK [x,y,w,h]
    assert main(["search", str(q), "--db", str(db), "-k", "2", *model]) == 0
    first = capsys.readouterr().out.splitlines()[1]
    x, y, w, h = face.box
    assert first.endswith(f"{src.resolve()}#face{k} [{x},{y},{w},{h}]")


def test_rerun_is_incremental_and_new_pictures_get_faces(face_db, capsys):
    _, imgs, db, model = face_db
    before = _items(db)
    capsys.readouterr()
    assert main(["index", str(imgs), "--db", str(db), "--faces", "--face-workers", "0", "--quiet", *model]) == 0
    assert f"0 added, 0 already known (moved or copied), {len(PICTURES)} unchanged" in capsys.readouterr().err
    assert _items(db) == before
    # a copy of a known picture is linked (no new rows); a new picture adds its faces after the others
    shutil.copy(imgs / "05.jpg", imgs / "05_copy.jpg")
    shutil.copy(ANIME36 / "24.jpg", imgs / "24.jpg")
    assert main(["index", str(imgs), "--db", str(db), "--faces", "--face-workers", "0", "--quiet", *model]) == 0
    err = capsys.readouterr().err
    assert "1 added, 1 already known" in err
    after = _items(db)
    new = [(fi, box) for p, fi, box, _ in after if p.endswith("/24.jpg")]
    assert new == [(i, list(f.box)) for i, f in enumerate(detect_faces(imgs / "24.jpg"))]
    copy_rows = [r for p, _, _, r in after if p.endswith("/05_copy.jpg")]
    assert copy_rows == [r for p, _, _, r in after if p.endswith("/05.jpg")] and len(copy_rows) == 2
    with Collection.open(db, create=False) as col:
        assert len(col.live_rows()) == len({r for *_, r in after})
        # dupes: each face of the copied picture is a group of the two paths, with its face and box
        groups = col.dupes(max_distance=0)
        faces05 = [(i, list(f.box)) for i, f in enumerate(detect_faces(imgs / "05.jpg"))]
        got = sorted(((it["face_index"], it["box"]), Path(it["path"]).name) for g in groups for it in g.items)
        assert got == sorted((f, n) for f in faces05 for n in ("05.jpg", "05_copy.jpg"))


def test_library_add_in_small_batches_keeps_each_picture_whole(tmp_path, i2v_features):
    """Faces of one picture split over batches are committed together, in order, with the detector's boxes."""
    from illust2vec.faces import FaceOptions

    files = [ANIME36 / "21.jpg", ANIME36 / "00.jpg", ANIME36 / "05.jpg"]
    with Collection.open(tmp_path / "db") as col:
        rep = col.add(files, embedder=i2v_features, faces=FaceOptions(workers=0), batch_size=2, progress=False)
        assert rep.added == 3 and not rep.failed
        items = _items(tmp_path / "db")
        assert [r for *_, r in items] == list(range(len(items)))  # rows in input order, no gaps
        for f in files:
            want = [(i, list(x.box)) for i, x in enumerate(detect_faces(f))] or [(None, None)]
            assert [(fi, box) for p, fi, box, _ in items if p == str(f)] == want
        hits = col.search(vector=col.vectors("feature", [items[1][3]])[0], k=1)
        assert (hits[0].path, hits[0].face_index, hits[0].box) == (items[1][0], items[1][1], items[1][2])


def test_mixing_faces_and_whole_pictures_is_refused(face_db, tmp_path, capsys):
    root, imgs, db, model = face_db
    capsys.readouterr()
    assert main(["index", str(imgs), "--db", str(db), "--quiet", *model]) != 0
    err = capsys.readouterr().err
    assert "face collection" in err and "--db" in err
    assert main(["index", str(imgs), "--db", str(db), "--quiet", "--faces", "--face-margin", "0.5", *model]) != 0
    assert "other face options" in capsys.readouterr().err
    plain = tmp_path / "plain"
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(ANIME36 / "01.jpg", one / "01.jpg")
    assert main(["index", str(one), "--db", str(plain), "--quiet", *model]) == 0
    capsys.readouterr()
    assert main(["index", str(one), "--db", str(plain), "--quiet", "--faces", "--face-workers", "0", *model]) != 0
    err = capsys.readouterr().err
    assert "without --faces" in err and "another --db" in err


def test_faces_only_skips_pictures_without_a_face(tmp_path, i2v_features):
    from illust2vec.faces import FaceOptions

    with Collection.open(tmp_path / "db") as col:
        files = [ANIME36 / "00.jpg", ANIME36 / "01.jpg"]
        rep = col.add(files, embedder=i2v_features, faces=FaceOptions(faces_only=True, workers=0), progress=False)
        assert rep.added == 1 and not rep.failed
        assert len(col.live_rows()) == len(detect_faces(files[1])) and len(col) == 1
        rep = col.add(files, embedder=i2v_features, faces=FaceOptions(faces_only=True, workers=0), progress=False)
        assert rep.unchanged == 2 and rep.added == 0


def test_version_1_collection_is_upgraded_by_a_writer(tmp_path):
    db = tmp_path / "old"
    Collection.open(db).close()
    con = sqlite3.connect(db / "collection.sqlite")
    con.execute("DROP TABLE faces")
    con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    with Collection.open(db, create=False) as col:  # a reader takes it as it is
        assert col.meta["schema_version"] == "1"
    with Collection.open(db) as col:
        assert col.meta["schema_version"] == "3"
        assert col.conn.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 0


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_has_one_record_per_face_with_its_box(face_db, tmp_path, capsys, fmt):
    _, _, db, _ = face_db
    out = tmp_path / f"faces.{fmt}"
    assert main(["export", "--db", str(db), "-o", str(out)]) == 0
    items = sorted(_items(db), key=lambda it: (it[0], it[3]))
    assert len({p for p, *_ in items}) < len(items)  # some picture has several faces
    with Collection.open(db, create=False) as col:
        F = col.vectors("feature", [r for *_, r in items])
    if fmt == "parquet":
        import pyarrow.parquet as pq

        recs = pq.read_table(out).to_pylist()
    elif fmt == "csv":
        import csv

        with open(out, newline="", encoding="utf-8") as fh:
            recs = list(csv.DictReader(fh))
        for r in recs:
            for k in ("row", "face_index", "face_x", "face_y", "face_w", "face_h"):
                r[k] = int(r[k]) if r[k] != "" else None
            fv = [float(r[f"f{i}"]) for i in range(F.shape[1])]
            r["feature"] = fv
    else:
        recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    got = [(r["path"], r["face_index"],
            None if r["face_index"] is None else [r["face_x"], r["face_y"], r["face_w"], r["face_h"]], r["row"])
           for r in recs]
    assert got == items
    np.testing.assert_array_equal(np.array([r["feature"] for r in recs], np.float32), F)


def test_map_of_a_face_collection_draws_each_face_crop(face_db, tmp_path):
    from illust2vec.maps.pipeline import face_thumbnails_from_collection, features_from_collection, make_map

    _, _, db, _ = face_db
    first: dict[int, tuple] = {}
    for item in sorted(_items(db), key=lambda it: (it[0], it[3])):  # a content indexed under several paths is drawn once, by its first
        first.setdefault(item[3], item)
    items = [first[r] for r in sorted(first)]
    paths, feats, *_ = features_from_collection(db)
    refs, thumb, links = face_thumbnails_from_collection(db, paths)
    assert len(refs) == len(items) == len(feats)
    assert links == [p for p, *_ in items]
    for i, (src, fi, box, _row) in enumerate(items):
        if fi is None:
            assert refs[i] == src and thumb(i) == src
        else:
            assert refs[i] == f"{src}#face{fi} [{','.join(map(str, box))}]"
            want = crop_padded(load_image(src), crop_region(box, margin=DEFAULT_MARGIN))
            np.testing.assert_array_equal(thumb(i), want)
    result = make_map(db, tmp_path / "faces.png", method="pca", grid=False)
    assert result.paths == refs and result.png.exists()


def test_the_face_bar_counts_faces_not_images(tmp_path, model_store, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in PICTURES[:2]:
        shutil.copy(ANIME36 / name, imgs / name)
    model = ["--weights", str(I2V / "feature_w16_e1024.caffemodel"), "--model-dir", str(model_store)]
    assert main(["index", str(imgs), "--db", str(tmp_path / "db"), "--faces", "--face-workers", "0", *model]) == 0
    bars = [b for b in capsys.readouterr().err.replace("\r", "\n").splitlines() if b.startswith("faces:")]
    assert bars and all(("face/s" in b or "s/face" in b) and "img" not in b for b in bars if "/s" in b), bars
    assert any("3face" in b for b in bars), bars  # one face in 01.jpg, two in 05.jpg
