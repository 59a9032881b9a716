"""Semantic morphing and attribute queries on real collections.

Morphing: anime36 plus pixel blends between two of its pictures, indexed
with the bundled EfficientNet-Lite0 embedder; the path between the two
through as many steps as there are blends must be the blends, in order.
The exact solver is checked against brute-force enumeration.

Attribute queries: the procedurally drawn demo gallery (its tags are known)
indexed with the same embedder, directions learned from the gallery's
``tags.json`` (or caption files), and a collection with the i2v fixture
tagger's stored probabilities.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ANIME36
from PIL import Image

from illust2vec.cli.main import main
from illust2vec.collection import Collection, CollectionError, UnknownTagError
from illust2vec.semantic.attributes import attribute_search, attribute_vector, move_query, tag_directions
from semantic_evaluate import attribute_precision, morph_recovers, pixel_blends
from illust2vec.semantic.morph import best_path, morph

pytestmark = pytest.mark.skipif(not ANIME36.is_dir(), reason=f"needs the shared test images in {ANIME36} "
                                                              "(../shared/data/anime36 beside the repository)")
ORIGINALS = sorted(ANIME36.glob("*.jpg"))
BLENDS = 4


@pytest.fixture(scope="module")
def effnet():
    from illust2vec.models.loading import load_model

    try:
        return load_model("generic-effnet-lite0", offline=True, progress=False)
    except Exception as exc:  # pragma: no cover - the wheel ships it
        pytest.skip(f"generic-effnet-lite0 not available offline: {exc}")


@pytest.fixture(scope="module")
def blended(tmp_path_factory, effnet):
    """A collection of anime36 + 4 pixel blends from picture 0 to picture 5."""
    root = tmp_path_factory.mktemp("morph")
    a, b = ORIGINALS[0], ORIGINALS[5]
    blends = pixel_blends(a, b, BLENDS, root / "blends")
    col = Collection.open(root / "col")
    col.add([ANIME36, root / "blends"], embedder=effnet, batch_size=16, workers=0, progress=False)
    yield col, a, b, blends, root
    col.close()


@pytest.mark.parametrize("binary", [False, True])
def test_morph_returns_the_blends_in_order(blended, effnet, binary):
    col, a, b, blends, _ = blended
    ok, r = morph_recovers(col, a, b, blends, binary=binary, embedder=effnet)
    assert [Path(s.path).name for s in r.intermediates] == [p.name for p in blends]
    assert ok and r.method == "exact" and r.optimal and r.binary == binary
    rows = [s.row for s in r.intermediates]
    assert len(set(rows)) == BLENDS and col.row_of_path(a) not in rows and col.row_of_path(b) not in rows
    # reported step lengths and the cost agree with the stored vectors
    if not binary:
        x = col.vectors("feature", [col.row_of_path(a), *rows, col.row_of_path(b)]).astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        steps = np.linalg.norm(np.diff(x, axis=0), axis=1)
        assert np.allclose([s.distance for s in r.steps[1:]], steps, atol=1e-4)
        assert r.cost == pytest.approx(float((steps ** 2).sum()), abs=1e-4)


@pytest.mark.parametrize("steps", [1, 2, 6])
def test_every_path_has_k_distinct_items_other_than_the_endpoints(blended, steps):
    col, _, _, _, _ = blended
    for i, j in [(1, 2), (3, 30), (10, 11)]:
        a, b = ORIGINALS[i], ORIGINALS[j]
        for method in ("exact", "graph"):
            r = morph(col, a, b, steps=steps, method=method, neighbors=6)
            rows = [s.row for s in r.intermediates]
            assert len(rows) == steps == len(set(rows))
            assert not {col.row_of_path(a), col.row_of_path(b)} & set(rows)
            assert r.steps[0].path == str(a.resolve()) and r.steps[-1].path == str(b.resolve())


def test_graph_method_is_never_better_than_exact_and_finds_the_blends(blended):
    col, a, b, blends, _ = blended
    for i, j in [(0, 5), (2, 17), (8, 33)]:
        ex = morph(col, ORIGINALS[i], ORIGINALS[j], steps=3, method="exact")
        gr = morph(col, ORIGINALS[i], ORIGINALS[j], steps=3, method="graph", neighbors=4)
        assert gr.cost >= ex.cost - 1e-5
        assert gr.candidates < ex.candidates
    ok, _ = morph_recovers(col, a, b, blends, method="graph", neighbors=4)
    assert ok


@pytest.mark.parametrize("binary, flat_max", [(False, None), (True, None), (False, 10)])
def test_nearest_rows_are_the_rows_search_returns(blended, binary, flat_max, monkeypatch):
    from illust2vec.collection import index as _index
    from illust2vec.collection.search import index_meta

    col, *_ = blended
    if flat_max is not None:  # the PQ FastScan index + exact re-rank that large collections use
        monkeypatch.setattr(_index, "FLAT_MAX", flat_max)
        monkeypatch.setattr(_index, "load", lambda p: None)
        col.view.forget()
    try:
        rows = col.live_rows()[::7]
        q = col.vectors("codes" if binary else "feature", rows)
        got = col.nearest_rows(q, 5, binary=binary)
        for qi, r in zip(q, got):
            assert r.tolist() == [h.row for h in col.search(vector=qi, k=5, binary=binary)]
        if flat_max is not None:
            assert index_meta(col.view, "feature").kind == "pq4fs-ip"
    finally:
        if flat_max is not None:
            col.view.forget()
            (col.path / "index" / "feature.faiss").unlink(missing_ok=True)


def test_endpoint_outside_the_collection_is_embedded(blended, effnet, tmp_path):
    col, a, b, blends, _ = blended
    outside = tmp_path / "a_copy.png"
    Image.open(a).convert("RGB").save(outside)  # other bytes: not found by hash
    assert col.row_of_path(outside) is None
    r = morph(col, outside, b, steps=BLENDS, embedder=effnet)
    assert r.steps[0].row is None and r.steps[0].path == str(outside.resolve())
    assert len({s.row for s in r.intermediates}) == BLENDS and col.row_of_path(b) not in [s.row for s in r.intermediates]


def test_best_path_equals_brute_force_also_when_the_programme_repeats_items():
    rng = np.random.default_rng(0)
    repeated_cases = 0
    for trial in range(60):
        n, k = int(rng.integers(4, 8)), int(rng.integers(2, 5))
        k = min(k, n)
        ca, cb = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
        c = rng.random((n, n)).astype(np.float32)
        c = (c + c.T) / 2
        if trial % 2:  # one cheap hub next to A and B, one cheap pair: tempts the programme to bounce
            ca[0] = cb[0] = 0.0
            c[0, 1] = c[1, 0] = 0.0
        best = min(itertools.permutations(range(n), k),
                   key=lambda p: ca[p[0]] + sum(c[p[i], p[i + 1]] for i in range(k - 1)) + cb[p[-1]])
        want = ca[best[0]] + sum(c[best[i], best[i + 1]] for i in range(k - 1)) + cb[best[-1]]
        from illust2vec.semantic.morph import _dp

        cc = c.copy()
        np.fill_diagonal(cc, np.inf)
        first, _ = _dp(ca, cc, cb, k, None)
        repeated_cases += len(set(first)) < k
        items, cost, optimal, bound = best_path(ca, c, cb, k)
        assert optimal and len(set(items)) == k and bound <= cost + 1e-6
        assert cost == pytest.approx(float(want), abs=1e-5)
    assert repeated_cases >= 5  # the branch and bound was really exercised


def test_morph_errors(blended):
    col, a, b, _, root = blended
    with pytest.raises(CollectionError, match="steps"):
        morph(col, a, b, steps=0)
    with pytest.raises(CollectionError, match="cannot morph through"):
        morph(col, a, b, steps=len(col) - 1)
    with pytest.raises(CollectionError, match="method"):
        morph(col, a, b, steps=2, method="astar")
    with pytest.raises(CollectionError, match="not found"):
        morph(col, root / "missing.jpg", b, steps=2)


def test_morph_cli_json_sheet_and_errors(blended, tmp_path, capsys):
    col, a, b, blends, root = blended
    db = str(col.path)
    out, sheet = tmp_path / "path.json", tmp_path / "strip.png"
    rc = main(["morph", str(a), str(b), "--db", db, "--steps", str(BLENDS), "-o", str(out), "--sheet", str(sheet)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert [Path(s["path"]).name for s in doc["steps"][1:-1]] == [p.name for p in blends]
    assert len(doc["intermediates"]) == BLENDS and doc["steps"][1]["distance"] > 0
    table = capsys.readouterr().out
    assert "blend_01.png" in table and "cost" in table
    with Image.open(sheet) as im:
        assert im.width > im.height  # one row: A, K items, B
    rc = main(["morph", str(a), str(b), "--db", db, "--steps", "2", "--json"])
    assert rc == 0 and len(json.loads(capsys.readouterr().out)["intermediates"]) == 2
    rc = main(["morph", str(a), str(root / "nope.jpg"), "--db", db, "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and f"error: {root / 'nope.jpg'}: not found" in err and "Traceback" not in err
    rc = main(["morph", str(a), str(b), "--db", db, "--steps", "0"])
    assert rc == 1 and capsys.readouterr().err.startswith("error: ")


# --------------------------------------------------------------------------- attribute queries
ATTRS = ["glasses", "cat ears", "hat", "twintails", "blonde hair"]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, effnet):
    from illust2vec.io.gallery import ACCESSORY_TAGS, EYE_COLORS, HAIR_COLORS, STYLE_TAGS, write_gallery

    root = tmp_path_factory.mktemp("gallery")
    write_gallery(root / "gallery", characters=20, variants=3, seed=0)
    labels = root / "gallery" / "tags.json"
    truth = {str((root / "gallery" / p).resolve()): t for p, t in json.loads(labels.read_text()).items()}
    groups = [{f"{h} hair" for h in HAIR_COLORS}, {f"{e} eyes" for e in EYE_COLORS}, set(STYLE_TAGS.values()),
              {v for v in ACCESSORY_TAGS.values() if v}]
    col = Collection.open(root / "col")
    col.add([root / "gallery"], embedder=effnet, batch_size=16, workers=0, progress=False)
    yield col, labels, truth, groups
    col.close()


def test_plus_raises_the_share_of_results_with_the_attribute(gallery):
    col, labels, truth, groups = gallery
    scores = [attribute_precision(col, truth, t, k=10, labels=labels, exclusive=groups, max_queries=20)
              for t in ATTRS]
    for s in scores:
        assert s.queries == 20
    gains = [s.plus - s.plain for s in scores]
    assert sum(g > 0.25 for g in gains) >= len(ATTRS) - 1, [s.to_dict() for s in scores]
    assert np.mean([s.plus for s in scores]) > 2 * np.mean([s.plain for s in scores])


def test_directions_are_the_difference_of_means_and_are_cached(gallery):
    col, labels, truth, _ = gallery
    dirs, mean = tag_directions(col, "glasses, cat ears", labels=labels)
    rows = col.live_rows()
    x = col.vectors("feature", rows).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    paths = col.rows_to_paths(rows)
    for tag in ("glasses", "cat ears"):
        has = np.array([tag in truth[paths[r][0]] for r in rows])
        d = x[has].mean(0) - x[~has].mean(0)
        assert float(dirs[tag].direction @ d / np.linalg.norm(d)) == pytest.approx(1.0, abs=1e-5)
        assert dirs[tag].count == has.sum()
        assert dirs[tag].hi > dirs[tag].lo
    assert float(mean @ x.mean(0) / np.linalg.norm(x.mean(0))) == pytest.approx(1.0, abs=1e-5)
    cache = list((col.path / "index").glob("directions-*.npz"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again, _ = tag_directions(col, ["glasses"], labels=labels)  # cached: nothing rewritten
    assert cache[0].stat().st_mtime_ns == stamp
    assert np.array_equal(again["glasses"].direction, dirs["glasses"].direction)


def test_items_left_out_of_the_labels_count_on_neither_side(gallery):
    col, labels, truth, _ = gallery
    half = dict(sorted(truth.items())[::2])
    dirs, _ = tag_directions(col, ["cat ears"], labels={p: sorted(t) for p, t in half.items()})
    rows = [col.row_of_path(p) for p in half]
    x = col.vectors("feature", rows).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    has = np.array(["cat ears" in t for t in half.values()])
    d = x[has].mean(0) - x[~has].mean(0)
    assert float(dirs["cat ears"].direction @ d / np.linalg.norm(d)) == pytest.approx(1.0, abs=1e-5)
    assert dirs["cat ears"].count == has.sum()


def test_captions_give_the_same_directions_as_the_labels_file(gallery, tmp_path):
    col, labels, truth, _ = gallery
    for p, tags in truth.items():
        Path(p).with_suffix(".txt").write_text(", ".join(tags))
    try:
        a, _ = tag_directions(col, ["hat", "smile"], labels=labels)
        b, _ = tag_directions(col, ["hat", "smile"], labels="captions")
    finally:
        for p in truth:
            Path(p).with_suffix(".txt").unlink()
    for t in ("hat", "smile"):
        assert np.allclose(a[t].direction, b[t].direction, atol=1e-6)


def test_move_query_only_changes_the_component_along_the_tags(gallery):
    col, labels, truth, _ = gallery
    dirs, _ = tag_directions(col, ["glasses"], labels=labels)
    d = dirs["glasses"]
    q = col.vectors("feature", col.live_rows()[:1])[0].astype(np.float64)
    q /= np.linalg.norm(q)
    v = move_query(q, [d]).astype(np.float64)
    assert float(v @ d.direction) >= d.hi + d.margin - 1e-5 or float(q @ d.direction) >= d.hi + d.margin
    resid_q, resid_v = q - (q @ d.direction) * d.direction, v - (v @ d.direction) * d.direction
    assert np.allclose(resid_q, resid_v, atol=1e-5)
    w = move_query(q, [], [d])
    assert float(w @ d.direction) <= min(float(q @ d.direction), d.lo - d.margin) + 1e-5


def test_like_and_filters_and_binary(gallery):
    col, labels, truth, _ = gallery
    hits = attribute_search(col, like="cat ears, glasses", labels=labels, k=5)
    assert len(hits) == 5
    share = np.mean([("cat ears" in truth[h.path]) + ("glasses" in truth[h.path]) for h in hits]) / 2
    assert share > np.mean([("cat ears" in t) + ("glasses" in t) for t in truth.values()]) / 2
    q = sorted(p for p, t in truth.items() if "hat" not in t)[0]
    binary = attribute_search(col, q, plus="hat", labels=labels, k=10, binary=True)
    plain = col.search(image=q, k=10, binary=True)
    assert sum("hat" in truth[h.path] for h in binary) > sum("hat" in truth[h.path] for h in plain)
    assert all(h.distance is not None for h in binary)
    with pytest.raises(UnknownTagError, match="did you mean 'cat ears'"):
        attribute_vector(col, q, plus="cat ear", labels=labels)
    with pytest.raises(CollectionError, match="no tag probabilities"):
        attribute_vector(col, q, plus="hat")
    with pytest.raises(CollectionError, match="not both"):
        attribute_vector(col, q, like="hat", labels=labels)


def test_search_cli_plus_minus_like(gallery, capsys):
    col, labels, truth, _ = gallery
    db = str(col.path)
    q = sorted(p for p, t in truth.items() if "glasses" not in t)[0]
    rc = main(["search", q, "--db", db, "-k", "5", "--plus", "glasses", "--minus", "smile", "--labels", str(labels),
               "--json"])
    hits = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(hits) == 5
    assert sum("glasses" in truth[h["path"]] for h in hits) >= 3
    rc = main(["search", "--db", db, "-k", "3", "--like", "twintails", "--labels", str(labels), "--json"])
    assert rc == 0 and len(json.loads(capsys.readouterr().out)) == 3
    for argv, msg in [(["search", q, "--like", "hat"], "--like searches by tags alone"),
                      (["search", "--plus", "hat"], "--plus/--minus move a QUERY"),
                      (["search", q, "--plus", "hatt"], "unknown tag 'hatt'")]:
        rc = main(argv + ["--db", db, "--labels", str(labels)])
        err = capsys.readouterr().err
        assert rc == 1 and msg in err and "Traceback" not in err


def test_directions_from_stored_tagger_probabilities(tmp_path, i2v_features, i2v_tagger):
    """The i2v fixture tagger (random weights): its stored probabilities still define directions to move along."""
    with Collection.open(tmp_path / "col") as col:
        col.add([ANIME36], embedder=i2v_features, tagger=i2v_tagger, batch_size=12, workers=0, progress=False)
        probs = col.vectors("prob")
        share = (probs >= 0.5).mean(axis=0)
        t = int(np.argmin(np.abs(share - 0.3)))  # a tag about a third of the pictures carry
        name = i2v_tagger.tags.names[t]
        dirs, _ = tag_directions(col, [name])
        rows = col.live_rows()
        x = col.vectors("feature", rows).astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        has = probs[:, t] >= 0.5
        d = x[has].mean(0) - x[~has].mean(0)
        assert float(dirs[name].direction @ d / np.linalg.norm(d)) == pytest.approx(1.0, abs=1e-5)
        gain = 0
        for q in [ORIGINALS[i] for i in np.nonzero(~has)[0][:8]]:
            plain = col.search(image=q, k=8)
            moved = attribute_search(col, q, plus=name, k=8)
            gain += sum(probs[h.row, t] >= 0.5 for h in moved) - sum(probs[h.row, t] >= 0.5 for h in plain)
        assert gain > 0
