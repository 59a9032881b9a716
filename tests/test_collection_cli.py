"""The index / search / dupes / export commands on real images with the fixture models."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ANIME36, I2V_FIXTURES

from illust2vec.cli.main import main
from illust2vec.collection import Collection

ORIGINALS = sorted(ANIME36.glob("*.jpg"))


@pytest.fixture(scope="module")
def cli_col(tmp_path_factory, model_store):
    """12 originals, one re-encoded copy, one byte-identical copy, one broken file, indexed by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    imgs = root / "imgs"
    imgs.mkdir()
    for p in ORIGINALS[:12]:
        shutil.copy(p, imgs / p.name)
    Image.open(ORIGINALS[0]).save(imgs / "dup_q70.jpg", quality=70)
    shutil.copy(ORIGINALS[1], imgs / "dup_copy.jpg")
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    db = root / "db"
    model = ["--weights", str(I2V_FIXTURES / "feature_w16_e1024.caffemodel"), "--model-dir", str(model_store)]
    tagger = ["--tagger-weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"),
              "--tag-list", str(I2V_FIXTURES / "tag_list.json")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # indexed here, so that every test can run alone
        rc = main(["index", str(imgs), "--db", str(db), "--quiet", *model, *tagger])
    FIRST_RUN.update(rc=rc, err=err.getvalue())
    return root, imgs, db, model, tagger


FIRST_RUN: dict = {}


def test_index_reports_bad_files_and_is_incremental(cli_col, capsys):
    root, imgs, db, model, tagger = cli_col
    rc, err = FIRST_RUN["rc"], FIRST_RUN["err"]
    assert rc == 1
    bad = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(bad) == 1 and bad[0].startswith(f"error: {imgs / 'broken.png'}: ")
    assert "15 added" not in err and "14 added" in err
    # rerun: nothing to do, the bad file is not retried
    rc = main(["index", str(imgs), "--db", str(db), "--quiet", *model, *tagger])
    err = capsys.readouterr().err
    assert rc == 0 and "0 added" in err and "14 unchanged" in err and "1 still unreadable" in err
    # another model for an existing collection is refused with instructions
    rc = main(["index", str(imgs), "--db", str(db), "--quiet", *model, "--tagger", "none"])
    assert rc == 1 and "--rebuild" in capsys.readouterr().err


def test_search_outputs(cli_col, capsys, tmp_path):
    root, imgs, db, model, tagger = cli_col
    with Collection.open(db, create=False) as col:
        lib = col.search(image=imgs / ORIGINALS[3].name, k=5, include_query=True)
    rc = main(["search", str(imgs / ORIGINALS[3].name), "--db", str(db), "-k", "5", "--json", "--include-query"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and [h["path"] for h in out] == [h.path for h in lib]
    assert out[0]["path"] == str(imgs / ORIGINALS[3].name) and out[0]["score"] == pytest.approx(1.0, abs=1e-5)
    # by default the query is not its own first hit
    rc = main(["search", str(imgs / ORIGINALS[3].name), "--db", str(db), "-k", "4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and [h["path"] for h in out] == [h.path for h in lib[1:]]
    # a query image outside the collection is embedded with the given model
    outside = tmp_path / "q.jpg"
    Image.open(ORIGINALS[4]).save(outside, quality=80)
    rc = main(["search", str(outside), "--db", str(db), "-k", "3", "--binary", "--json", *model])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out[0]["path"] == str(imgs / ORIGINALS[4].name) and out[0]["distance"] >= 0
    # tag query as a table, with a contact sheet
    sheet = tmp_path / "hits.png"
    rc = main(["search", "--db", str(db), "--tags", "smile, solo", "--not", "long hair", "--min", "0.5",
               "-k", "4", "--sheet", str(sheet)])
    table = capsys.readouterr().out
    with Collection.open(db, create=False) as col:
        lib = col.search(tags="smile, solo", not_tags="long hair", min_prob=0.5, k=4)
    assert rc == 0 and table.splitlines()[0].split()[:3] == ["#", "score", "path"]
    assert [line.split()[2] for line in table.splitlines()[1:]] == [h.path for h in lib]
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 100
    # unknown tags: one error line, exit 1
    rc = main(["search", "--db", str(db), "--tags", "blue hairr"])
    assert rc == 1 and "did you mean 'blue hair'" in capsys.readouterr().err


def test_dupes_json_and_sheets(cli_col, capsys, tmp_path):
    root, imgs, db, model, tagger = cli_col
    rc = main(["dupes", "--db", str(db), "--max-distance", "80", "--sheets", str(tmp_path / "sheets"), "--quiet"])
    groups = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert sorted(sorted(Path(p).name for p in g["paths"]) for g in groups) == sorted(
        [sorted([ORIGINALS[0].name, "dup_q70.jpg"]), sorted([ORIGINALS[1].name, "dup_copy.jpg"])])
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == ["group_0001.png", "group_0002.png"]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_formats(cli_col, capsys, tmp_path, fmt):
    root, imgs, db, model, tagger = cli_col
    out = tmp_path / f"export.{fmt}"
    rc = main(["export", "--db", str(db), "-o", str(out)])
    assert rc == 0 and "14 records" in capsys.readouterr().err
    with Collection.open(db, create=False) as col:
        files = col.conn.execute("SELECT path, row FROM files WHERE row IS NOT NULL ORDER BY path").fetchall()
        F = col.vectors("feature", [r for _, r in files])
        P = col.vectors("prob", [r for _, r in files])
        C = col.vectors("codes", [r for _, r in files])
        names = [n for (n,) in col.conn.execute("SELECT name FROM tags ORDER BY id")]
    paths = [p for p, _ in files]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        assert t.column("path").to_pylist() == paths
        np.testing.assert_array_equal(np.array(t.column("feature").to_pylist(), np.float32), F)
        np.testing.assert_array_equal(np.array(t.column("prob").to_pylist(), np.float32), P)
        assert [bytes(b) for b in t.column("code").to_pylist()] == [c.tobytes() for c in C]
        assert json.loads(t.schema.metadata[b"illust2vec.tags"]) == names
    elif fmt == "csv":
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        head, body = rows[0], rows[1:]
        assert [r[0] for r in body] == paths and head[3] == f"tag:{names[0]}"
        np.testing.assert_array_equal(np.array([r[3:3 + len(names)] for r in body], np.float32), P)
        np.testing.assert_array_equal(np.array([r[3 + len(names):-1] for r in body], np.float32), F)
    else:
        recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert [r["path"] for r in recs] == paths
        np.testing.assert_array_equal(np.array([r["feature"] for r in recs], np.float32), F)
        assert [bytes.fromhex(r["code"]) for r in recs] == [c.tobytes() for c in C]
        assert recs[0]["tags"][names[5]] == pytest.approx(float(P[0, 5]))
