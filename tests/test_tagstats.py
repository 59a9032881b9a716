"""Tag statistics over a run of `tag`, over saved results and over a collection, with the fixture tagger."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ANIME36, I2V_FIXTURES
from illust2vec.datasets.tagstats import read_tag_records, tag_statistics
from illust2vec.errors import Illust2VecError

TAG = ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V_FIXTURES / "tag_list.json")]


def _count(records):
    """The report written out independently: {(category, tag): (count, mean p)}; one rating per image."""
    seen: dict[tuple[str, str], list[float]] = {}
    for r in records:
        for cat, tags in r["tags"].items():
            items = list(tags.items())
            if cat == "rating":
                items = [max(items, key=lambda kv: kv[1])]
            for tag, p in items:
                seen.setdefault((cat, tag), []).append(p)
    return {k: (len(v), float(np.mean(v))) for k, v in seen.items()}


def test_counts_shares_and_order():
    stats = tag_statistics([
        {"general": [("smile", 0.9), ("hat", 0.4)], "rating": [("safe", 0.7), ("questionable", 0.3)]},
        {"general": {"smile": 0.5}, "rating": {"safe": 0.2, "explicit": 0.8}},
        {"tags": {"general": {"cat ears": 0.6, "smile": 0.7}, "rating": {"safe": 0.9}}},
    ])
    assert stats.images == 3
    rows = {(r.category, r.tag): (r.count, round(r.share, 4), round(r.mean_probability, 4)) for r in stats.rows}
    assert rows == {("general", "smile"): (3, 1.0, 0.7), ("general", "hat"): (1, 0.3333, 0.4),
                    ("general", "cat ears"): (1, 0.3333, 0.6), ("rating", "safe"): (2, 0.6667, 0.8),
                    ("rating", "explicit"): (1, 0.3333, 0.8)}
    assert [r.tag for r in stats.top(2)] == ["smile", "cat ears"]  # ties: higher mean probability first
    table = stats.table(top=1)
    assert "general (3 distinct tags)" in table and "... 2 more" in table


def test_files_written_and_refused(tmp_path):
    stats = tag_statistics([{"general": [("=HYPERLINK(x)", 0.9)]}])
    stats.write(tmp_path / "s.csv")
    rows = list(csv.reader((tmp_path / "s.csv").open(encoding="utf-8")))
    assert rows[0] == ["category", "tag", "count", "share", "mean_probability"] and rows[1][2] == "1"
    stats.write(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["images"] == 1
    with pytest.raises(Illust2VecError, match=".csv or .json"):
        stats.write(tmp_path / "s.txt")
    stats.chart(tmp_path / "c.png")
    assert Image.open(tmp_path / "c.png").size[0] > 300
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(Illust2VecError, match="bad.json"):
        read_tag_records(tmp_path / "bad.json")


@pytest.fixture()
def run_cli(model_store, monkeypatch, capsys):
    from illust2vec.cli.main import main

    monkeypatch.setenv("ILLUST2VEC_HOME", str(model_store))
    monkeypatch.setenv("ILLUST2VEC_OFFLINE", "1")

    def run(*args):
        capsys.readouterr()
        rc = main([*map(str, args)])
        out = capsys.readouterr()
        return rc, out.out, out.err
    return run


@pytest.fixture()
def pictures(tmp_path):
    if not ANIME36.is_dir():
        pytest.skip(f"shared data not found: {ANIME36}")
    root = tmp_path / "pics"
    root.mkdir()
    for src in sorted(ANIME36.glob("*.jpg"))[:8]:
        shutil.copy(src, root / src.name)
    return root


def test_tag_stats_of_a_run_equal_the_json(run_cli, pictures, tmp_path):
    rc, _, err = run_cli("tag", pictures, *TAG, "-q", "--threshold", "0.3", "--stats", tmp_path / "freq.csv",
                           "--stats-chart", tmp_path / "top.png", "-o", tmp_path / "tags.json")
    assert rc == 0, err
    records = json.loads((tmp_path / "tags.json").read_text())
    want = _count(records)
    rows = list(csv.DictReader((tmp_path / "freq.csv").open(encoding="utf-8")))
    got = {(r["category"], r["tag"]): (int(r["count"]), float(r["mean_probability"])) for r in rows}
    assert got.keys() == want.keys()
    for key, (n, mean) in want.items():
        assert got[key][0] == n and got[key][1] == pytest.approx(mean, abs=1e-5)
        assert float(next(r["share"] for r in rows if (r["category"], r["tag"]) == key)) == pytest.approx(n / 8)
    assert "8 images" in err and "general (" in err
    assert Image.open(tmp_path / "top.png").format == "PNG"
    # the same from the saved results
    rc, _, err = run_cli("tag-stats", tmp_path / "tags.json", "-o", tmp_path / "again.json")
    assert rc == 0, err
    again = json.loads((tmp_path / "again.json").read_text())
    assert {(r["category"], r["tag"]): r["count"] for r in again["tags"]} == {k: v[0] for k, v in want.items()}


def test_tag_stats_of_a_collection(run_cli, pictures, model_store, tmp_path):
    db = tmp_path / "db"
    rc, _, err = run_cli("index", pictures, "--db", db, "--quiet",
                         "--weights", I2V_FIXTURES / "feature_w16_e1024.caffemodel", "--model-dir", model_store,
                         "--tagger-weights", I2V_FIXTURES / "tag_w8_v1.caffemodel",
                         "--tag-list", I2V_FIXTURES / "tag_list.json")
    assert rc == 0, err
    rc, _, err = run_cli("tag", pictures, *TAG, "-q", "--general", "0.4", "--character", "0.6",
                         "--copyright", "0.5", "-o", tmp_path / "tags.json")
    assert rc == 0, err
    rc, _, err = run_cli("tag-stats", "--db", db, "--general", "0.4", "--character", "0.6", "--copyright", "0.5",
                         "-o", tmp_path / "col.json")
    assert rc == 0, err
    col = json.loads((tmp_path / "col.json").read_text())
    want = _count(json.loads((tmp_path / "tags.json").read_text()))
    assert col["images"] == 8
    assert {(r["category"], r["tag"]): r["count"] for r in col["tags"]} == {k: v[0] for k, v in want.items()}
