"""Shot-boundary (cut) detection on small frames, and representative frames per shot.

The detector compares each frame with the previous one on a small thumbnail
in HSV colour space with three measures:

* the L1 distance between their joint hue/saturation/value histograms
  (robust to motion inside a shot),
* the mean absolute per-pixel HSV difference (catches cuts between shots
  with similar colours), averaged with the first, and
* the layout distance ``(1 - r) / 2``, ``r`` the correlation of their 12x9
  brightness grids (weighted by the grids' contrast), added to them: two
  different illustrations on the same white paper have close colours but
  unrelated layouts (on anime36, every pair of pictures of different
  characters scores >= 0.31 this way; colours alone left 19% of them under 0.3),

into a score in [0, 1].  A frame starts a new shot when its score is
above an absolute ``threshold`` **and** ``ratio`` times above the median score
of the recent frames of the current shot (an adaptive threshold: busy,
fast-moving shots need a larger jump) or at least twice ``threshold`` (a change
no motion makes), and the current shot is at least ``min_shot`` seconds long.
Only scores below ``threshold`` feed the median: a cut that ``min_shot`` or the
ratio held back must not raise the bar for the next one (with sparse samples,
``--every 1``, one missed cut used to hide every later one).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "Shot",
    "ShotDetector",
    "ShotDetection",
    "detect_shots",
    "shots_from_cuts",
    "representative_times",
    "THUMB_SIDE",
]

#: Longer side (pixels) of the thumbnails the detector works on.
THUMB_SIDE = 64
_HIST_BINS = (12, 4, 4)  # hue, saturation, value


@dataclass(frozen=True)
class Shot:
    """One shot: frames ``[start_frame, end_frame)`` covering ``[start, end)`` seconds."""

    index: int
    start: float
    end: float
    start_frame: int
    end_frame: int

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, float | int]:
        return {
            "shot": self.index,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
        }


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Downscale an RGB frame (box filter) so its longer side is at most ``side`` pixels."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    from PIL import Image

    # Big frames: average over a strided subsample first (a 1080p frame would
    # otherwise cost ~10 ms per frame to box-filter in full).
    k = max(h, w) // (side * 4)
    if k >= 2:
        image = np.ascontiguousarray(image[k // 2 :: k, k // 2 :: k])
        h, w = image.shape[:2]
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def _hsv(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("HSV"))


#: Brightness grid of the layout measure (columns, rows).
_LAYOUT_GRID = (12, 9)
#: Grey levels of grid contrast (standard deviation) from which the layout measure counts fully.
_LAYOUT_CONTRAST = 8.0
#: Share of grid cells away from the background from which the layout measure counts fully.
_LAYOUT_SPREAD = 0.5


def _layout(hsv: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame's brightness grid, centred and unit-length, and how much it counts (0-1)."""
    from PIL import Image

    v = np.asarray(Image.fromarray(np.ascontiguousarray(hsv[..., 2])).resize(_LAYOUT_GRID, Image.Resampling.BOX),
                   dtype=np.float32).ravel()
    # how much of the frame holds the structure: one small object on a plain
    # background (that may jump) is not a layout
    spread = float((np.abs(v - np.median(v)) > _LAYOUT_CONTRAST).mean())
    v = v - v.mean()
    std = float(np.sqrt((v * v).mean()))
    weight = min(1.0, std / _LAYOUT_CONTRAST) * min(1.0, spread / _LAYOUT_SPREAD)
    return (v / (std * np.sqrt(v.size)) if std > 1e-6 else v), weight


def _histogram(hsv: np.ndarray) -> np.ndarray:
    hb, sb, vb = _HIST_BINS
    h = hsv[..., 0].astype(np.int32) * hb // 256
    s = hsv[..., 1].astype(np.int32) * sb // 256
    v = hsv[..., 2].astype(np.int32) * vb // 256
    # Unsaturated or dark pixels have no meaningful hue: give them their own hue bin 0.
    h = np.where((hsv[..., 1] < 32) | (hsv[..., 2] < 32), 0, h)
    codes = (h * sb + s) * vb + v
    hist = np.bincount(codes.ravel(), minlength=hb * sb * vb).astype(np.float32)
    return hist / max(1.0, float(hist.sum()))


