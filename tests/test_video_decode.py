"""Video decoding: sampling times, seeking, variable frame rate, rotation, damaged files.

Every video here is generated with PyAV (the same FFmpeg the library decodes with).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from illust2vec.errors import Illust2VecError
from illust2vec.video import VideoDecodeError, iter_video_frames, probe_video
from illust2vec.video.encode import VideoWriter

W, H = 96, 64


def _frame(i: int) -> np.ndarray:
    """A frame whose brightness encodes its number (robust to compression)."""
    a = np.zeros((H, W, 3), np.uint8)
    a[:] = (i * 6) % 250
    return a


def _brightness_index(img: np.ndarray) -> int:
    return int(round(float(img.mean()) / 6))


@pytest.fixture(scope="module")
def cfr_video(tmp_path_factory):
    """6 s at 10 fps, keyframe every 10 frames."""
    path = tmp_path_factory.mktemp("vid") / "cfr.mp4"
    with VideoWriter(path, W, H, rate=10, gop=10, options={"sc_threshold": "0"}) as w:
        for i in range(60):
            w.write(_frame(i % 40))
    return path


def test_every_half_second_gives_frames_at_those_pts(cfr_video):
    frames = iter_video_frames(cfr_video, every=0.5)
    got = list(frames)
    assert [f.time for f in got] == pytest.approx([0.5 * k for k in range(12)], abs=1e-6)
    assert [f.index for f in got] == [5 * k for k in range(12)]
    for f in got:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert _brightness_index(f.image) == f.index % 40
    assert frames.problem is None


def test_all_frames_and_fps(cfr_video):
    allf = list(iter_video_frames(cfr_video))
    assert len(allf) == 60
    assert [f.index for f in allf] == list(range(60))
    assert np.allclose([f.time for f in allf], np.arange(60) / 10)
    # fps=3 -> the frame on screen at k/3 s: floor(k*10/3)/10
    got = [f.time for f in iter_video_frames(cfr_video, fps=3)]
    assert got == pytest.approx([np.floor(k * 10 / 3 + 1e-9) / 10 for k in range(18)], abs=1e-6)


def test_sparse_sampling_seeks_instead_of_decoding_everything(cfr_video):
    frames = iter_video_frames(cfr_video, every=2.0)
    got = list(frames)
    assert [f.index for f in got] == [0, 20, 40]
    assert [_brightness_index(f.image) for f in got] == [0, 20, 0]
    assert frames.seeks >= 1
    assert frames.decoded < 40  # the whole video is 60 frames


def test_start_end_and_times(cfr_video):
    got = list(iter_video_frames(cfr_video, every=1.0, start=1.5, end=4.0))
    assert [f.time for f in got] == pytest.approx([1.5, 2.5, 3.5])
    assert [_brightness_index(f.image) for f in got] == [15, 25, 35]
    got = list(iter_video_frames(cfr_video, times=[0.05, 3.33, 3.34, 5.9]))
    assert [f.index for f in got] == [0, 33, 59]
    assert list(iter_video_frames(cfr_video, times=[])) == []


def test_max_side_downscales(cfr_video):
    f = next(iter_video_frames(cfr_video, max_side=48))
    assert f.image.shape == (32, 48, 3)


def test_variable_frame_rate_uses_pts(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.4, 1.45, 2.0, 2.9]
    path = tmp_path / "vfr.mkv"
    with VideoWriter(path, W, H, rate=10, time_base=Fraction(1, 1000)) as w:
        for i, t in enumerate(times):
            w.write(_frame(i), pts=int(round(t * 1000)))
    got = list(iter_video_frames(path))
    assert [f.time for f in got] == pytest.approx(times, abs=1e-3)
    assert [_brightness_index(f.image) for f in got] == list(range(10))
    # every 0.5 s: the frame on screen at 0, 0.5, 1.0, 1.5, 2.0, 2.5 (2.5 still shows frame 8).
    sampled = list(iter_video_frames(path, every=0.5))
    assert [_brightness_index(f.image) for f in sampled][:5] == [0, 3, 5, 7, 8]
    assert [f.time for f in sampled][:5] == pytest.approx([0.0, 0.5, 0.6, 1.45, 2.0], abs=1e-3)


def test_rotation_metadata_is_applied(tmp_path):
    img = np.zeros((H, W, 3), np.uint8)
    img[:16, :, 0] = 255  # red band at the top
    img[:, :16, 1] = 255  # green band on the left
    path = tmp_path / "rot.mp4"
    with VideoWriter(path, W, H, rate=10, rotation=90) as w:
        for _ in range(3):
            w.write(img)
    info = probe_video(path)
    assert info.rotation == 90 and (info.width, info.height) == (H, W)
    f = next(iter_video_frames(path))
    assert f.image.shape == (W, H, 3)
    expected = np.rot90(img, 1)  # 90 degrees counter-clockwise: the top band goes left
    assert np.abs(f.image.astype(int) - expected).mean() < 6
    assert np.abs(f.image.astype(int) - np.rot90(img, -1)).mean() > 40


@pytest.mark.parametrize("ext,opts", [("mp4", {"movflags": "faststart"}), ("mkv", {})])
def test_truncated_file_keeps_frames_and_reports_where(tmp_path, ext, opts):
    path = tmp_path / f"full.{ext}"
    rng = np.random.default_rng(0)
    with VideoWriter(path, 160, 120, rate=10, gop=10, container_options=opts) as w:
        for _ in range(40):
            w.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    data = path.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    frames = iter_video_frames(cut)
    got = list(frames)
    assert 5 < len(got) < 40
    assert frames.problem is not None and str(cut) in frames.problem
    assert frames.stopped_at == pytest.approx(got[-1].time)
    assert f"{got[-1].time:.3f} s" in frames.problem


def test_not_a_video_gives_clear_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 50)
    with pytest.raises(VideoDecodeError, match="junk.mp4: cannot open as a video"):
        iter_video_frames(junk)
    with pytest.raises(Illust2VecError, match="file not found"):
        iter_video_frames(tmp_path / "missing.mp4")
    image = tmp_path / "still.txt"
    image.write_text("hello")
    with pytest.raises(VideoDecodeError, match="still.txt"):
        probe_video(image)


def test_bad_sampling_arguments(cfr_video):
    with pytest.raises(ValueError, match="every"):
        iter_video_frames(cfr_video, every=0)
    with pytest.raises(ValueError, match="at most one"):
        iter_video_frames(cfr_video, every=1, fps=2)


def test_start_after_the_end_is_empty_not_damaged(cfr_video):
    frames = iter_video_frames(cfr_video, every=1.0, start=100.0)
    assert list(frames) == []
    assert frames.problem is None
