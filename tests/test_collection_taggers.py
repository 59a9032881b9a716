"""Several taggers per collection, one tag-query engine with user tags, and the old layout upgraded in place.

Real SQLite and ONNX Runtime throughout.  The embedder is the bundled
generic-effnet-lite0 (it also tags, with ImageNet classes); the second tagger
is the tiny WD-contract model of test_wd, found in a prefilled Hugging Face
cache under its zoo name wd-vit-v3 (as test_hub does); the third is the i2v
oracle fixture tagger.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from conftest import ANIME36, I2V_FIXTURES
from test_hub import REPO, prefill
from test_wd import build_model, write_csv

from illust2vec.cli.main import main
from illust2vec.collection import Collection, CollectionError, ModelMismatchError, UnknownTagError
from illust2vec.collection.query import TagQuery, TagTerm, normalize_tag, parse_terms
from illust2vec.collection.taggers import UnknownTaggerError

ORIGINALS = sorted(ANIME36.glob("*.jpg"))[:8]
WD = "wd-vit-v3"
EFFNET = "generic-effnet-lite0"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Eight pictures, an empty model store, and the tiny WD model in a Hugging Face cache (offline)."""
    root = tmp_path_factory.mktemp("taggers")
    pics = root / "pics"
    pics.mkdir()
    for p in ORIGINALS:
        shutil.copy(p, pics / p.name)
    src = root / "wd"
    src.mkdir()
    onnx.save(build_model(64), src / "model.onnx")
    write_csv(src / "selected_tags.csv")
    prefill(root / "hf" / "hub", REPO, {n: (src / n).read_bytes() for n in ("model.onnx", "selected_tags.csv")})
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "ILLUST2VEC_DB"):
            mp.delenv(var, raising=False)
        mp.setenv("HF_HOME", str(root / "hf"))
        mp.setenv("ILLUST2VEC_HOME", str(root / "store"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any network use fails
        from illust2vec.models.loading import load_model

        try:
            effnet = load_model(EFFNET, offline=True, progress=False)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"{EFFNET} not available offline: {exc}")
        yield SimpleNamespace(root=root, pics=pics, effnet=effnet, wd=load_model(WD, task="tag", progress=False))


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_a_tagger_is_added_to_an_indexed_collection_without_re_embedding(env):
    """Acceptance: index with -m generic-effnet-lite0, then index --tagger (no --rebuild); search and export
    show the new tagger's tags, the old tagger stays selectable, two taggers are never mixed."""
    db = env.root / "accept"
    rc, _, err = cli("index", env.pics, "--db", db, "-m", EFFNET, "--quiet")
    assert rc == 0 and "8 added" in err, err
    features = digest(db / "feature.f32"), digest(db / "codes.u8")
    rc, _, err = cli("index", env.pics, "--db", db, "--tagger", WD, "--quiet")
    assert rc == 0, err
    assert f"tagger '{WD}': 8 stored pictures tagged (not re-embedded)" in err and "0 added" in err, err
    assert (digest(db / "feature.f32"), digest(db / "codes.u8")) == features  # nothing embedded again
    with Collection.open(db, create=False) as col:
        assert [t.name for t in col.taggers()] == [EFFNET, WD] and all(t.rows == 8 for t in col.taggers())
        rows = col.live_rows()
        paths = [col.rows_to_paths([r])[r][0] for r in rows]
        P = col.vectors("prob", tagger=WD)
        np.testing.assert_allclose(P, env.wd.predict_proba(paths), atol=1e-5)  # the tagger's own outputs
        np.testing.assert_allclose(col.vectors("prob", tagger=EFFNET), env.effnet.predict_proba(paths), atol=1e-5)
        names = col.view.tag_index(WD).names
        imagenet = col.view.tag_index(EFFNET).names
    smile = names.index("smile")
    want = sorted(p for p, v in zip(paths, P[:, smile]) if v >= 0.22)  # the tiny model's smile: 0.19-0.34
    rc, out, err = cli("search", "--db", db, "--tags", "smile>=0.22", "-k", "100", "--format", "json")
    hits = json.loads(out)
    assert rc == 0 and sorted(h["path"] for h in hits) == want and 0 < len(want) < 8, err
    assert all(h["tagger"] == WD and set(h["tags"]) == {"smile"} for h in hits)
    out_file = env.root / "accept.jsonl"
    rc, _, err = cli("export", "--db", db, "-o", out_file, "--no-vectors", "--no-codes", "--min", "0.5")
    recs = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert rc == 0 and len(recs) == 8 and all(r["tagger"] == WD for r in recs)
    for r in recs:
        assert r["tags"] == {n: pytest.approx(float(v)) for n, v in zip(names, P[paths.index(r["path"])]) if v >= 0.5}
    # the first tagger is still there, chosen by name; an unknown name lists the stored taggers
    top = imagenet[int(np.argmax(col_probs := env.effnet.predict_proba([paths[0]])[0]))]
    rc, out, _ = cli("search", "--db", db, "--tags", f"{top}>={float(col_probs.max()) - 1e-6:.6f}", "--tagger",
                     EFFNET, "--format", "json")
    assert rc == 0 and paths[0] in [h["path"] for h in json.loads(out)]
    rc, _, err = cli("search", "--db", db, "--tags", top, "--min", "0.01")  # not a WD tag: never answered by EFFNET
    assert rc == 1 and "unknown tag" in err
    rc, _, err = cli("search", "--db", db, "--tags", "smile", "--tagger", "wd-vit-v4")
    assert rc == 1 and EFFNET in err and WD in err and "did you mean 'wd-vit-v3'" in err, err
    # indexing again runs both taggers on new pictures only
    extra = env.root / "extra"
    extra.mkdir()
    shutil.copy(sorted(ANIME36.glob("*.jpg"))[20], extra / "new.jpg")
    rc, _, err = cli("index", env.pics, extra, "--db", db, "--quiet")
    assert rc == 0 and "1 added" in err and "8 unchanged" in err, err
    with Collection.open(db, create=False) as col:
        assert [t.rows for t in col.taggers()] == [9, 9] and all(t["complete"] for t in col.info()["taggers"])
        row = col.row_of_path(extra / "new.jpg")
        np.testing.assert_allclose(col.vectors("prob", [row], tagger=WD), env.wd.predict_proba([extra / "new.jpg"]),
                                   atol=1e-5)
    # another embedder still needs --rebuild, and says so
    rc, _, err = cli("index", env.pics, "--db", db, "--weights", I2V_FIXTURES / "feature_w16_e1024.caffemodel",
                     "--quiet")
    assert rc == 1 and "--rebuild" in err and "new --db" in err


def test_index_without_model_flags_stores_the_default_taggers_tags(env):
    """The README's order: 'index pics --db X' then 'search --tags' works (a tagger is in the model store)."""
    db = env.root / "plain"
    rc, _, err = cli("index", env.pics, "--db", db, "--quiet")
    assert rc == 0, err
    with Collection.open(db, create=False) as col:
        info = col.info()
        assert info["embedder"] == EFFNET and [t["name"] for t in info["taggers"]] == [WD]
    rc, out, err = cli("search", "--db", db, "--tags", "1girl", "--format", "json", "-k", "50")
    assert rc == 0 and len(json.loads(out)) == 8, err  # the tiny WD model gives every picture 1girl at 0.9


def test_user_tags_in_every_query_path(env, tmp_path):
    from illust2vec.datasets.tagstats import collection_tag_statistics
    from illust2vec.maps.pipeline import features_from_collection
    from illust2vec.semantic.attributes import tag_directions
    from illust2vec.serve import CollectionService

    db = tmp_path / "user"
    with Collection.open(db) as col:
        col.add(env.pics, embedder=env.effnet, taggers=[env.effnet, env.wd], progress=False, workers=0)
        first, second = sorted(str(p) for p in env.pics.iterdir())[:2]
        col.tag_files([first], add=["My_Pick"], remove=["1girl"])
        col.tag_files([second], add=["smile"])
        row = col.row_of_path(first)
        # search: plain name, user: prefix, negation, a model tag the user removed or added
        assert [h.path for h in col.search(tags="my pick")] == [first]
        hit = col.search(tags="user:my pick, 1girl>=0.0")
        assert hit == []  # 1girl was removed from it: the user's decision wins over any threshold
        assert first not in [h.path for h in col.search(tags="1girl", k=None)]
        assert len(col.search(tags="1girl", k=None)) == 7
        assert first in [h.path for h in col.search(tags="-1girl", k=None)]
        smiling = col.search(tags="smile", k=None, min_prob=0.99)
        assert smiling[0].path == second and smiling[0].tags["smile"] == 1.0 and smiling[0].score == 1.0
        assert [h.path for h in col.search(tags="my pick", not_tags="smile")] == [first]
        with pytest.raises(UnknownTagError, match="did you mean 'my pick'"):
            col.search(tags="user:my pik")
    # the command line
    rc, out, err = cli("search", "--db", db, "--tags", "user:my pick", "--format", "json")
    assert rc == 0 and [h["path"] for h in json.loads(out)] == [first], err
    # export applies them
    out_file = tmp_path / "e.jsonl"
    assert cli("export", "--db", db, "-o", out_file, "--no-vectors", "--no-codes")[0] == 0
    recs = {r["path"]: r for r in map(json.loads, out_file.read_text().splitlines())}
    assert recs[first]["tags"]["my pick"] == 1.0 and "1girl" not in recs[first]["tags"]
    assert recs[second]["tags"]["smile"] == 1.0 and recs[first]["tagger"] == WD
    # tag statistics count them (user tags the tagger does not know in category "user")
    with Collection.open(db, create=False) as col:
        stats = {(r.category, r.tag): r.count for r in collection_tag_statistics(col, 0.5).rows}
        assert stats[("general", "1girl")] == 7 and stats[("user", "my pick")] == 1
        assert stats[("general", "smile")] >= 1
        other = {(r.category, r.tag) for r in collection_tag_statistics(col, 0.5, tagger=EFFNET).rows}
        assert ("user", "my pick") in other and not any(t == "1girl" for _, t in other)
        # attribute queries learn from them
        dirs, _ = tag_directions(col, "my pick")
        assert dirs["my pick"].count == 1
    rc, _, err = cli("tag-stats", "--db", db, "-o", tmp_path / "s.json")
    tags = {(t["category"], t["tag"]): t["count"] for t in json.loads((tmp_path / "s.json").read_text())["tags"]}
    assert rc == 0 and tags[("user", "my pick")] == 1 and tags[("general", "1girl")] == 7, err
    # maps read the effective probabilities
    paths, _, probs, names, _ = features_from_collection(db)
    assert probs[paths.index(first), names.index("1girl")] == 0.0
    # the web app: one engine, the same answers
    svc = CollectionService(db)
    try:
        assert [i["path"] for i in svc.items(tags="my pick")["items"]] == [first]
        assert first not in [i["path"] for i in svc.items(tags="1girl", limit=100)["items"]]
        assert svc.items(tags="smile", min_prob=0.99, model=EFFNET)["items"][0]["path"] == second
        with pytest.raises(UnknownTaggerError):
            svc.items(tags="smile", model="nope")
    finally:
        svc.close()
    assert row is not None


def test_tag_expressions_parse_and_match_exactly(env, tmp_path):
    known = {"- -", "^ ^"}.__contains__  # kaomoji tags: '-_-' and '^_^'
    terms = parse_terms("blue_hair, -hat, character:Hatsune Miku, user:fav, smile>=0.8, solo>0.3, hat<0.2, -_-",
                        ["general", "character"], known=known)
    assert terms == [
        TagTerm("blue hair"), TagTerm("hat", negated=True), TagTerm("hatsune miku", "character"),
        TagTerm("fav", "user"), TagTerm("smile", threshold=0.8), TagTerm("solo", op=">", threshold=0.3),
        TagTerm("hat", negated=True, threshold=0.2), TagTerm("- -")]
    assert str(TagQuery.parse("a", "b, -c")) == "a, -b, c"
    assert parse_terms(":d, >_<", ["general"]) == [TagTerm(":d"), TagTerm("> <")]
    with pytest.raises(CollectionError, match="not a probability"):
        parse_terms("smile>=1.5")
    db = tmp_path / "expr"
    with Collection.open(db) as col:
        col.add(env.pics, embedder=env.effnet, taggers=[env.wd], progress=False, workers=0)
        P = col.vectors("prob").astype(np.float64)
        live = col.live_rows()
        names = [normalize_tag(n) for n in col.view.tag_index().names]
        c = {n: names.index(normalize_tag(n)) for n in ("smile", "blue_eyes", "open_mouth", "^_^", "hatsune_miku")}
        cases = {
            "smile>=0.3": P[:, c["smile"]] >= 0.3,
            "smile<0.3": ~(P[:, c["smile"]] >= 0.3),
            "smile>0.3, -blue_eyes": (P[:, c["smile"]] > 0.3) & ~(P[:, c["blue_eyes"]] >= 0.5),
            "open mouth>=0.2, blue eyes<=0.6": (P[:, c["open_mouth"]] >= 0.2) & ~(P[:, c["blue_eyes"]] > 0.6),
            "^_^>=0.3": P[:, c["^_^"]] >= 0.3,
            "character:hatsune miku": P[:, c["hatsune_miku"]] >= 0.5,
        }
        for expr, mask in cases.items():
            for min_prob in (0.5, 0.005):  # SQL on tag_probs, and the matrix scan below the stored floor
                got = col.match_tags(expr, min_prob=min_prob)
                want = live[mask] if min_prob == 0.5 else live[_with_min(expr, P, c, live, min_prob)]
                assert got.tolist() == want.tolist(), (expr, min_prob)
        with pytest.raises(UnknownTagError, match="general:hatsune miku"):
            col.match_tags("general:hatsune miku")
        with pytest.raises(UnknownTagError, match="'illust2vec models tags wd-vit-v3'"):
            col.match_tags("zzzzzz")


def _with_min(expr, P, c, live, min_prob):
    """The masks of test_tag_expressions_parse_and_match_exactly for terms that use the query's threshold."""
    if expr == "smile>0.3, -blue_eyes":
        return (P[:, c["smile"]] > 0.3) & ~(P[:, c["blue_eyes"]] >= min_prob)
    if expr == "character:hatsune miku":
        return P[:, c["hatsune_miku"]] >= min_prob
    return {"smile>=0.3": P[:, c["smile"]] >= 0.3, "smile<0.3": ~(P[:, c["smile"]] >= 0.3),
            "open mouth>=0.2, blue eyes<=0.6": (P[:, c["open_mouth"]] >= 0.2) & ~(P[:, c["blue_eyes"]] > 0.6),
            "^_^>=0.3": P[:, c["^_^"]] >= 0.3}[expr]


def test_a_gone_file_is_reported_and_an_interrupted_tagger_resumes(env, tmp_path, i2v_tagger):
    pics = tmp_path / "pics"
    shutil.copytree(env.pics, pics)
    db = tmp_path / "gone"
    with Collection.open(db) as col:
        col.add(pics, embedder=env.effnet, taggers=[env.effnet], progress=False, workers=0)
        with pytest.raises(ModelMismatchError, match="every stored tagger"):
            col.add(pics, embedder=env.effnet, progress=False)  # a stored tagger left out
        # an interrupted add: the WD tagger has tags for three of the eight pictures
        with col.store.writing(taggers=[env.wd]) as w:
            t = next(x for x in w.taggers if x.name == WD)
            w.append_probs(t, col.vectors("prob", col.live_rows()[:3], tagger=EFFNET)[:, :t.tag_count] * 0 + 0.25)
        assert w.report.lagging == {WD: 5} and not col.info()["taggers"][1]["complete"]
        rc, _, err = cli("search", "--db", db, "--tags", "1girl", "--tagger", WD)
        assert rc == 0 and "has no tags yet for some pictures" in err
        gone = sorted(pics.iterdir())[5]
        gone_row = col.row_of_path(gone)
        gone.unlink()
        rep = col.add_tagger(env.wd, progress=False, workers=0)
        assert rep.tagged == {WD: 4} and [p for p, _ in rep.untagged] == [str(gone)]
        P = col.vectors("prob", tagger=WD)
        assert (P[:3] == 0.25).all()  # what was committed before is kept
        live = col.live_rows().tolist()
        assert np.isnan(P[live.index(gone_row)]).all() and not np.isnan(np.delete(P, live.index(gone_row), 0)).any()
        assert gone_row not in col.match_tags("1girl", tagger=WD).tolist()
        # the i2v fixture tagger through the command line: the gone file is a warning, not a failure
    rc, _, err = cli("index", pics, "--db", db, "--tagger-weights", I2V_FIXTURES / "tag_w8_v1.caffemodel",
                     "--tag-list", I2V_FIXTURES / "tag_list.json", "--quiet")
    assert rc == 0 and f"warning: {gone}: file is gone" in err and "7 stored pictures tagged" in err, err
    with Collection.open(db, create=False) as col:
        assert len(col.taggers()) == 3 and col.taggers()[-1].identity == i2v_tagger.identity


def _to_version_2(db: Path) -> None:
    """Turn a collection written by this code into the layout of schema version 2 (one tagger in meta)."""
    con = sqlite3.connect(db / "collection.sqlite")
    (tid, name, ident, count), = con.execute("SELECT id, name, identity, tag_count FROM taggers").fetchall()
    assert tid == 1  # its probabilities are in prob.f32, as version 2 kept them
    con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("tagger_name", name), ("tagger_identity", ident), ("tag_count", str(count))])
    con.execute("DROP TABLE taggers")
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()


