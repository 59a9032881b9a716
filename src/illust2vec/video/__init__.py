"""Videos: frame sampling, shot detection, tag timelines, plots and annotated videos.

>>> from illust2vec import load_model, tag_video              # doctest: +SKIP
>>> from illust2vec.video import SamplingOptions, VideoOptions
>>> timeline = tag_video("clip.mp4", load_model("i2v-tag"), VideoOptions(SamplingOptions(every=1.0)))
>>> print("\\n".join(timeline.intervals_text()[:3]))
hatsune miku: 12.0-31.5 s, 80.2-95.0 s
...

PyAV is imported lazily inside the functions, so importing this package is cheap.
"""
from __future__ import annotations

from illust2vec.video.decode import (
    VideoDecodeError,
    VideoFrame,
    VideoFrames,
    VideoInfo,
    iter_video_frames,
    probe_video,
)
from illust2vec.video.options import IntervalOptions, SamplingOptions, ShotOptions, VideoOptions
from illust2vec.video.scenes import Shot, ShotDetector, detect_shots, representative_times
from illust2vec.video.timeline import Interval, Timeline, tag_intervals, tag_video

__all__ = [
    "Interval",
    "IntervalOptions",
    "SamplingOptions",
    "Shot",
    "ShotOptions",
    "ShotDetector",
    "Timeline",
    "VideoDecodeError",
    "VideoFrame",
    "VideoFrames",
    "VideoInfo",
    "VideoOptions",
    "detect_shots",
    "iter_video_frames",
    "probe_video",
    "representative_times",
    "tag_intervals",
    "tag_video",
]
