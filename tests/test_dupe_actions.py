"""Duplicates you can act on: per-file facts, the recommended keeper, move with a manifest, undo."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import ANIME36, I2V_FIXTURES
from PIL import Image

from illust2vec.cli.main import main
from illust2vec.collection.dupe_actions import (
    apply_plan,
    file_facts,
    keeper_index,
    moved_paths,
    plan_moves,
    read_manifest,
    undo_manifest,
)
from illust2vec.collection.errors import CollectionError

ORIGINALS = sorted(ANIME36.glob("*.jpg"))


def _need_anime36():
    if len(ORIGINALS) < 4:
        pytest.skip(f"{ANIME36} is missing (../shared/data/anime36)")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _state(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: content hash and mtime."""
    return {str(p.relative_to(root)): (_sha(p), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def copies(tmp_path):
    """One picture as a big PNG, the same size as JPEG, a small JPEG, and a second group of two same-size JPEGs."""
    _need_anime36()
    d = tmp_path / "pics"
    d.mkdir()
    im = Image.open(ORIGINALS[0]).convert("RGB")
    im.save(d / "a_big.png")
    im.save(d / "a_big.jpg", quality=95)
    im.resize((256, 256)).save(d / "a_small.jpg", quality=90)
    shutil.copy(ORIGINALS[1], d / "b_old.jpg")
    shutil.copy(ORIGINALS[1], d / "b_new.jpg")
    os.utime(d / "b_old.jpg", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.utime(d / "b_new.jpg", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    return d


def test_facts_and_keeper_rule(copies):
    d = copies
    f = {p.name: file_facts(p) for p in d.iterdir()}
    assert (f["a_big.png"].width, f["a_big.png"].height, f["a_big.png"].format) == (512, 512, "PNG")
    assert f["a_big.png"].lossless and not f["a_big.jpg"].lossless
    assert f["a_small.jpg"].width == 256 and f["a_small.jpg"].bytes == (d / "a_small.jpg").stat().st_size
    # most pixels first; at equal pixels lossless beats lossy
    group = [f["a_small.jpg"], f["a_big.jpg"], f["a_big.png"]]
    assert group[keeper_index(group)].path.endswith("a_big.png")
    assert group[keeper_index(group[:2])].path.endswith("a_big.jpg")
    # same pixels, format and size: the older file
    g2 = [f["b_new.jpg"], f["b_old.jpg"]]
    assert g2[keeper_index(g2)].path.endswith("b_old.jpg")
    # an unreadable file is never the keeper, and says why
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    bad = file_facts(d / "broken.jpg")
    assert bad.width is None and bad.error and keeper_index([bad, f["a_small.jpg"]]) == 1
    gone = file_facts(d / "missing.jpg")
    assert gone.bytes == -1 and "cannot read" in gone.error


def test_move_then_undo_restores_byte_identical(copies, tmp_path):
    d = copies
    before = _state(d)
    groups = [[str(d / "a_big.jpg"), str(d / "a_big.png"), str(d / "a_small.jpg")],
              [str(d / "b_new.jpg"), str(d / "b_old.jpg")]]
    dest = tmp_path / "moved"
    plan = plan_moves(groups, dest)
    assert plan.keepers == [str(d / "a_big.png"), str(d / "b_old.jpg")]
    assert sorted(Path(m.src).name for m in plan.moves) == ["a_big.jpg", "a_small.jpg", "b_new.jpg"]
    assert all(Path(m.dst).parent.parent == dest.resolve() for m in plan.moves)
    rep = apply_plan(plan)
    assert rep.done == 3 and rep.failed == [] and rep.manifest.parent == dest.resolve()
    assert sorted(p.name for p in d.iterdir()) == ["a_big.png", "b_old.jpg"]
    moved = {Path(m.dst).name: _sha(Path(m.dst)) for m in plan.moves}
    assert moved == {Path(m.src).name: before[Path(m.src).name][0] for m in plan.moves}
    header, actions, done, undone = read_manifest(rep.manifest)
    assert header["mode"] == "move" and len(actions) == 3 and done == {0, 1, 2} and not undone
    assert moved_paths(dest) == {m.src for m in plan.moves}
    # undo: everything back, same bytes and times; the group folders go away; a second undo does nothing
    u = undo_manifest(rep.manifest)
    assert (u.restored, u.failed) == (3, [])
    assert _state(d) == before
    assert [p.name for p in dest.iterdir()] == [rep.manifest.name] and moved_paths(dest) == set()
    u2 = undo_manifest(rep.manifest)
    assert (u2.restored, u2.already, u2.failed) == (0, 3, [])


def test_nothing_is_overwritten(copies, tmp_path):
    d = copies
    dest = tmp_path / "moved"
    plan = plan_moves([[str(d / "b_new.jpg"), str(d / "b_old.jpg")]], dest)
    # a file already where the copy would go: the planned name steps aside
    (dest / "group_0001").mkdir(parents=True)
    (dest / "group_0001" / "b_new.jpg").write_bytes(b"someone else's")
    plan = plan_moves([[str(d / "b_new.jpg"), str(d / "b_old.jpg")]], dest)
    assert Path(plan.moves[0].dst).name == "b_new~1.jpg"
    rep = apply_plan(plan)
    assert rep.done == 1 and (dest / "group_0001" / "b_new.jpg").read_bytes() == b"someone else's"
    # a new file at the original place blocks the undo of that entry: reported, both files kept
    (d / "b_new.jpg").write_bytes(b"new picture with the old name")
    errors = []
    u = undo_manifest(rep.manifest, on_error=lambda p, why: errors.append((p, why)))
    assert u.restored == 0 and len(u.failed) == 1 and errors == u.failed
    assert "exists at the original path" in errors[0][1]
    assert (d / "b_new.jpg").read_bytes() == b"new picture with the old name"
    assert (dest / "group_0001" / "b_new~1.jpg").exists()


def test_link_modes_leave_the_originals(copies, tmp_path):
    d = copies
    before = _state(d)
    for mode in ("hardlink", "symlink"):
        dest = tmp_path / mode
        rep = apply_plan(plan_moves([[str(d / "b_new.jpg"), str(d / "b_old.jpg")]], dest, mode=mode))
        link = dest / "group_0001" / "b_new.jpg"
        assert rep.done == 1 and _state(d) == before
        assert link.is_symlink() if mode == "symlink" else os.path.samefile(link, d / "b_new.jpg")
        assert undo_manifest(rep.manifest).restored == 1 and not link.exists() and _state(d) == before


def test_bad_plans_are_refused(copies, tmp_path):
    d = copies
    with pytest.raises(CollectionError, match="not one of its files"):
        plan_moves([[str(d / "b_new.jpg"), str(d / "b_old.jpg")]], tmp_path / "x", keepers=[str(d / "a_big.png")])
    with pytest.raises(CollectionError, match="inside the destination"):
        plan_moves([[str(d / "b_new.jpg"), str(d / "b_old.jpg")]], d)
    with pytest.raises(CollectionError, match="unknown mode"):
        plan_moves([], tmp_path, mode="delete")
    (tmp_path / "junk.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(CollectionError, match="not a manifest"):
        undo_manifest(tmp_path / "junk.jsonl")


def test_cli_json_move_dry_run_and_undo(copies, tmp_path, model_store, capsys):
    d = copies
    (d / "other.jpg").write_bytes((ORIGINALS[2]).read_bytes())
    db = tmp_path / "db"
    model = ["--weights", str(I2V_FIXTURES / "feature_w16_e1024.caffemodel"), "--model-dir", str(model_store)]
    assert main(["index", str(d), "--db", str(db), "--quiet", *model, "--tagger", "none"]) == 0
    capsys.readouterr()
    rc = main(["dupes", "--db", str(db), "--max-distance", "80", "--quiet", "--format", "json"])
    groups = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(groups) == 2
    for g in groups:
        assert {f["path"] for f in g["files"]} == set(g["paths"])
        for f in g["files"]:
            with Image.open(f["path"]) as im:
                assert (f["width"], f["height"], f["format"]) == (im.width, im.height, im.format)
            assert f["bytes"] == Path(f["path"]).stat().st_size
        assert [f["path"] for f in g["files"] if f["keep"]] == [g["keeper"]]
    keepers = {Path(g["keeper"]).name for g in groups}
    assert keepers == {"a_big.png", "b_old.jpg"}
    assert main(["dupes", "--db", str(db), "--max-distance", "80", "--quiet", "--format", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split("\t")[:3] == ["group", "keep", "width"] and len(table) == 1 + 5
    assert sorted(Path(r.split("\t")[-1]).name for r in table[1:] if r.split("\t")[1] == "*") == ["a_big.png", "b_old.jpg"]
    before = _state(d)
    dest = tmp_path / "review"
    rc = main(["dupes", "--db", str(db), "--max-distance", "80", "--quiet", "--move-to", str(dest), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and _state(d) == before and not dest.exists()
    assert out.count(" move ") == 3 and "keep " + str(d / "a_big.png") in out
    rc = main(["dupes", "--db", str(db), "--max-distance", "80", "--quiet", "--move-to", str(dest)])
    err = capsys.readouterr().err
    assert rc == 0 and sorted(p.name for p in d.iterdir()) == ["a_big.png", "b_old.jpg", "other.jpg"]
    manifest = next(dest.glob("dupes-manifest-*.jsonl"))
    assert f"--undo {manifest}" in err
    rc = main(["dupes", "--undo", str(manifest)])
    assert rc == 0 and "3 restored" in capsys.readouterr().err
    assert _state(d) == before