def test_a_version_2_collection_is_read_as_it_is_and_upgraded_in_place(env, tmp_path, i2v_features, i2v_tagger):
    db = tmp_path / "v2"
    files = sorted(env.pics.iterdir())
    with Collection.open(db) as col:
        col.add(files[:6], embedder=i2v_features, tagger=i2v_tagger, progress=False, workers=0)
        before = [(h.path, h.score) for h in col.search(tags="1girl", k=None, min_prob=0.1)]
        similar = [h.row for h in col.search(image=files[0], k=5)]
    _to_version_2(db)
    kept = {p.name: digest(p) for p in db.iterdir() if p.suffix in (".f32", ".u8")}
    with Collection.open(db, create=False) as col:  # a reader takes it as it is
        assert col.meta["schema_version"] == "2" and [t.name for t in col.taggers()] == [i2v_tagger.name]
        assert [(h.path, h.score) for h in col.search(tags="1girl", k=None, min_prob=0.1)] == before
    with Collection.open(db) as col:  # a writer upgrades it, keeping every row and file
        assert col.meta["schema_version"] == "3" and "tagger_name" not in col.meta
        (t,) = col.taggers()
        assert (t.name, t.identity, t.rows, t.file) == (i2v_tagger.name, i2v_tagger.identity, 6, "prob.f32")
        assert [(h.path, h.score) for h in col.search(tags="1girl", k=None, min_prob=0.1)] == before
        assert [h.row for h in col.search(image=files[0], k=5)] == similar
        assert {p.name: digest(p) for p in db.iterdir() if p.suffix in (".f32", ".u8")} == kept
        rep = col.add(files, embedder=i2v_features, tagger=i2v_tagger, progress=False, workers=0)
        assert rep.added == 2 and col.taggers()[0].rows == 8
        col.add_tagger(env.wd, progress=False, workers=0)  # and takes a second tagger beside the first
        assert [t.file for t in col.taggers()] == ["prob.f32", "prob-2.f32"]
        assert [h.path for h in col.search(tags="1girl", k=None, min_prob=0.1, tagger=i2v_tagger.name)] == [
            h.path for h in col.search(tags="1girl", k=None, min_prob=0.1, tagger=i2v_tagger.identity)]


