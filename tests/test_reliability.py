"""Faults a user meets (full disk, read-only storage, odd file names, broken databases), with real faults.

The full disk is a small tmpfs and the read-only storage a read-only bind mount,
both mounted when the tests run as root (skipped otherwise, with the reason).
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import ANIME36, I2V_FIXTURES

from illust2vec.cli.main import main
from illust2vec.io.atomic import AtomicFile, DurableBatch, atomic_write
from illust2vec.io.records import FORMULA_PREFIXES

ORIGINALS = sorted(ANIME36.glob("*.jpg"))
LATIN1_NAME = os.fsdecode(b"caf\xe9.jpg")  # not UTF-8: str with a surrogate escape


def _need_shared():
    if not ORIGINALS or not (I2V_FIXTURES / "feature_w16_e1024.caffemodel").exists():
        pytest.skip(f"shared data missing: {ANIME36} / {I2V_FIXTURES}")


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _mount(args: list[str]) -> str | None:
    """Run mount; the reason it failed, or None."""
    if os.geteuid() != 0:
        return "not running as root"
    r = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real file system that fills up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    why = _mount(["-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)])
    if why:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({why})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up, leaving about ``leave`` bytes free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize - leave
    with open(disk / "filler", "ab") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * max(0, free))


@pytest.fixture
def read_only(tmp_path):
    """``read_only(src) -> Path``: a read-only bind mount of directory ``src``."""
    mounts = []

    def make(src: Path) -> Path:
        mnt = tmp_path / f"ro{len(mounts)}"
        mnt.mkdir()
        why = _mount(["--bind", str(src), str(mnt)])
        if why:
            pytest.skip(f"cannot bind-mount ({why})")
        mounts.append(mnt)
        why = _mount(["-o", "remount,ro,bind", str(mnt)])
        if why:
            pytest.skip(f"cannot remount read-only ({why})")
        return mnt

    yield make
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", str(m)], check=False)


# ---------------------------------------------------------------- atomic, durable writes
def test_created_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write(tmp_path / "a.json", lambda fh: fh.write("{}"), text=True)
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o077)
        q = atomic_write(tmp_path / "b.json", lambda fh: fh.write("{}"), text=True)
        assert stat.S_IMODE(q.stat().st_mode) == 0o600
        p.chmod(0o640)
        atomic_write(p, lambda fh: fh.write("[]"), text=True)
        assert stat.S_IMODE(p.stat().st_mode) == 0o640 and p.read_text() == "[]"
    finally:
        os.umask(old)


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("good")

    def boom(fh):
        fh.write("half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom, text=True)
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(ValueError), AtomicFile(target, text=True) as fh:
        fh.write("partial")
        raise ValueError("stop")
    assert target.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_full_disk_keeps_the_old_file_and_names_it(small_disk):
    target = small_disk / "result.bin"
    atomic_write(target, lambda fh: fh.write(b"old contents"))
    fill(small_disk, leave=8192)
    with pytest.raises(OSError) as info:
        atomic_write(target, lambda fh: fh.write(b"x" * (1 << 20)))
    assert info.value.filename == str(target)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "result.bin"]


def test_tag_output_on_a_full_disk_keeps_the_good_json(small_disk, model_store):
    _need_shared()
    F = I2V_FIXTURES
    model = ["--weights", F / "tag_w8_v1.caffemodel", "--tags", F / "tag_list.json", "-q", "--model-dir", model_store]
    out = small_disk / "tags.json"
    rc, _, err = run_cli("tag", ORIGINALS[0], *model, "-o", out)
    assert rc == 0, err
    good = out.read_bytes()
    assert len(json.loads(good)) == 1
    fill(small_disk, leave=4096)
    rc, _, err = run_cli("tag", *ORIGINALS[:6], *model, "-o", out)
    assert rc == 1
    assert out.read_bytes() == good
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(out) in lines[0] and "ENOSPC" in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "tags.json"]


def test_a_durable_batch_shows_nothing_before_commit_then_every_file_whole(tmp_path):
    old = os.umask(0o022)
    try:
        kept = tmp_path / "a" / "kept.txt"
        kept.parent.mkdir()
        kept.write_text("old caption\n")
        kept.chmod(0o640)
        batch = DurableBatch(max_pending=1000)
        batch.write(kept, "new caption\n")
        for i in range(40):
            batch.write(tmp_path / ("a" if i % 2 else "b") / f"{i}.txt", f"tag{i}, smile\n")
        assert kept.read_text() == "old caption\n" and not (tmp_path / "b" / "0.txt").exists()
        assert len(batch) == 41
        done = batch.commit()
    finally:
        os.umask(old)
    assert len(done) == 41 and len(batch) == 0
    assert kept.read_text() == "new caption\n" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b" / "0.txt").stat().st_mode) == 0o644
    assert all((tmp_path / ("a" if i % 2 else "b") / f"{i}.txt").read_text() == f"tag{i}, smile\n" for i in range(40))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".part")]


def test_a_durable_batch_commits_what_it_holds_when_the_caller_fails(tmp_path):
    with pytest.raises(RuntimeError), DurableBatch(max_pending=3) as batch:
        for i in range(5):  # 3 committed on the way, 2 pending when the caller fails
            batch.write(tmp_path / f"{i}.txt", b"x")
        raise RuntimeError("the model failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i}.txt" for i in range(5)]


def test_a_durable_batch_names_the_file_it_cannot_rename_and_keeps_the_rest(tmp_path):
    (tmp_path / "taken.txt").mkdir()  # a directory where a file should go: the rename fails
    failed = []
    with DurableBatch(on_error=lambda path, exc: failed.append((path, exc))) as batch:
        batch.write(tmp_path / "one.txt", "1\n")
        batch.write(tmp_path / "taken.txt", "2\n")
        batch.write(tmp_path / "three.txt", "3\n")
    assert [p for p, _ in failed] == [tmp_path / "taken.txt"] and failed[0][1].filename == str(tmp_path / "taken.txt")
    assert (tmp_path / "one.txt").read_text() == "1\n" and (tmp_path / "three.txt").read_text() == "3\n"
    assert (tmp_path / "taken.txt").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt", "taken.txt", "three.txt"]
    batch = DurableBatch()  # without on_error, commit raises after committing the others
    batch.write(tmp_path / "taken.txt", "2\n")
    batch.write(tmp_path / "four.txt", "4\n")
    with pytest.raises(OSError) as info:
        batch.commit()
    assert info.value.filename == str(tmp_path / "taken.txt") and (tmp_path / "four.txt").read_text() == "4\n"


def test_a_durable_batch_on_a_full_disk_names_the_file_and_keeps_the_earlier_ones(small_disk):
    (small_disk / "old.txt").write_text("old\n")
    fill(small_disk, leave=6 * 4096)
    batch = DurableBatch()
    written = []
    with pytest.raises(OSError) as info:
        for i in range(100):
            target = small_disk / f"{i:03d}.txt"
            batch.write(target, f"caption {i}\n" * 300)  # ~4 KiB each
            written.append(target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(small_disk / f"{len(written):03d}.txt")
    batch.write(small_disk / "old.txt", "")  # an empty file needs no data block
    batch.commit()
    assert written and all(p.read_text() == f"caption {int(p.stem)}\n" * 300 for p in written)
    assert (small_disk / "old.txt").read_text() == ""
    assert sorted(p.name for p in small_disk.iterdir()) == sorted(["filler", "old.txt", *(p.name for p in written)])


def test_tag_captions_on_a_full_disk_name_each_lost_caption_and_keep_the_rest(small_disk, model_store, tmp_path):
    _need_shared()
    F = I2V_FIXTURES
    model = ["--weights", F / "tag_w8_v1.caffemodel", "--tags", F / "tag_list.json", "-q", "--model-dir", model_store]
    fill(small_disk, leave=64 * 1024)  # the random fixture model's captions are ~20 KiB: a few fit
    rc, _, err = run_cli("tag", *ORIGINALS[:8], *model, "--captions", "--caption-dir", small_disk)
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    written = sorted(p for p in small_disk.iterdir() if p.suffix == ".txt")
    assert rc == 1 and "Traceback" not in err, err
    assert written and lines and len(written) + len(lines) == 8, err
    assert all("No space left" in ln and str(small_disk) in ln for ln in lines), err
    assert all(p.read_text().endswith("\n") and p.read_text().strip() for p in written)
    assert not [p for p in small_disk.iterdir() if p.name.endswith(".part")]
    assert f"tagged {len(written)} of 8 images" in err, err


# ---------------------------------------------------------------- odd names, collections
@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    """Three good images, one with a Latin-1 (non-UTF-8) name, a symlink loop and a dangling link."""
    _need_shared()
    root = tmp_path_factory.mktemp("odd")
    imgs = root / "imgs"
    imgs.mkdir()
    for p in ORIGINALS[:3]:
        shutil.copy(p, imgs / p.name)
    shutil.copy(ORIGINALS[3], imgs / LATIN1_NAME)
    os.symlink("loop_b.jpg", imgs / "loop_a.jpg")
    os.symlink("loop_a.jpg", imgs / "loop_b.jpg")
    os.symlink("missing.png", imgs / "dangling.png")
    return imgs


def _feature_model(model_store) -> list:
    return ["--weights", I2V_FIXTURES / "feature_w16_e1024.caffemodel", "--model-dir", model_store, "-q"]


@pytest.fixture(scope="module")
def odd_collection(odd_folder, tmp_path_factory, model_store):
    db = tmp_path_factory.mktemp("oddcol") / "db"
    rc, _, err = run_cli("index", odd_folder, "--db", db, *_feature_model(model_store), "--tagger", "none")
    return db, rc, err


def test_index_stores_every_good_image_and_one_line_per_bad_entry(odd_folder, odd_collection):
    from illust2vec.collection import Collection

    db, rc, err = odd_collection
    assert "Traceback" not in err
    assert rc == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3, err  # two loop links, one dangling link
    assert sum("loop_" in ln for ln in errors) == 2 and sum("dangling.png" in ln for ln in errors) == 1
    with Collection.open(db, create=False) as col:
        assert len(col) == 4  # the Latin-1 name included
        stored = {r[0] for r in col.conn.execute("SELECT path FROM files WHERE row IS NOT NULL")}
    assert os.path.realpath(odd_folder / LATIN1_NAME) in stored
    latin = os.fsencode(os.path.realpath(odd_folder / LATIN1_NAME))
    assert latin.endswith(b"caf\xe9.jpg") and os.path.exists(latin)  # the str names the same file
    rc, _, err = run_cli("index", odd_folder, "--db", db, "-q", "--tagger", "none",
                         "--weights", I2V_FIXTURES / "feature_w16_e1024.caffemodel")
    assert "Traceback" not in err and "0 added" in err  # the rerun finds everything in place


def test_non_utf8_names_in_every_output(odd_folder, odd_collection, tmp_path, model_store):
    db, _, _ = odd_collection
    latin = os.fsencode(os.path.realpath(odd_folder / LATIN1_NAME))
    rc, _, err = run_cli("embed", odd_folder, *_feature_model(model_store), "-o", tmp_path / "e.npy")
    assert rc == 1 and "Traceback" not in err  # the bad links failed, the rest was written
    listing = (tmp_path / "e.paths.txt").read_bytes().splitlines()
    assert len(listing) == 4 and os.fsencode(str(odd_folder)) + b"/caf\xe9.jpg" in listing
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"x.{fmt}"
        rc, _, err = run_cli("export", "--db", db, "-o", out)
        assert rc == 0 and "Traceback" not in err, err
    records = [json.loads(ln) for ln in (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()]
    assert latin in {os.fsencode(r["path"]) for r in records}  # \udce9 escape: valid UTF-8 JSON, same name
    assert latin in (tmp_path / "x.csv").read_bytes()
    import pyarrow.parquet as pq

    assert os.fsdecode(latin).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") in \
        pq.read_table(tmp_path / "x.parquet").column("path").to_pylist()
    html = tmp_path / "map.html"
    rc, _, err = run_cli("map", db, "-o", tmp_path / "map.png", "--html", html, "-q")
    assert rc == 0 and "Traceback" not in err, err
    assert "caf\\udce9.jpg" in html.read_text(encoding="utf-8")


def test_search_export_map_dupes_on_a_read_only_mount(odd_collection, read_only, tmp_path, model_store):
    db, _, _ = odd_collection
    ro = read_only(db)
    with pytest.raises(OSError):
        (ro / "probe").write_text("x")  # really read-only
    rc, out, err = run_cli("search", ORIGINALS[0], "--db", ro, "-k", "2", "--json", *_feature_model(model_store))
    assert rc == 0, err
    assert json.loads(out)[0]["path"].endswith(ORIGINALS[0].name)
    for argv in (["export", "--db", ro, "-o", tmp_path / "ro.csv"],
                 ["dupes", "--db", ro, "--quiet"],
                 ["map", ro, "-o", tmp_path / "ro.png", "-q"]):
        rc, _, err = run_cli(*argv)
        assert rc == 0 and "Traceback" not in err, (argv, err)
    rc, _, err = run_cli("index", ORIGINALS[5], "--db", ro, *_feature_model(model_store))
    assert rc == 1 and "read-only" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_damaged_database_is_one_error_line(odd_collection, tmp_path, model_store, damage):
    db, _, _ = odd_collection
    copy = tmp_path / "copy"
    shutil.copytree(db, copy)
    sqlite = copy / "collection.sqlite"
    if damage == "truncated":
        with open(sqlite, "r+b") as fh:
            fh.truncate(sqlite.stat().st_size // 3)
    else:
        with open(sqlite, "r+b") as fh:
            fh.write(os.urandom(200))
    for argv in (["search", ORIGINALS[0], "--db", copy, *_feature_model(model_store)],
                 ["export", "--db", copy, "-o", tmp_path / "x.csv"],
                 ["dupes", "--db", copy]):
        rc, _, err = run_cli(*argv)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 1 and len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert str(sqlite) in lines[0] and "check" in lines[0]


def _features_by_path(db) -> dict[str, bytes]:
    from illust2vec.collection import Collection

    with Collection.open(db, create=False) as col:
        rows = dict(col.conn.execute("SELECT path, row FROM files WHERE row IS NOT NULL").fetchall())
        return {os.path.basename(p): col.vectors("feature", [r]).tobytes() for p, r in rows.items()}


@pytest.mark.parametrize("leave", [20_000, 45_000])
def test_disk_full_during_index_is_one_line_and_the_rerun_completes(small_disk, tmp_path, model_store, leave):
    _need_shared()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in ORIGINALS[:10]:
        shutil.copy(p, imgs / p.name)
    model = [*_feature_model(model_store), "--tagger", "none", "--batch-size", "2"]
    reference = tmp_path / "ref"
    assert run_cli("index", imgs, "--db", reference, *model)[0] == 0
    db = small_disk / "db"
    assert run_cli("index", *sorted(imgs.iterdir())[:2], "--db", db, *model)[0] == 0
    fill(small_disk, leave=leave)
    for _ in range(2):  # the second attempt must name the cause too, not "cannot rollback"
        rc, _, err = run_cli("index", imgs, "--db", db, *model)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
        assert "ENOSPC" in lines[0] and str(db) in lines[0] and "rollback" not in lines[0]
    (small_disk / "filler").unlink()
    rc, _, err = run_cli("index", imgs, "--db", db, *model)
    assert rc == 0, err
    assert _features_by_path(db) == _features_by_path(reference)


@pytest.mark.parametrize("damage", ["truncated", "header overwritten", "page overwritten"])
def test_check_and_repair_rebuild_a_damaged_database(tmp_path, model_store, damage):
    _need_shared()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in ORIGINALS[:6]:
        shutil.copy(p, imgs / p.name)
    before = {p.name: p.read_bytes() for p in imgs.iterdir()}
    model = [*_feature_model(model_store), "--tagger", "none"]
    db = tmp_path / "db"
    assert run_cli("index", imgs, "--db", db, *model)[0] == 0
    assert run_cli("check", "--db", db)[0] == 0
    reference = _features_by_path(db)
    sqlite = db / "collection.sqlite"
    size = sqlite.stat().st_size
    with open(sqlite, "r+b") as fh:
        if damage == "truncated":
            fh.truncate(size * 2 // 3)
        elif damage == "header overwritten":
            fh.write(b"\xff" * 100)
        else:
            fh.seek(size // 2)
            fh.write(os.urandom(4096))
    rc, _, err = run_cli("check", "--db", db)
    assert rc == 1 and "--repair" in err and "Traceback" not in err
    assert all(ln.startswith(("problem:", str(db))) for ln in err.splitlines())  # one line each
    rc, _, err = run_cli("check", "--db", db, "--repair")
    assert rc == 0 and "Traceback" not in err, err
    assert any(p.name.startswith("collection.sqlite.damaged-") for p in db.iterdir())  # set aside, not deleted
    rc, _, err = run_cli("index", imgs, "--db", db, *model)
    assert rc == 0 and "0 added" in err, err  # salvaged contents are linked again, nothing recomputed
    assert _features_by_path(db) == reference
    assert run_cli("check", "--db", db)[0] == 0
    assert {p.name: p.read_bytes() for p in imgs.iterdir()} == before  # the images were only read


# ---------------------------------------------------------------- error lines, CSV cells, prune, folders
def test_a_newline_in_a_file_name_stays_one_error_line(tmp_path, model_store):
    _need_shared()
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(ORIGINALS[0], imgs / "good.jpg")
    (imgs / "bad\nname.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rc, _, err = run_cli("embed", imgs, *_feature_model(model_store), "-o", tmp_path / "e.npy")
    assert rc == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad\\nname.png" in errors[0], err
    assert not any(ln.startswith("name.png") for ln in err.splitlines())


def test_csv_cells_are_guarded_against_formulas(tmp_path, model_store, monkeypatch):
    _need_shared()
    from illust2vec.io.records import csv_cell

    assert [csv_cell(t) for t in ("=_=", "+_+", "-_-", "@home", "smile", "")] == \
        ["'=_=", "'+_+", "'-_-", "'@home", "smile", ""]
    assert csv_cell("=_=", raw=True) == "=_="
    monkeypatch.chdir(tmp_path)
    shutil.copy(ORIGINALS[0], tmp_path / "=HYPERLINK(1).jpg")
    F = I2V_FIXTURES
    model = ["--weights", F / "tag_w8_v1.caffemodel", "--tags", F / "tag_list.json", "-q", "--model-dir", model_store]
    rc, out, err = run_cli("tag", "=HYPERLINK(1).jpg", *model, "-f", "csv")
    assert rc == 0, err
    rows = list(csv.reader(io.StringIO(out)))[1:]
    assert rows and all(r[0] == "'=HYPERLINK(1).jpg" for r in rows)
    assert all(not r[2].startswith(FORMULA_PREFIXES) for r in rows)
    rc, out, _ = run_cli("tag", "=HYPERLINK(1).jpg", *model, "-f", "csv", "--csv-raw")
    assert all(r[0] == "=HYPERLINK(1).jpg" for r in list(csv.reader(io.StringIO(out)))[1:])


def test_prune_keeps_a_missing_drive_and_lists_what_it_drops(tmp_path, model_store):
    _need_shared()
    here, drive = tmp_path / "here", tmp_path / "drive"
    for d, originals in ((here, ORIGINALS[:2]), (drive, ORIGINALS[2:4])):
        d.mkdir()
        for p in originals:
            shutil.copy(p, d / p.name)
    db = tmp_path / "db"
    model = [*_feature_model(model_store), "--tagger", "none"]
    assert run_cli("index", here, drive, "--db", db, *model)[0] == 0
    drive.rename(tmp_path / "away")
    drive.mkdir()  # the empty mount point of an unmounted drive
    (here / ORIGINALS[0].name).unlink()
    gone = os.path.realpath(here) + "/" + ORIGINALS[0].name
    rc, _, err = run_cli("index", here, drive, "--db", db, *model, "--prune", "--dry-run")
    assert rc == 0 and f"would drop: {gone}" in err and "kept its 2 entries" in err, err
    rc, _, err = run_cli("index", here, drive, "--db", db, *model, "--prune")
    assert f"pruned: {gone}" in err and "kept its 2 entries" in err, err
    from illust2vec.collection import Collection

    with Collection.open(db, create=False) as col:
        assert len(col) == 3
    rc, _, err = run_cli("index", here, drive, "--db", db, *model, "--prune", "--prune-missing")
    with Collection.open(db, create=False) as col:
        assert len(col) == 1


def test_outputs_into_missing_folders_are_created_before_the_work(tmp_path, model_store):
    _need_shared()
    db = tmp_path / "db"
    model = [*_feature_model(model_store), "--tagger", "none"]
    assert run_cli("index", *ORIGINALS[:2], "--db", db, *model)[0] == 0
    rc, _, err = run_cli("dupes", "--db", db, "-o", tmp_path / "new" / "d.json", "--sheets", tmp_path / "s" / "t", "-q")
    assert rc == 0 and json.loads((tmp_path / "new" / "d.json").read_text()) == [], err
    (tmp_path / "afile").write_text("x")
    rc, _, err = run_cli("faces", ORIGINALS[0], "-o", tmp_path / "afile" / "f.json", "-q")
    assert rc == 1 and err.count("error:") == 1 and "afile" in err and "Traceback" not in err
    rc, _, err = run_cli("faces", *ORIGINALS[:2], "-o", tmp_path / "f1" / "f.json",
                         "--sheet", tmp_path / "f2" / "s.png", "-q")
    assert rc == 0, err
    assert json.loads((tmp_path / "f1" / "f.json").read_text()) and (tmp_path / "f2" / "s.png").stat().st_size > 0


def test_debug_shows_the_traceback(tmp_path):
    rc, _, err = run_cli("search", "--db", tmp_path / "nothing", "--tags", "smile")
    assert rc == 1 and "Traceback" not in err and err.count("\n") == 1
    rc, _, err = run_cli("--debug", "search", "--db", tmp_path / "nothing", "--tags", "smile")
    assert rc == 1 and "Traceback" in err


def test_embed_on_a_full_disk_keeps_the_old_matrix_and_paths_pair(small_disk, model_store):
    _need_shared()
    out = small_disk / "e.npy"
    model = _feature_model(model_store)
    assert run_cli("embed", *ORIGINALS[:2], *model, "-o", out)[0] == 0
    old = out.read_bytes(), out.with_suffix(".paths.txt").read_bytes()
    fill(small_disk, leave=4096)
    rc, _, err = run_cli("embed", *ORIGINALS[:8], *model, "-o", out)
    assert rc == 1 and "ENOSPC" in err and "Traceback" not in err, err
    assert (out.read_bytes(), out.with_suffix(".paths.txt").read_bytes()) == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["e.meta.json", "e.npy", "e.paths.txt", "filler"]


def test_map_on_a_full_disk_keeps_the_old_png(small_disk, odd_collection):
    db, _, _ = odd_collection
    png = small_disk / "map.png"
    rc, _, err = run_cli("map", db, "-o", png, "-q")
    assert rc == 0, err
    old = png.read_bytes()
    fill(small_disk, leave=16384)
    rc, _, err = run_cli("map", db, "-o", png, "-q", "--max-size", "3000")
    assert rc == 1 and str(png) in err and "ENOSPC" in err and "Traceback" not in err, err
    assert png.read_bytes() == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "map.png"]


def test_map_with_db_reports_each_bad_entry(odd_folder, tmp_path, model_store):
    rc, _, err = run_cli("map", odd_folder, "--db", tmp_path / "db", "-o", tmp_path / "m.png",
                         *_feature_model(model_store))
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and len(errors) == 3 and "Traceback" not in err, err
    assert (tmp_path / "m.png").stat().st_size > 0
