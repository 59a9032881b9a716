"""Option records of :func:`illust2vec.video.timeline.tag_video`, one field per ``illust2vec video`` flag.

| flag | option field |
| --- | --- |
| ``--every``, ``--fps`` | ``SamplingOptions.every``, ``.fps`` |
| ``--scenes`` | ``SamplingOptions.scenes`` |
| ``--per-shot`` | ``SamplingOptions.per_shot`` |
| ``--representative`` | ``SamplingOptions.representative`` |
| ``--start``, ``--end`` | ``SamplingOptions.start``, ``.end`` |
| ``--max-side`` | ``SamplingOptions.max_side`` |
| ``--no-shots`` | ``ShotOptions.detect`` (``False``) |
| ``--shot-threshold`` | ``ShotOptions.threshold`` |
| ``--min-shot`` | ``ShotOptions.min_shot`` |
| ``--threshold``, ``--general``, ``--character``, ``--copyright``, ``--threshold-rule`` | ``IntervalOptions.threshold`` (resolved per tag for the model) |
| ``--exit-ratio`` | ``IntervalOptions.exit_ratio`` |
| ``--min-gap`` | ``IntervalOptions.min_gap`` |
| ``--min-duration`` | ``IntervalOptions.min_duration`` |
| ``--batch-size`` | ``VideoOptions.batch_size`` |

>>> VideoOptions(sampling=SamplingOptions(every=1.0)).sampling.every
1.0
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SamplingOptions", "ShotOptions", "IntervalOptions", "VideoOptions"]


@dataclass(frozen=True)
class SamplingOptions:
    """Which frames are tagged.

    ``every``: the frame on screen every this many seconds (seeks over gaps);
    ``fps``: this many frames per second; ``scenes``: find the shots first
    (every frame, thumbnails) and tag ``per_shot`` representative frames of each
    (``representative``: ``"middle"`` or ``"typical"``).  None of them: every
    frame.  ``start``/``end``: the part of the video (seconds).  ``max_side``:
    downscale frames while decoding (the model resizes anyway).
    """

    every: float | None = None
    fps: float | None = None
    scenes: bool = False
    per_shot: int = 1
    representative: str = "middle"
    start: float | None = None
    end: float | None = None
    max_side: int | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.scenes and (self.every is not None or self.fps is not None):
            raise ValueError("scenes=True samples by shot: do not combine it with every= or fps=")
        if self.every is not None and self.every <= 0:
            raise ValueError(f"every={self.every!r}: must be a positive number of seconds")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps={self.fps!r}: must be a positive number")
        if self.per_shot < 1:
            raise ValueError(f"per_shot={self.per_shot!r}: must be at least 1")


@dataclass(frozen=True)
class ShotOptions:
    """The cut detector (:class:`~illust2vec.video.scenes.ShotDetector`).

    ``detect``: look for shot changes between the tagged frames in
    ``every``/``fps``/all-frames sampling (exact for all frames, approximate when
    sampling; always on with ``scenes``).  ``threshold``: sensitivity, 0-1 (lower
    finds more cuts).  ``min_shot``: shortest shot in seconds.
    """

    detect: bool = True
    threshold: float = 0.3
    min_shot: float = 0.4


@dataclass(frozen=True)
class IntervalOptions:
    """Tag thresholds and the hysteresis of tag intervals (:func:`~illust2vec.video.timeline.tag_intervals`).

    ``threshold``: enter threshold(s), a number, ``{category: value}`` or a
    per-tag array (default: the model's own, 0.5 for callables);
    ``threshold_rule``: ``"constant"`` or i2v's calibrated ``"f0.5"``/``"f1"``/``"f2"``.
    ``exit_ratio``: exit threshold = ``exit_ratio`` x enter threshold.
    ``min_gap``: merge intervals closer than this (seconds); ``min_duration``:
    drop shorter ones.
    """

    threshold: float | Mapping[str, float] | Any | None = None
    threshold_rule: str = "constant"
    exit_ratio: float = 0.7
    min_gap: float = 1.0
    min_duration: float = 0.0


@dataclass(frozen=True)
class VideoOptions:
    """Everything :func:`~illust2vec.video.timeline.tag_video` can be told, stage by stage."""

    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    shots: ShotOptions = field(default_factory=ShotOptions)
    intervals: IntervalOptions = field(default_factory=IntervalOptions)
    batch_size: int = 16
