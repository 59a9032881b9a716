"""Collections on real images: search, dupes, tag queries, incremental indexing, crash safety.

Models are the random-weight i2v fixture models (real layout, 1024-d
features, 1539 tags).  Random weights still map an image and a mildly edited
copy close together, but they are not mirror-invariant: horizontal flips are
only required to find their original with a trained embedder
(``generic-effnet-lite0``), when the zoo offers it.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from conftest import ANIME36, I2V_FIXTURES

from illust2vec.collection import Collection, CollectionError, ModelMismatchError, UnknownTagError
from illust2vec.collection.query import Condition, model_matches, normalize_tag
from illust2vec.collection.vectors import VectorFile

ORIGINALS = sorted(ANIME36.glob("*.jpg"))
EDITS = ("crop", "recolour", "jpeg")  # + "flip" for trained embedders


def _edit(im: Image.Image, kind: str) -> Image.Image:
    w, h = im.size
    if kind == "crop":
        return im.crop((int(w * 0.06), int(h * 0.06), int(w * 0.94), int(h * 0.94)))
    if kind == "recolour":
        return ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.15)).enhance(0.7)
    if kind == "flip":
        return ImageOps.mirror(im)
    return im  # "jpeg": re-encoded below at a lower quality


def _make_copies(out: Path, originals, edits) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for p in originals:
        im = Image.open(p).convert("RGB")
        for kind in edits:
            _edit(im, kind).save(out / f"{p.stem}_{kind}.jpg", quality=60 if kind == "jpeg" else 90)
    return out


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """Edited copies of every other anime36 image (all 36 are in the collection): NAME_{crop,recolour,jpeg}.jpg."""
    return _make_copies(tmp_path_factory.mktemp("copies"), ORIGINALS[::2], EDITS)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, i2v_features, i2v_tagger):
    """A collection of the 36 originals with features and tag probabilities."""
    root = tmp_path_factory.mktemp("col")
    col = Collection.open(root / "col")
    report = col.add([ANIME36], embedder=i2v_features, tagger=i2v_tagger, batch_size=8, workers=2, progress=False)
    assert report.added == len(ORIGINALS) and not report.failed
    yield col
    col.close()


def _names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


# --------------------------------------------------------------------------- search
def test_edited_copies_find_their_original(indexed, copies, i2v_features):
    """Query by images outside the collection: the nearest neighbour of each copy is its original."""
    files = sorted(copies.glob("*.jpg"))
    feats = i2v_features.extract_feature([str(f) for f in files])
    codes = i2v_features.binarize_features(feats)
    misses: dict[tuple[str, bool], list[str]] = {}
    for f, v, c in zip(files, feats, codes):
        stem, kind = f.stem.rsplit("_", 1)
        for binary, q in ((False, v), (True, c)):
            top = indexed.search(vector=q, k=1, binary=binary)[0]
            if Path(top.path).name != f"{stem}.jpg":
                misses.setdefault((kind, binary), []).append(f.name)
    for kind in ("crop", "recolour", "jpeg"):
        assert not misses.get((kind, False)), misses
        assert not misses.get((kind, True)), misses
    # the image path route (embedding a file outside the collection) gives the same answer
    q = copies / f"{ORIGINALS[6].stem}_jpeg.jpg"
    hits = indexed.search(image=q, k=3, embedder=i2v_features)
    assert hits[0].path == str(ORIGINALS[6]) and 0.0 < hits[0].score <= 1.0 + 1e-6
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_trained_embedder_finds_originals_of_flips_too(tmp_path):
    """With a real (ImageNet) embedder every edit, flips included, finds its original."""
    from illust2vec.errors import Illust2VecError
    from illust2vec.models.loading import load_model

    try:
        model = load_model("generic-effnet-lite0", offline=True, progress=False)
    except Illust2VecError as exc:
        pytest.skip(f"generic-effnet-lite0 not available offline: {exc}")
    copies = _make_copies(tmp_path / "copies", ORIGINALS[1::5], (*EDITS, "flip"))
    with Collection.open(tmp_path / "col") as col:
        col.add([ANIME36], embedder=model, batch_size=12, progress=False)
        files = sorted(copies.glob("*.jpg"))
        feats = model.extract_feature([str(f) for f in files])
        codes = model.binarize_features(feats)
        for f, v, c in zip(files, feats, codes):
            want = f"{f.stem.rsplit('_', 1)[0]}.jpg"
            assert Path(col.search(vector=v, k=1)[0].path).name == want, f.name
            assert Path(col.search(vector=c, k=1, binary=True)[0].path).name == want, f.name


def test_search_matches_brute_force_and_uses_stored_vectors(indexed):
    F = indexed.vectors("feature")
    live = indexed.live_rows()
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    q = ORIGINALS[7]
    hits = indexed.search(image=q, k=5, include_query=True)  # in the collection: no model needed
    i = list(live).index(indexed.row_of_path(q))
    sims = Fn @ Fn[i]
    expect = live[np.argsort(-sims)[:5]]
    assert [h.row for h in hits] == list(expect)
    np.testing.assert_allclose([h.score for h in hits], np.sort(sims)[::-1][:5], rtol=1e-5, atol=1e-5)
    # binary: Hamming distances equal a direct popcount
    C = indexed.vectors("codes")
    d = np.unpackbits(C ^ C[i], axis=1).sum(axis=1)
    bh = indexed.search(image=q, k=36, binary=True, include_query=True)
    assert sorted(h.distance for h in bh) == sorted(d.tolist())
    assert {h.row: h.distance for h in bh} == {int(r): int(x) for r, x in zip(live, d)}
    # by default the query file itself is left out; the next hit moves up
    without = indexed.search(image=q, k=5)
    assert str(q) not in [p for h in without for p in h.paths]
    assert [h.row for h in without] == [h.row for h in indexed.search(image=q, k=6, include_query=True)
                                        if str(q) not in h.paths][:5]
    assert len(indexed.search(image=q, k=None, binary=True)) == len(live) - 1
    # persisted index files carry the model identity
    meta = (indexed.path / "index" / "feature.json").read_text()
    assert indexed.meta["embedder_identity"] in meta


@pytest.mark.parametrize("flat_max, ivf_min, kind", [(10, 100, "pq4fs-ip"), (10, 20, "pca-ivf-ip")])
def test_projected_indexes_rerank_to_exact_results(indexed, monkeypatch, flat_max, ivf_min, kind):
    """Large collections search a PCA projection (flat, then IVF) and re-rank exactly."""
    import json

    from illust2vec.collection import index as _index

    exact = {q: [h.row for h in indexed.search(image=q, k=5)] for q in ORIGINALS[:6]}
    monkeypatch.setattr(_index, "FLAT_MAX", flat_max)
    monkeypatch.setattr(_index, "IVF_MIN", ivf_min)
    path = indexed.path / "index" / "feature.faiss"
    monkeypatch.setattr(_index, "load", lambda p: None)  # force a rebuild with the patched sizes
    indexed.view.forget()
    try:
        for q, rows in exact.items():
            assert [h.row for h in indexed.search(image=q, k=5)] == rows
        assert json.loads(path.with_suffix(".json").read_text())["kind"] == kind
    finally:
        indexed.view.forget()
        path.unlink()


def test_query_with_another_model_is_refused(indexed, i2v_tagger, copies):
    with pytest.raises(ModelMismatchError, match="not the model this collection was indexed with"):
        indexed.search(image=copies / "00_crop.jpg", embedder=i2v_tagger)


# --------------------------------------------------------------------------- tags
def test_tag_queries_return_exactly_rows_passing_threshold(indexed):
    P = indexed.vectors("prob").astype(np.float64)
    live = indexed.live_rows()
    names = [normalize_tag(n) for n in indexed.view.tag_index().names]
    col_of = {n: i for i, n in enumerate(names)}
    cases = [
        (["blue hair"], [], 0.5),
        (["blue hair", "cat ears"], [], 0.5),
        (["1girl"], ["hat"], 0.5),
        (["long hair", "smile", "solo"], ["hat", "skirt"], 0.45),
        ([], ["1girl"], 0.6),
        (["character:hatsune miku"], [], 0.5),
        (["safe"], [], 0.3),
    ]
    for inc, exc, thr in cases:
        hits = indexed.search(tags=", ".join(inc), not_tags=exc, min_prob=thr, k=None)
        mask = np.ones(len(live), dtype=bool)
        for t in inc:
            mask &= P[:, col_of[normalize_tag(t.split(":")[-1])]] >= thr
        for t in exc:
            mask &= ~(P[:, col_of[normalize_tag(t)]] >= thr)
        assert sorted(h.row for h in hits) == sorted(live[mask].tolist()), (inc, exc, thr)
        for h in hits:  # reported probabilities are the stored ones
            for t in inc:
                name = t.split(":")[-1]
                assert h.tags[name] == pytest.approx(P[list(live).index(h.row), col_of[name]])
        if inc:  # best matches first
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
    # SQL path (threshold above the stored floor) and matrix path agree
    probs = indexed.view.prob_matrix()
    for thr in (0.3, 0.55):
        inc = [Condition((col_of["1girl"],), ">=", thr), Condition((col_of["long hair"],), ">", thr)]
        exc = [Condition((col_of["hat"],), ">=", thr)]
        a = model_matches(indexed.view.conn, probs, live, inc, exc, base=0, prob_floor=0.0)
        b = model_matches(indexed.view.conn, probs, live, inc, exc, base=0, prob_floor=1.1)
        assert a.tolist() == b.tolist()
        only_exc = model_matches(indexed.view.conn, probs, live, [], exc, base=0, prob_floor=0.0)
        assert only_exc.tolist() == model_matches(indexed.view.conn, probs, live, [], exc, base=0, prob_floor=1.1).tolist()


def test_tag_query_names_categories_and_unknown_tags(indexed):
    # underscores and case are accepted; category prefixes restrict the column
    a = indexed.search(tags="Blue_Hair", k=None)
    b = indexed.search(tags="general:blue hair", k=None)
    assert [h.row for h in a] == [h.row for h in b]
    with pytest.raises(UnknownTagError, match="in category 'general'"):
        indexed.search(tags="general:hatsune miku")
    with pytest.raises(UnknownTagError, match="blue hair"):
        indexed.search(tags="blue hairr")


def test_similar_images_with_tag_filter(indexed):
    P = indexed.vectors("prob")
    live = indexed.live_rows()
    hits = indexed.search(image=ORIGINALS[0], tags="1girl", min_prob=0.5, k=50, include_query=True)
    allowed = set(live[P[:, 0] >= 0.5].tolist())
    assert {h.row for h in hits} == allowed
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------- dupes
def test_dupes_finds_exactly_the_planted_groups(tmp_path, i2v_features):
    src = tmp_path / "imgs"
    src.mkdir()
    planted: list[set[str]] = []
    for i, p in enumerate(ORIGINALS):
        shutil.copy(p, src / p.name)
        if i % 3 == 0:  # original + re-encoded copy (+ a second generation for some)
            im = Image.open(p).convert("RGB")
            im.save(src / f"{p.stem}_q70.jpg", quality=70)
            group = {p.name, f"{p.stem}_q70.jpg"}
            if i % 6 == 0:
                Image.open(src / f"{p.stem}_q70.jpg").save(src / f"{p.stem}_q70b.jpg", quality=80)
                group.add(f"{p.stem}_q70b.jpg")
            planted.append(group)
        elif i % 7 == 1:  # byte-identical copy
            shutil.copy(p, src / f"{p.stem}_copy.jpg")
            planted.append({p.name, f"{p.stem}_copy.jpg"})
    with Collection.open(tmp_path / "col") as col:
        col.add([src], embedder=i2v_features, batch_size=16, progress=False)
        # 1024-bit codes: re-encodes stay within ~60 bits, different pictures are > 100 apart
        groups = col.dupes(max_distance=80)
        found = [{Path(p).name for p in g.paths} for g in groups]
        assert sorted(map(sorted, found)) == sorted(map(sorted, planted))
        C = col.vectors("codes")
        live = list(col.live_rows())
        for g in groups:
            for a, b, d in g.pairs:
                assert d == np.unpackbits(C[live.index(a)] ^ C[live.index(b)]).sum() <= 80
        assert col.dupes(max_distance=0) != []  # the byte-identical copies at least
        assert all(len(g.rows) == 1 for g in col.dupes(max_distance=0))


def test_default_dupes_distance_fits_simhash_codes(tmp_path):
    """The generic embedder's SimHash codes: re-encoded, half-size, flipped, cropped and recoloured copies are
    found with the default distance, and different pictures stay apart."""
    from illust2vec.collection.dupes import code_kind, default_max_distance
    from illust2vec.errors import Illust2VecError
    from illust2vec.models.loading import load_model

    try:
        model = load_model("generic-effnet-lite0", offline=True, progress=False)
    except Illust2VecError as exc:
        pytest.skip(f"generic-effnet-lite0 not available offline: {exc}")
    src = tmp_path / "imgs"
    src.mkdir()
    planted = []
    for p in ORIGINALS[::3]:
        im = Image.open(p).convert("RGB")
        im.save(src / f"{p.stem}.jpg", quality=95)
        im.save(src / f"{p.stem}_q60.jpg", quality=60)
        im.resize((im.width // 2, im.height // 2)).save(src / f"{p.stem}_half.jpg", quality=90)
        for kind in ("flip", "crop", "recolour"):
            _edit(im, kind).save(src / f"{p.stem}_{kind}.jpg", quality=90)
        planted.append({f"{p.stem}{s}.jpg" for s in ("", "_q60", "_half", "_flip", "_crop", "_recolour")})
    with Collection.open(tmp_path / "col") as col:
        col.add([src], embedder=model, batch_size=12, progress=False)
        assert code_kind(col.meta) == "simhash" and default_max_distance(col) == 819
        found = [{Path(p).name for p in g.paths} for g in col.dupes()]
        assert sorted(map(sorted, found)) == sorted(map(sorted, planted))


# --------------------------------------------------------------------------- incremental
def test_bad_files_recorded_and_retried_only_when_changed(tmp_path, i2v_features):
    d = tmp_path / "imgs"
    d.mkdir()
    for p in ORIGINALS[:3]:
        shutil.copy(p, d / p.name)
    bad = d / "broken.jpg"
    bad.write_bytes(ORIGINALS[3].read_bytes()[:300])
    (d / "notes.png").write_text("not an image")
    with Collection.open(tmp_path / "col") as col:
        r1 = col.add([d], embedder=i2v_features, progress=False)
        assert r1.added == 3 and sorted(Path(p).name for p, _ in r1.failed) == ["broken.jpg", "notes.png"]
        errs = dict(col.errors())
        assert str(bad) in errs and errs[str(bad)]
        r2 = col.add([d], embedder=i2v_features, progress=False)
        assert (r2.added, r2.failed, r2.unchanged, r2.still_bad) == (0, [], 3, 2)
        os.utime(bad, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))  # touched, same bytes
        r3 = col.add([d], embedder=i2v_features, progress=False)
        assert (r3.added, r3.failed, r3.still_bad) == (0, [], 2)
        shutil.copy(ORIGINALS[3], bad)  # fixed: now it is retried and indexed
        r4 = col.add([d], embedder=i2v_features, progress=False)
        assert r4.added == 1 and r4.failed == []
        assert str(bad) not in dict(col.errors()) and len(col) == 4


def test_moved_file_keeps_vector_and_prune_drops_deleted(tmp_path, i2v_features):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for p in ORIGINALS[:6]:
        shutil.copy(p, d / p.name)
    with Collection.open(tmp_path / "col") as col:
        col.add([d], embedder=i2v_features, progress=False)
        moved_from, moved_to = d / ORIGINALS[0].name, d / "sub" / "renamed.jpg"
        row = col.row_of_path(moved_from)
        before = col.vectors("feature", [row])
        col.search(image=moved_from, k=3)  # builds and saves the index
        moved_from.rename(moved_to)
        r = col.add([d], embedder=i2v_features, progress=False)
        assert (r.added, r.linked, r.moved, r.unchanged) == (0, 1, 1, 5)
        assert col.row_of_path(moved_to) == row
        np.testing.assert_array_equal(col.vectors("feature", [row]), before)
        assert col.search(image=moved_to, k=1, include_query=True)[0].paths == [str(moved_to)]
        assert len(col) == 6
        # prune drops deleted files (and their vectors from search)
        gone = d / ORIGINALS[1].name
        gone_row = col.row_of_path(gone)
        gone.unlink()
        r = col.add([d], embedder=i2v_features, progress=False)
        assert r.pruned == 0 and len(col) == 6  # without prune the entry stays
        r = col.add([d], embedder=i2v_features, progress=False, prune=True)
        assert r.pruned == 1 and len(col) == 5
        assert gone_row not in col.live_rows().tolist()
        hits = col.search(vector=col.vectors("feature", [gone_row])[0], k=10)
        assert gone_row not in [h.row for h in hits] and len(hits) == 5


def test_changing_models_needs_rebuild(tmp_path, i2v_features, i2v_tagger):
    with Collection.open(tmp_path / "col") as col:
        col.add([ORIGINALS[0]], embedder=i2v_features, tagger=i2v_tagger, progress=False)
        with pytest.raises(ModelMismatchError, match="recompute every vector with --rebuild"):
            col.add([ORIGINALS[1]], embedder=i2v_features, progress=False)
        with pytest.raises(CollectionError, match="no feature output"):
            Collection.open(tmp_path / "other").add([ORIGINALS[1]], embedder=i2v_tagger, progress=False)
        r = col.add([ORIGINALS[0], ORIGINALS[1]], embedder=i2v_features, progress=False, rebuild=True)
        assert r.added == 2 and col.info()["tagger"] is None
        with pytest.raises(CollectionError, match="no tag probabilities"):
            col.search(tags="1girl")


def test_orphan_vector_tails_are_truncated(tmp_path, i2v_features):
    """Vectors written before a crash but never committed are cut off on the next run."""
    with Collection.open(tmp_path / "col") as col:
        col.add(ORIGINALS[:4], embedder=i2v_features, progress=False)
        for vf in (col.view.vector_file(k) for k in ("feature", "codes")):
            junk = np.ones((3, vf.dim), dtype=vf.dtype)
            vf.append(junk)
            with open(vf.path, "ab") as fh:
                fh.write(b"\x01" * 5)  # a partial record
        r = col.add(ORIGINALS[:6], embedder=i2v_features, progress=False)
        assert r.orphans_truncated == 3 and r.added == 2
        for vf in (col.view.vector_file(k) for k in ("feature", "codes")):
            assert vf.rows == 6 and os.path.getsize(vf.path) == 64 + 6 * vf.record_size
        F = col.vectors("feature")
        np.testing.assert_allclose(F, i2v_features.extract_feature([str(p) for p in ORIGINALS[:6]]), rtol=1e-4, atol=1e-4)


def test_vector_file_refuses_missing_rows(tmp_path):
    vf = VectorFile(tmp_path / "v.f32", 4, "float32", create=True)
    vf.append(np.zeros((2, 4), np.float32))
    with pytest.raises(CollectionError, match="references 3"):
        vf.truncate(3)
    with pytest.raises(CollectionError, match="expected float32 x 8"):
        VectorFile(tmp_path / "v.f32", 8, "float32")


# --------------------------------------------------------------------------- processes
_WRITER = r"""
import sys
from pathlib import Path
from illust2vec import Illustration2Vec
from illust2vec.collection import Collection
fix, store, db, batch = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
emb = Illustration2Vec.from_caffemodel(fix / "feature_w16_e1024.caffemodel", alpha="drop", model_dir=store)
tag = Illustration2Vec.from_caffemodel(fix / "tag_w8_v1.caffemodel", tags=fix / "tag_list.json", alpha="drop", model_dir=store)
with Collection.open(db) as col:
    col.add(sys.argv[5:], embedder=emb, tagger=tag, batch_size=batch, workers=0, progress=False)
