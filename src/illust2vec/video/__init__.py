"""Videos: frame sampling, shot detection, tag timelines, plots and annotated videos.

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

__all__ = [
    "VideoDecodeError",
    "VideoFrame",
    "VideoFrames",
    "VideoInfo",
    "iter_video_frames",
    "probe_video",
]
