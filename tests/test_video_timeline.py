"""Shot detection, tag intervals with hysteresis, and tag timelines of generated videos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from illust2vec.video.encode import VideoWriter
from illust2vec.video.scenes import ShotDetector, detect_shots, representative_times
from illust2vec.video.options import IntervalOptions, SamplingOptions, VideoOptions
from illust2vec.video.timeline import tag_intervals, tag_video

from conftest import SHARED  # noqa: E402
FIX = SHARED / "fixtures" / "i2v"

W, H, RATE = 128, 96, 24
CUTS = [0, 17, 29, 52, 70]  # first frame of each shot
N = 86
COLOURS = [(200, 40, 40), (40, 180, 60), (30, 30, 160), (200, 200, 50), (210, 60, 50)]


def _shot_of(i: int) -> int:
    return max(k for k, c in enumerate(CUTS) if c <= i)


def _shot_frame(i: int, rng: np.random.Generator) -> np.ndarray:
    k = _shot_of(i)
    a = np.empty((H, W, 3), np.int16)
    a[:] = COLOURS[k]
    x = (i * 5) % (W - 30)  # a moving square: motion inside each shot
    a[30:60, x : x + 30] = 255 - np.array(COLOURS[k])
    a += rng.integers(-12, 12, a.shape, dtype=np.int16)
    return np.clip(a, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shots_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "shots.mp4"
    rng = np.random.default_rng(7)
    with VideoWriter(path, W, H, rate=RATE) as w:
        for i in range(N):
            w.write(_shot_frame(i, rng))
    return path


def colour_model(frames):
    """A stand-in tagger: 'red'/'green'/'blue' = mean channel value."""
    return np.array([f.reshape(-1, 3).mean(axis=0) / 255.0 for f in frames])


TAGS = ["red", "green", "blue"]


def test_shot_boundaries_found_at_planted_cuts(shots_video):
    det = detect_shots(shots_video)
    starts = [s.start_frame for s in det.shots]
    assert len(starts) == len(CUTS)
    for got, want in zip(starts, CUTS):
        assert abs(got - want) <= 1
    assert det.shots[-1].end_frame == N
    assert det.shots[0].start == 0.0
    assert det.shots[1].start == pytest.approx(CUTS[1] / RATE, abs=1.5 / RATE)
    assert det.problem is None


def test_detector_ignores_motion_and_respects_min_shot():
    rng = np.random.default_rng(0)
    det = ShotDetector(min_shot=0.4)
    # One shot with a panning gradient, then a single-frame flash 5 frames after a cut.
    cuts = []
    for i in range(60):
        x = np.linspace(0, 255, W)[None, :, None] + i * 3
        img = np.clip(np.broadcast_to(x, (H, W, 3)) % 256 + rng.integers(-5, 5, (H, W, 3)), 0, 255).astype(np.uint8)
        if i >= 40:
            img = np.full((H, W, 3), (20, 20, 220), np.uint8)
        if i == 44:
            img = np.full((H, W, 3), 255, np.uint8)
        if det.update(i / 24, i, img):
            cuts.append(i)
    assert cuts == [0, 40]


def test_representative_frames(shots_video):
    det = detect_shots(shots_video)
    mids = representative_times(det)
    assert [s for s, _ in mids] == list(range(len(det.shots)))
    for (s, t), shot in zip(mids, det.shots):
        assert shot.start <= t < shot.end
        assert abs(t - (shot.start + shot.end) / 2) <= 1.0 / RATE
    with pytest.raises(ValueError, match="keep_histograms"):
        representative_times(det, method="typical")
    det = detect_shots(shots_video, keep_histograms=True)
    two = representative_times(det, per_shot=2, method="typical")
    assert len(two) == 2 * len(det.shots)
    for s, t in two:
        assert det.shots[s].start <= t < det.shots[s].end


def test_intervals_hysteresis_merging_and_min_duration():
    t = np.arange(40) * 0.5
    ends = t + 0.5
    p = np.zeros(40)
    p[4:14] = [0.8, 0.6, 0.45, 0.7, 0.42, 0.9, 0.5, 0.44, 0.8, 0.7]  # flickers around 0.5
    p[14] = 0.1  # out
    p[16:20] = 0.9  # back after a 1 s gap
    p[30] = 0.95  # a single spike
    # Without hysteresis the flicker splits the first stretch.
    plain = tag_intervals(t, ends, p, enter=0.5)
    assert [(iv.start, iv.end) for iv in plain] == [(2.0, 3.0), (3.5, 4.0), (4.5, 5.5), (6.0, 7.0), (8.0, 10.0), (15.0, 15.5)]
    hyst = tag_intervals(t, ends, p, enter=0.5, exit=0.35)
    assert [(iv.start, iv.end) for iv in hyst] == [(2.0, 7.0), (8.0, 10.0), (15.0, 15.5)]
    merged = tag_intervals(t, ends, p, enter=0.5, exit=0.35, min_gap=1.5, min_duration=1.0)
    assert [(iv.start, iv.end) for iv in merged] == [(2.0, 10.0)]
    assert merged[0].peak == pytest.approx(0.9)
    assert 0.5 < merged[0].mean < 0.9
    with pytest.raises(ValueError, match="exit"):
        tag_intervals(t, ends, p, enter=0.5, exit=0.6)


def test_tag_video_every_frame_with_plain_callable(shots_video):
    tl = tag_video(shots_video, colour_model, VideoOptions(intervals=IntervalOptions(threshold=0.5), batch_size=8), tag_names=TAGS)
    assert len(tl) == N
    assert tl.probs.shape == (N, 3)
    assert [s.start_frame for s in tl.shots] == pytest.approx(CUTS, abs=1)
    # Each sample's shot: right except at most one frame next to each cut.
    wrong = sum(int(a != _shot_of(i)) for i, a in enumerate(tl.shot_of))
    assert wrong <= len(CUTS) - 1
    # Blue is the third shot only: one interval from its first to its last frame.
    blue = tl.intervals["blue"]
    assert len(blue) == 1
    assert blue[0].start == pytest.approx(CUTS[2] / RATE, abs=1.5 / RATE)
    assert blue[0].end == pytest.approx(CUTS[3] / RATE, abs=1.5 / RATE)
    # Shot tags: shot 3 (yellow) is red and green.
    assert {t for t, _ in tl.shot_tags(3)} == {"red", "green"}
    assert tl.end_time == pytest.approx(N / RATE, abs=2e-3)


def test_tag_video_every_and_scenes(shots_video):
    tl = tag_video(shots_video, colour_model, VideoOptions(SamplingOptions(every=0.5), intervals=IntervalOptions(threshold=0.5)), tag_names=TAGS)
    assert tl.times == pytest.approx(np.arange(8) * 0.5)
    assert tl.sampling == {"mode": "every", "every": 0.5}
    sc = tag_video(shots_video, colour_model, VideoOptions(SamplingOptions(scenes=True), intervals=IntervalOptions(threshold=0.5)), tag_names=TAGS)
    assert len(sc) == len(CUTS)
    assert list(sc.shot_of) == list(range(len(CUTS)))
    for k, shot in enumerate(sc.shots):
        assert shot.start <= sc.times[k] < shot.end
    # Per-shot sampling covers the shot: blue spans its whole shot.
    assert sc.intervals["blue"][0].start == pytest.approx(sc.shots[2].start)
    assert sc.intervals["blue"][0].end == pytest.approx(sc.shots[2].end)


def test_tag_video_with_fixture_model_and_json(shots_video, tmp_path):
    from illust2vec import Illustration2Vec

    store = tmp_path / "store"
    tagger = Illustration2Vec.from_caffemodel(FIX / "tag_w8_v1.caffemodel", tags=FIX / "tag_list.json", model_dir=store)
    feats = Illustration2Vec.from_caffemodel(FIX / "feature_w16_e1024.caffemodel", model_dir=store)
    tl = tag_video(shots_video, tagger, VideoOptions(SamplingOptions(every=1.0), batch_size=2), feature_model=feats)
    assert tl.probs.shape == (4, 1539)
    assert tl.features is not None and tl.features.shape == (4, 1024)
    # The same frames through the image path give the same probabilities.
    from illust2vec.video import iter_video_frames

    imgs = [f.image for f in iter_video_frames(shots_video, every=1.0)]
    np.testing.assert_allclose(tl.probs, tagger.predict_proba(imgs), rtol=1e-5, atol=1e-6)
    d = json.loads(json.dumps(tl.to_dict(include_features=True, top=5)))
    assert d["complete"] is True and len(d["frames"]) == 4
    assert len(d["frames"][0]["feature"]) == 1024
    assert len(d["frames"][0]["tags"]) <= 5


def test_truncated_video_keeps_timeline_up_to_the_break(shots_video, tmp_path):
    # Re-mux the shots into a streamable MKV, then cut it half-way.
    full = tmp_path / "full.mkv"
    rng = np.random.default_rng(7)
    with VideoWriter(full, W, H, rate=RATE, gop=12) as w:
        for i in range(N):
            w.write(_shot_frame(i, rng))
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    tl = tag_video(cut, colour_model, VideoOptions(SamplingOptions(every=0.25), intervals=IntervalOptions(threshold=0.5)), tag_names=TAGS)
    assert tl.problem is not None and "cut.mkv" in tl.problem
    assert 0 < len(tl) < N / RATE / 0.25
    assert tl.stopped_at is not None and tl.times[-1] <= tl.stopped_at + 1e-6
    assert tl.end_time <= tl.stopped_at + 0.25 + 1e-6
    d = tl.to_dict()
    assert d["complete"] is False and d["stopped_at"] == pytest.approx(tl.stopped_at)
    # What was decoded is still tagged: the first (red) shot is there.
    assert tl.intervals["red"][0].start == 0.0


# 8 pictures of anime36, one per second; neighbours are different characters (cuts a person sees)
SLIDES = ["00", "10", "20", "30", "40", "50", "01", "11"]


@pytest.fixture(scope="module")
def slideshow(tmp_path_factory):
    from PIL import Image

    anime = SHARED / "data" / "anime36"
    if not (anime / "00.jpg").exists():
        pytest.skip(f"{anime} is missing")
    path = tmp_path_factory.mktemp("slides") / "slides.mp4"
    with VideoWriter(path, 256, 192, rate=RATE) as w:
        for name in SLIDES:
            with Image.open(anime / f"{name}.jpg") as im:
                frame = np.asarray(im.convert("RGB").resize((256, 192)))
            for _ in range(RATE):
                w.write(frame)
    return path


def test_slideshow_every_second_gives_every_cut(slideshow):
    tl = tag_video(slideshow, colour_model, VideoOptions(SamplingOptions(every=1.0)), tag_names=TAGS)
    assert [s.start for s in tl.shots] == pytest.approx(range(len(SLIDES)))
    assert list(tl.shot_of) == list(range(len(SLIDES)))


def test_slideshow_scenes_gives_one_shot_per_picture(slideshow):
    sc = tag_video(slideshow, colour_model, VideoOptions(SamplingOptions(scenes=True)), tag_names=TAGS)
    assert [s.start_frame for s in sc.shots] == [RATE * k for k in range(len(SLIDES))]
    assert len(sc) == len(SLIDES)


def test_cli_video_every_second_on_the_slideshow(slideshow, tmp_path):
    from illust2vec.cli.main import main

    out = tmp_path / "t.json"
    code = main(["video", str(slideshow), "--every", "1", "--weights", str(FIX / "tag_w8_v1.caffemodel"),
                 "--tag-list", str(FIX / "tag_list.json"), "--model-dir", str(tmp_path / "store"), "-o", str(out),
                 "--quiet"])
    assert code == 0
    assert len(json.loads(out.read_text())["shots"]) == len(SLIDES)


def test_a_progress_callback_counts_frames_and_stops_tagging(slideshow):
    from illust2vec.runtime.progress import Cancelled

    calls = []

    def progress(done, total, *, unit, label):
        calls.append((label, unit, done, total))
        return label == "tagging" and done >= 4

    with pytest.raises(Cancelled):
        tag_video(slideshow, colour_model, VideoOptions(SamplingOptions(fps=4.0), batch_size=2), tag_names=TAGS,
                  progress=progress)
    assert {c[:2] for c in calls} == {("tagging", "frame")}
    assert calls[-1][2] == 4 and calls[0][3] == 4 * len(SLIDES)  # stopped after 4 of 32 frames
    calls.clear()
    tl = tag_video(slideshow, colour_model, VideoOptions(SamplingOptions(scenes=True)), tag_names=TAGS,
                   progress=lambda done, total, **kw: calls.append((kw["label"], kw["unit"], done)))
    assert len(tl) == len(SLIDES)
    assert {c[:2] for c in calls} == {("finding shots", "frame"), ("tagging", "frame")}
