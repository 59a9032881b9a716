"""``illust2vec map`` and ``illust2vec demo`` end to end, with the best embedder available offline."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from illust2vec.cli.main import main

from conftest import SHARED  # noqa: E402
ANIME = SHARED / "data" / "anime36"


def _make_labelled_set(root: Path) -> None:
    """anime36 plus a recoloured, a flipped and a cropped copy of each, one folder per original."""
    for p in sorted(ANIME.glob("*.jpg")):
        folder = root / f"pic{p.stem}"
        folder.mkdir(parents=True)
        im = Image.open(p).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR)
        im.save(folder / "original.jpg", quality=90)
        r, g, b = im.split()
        Image.merge("RGB", (g, b, r)).save(folder / "recoloured.jpg", quality=90)
        ImageOps.mirror(im).save(folder / "flipped.jpg", quality=90)
        im.crop((26, 26, 230, 230)).resize((256, 256)).save(folder / "cropped.jpg", quality=90)


def _direct_label_accuracy(x: np.ndarray, labels: list[str], k: int, metric: str) -> float:
    """Leave-one-out majority vote of the k nearest neighbours, written out plainly."""
    n = len(labels)
    correct = 0
    for i in range(n):
        if metric == "cosine":
            d = [1.0 - float(np.dot(x[i], x[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))) for j in range(n)]
        else:
            d = [float(np.sum((x[i] - x[j]) ** 2)) for j in range(n)]
        order = sorted((j for j in range(n) if j != i), key=lambda j: (d[j], j))[:k]
        votes = Counter(labels[j] for j in order)
        best = max(votes.values())
        # tie: the label of the nearest neighbour among the tied ones
        winner = next(labels[j] for j in order if votes[labels[j]] == best)
        correct += winner == labels[i]
    return correct / n


@pytest.mark.slow
def test_map_cli_label_accuracy_is_computed_correctly_and_high(tmp_path, capsys):
    data = tmp_path / "set"
    _make_labelled_set(data)
    png, html, rep, db = tmp_path / "map.png", tmp_path / "map.html", tmp_path / "map.json", tmp_path / "col"
    code = main(["map", str(data), "-o", str(png), "--html", str(html), "--report", str(rep),
                 "--label-by", "folder", "--db", str(db), "--seed", "1", "--title", "anime36 x4", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(rep.read_text(encoding="utf-8"))
    q = report["quality"]
    assert report["n"] == 144 and q["label_k"] == 3 and q["queries"] == 144
    m = re.search(r"k-NN label accuracy\s+features ([0-9.]+)\s+map ([0-9.]+)", out)
    assert m, out
    printed_features, printed_map = float(m.group(1)), float(m.group(2))

    # direct computation from the stored features and the reported map positions
    from illust2vec.collection.core import Collection

    paths = [pt["path"] for pt in report["points"]]
    labels = [Path(p).parent.name for p in paths]
    assert [pt["label"] for pt in report["points"]] == labels
    with Collection.open(db, create=False) as col:
        by_path = dict(col.conn.execute("SELECT path, row FROM files").fetchall())
        feats = col.vectors("feature", [by_path[str(Path(p).resolve())] for p in paths])
    xy = np.array([[pt["x"], pt["y"]] for pt in report["points"]])
    direct_features = _direct_label_accuracy(feats.astype(np.float64), labels, 3, "cosine")
    direct_map = _direct_label_accuracy(xy, labels, 3, "euclidean")
    assert printed_features == pytest.approx(direct_features, abs=5e-5)
    assert printed_map == pytest.approx(direct_map, abs=5e-5)
    assert q["knn_label_accuracy_map"] == pytest.approx(direct_map, abs=0.01)  # positions rounded in JSON
    assert direct_map >= 0.8, (direct_features, direct_map)

    # the picture: every image once, inside the canvas
    w, h = Image.open(png).size
    rects = np.array([pt["rect"] for pt in report["points"]])
    assert (rects[:, :2] >= 0).all() and (rects[:, 2] <= w).all() and (rects[:, 3] <= h).all()
    assert html.is_file() and html.stat().st_size > 10_000
    # second run reads the features from the collection, on the grid
    code = main(["map", str(db), "-o", str(tmp_path / "grid.png"), "--grid", "--report", str(rep), "-q"])
    assert code == 0
    report2 = json.loads(rep.read_text(encoding="utf-8"))
    cells = {tuple(pt["cell"]) for pt in report2["points"]}
    assert len(cells) == 144 and report2["model"] == "collection"


def test_map_cli_reports_bad_inputs_and_keeps_going(tmp_path, capsys):
    data = tmp_path / "set"
    (data / "a").mkdir(parents=True)
    for i, p in enumerate(sorted(ANIME.glob("*.jpg"))[:6]):
        Image.open(p).convert("RGB").resize((128, 128)).save(data / "a" / f"{i}.png")
    (data / "a" / "broken.png").write_bytes(b"not a png")
    code = main(["map", str(data), str(tmp_path / "nope"), "-o", str(tmp_path / "m.png"), "--method", "pca", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert re.search(r"^error: .*nope: ", err, re.M)
    assert re.search(r"^error: .*broken\.png: ", err, re.M)
    assert Image.open(tmp_path / "m.png").size[0] > 0
    assert main(["map", str(data), "-q"]) == 2  # nothing to write
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        assert main(["map", str(data), "-o", str(tmp_path / "u.png"), "--method", "umap", "-q"]) == 1
        assert "pip install 'illust2vec[umap]'" in capsys.readouterr().err


def test_demo_runs_offline_and_writes_png_and_html(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "demo"), "--characters", "4", "--variants", "3", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    png = tmp_path / "demo" / "map.png"
    assert f"map:    {png}" in out and png.is_file()
    assert (tmp_path / "demo" / "map.html").is_file()
    folders = sorted(p.name for p in (tmp_path / "demo" / "gallery").iterdir() if p.is_dir())
    assert len(folders) == 4
    report = json.loads((tmp_path / "demo" / "report.json").read_text(encoding="utf-8"))
    assert report["n"] == 12 and {pt["label"] for pt in report["points"]} == set(folders)
    assert report["model"] and report["model"] in out
    # where it wrote its files and how to open the viewer (issue 26)
    viewer = (tmp_path / "demo" / "map.html").resolve().as_uri()
    assert f"wrote {tmp_path / 'demo'}/: gallery/ (12 pictures)" in out
    assert f"open the viewer in a web browser: {viewer}" in out and "--open" in out


def test_demo_open_shows_the_viewer_in_the_browser(tmp_path, capsys, monkeypatch):
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    code = main(["demo", "--out", str(tmp_path / "d"), "--characters", "2", "--variants", "2", "--method", "pca",
                 "--open", "-q"])
    assert code == 0
    assert opened == [(tmp_path / "d" / "map.html").resolve().as_uri()]
    assert f"opening {opened[0]}" in capsys.readouterr().out


def test_gallery_is_deterministic_and_variants_differ():
    from illust2vec.io.gallery import draw_character, make_characters

    chars = make_characters(6, seed=3)
    assert len({(c.hair, c.style, c.accessory) for c in chars}) == 6
    assert chars == make_characters(6, seed=3)
    a = np.asarray(draw_character(chars[0], 1, size=96, seed=3))
    b = np.asarray(draw_character(chars[0], 1, size=96, seed=3))
    c = np.asarray(draw_character(chars[0], 2, size=96, seed=3))
    assert a.shape == (96, 96, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1
    # the drawn hair colour is really there
    from illust2vec.io.gallery import HAIR_COLORS

    hair = np.array(HAIR_COLORS[chars[0].hair])
    assert (np.abs(a.astype(int) - hair).sum(axis=2) < 30).mean() > 0.03