@pytest.mark.browser
def test_the_web_app_offers_a_choice_of_tagger(env, tmp_path):
    """With two taggers the grid shows a tagger choice; the filter and the suggestions follow it."""
    from serve_support import LiveServer
    from test_serve_browser import CHROMIUM, CHROMIUM_ARGS, App

    from illust2vec.serve import CollectionService, create_app

    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    db = tmp_path / "web"
    with Collection.open(db) as col:
        col.add(env.pics, embedder=env.effnet, taggers=[env.effnet, env.wd], progress=False, workers=0)
        first = col.rows_to_paths([col.live_rows()[0]])[int(col.live_rows()[0])][0]
    probs = env.effnet.predict_proba([first])[0]
    top = env.effnet.tags.names[int(np.argmax(probs))]
    service = CollectionService(db)
    try:
        with LiveServer(create_app(service)) as srv, sync_api.sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            app = App(b, srv.url + "/")
            p = app.page
            assert p.is_visible("#model") and p.eval_on_selector_all(
                "#model option", "els => els.map(e => e.value)") == [WD, EFFNET]
            p.fill("#filter", "1girl, smile<0.3")  # the tiny WD model: 1girl 0.9 everywhere, smile below 0.34
            p.press("#filter", "Enter")
            p.wait_for_function("() => window.illust2vecApp.state().total === 7")
            p.select_option("#model", EFFNET)
            p.fill("#filter", f"{top}>={float(probs.max()) - 1e-4:.4f}")
            p.press("#filter", "Enter")
            p.wait_for_function("() => window.illust2vecApp.state().total >= 1")
            app.settle()
            assert any("model=generic-effnet-lite0" in u and "/api/items?" in u for u in app.requests)
            titles = p.eval_on_selector_all(".cell", "els => els.map(e => e.title.split('\\n')[0])")
            assert first in titles and f"\n{top}" in p.eval_on_selector(".cell", "e => e.title")
            app.close()
            b.close()
    finally:
        service.close()
