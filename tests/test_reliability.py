"""Faults a user meets (full disk, read-only storage, odd file names, broken databases), with real faults.

The full disk is a small tmpfs and the read-only storage a read-only bind mount,
both mounted when the tests run as root (skipped otherwise, with the reason).
"""
from __future__ import annotations

import contextlib
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
from illust2vec.fileio import AtomicFile, atomic_write

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
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
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
    with open(disk / "filler", "ab") as fh:
        with contextlib.suppress(OSError):
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
    with pytest.raises(ValueError):
        with AtomicFile(target, text=True) as fh:
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
