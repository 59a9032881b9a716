"""Timeline outputs: JSON/CSV, the plot PNG, the annotated video, frame images and the CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from illust2vec.video import iter_video_frames, probe_video
from illust2vec.video.annotate import annotate_video
from illust2vec.video.encode import VideoWriter
from illust2vec.video.outputs import write_timeline
from illust2vec.video.plot import PlotLayout, plot_timeline
from illust2vec.video.options import IntervalOptions, VideoOptions
from illust2vec.video.timeline import tag_video

from conftest import SHARED  # noqa: E402
FIX = SHARED / "fixtures" / "i2v"

W, H, RATE = 96, 64, 12
SHOTS = [((220, 30, 30), 14), ((30, 30, 220), 10), ((220, 30, 30), 12)]  # red, blue, red
TAGS = ["red", "green", "blue"]


def colour_model(frames):
    return np.array([f.reshape(-1, 3).mean(axis=0) / 255.0 for f in frames])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "rbr.mp4"
    with VideoWriter(path, W, H, rate=RATE) as w:
        for colour, n in SHOTS:
            for i in range(n):
                a = np.empty((H, W, 3), np.uint8)
                a[:] = colour
                a[20:40, i * 4 : i * 4 + 20] = 128
                w.write(a)
    return path


@pytest.fixture(scope="module")
def timeline(video):
    return tag_video(video, colour_model, VideoOptions(intervals=IntervalOptions(threshold=0.5, min_gap=0.0)), tag_names=TAGS)


def test_json_and_csv(timeline, tmp_path):
    write_timeline(timeline, tmp_path / "t.json")
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["schema"] == "illust2vec.video-timeline/1" and d["complete"] is True
    assert len(d["frames"]) == 36 and len(d["shots"]) == 3
    assert [iv["start"] for iv in d["intervals"]["red"]] == pytest.approx([0.0, 24 / RATE], abs=1e-3)
    assert d["intervals"]["blue"][0]["end"] == pytest.approx(24 / RATE, abs=1e-3)
    assert d["shots"][1]["tags"].keys() == {"blue"}
    write_timeline(timeline, tmp_path / "t.csv")
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert {r["frame"] for r in rows} == {str(i) for i in range(36)}
    assert [r["tag"] for r in rows if r["frame"] == "15"] == ["blue"]
    with pytest.raises(Exception, match="unknown timeline format"):
        write_timeline(timeline, tmp_path / "t.xml")


def test_plot_png(timeline, tmp_path):
    out = tmp_path / "plot.png"
    plot_timeline(timeline, out, tags=["red", "blue", "green"], width=480, lane_height=20)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    lay = PlotLayout(480, 3, 20, 0, timeline.end_time)
    assert img.shape == (lay.height, 480, 3)
    def lane_pixels(k: int) -> np.ndarray:
        y0, y1 = lay.lane_box(k)
        return img[y0 + 2 : y1 - 5, :]  # the heat strip, above the interval bar

    red_lane = lane_pixels(0)
    blue_lane = lane_pixels(1)
    green_lane = lane_pixels(2)
    # Columns near the right end are in the last (red) shot; columns at the middle are blue.
    right_cols = slice(lay.right - 20, lay.right - 5)
    dark = lambda px: (px.sum(axis=-1) < 450).mean()  # noqa: E731
    assert dark(red_lane[:, right_cols]) > 0.9
    assert dark(blue_lane[:, right_cols]) < 0.1
    assert dark(green_lane) < 0.05  # green never present
    # Somewhere in the blue lane the heat is dark (the blue shot).
    assert dark(blue_lane) > 0.1
    # Shot boundaries are drawn in red across the lanes.
    reds = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    cols = np.flatnonzero(reds[lay.top : lay.axis_y].sum(axis=0) > lay.axis_y - lay.top - 10)
    assert len(cols) >= 2


@pytest.mark.parametrize("codec", [None, "mpeg4"])
def test_annotated_video_same_frames_and_duration(timeline, video, tmp_path, codec):
    out = tmp_path / "ann.mp4"
    res = annotate_video(timeline, out, top=2, codec=codec)
    src, ann = probe_video(video), probe_video(out)
    assert res["frames"] == 36 and res["codec"] == (codec or res["codec"])
    assert ann.codec == ("mpeg4" if codec == "mpeg4" else {"libx264": "h264", "mpeg4": "mpeg4"}[res["codec"]])
    frames = list(iter_video_frames(out))
    assert len(frames) == 36
    assert [f.time for f in frames] == pytest.approx([f.time for f in iter_video_frames(video)], abs=1e-3)
    assert ann.duration == pytest.approx(src.duration, abs=1.5 / RATE)
    # Text was drawn: the top-left corner differs from the source frame.
    orig = next(iter(iter_video_frames(video))).image.astype(int)
    assert np.abs(frames[0].image.astype(int)[:12, :40] - orig[:12, :40]).mean() > 20
    assert np.abs(frames[0].image.astype(int)[-10:, -10:] - orig[-10:, -10:]).mean() < 10


def test_cli_video_end_to_end(video, tmp_path, capsys):
    from illust2vec.cli.main import main

    out = tmp_path / "t.json"
    code = main([
        "video", str(video), "--every", "0.5", "--weights", str(FIX / "tag_w8_v1.caffemodel"),
        "--tag-list", str(FIX / "tag_list.json"), "--model-dir", str(tmp_path / "store"), "-o", str(out),
        "--plot", str(tmp_path / "p.png"), "--frames", str(tmp_path / "frames"), "--quiet", "--top", "3",
    ])
    assert code == 0
    d = json.loads(out.read_text())
    assert [f["time"] for f in d["frames"]] == pytest.approx([0.5 * k for k in range(6)])
    assert all(len(f["tags"]) <= 3 for f in d["frames"])
    saved = sorted((tmp_path / "frames").iterdir())
    assert len(saved) == 6 and Image.open(saved[0]).size == (W, H)
    assert Image.open(tmp_path / "p.png").width == 1200


def test_cli_bad_file(tmp_path, capsys):
    from illust2vec.cli.main import main

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    code = main(["video", str(junk), "--weights", str(FIX / "tag_w8_v1.caffemodel"),
                 "--tag-list", str(FIX / "tag_list.json"), "--model-dir", str(tmp_path / "store"),
                 "-o", str(tmp_path / "t.json"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {junk}: cannot open as a video")
    assert not (tmp_path / "t.json").exists()