class ShotDetector:
    """Streaming cut detector: feed frames in time order with :meth:`update`.

    Args:
        threshold: minimum score (0-1) for a cut.  0.3 finds hard cuts in
            animation while ignoring most motion; lower it for subtle cuts.
        ratio: a cut's score must also exceed ``ratio`` x the median score of
            the last ``window`` quiet frames (scores under ``threshold``) of the
            current shot (adaptive part), unless it is ``2 x threshold`` or more.
        window: frames in the running median.
        min_shot: shortest shot in seconds; a cut sooner than this after the
            previous one is ignored (flashes, strobing).
        side: thumbnail size the comparison runs on.
        keep_histograms: keep every frame's colour histogram (192 values) in
            :attr:`histograms`, for picking typical frames.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.3,
        ratio: float = 3.0,
        window: int = 12,
        min_shot: float = 0.4,
        side: int = THUMB_SIDE,
        keep_histograms: bool = False,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold={threshold!r}: must be in (0, 1]")
        if ratio < 1:
            raise ValueError(f"ratio={ratio!r}: must be >= 1")
        if min_shot < 0:
            raise ValueError(f"min_shot={min_shot!r}: must be >= 0 seconds")
        self.threshold = threshold
        self.ratio = ratio
        self.min_shot = min_shot
        self.side = side
        self.keep_histograms = keep_histograms
        self._recent: deque[float] = deque(maxlen=max(1, window))
        self._prev_hsv: np.ndarray | None = None
        self._prev_hist: np.ndarray | None = None
        self._prev_layout: tuple[np.ndarray, float] | None = None
        self._shot_start: float | None = None
        #: (time, frame index) of every frame that starts a shot, the first frame included.
        self.cuts: list[tuple[float, int]] = []
        #: scores of every frame after the first (for plots and tuning).
        self.scores: list[float] = []
        #: colour histogram of every frame, if ``keep_histograms`` (to pick typical frames).
        self.histograms: list[np.ndarray] = []
        self.times: list[float] = []
        self.indices: list[int] = []

    def score(self, hsv: np.ndarray, hist: np.ndarray, layout: tuple[np.ndarray, float] | None = None) -> float:
        """Score of the change from the previous frame to this one (0 same, 1 different)."""
        assert self._prev_hsv is not None and self._prev_hist is not None
        hist_d = 0.5 * float(np.abs(hist - self._prev_hist).sum())
        if hsv.shape != self._prev_hsv.shape:
            return 1.0
        layout_d = 0.0
        if layout is not None and self._prev_layout is not None:
            (a_grid, a_weight), (b_grid, b_weight) = layout, self._prev_layout
            weight = min(a_weight, b_weight)
            layout_d = weight * 0.5 * (1.0 - float(np.clip(a_grid @ b_grid, -1.0, 1.0)))
        a = hsv.astype(np.int16)
        b = self._prev_hsv.astype(np.int16)
        d = np.abs(a - b)
        # Hue is circular; ignore hue where either pixel is grey/dark.
        dh = np.minimum(d[..., 0], 256 - d[..., 0]) * 2
        grey = (np.minimum(a[..., 1], b[..., 1]) < 32) | (np.minimum(a[..., 2], b[..., 2]) < 32)
        dh = np.where(grey, 0, dh)
        pix_d = float((dh.mean() + d[..., 1].mean() + d[..., 2].mean()) / (3 * 255.0))
        return min(1.0, 0.5 * (hist_d + min(1.0, 2.0 * pix_d)) + layout_d)

    def update(self, time: float, index: int, image: np.ndarray) -> bool:
        """Add the next frame; True when it starts a new shot (the first frame does)."""
        hsv = _hsv(thumbnail(image, self.side))
        hist = _histogram(hsv)
        layout = _layout(hsv)
        if self.keep_histograms:
            self.histograms.append(hist.astype(np.float16))
        self.times.append(float(time))
        self.indices.append(int(index))
        if self._prev_hsv is None:
            self._prev_hsv, self._prev_hist, self._prev_layout = hsv, hist, layout
            self._shot_start = time
            self.cuts.append((float(time), int(index)))
            return True
        s = self.score(hsv, hist, layout)
        self.scores.append(s)
        self._prev_hsv, self._prev_hist, self._prev_layout = hsv, hist, layout
        base = float(np.median(self._recent)) if self._recent else 0.0
        is_cut = (
            s >= self.threshold
            and (s >= self.ratio * base or s >= 2 * self.threshold)
            and self._shot_start is not None
            and time - self._shot_start >= self.min_shot - 1e-9
        )
        if is_cut:
            self._recent.clear()
            self._shot_start = time
            self.cuts.append((float(time), int(index)))
            return True
        if s < self.threshold:
            self._recent.append(s)
        return False


def shots_from_cuts(
    cuts: Sequence[tuple[float, int]], end_time: float, end_frame: int
) -> list[Shot]:
    """Turn shot start points ``(time, frame index)`` into :class:`Shot` records ending at ``end_time``."""
    shots = []
    for k, (t, i) in enumerate(cuts):
        if k + 1 < len(cuts):
            t2, i2 = cuts[k + 1]
        else:
            t2, i2 = end_time, end_frame
        shots.append(Shot(index=k, start=t, end=max(t, t2), start_frame=i, end_frame=max(i, i2)))
    return shots


@dataclass
class ShotDetection:
    """Result of :func:`detect_shots`: the shots, per-frame data and how decoding ended."""

    shots: list[Shot]
    times: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    histograms: np.ndarray | None
    frames_decoded: int
    problem: str | None = None
    stopped_at: float | None = None


def detect_shots(
    path: str | Path,
    *,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    threshold: float = 0.3,
    ratio: float = 3.0,
    min_shot: float = 0.4,
    keep_histograms: bool = False,
    progress: Any = None,
) -> ShotDetection:
    """Find the shots of a video by decoding it at thumbnail size.

    Args:
        path: the video file.
        fps: look at this many frames per second (``None``: every frame; cuts
            are then exact to the frame).
        start, end: the part of the video to look at (seconds).
        threshold, ratio, min_shot, keep_histograms: see :class:`ShotDetector`
            (``keep_histograms`` is needed for ``representative_times(method="typical")``).
        progress: ``True`` or a callback (:mod:`illust2vec.runtime.progress`)
            counting the frames looked at.
    """
    from illust2vec.runtime.progress import progress_callback
    from illust2vec.video.decode import iter_video_frames

    det = ShotDetector(threshold=threshold, ratio=ratio, min_shot=min_shot, keep_histograms=keep_histograms)
    frames = iter_video_frames(path, fps=fps, start=start, end=end, max_side=THUMB_SIDE * 2)
    last_t, last_i, n = 0.0, -1, 0
    step = frames.info.frame_duration if fps is None else 1.0 / fps
    report, close = progress_callback(progress, label="finding shots", unit="frame", total=frames.info.frame_count)
    try:
        for fr in frames:
            det.update(fr.time, fr.index, fr.image)
            last_t, last_i = fr.time, fr.index
            n += 1
            report(n)
    finally:
        close()
        frames.close()
    end_time = last_t + step if n else 0.0
    if end is not None:
        end_time = min(end_time, end)
    shots = shots_from_cuts(det.cuts, end_time, last_i + 1)
    return ShotDetection(
        shots=shots,
        times=np.asarray(det.times, dtype=np.float64),
        indices=np.asarray(det.indices, dtype=np.int64),
        scores=np.asarray([0.0] + det.scores if n else [], dtype=np.float32),
        histograms=(
            np.asarray(det.histograms, dtype=np.float32).reshape(n, int(np.prod(_HIST_BINS)))
            if keep_histograms else None
        ),
        frames_decoded=frames.decoded,
        problem=frames.problem,
        stopped_at=frames.stopped_at,
    )


def representative_times(
    detection: ShotDetection,
    *,
    per_shot: int = 1,
    method: str = "middle",
) -> list[tuple[int, float]]:
    """Pick ``per_shot`` frames per shot; returns ``(shot index, time)`` pairs in time order.

    ``method="middle"`` takes evenly spaced frames (one: the middle frame);
    ``method="typical"`` takes the frames whose colour histograms are closest
    to the shot's mean histogram (the most typical-looking frames).
    """
    if per_shot < 1:
        raise ValueError(f"per_shot={per_shot!r}: must be >= 1")
    if method not in ("middle", "typical"):
        raise ValueError(f"method={method!r}: use 'middle' or 'typical'")
    out: list[tuple[int, float]] = []
    times = detection.times
    for shot in detection.shots:
        sel = np.flatnonzero((times >= shot.start - 1e-9) & (times < shot.end - 1e-9))
        if sel.size == 0:
            sel = np.flatnonzero(np.isclose(times, shot.start))
            if sel.size == 0:
                continue
        k = min(per_shot, sel.size)
        if method == "middle":
            picks = [sel[min(sel.size - 1, int(math.floor((j + 0.5) * sel.size / k)))] for j in range(k)]
        else:
            if detection.histograms is None:
                raise ValueError("method='typical' needs detect_shots(..., keep_histograms=True)")
            hist = detection.histograms[sel]
            dist = np.abs(hist - hist.mean(axis=0)).sum(axis=1)
            picks = sorted(sel[np.argsort(dist, kind="stable")[:k]])
        out.extend((shot.index, float(times[p])) for p in picks)
    return out


def assign_shots(times: Iterable[float], shots: Sequence[Shot]) -> list[int]:
    """Shot index of each time (the last shot starting at or before it; 0 before the first)."""
    starts = np.asarray([s.start for s in shots], dtype=np.float64)
    t = np.asarray(list(times), dtype=np.float64)
    if starts.size == 0:
        return [0] * t.size
    k = np.searchsorted(starts, t + 1e-9, side="right") - 1
    return [int(x) for x in np.clip(k, 0, len(shots) - 1)]