print("done")
"""

_READER = r"""
import sys, time, json
import numpy as np
from illust2vec.collection import Collection
db, stop = sys.argv[1], sys.argv[2]
seen, n = [], 0
from pathlib import Path
with Collection.open(db, create=False) as col:
    while not Path(stop).exists():
        v = col.vectors("feature", [0])[0]
        hits = col.search(vector=v, k=5)
        assert hits[0].row == 0, hits
        b = col.search(vector=col.vectors("codes", [0])[0], k=5, binary=True)
        assert b[0].distance == 0
        t = col.search(tags="1girl", min_prob=0.5, k=None)
        seen.append(len(col.live_rows()))
        n += 1
        time.sleep(0.05)
print(json.dumps({"queries": n, "min": min(seen), "max": max(seen)}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_kill9_during_indexing_then_resume(tmp_path, model_store, i2v_features, i2v_tagger):
    db = tmp_path / "col"
    subset = ORIGINALS[:20]
    args = [sys.executable, "-c", _WRITER, str(I2V_FIXTURES), str(model_store), str(db), "1", *map(str, subset)]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    committed = 0
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db / "collection.sqlite", timeout=5) as c:
                committed = int(c.execute("SELECT value FROM meta WHERE key='rows'").fetchone()[0])
        except (sqlite3.Error, TypeError):
            committed = 0
        if committed >= 8:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    with Collection.open(db) as col:
        assert 8 <= len(col) < len(subset)
        r = col.add(subset, embedder=i2v_features, tagger=i2v_tagger, progress=False)
        assert r.added + r.unchanged == len(subset) and r.unchanged >= 8
        info = col.info()
        assert info["files"] == info["contents"] == len(subset)
        by_path = col.view.path_rows()
        assert sorted(by_path.values()) == list(range(len(subset)))  # each once, no gaps
        for vf in (col.view.vector_file(k) for k in ("feature", "codes", "prob")):
            assert vf.rows == len(subset)
        paths = sorted(by_path, key=by_path.get)
        np.testing.assert_allclose(col.vectors("feature"), i2v_features.extract_feature(paths), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(col.vectors("prob"), i2v_tagger.predict_proba(paths), rtol=1e-4, atol=1e-5)


def test_two_readers_search_while_a_writer_indexes(tmp_path, model_store, i2v_features, i2v_tagger):
    db = tmp_path / "col"
    with Collection.open(db) as col:
        col.add(ORIGINALS[:2], embedder=i2v_features, tagger=i2v_tagger, progress=False)
    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(db), str(stop)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    writer = subprocess.run([sys.executable, "-c", _WRITER, str(I2V_FIXTURES), str(model_store), str(db), "2",
                             *map(str, ORIGINALS[:18])], env=_env(), capture_output=True, timeout=120)
    time.sleep(0.3)
    stop.touch()
    import json

    outs = []
    for r in readers:
        out, err = r.communicate(timeout=60)
        assert r.returncode == 0, err.decode()
        outs.append(json.loads(out))
    assert writer.returncode == 0, writer.stderr.decode()
    for o in outs:
        assert o["queries"] > 0 and o["max"] == 18
    with Collection.open(db) as col:
        assert len(col) == 18


def test_second_writer_is_refused(tmp_path, i2v_features):
    with Collection.open(tmp_path / "col") as a, Collection.open(tmp_path / "col") as b:
        with a.store.writing():
            with pytest.raises(CollectionError, match="another process is writing"):
                b.add(ORIGINALS[:1], embedder=i2v_features, progress=False)
        assert b.add(ORIGINALS[:1], embedder=i2v_features, progress=False).added == 1
