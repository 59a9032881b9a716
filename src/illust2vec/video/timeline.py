"""Tag timelines: tag sampled video frames in batches, group them by shot, find tag intervals.

:func:`tag_video` decodes frames (:mod:`illust2vec.video.decode`) in a
background thread, runs them through the model's own ``preprocess`` and
``run`` in batches (the same path images take), and returns a
:class:`Timeline`: per-frame probabilities, shots, per-shot tags and per-tag
appearance intervals computed with hysteresis (:func:`tag_intervals`).
"""
from __future__ import annotations

import math
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.runtime.background import iterate_in_thread
from illust2vec.errors import Illust2VecError
from illust2vec.models.image_model import chunks
from illust2vec.runtime.batches import ModelSet, iter_batches
from illust2vec.models.tags import TagTable, resolve_thresholds
from illust2vec.runtime.progress import progress_callback
from illust2vec.video.decode import VideoFrame, VideoInfo, iter_video_frames
from illust2vec.video.options import IntervalOptions, SamplingOptions, ShotOptions, VideoOptions
from illust2vec.video.scenes import (
    Shot,
    ShotDetector,
    assign_shots,
    detect_shots,
    representative_times,
    shots_from_cuts,
)

__all__ = ["Interval", "Timeline", "expected_samples", "sample_frames", "tag_intervals", "tag_video",
           "DEFAULT_THRESHOLD"]

#: Enter threshold used when neither the caller nor the model gives one.
DEFAULT_THRESHOLD = 0.5

#: Receives each tagged frame with its shot index (e.g. to save frames as images).
FrameSink = Callable[[VideoFrame, int], None]


@dataclass(frozen=True)
class Interval:
    """A stretch of time (seconds) in which a tag is present; ``peak``/``mean`` of its probability."""

    start: float
    end: float
    peak: float
    mean: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, float]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "peak": round(self.peak, 4),
            "mean": round(self.mean, 4),
        }


def tag_intervals(
    starts: Sequence[float] | np.ndarray,
    ends: Sequence[float] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    *,
    enter: float,
    exit: float | None = None,
    min_gap: float = 0.0,
    min_duration: float = 0.0,
) -> list[Interval]:
    """Intervals in which one tag is present, with hysteresis.

    Sample ``i`` covers ``[starts[i], ends[i])`` with probability ``probs[i]``.
    A tag *enters* at a sample with probability >= ``enter`` and stays while
    probabilities are >= ``exit`` (default ``enter``; lower values stop
    flicker around the threshold from splitting an interval).  Intervals
    separated by less than ``min_gap`` seconds are merged; intervals shorter
    than ``min_duration`` seconds are dropped (after merging).
    """
    s = np.asarray(starts, dtype=np.float64)
    e = np.asarray(ends, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    if not (s.shape == e.shape == p.shape) or s.ndim != 1:
        raise ValueError("starts, ends and probs must be 1-d and of the same length")
    ex = enter if exit is None else exit
    if ex > enter:
        raise ValueError(f"exit={exit!r} must not be above enter={enter!r}")
    runs: list[tuple[int, int]] = []  # [first, last] sample indices
    inside = False
    first = 0
    for i in range(p.size):
        if not inside:
            if p[i] >= enter:
                inside, first = True, i
        elif p[i] < ex:
            runs.append((first, i - 1))
            inside = False
    if inside:
        runs.append((first, p.size - 1))
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and s[a] - e[merged[-1][1]] < min_gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    out = []
    for a, b in merged:
        start, end = float(s[a]), float(e[b])
        if end - start < min_duration:
            continue
        seg = p[a : b + 1]
        # The mean over the samples inside the interval, weighted by their coverage.
        w = np.maximum(e[a : b + 1] - s[a : b + 1], 0)
        mean = float((seg * w).sum() / w.sum()) if w.sum() > 0 else float(seg.mean())
        out.append(Interval(start=start, end=end, peak=float(seg.max()), mean=mean))
    return out


@dataclass
class Timeline:
    """Tags of a video over time.

    Arrays are aligned by sample (tagged frame): ``times`` (seconds),
    ``frame_indices``, ``shot_of`` (shot index per sample), ``probs`` (N, T)
    and optionally ``features`` (N, D).  ``ends`` is where each sample's
    coverage ends (the next sample, or the end of its shot for ``scenes``
    sampling).  ``thresholds`` (T,) are the enter thresholds, ``exit_thresholds``
    the lower exit thresholds of the intervals' hysteresis.
    """

    source: str
    info: VideoInfo
    sampling: dict[str, Any]
    tags: TagTable
    times: np.ndarray
    ends: np.ndarray
    frame_indices: np.ndarray
    shot_of: np.ndarray
    probs: np.ndarray
    thresholds: np.ndarray
    exit_thresholds: np.ndarray
    shots: list[Shot]
    intervals: dict[str, list[Interval]]
    features: np.ndarray | None = None
    problem: str | None = None
    stopped_at: float | None = None
    frames_decoded: int = 0
    seconds: float = 0.0
    model_name: str | None = None
    interval_options: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.times.size)

    @property
    def end_time(self) -> float:
        """End of the covered part of the video (seconds)."""
        return float(self.ends[-1]) if self.ends.size else 0.0

    def frame_tags(self, i: int, *, top: int | None = None) -> list[tuple[str, float]]:
        """Tags of sample ``i`` at or above their threshold, most probable first."""
        return self._above(self.probs[i], top)

    def shot_probs(self, shot: int) -> np.ndarray:
        """Mean probability of each tag over the samples of one shot (T,)."""
        sel = self.shot_of == shot
        if not sel.any():
            return np.zeros(len(self.tags), dtype=np.float32)
        return self.probs[sel].mean(axis=0)

    def shot_tags(self, shot: int, *, top: int | None = None) -> list[tuple[str, float]]:
        """Tags of one shot: mean probability over its samples at or above the threshold."""
        return self._above(self.shot_probs(shot), top)

    def top_tags(self, n: int = 10, *, categories: Sequence[str] | None = None) -> list[str]:
        """The ``n`` tags present longest (interval time), then by mean probability."""
        cats = set(categories) if categories else None
        dur: dict[str, float] = {t: sum(iv.duration for iv in ivs) for t, ivs in self.intervals.items()}
        mean = self.probs.mean(axis=0) if len(self) else np.zeros(len(self.tags))
        order = np.argsort(-mean, kind="stable")
        names = self.tags.names
        cand = [names[j] for j in order if cats is None or self.tags.categories[j] in cats]
        return sorted(cand[: max(n * 4, n)], key=lambda t: (-dur.get(t, 0.0), cand.index(t)))[:n]

    def _above(self, p: np.ndarray, top: int | None) -> list[tuple[str, float]]:
        idx = np.flatnonzero(p >= self.thresholds)
        idx = idx[np.argsort(-p[idx], kind="stable")]
        if top is not None:
            idx = idx[:top]
        return [(self.tags.names[j], float(p[j])) for j in idx]

    def intervals_text(self) -> list[str]:
        """Lines like ``"hatsune miku: 12.0-31.5 s, 80.2-95.0 s"``, longest total first."""
        lines = []
        items = sorted(self.intervals.items(), key=lambda kv: -sum(iv.duration for iv in kv[1]))
        for tag, ivs in items:
            spans = ", ".join(f"{iv.start:.1f}-{iv.end:.1f} s" for iv in ivs)
            lines.append(f"{tag}: {spans}")
        return lines

    def to_dict(self, *, include_features: bool = False, top: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict (schema ``illust2vec.video-timeline/1``)."""
        cat_of = dict(zip(self.tags.names, self.tags.categories))
        frames = []
        for i in range(len(self)):
            row: dict[str, Any] = {
                "time": round(float(self.times[i]), 6),
                "frame": int(self.frame_indices[i]),
                "shot": int(self.shot_of[i]),
                "tags": {t: round(p, 4) for t, p in self.frame_tags(i, top=top)},
            }
            if include_features and self.features is not None:
                row["feature"] = [round(float(x), 6) for x in self.features[i]]
            frames.append(row)
        shots = []
        for s in self.shots:
            d: dict[str, Any] = s.to_dict()
            d["samples"] = int((self.shot_of == s.index).sum())
            d["tags"] = {t: round(p, 4) for t, p in self.shot_tags(s.index, top=top)}
            shots.append(d)
        info = self.info
        return {
            "schema": "illust2vec.video-timeline/1",
            "source": self.source,
            "model": self.model_name,
            "video": {
                "width": info.width,
                "height": info.height,
                "rotation": info.rotation,
                "duration": info.duration,
                "frame_count": info.frame_count,
                "average_rate": info.average_rate,
                "codec": info.codec,
            },
            "sampling": self.sampling,
            "intervals_options": self.interval_options,
            "complete": self.problem is None,
            "problem": self.problem,
            "stopped_at": self.stopped_at,
            "frames": frames,
            "shots": shots,
            "intervals": {
                t: [dict(iv.to_dict(), category=cat_of.get(t)) for iv in ivs]
                for t, ivs in self.intervals.items()
            },
        }


# ---------------------------------------------------------------------------
# model adapter


class _Runner:
    """Wraps an ImageModel (``preprocess`` + ``run_all``) or a plain ``frames -> probs`` callable.

    ``feature_model`` (optional) is a second ImageModel whose ``feature``
    output is kept; it reuses the tag model's prepared batch when both have
    the same input recipe.
    """

    def __init__(self, model: Any, tag_names: Sequence[str] | None, feature_model: Any | None) -> None:
        self.model = model
        self.is_image_model = hasattr(model, "preprocess") and hasattr(model, "run_all")
        self.feature_model = feature_model
        self.own_features = False
        if self.is_image_model:
            table = getattr(model, "tags", None)
            outputs = tuple(getattr(model, "outputs", ()))
            if "prob" not in outputs or table is None:
                raise Illust2VecError(
                    f"{getattr(model, 'name', 'the model')} is not a tagger (outputs: {', '.join(outputs)}); "
                    "load a tag model (task='tag') for video timelines"
                )
            self.table: TagTable = table
            if feature_model is model:
                self.own_features = True
                self.feature_model = None
        elif callable(model):
            if tag_names is None:
                raise ValueError("tag_names= is required when the model is a plain callable")
            self.table = TagTable(tuple(tag_names), ("general",) * len(tag_names))
        else:
            raise TypeError(f"model must be an ImageModel or a callable, got {type(model).__name__}")
        fm = self.feature_model
        if fm is not None and "feature" not in tuple(getattr(fm, "outputs", ())):
            raise Illust2VecError(
                f"{getattr(fm, 'name', 'the feature model')} has no feature output; "
                "load a feature model (task='feature')"
            )
        if self.own_features and "feature" not in self.model.outputs:
            raise Illust2VecError(f"{self.model.name} has no feature output")
        if fm is not None and self.is_image_model and not ModelSet.shares_input(model, fm):
            raise Illust2VecError(
                f"the feature model {getattr(fm, 'name', '?')} prepares images differently from the tagger "
                f"{getattr(model, 'name', '?')}; use a feature model with the same input recipe (e.g. i2v-feature "
                "with i2v-tag)"
            )
        self.name = getattr(model, "name", None)

    @property
    def wants_features(self) -> bool:
        return self.own_features or self.feature_model is not None

    def batches(self, images: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(probabilities, features or None) per batch of ``images``."""
        if not self.is_image_model:
            for chunk in chunks(images, batch_size):
                prob = np.asarray(self.model(chunk), dtype=np.float32)
                if prob.ndim != 2 or prob.shape != (len(chunk), len(self.table)):
                    raise ValueError(
                        f"the model callable returned shape {prob.shape}, expected "
                        f"({len(chunk)}, {len(self.table)})"
                    )
                yield prob, None
            return
        model: Any = self.model
        names: tuple[str, ...] = ("prob", "feature") if self.own_features else ("prob",)
        if self.feature_model is not None:
            model = ModelSet({"prob": self.model, "feature": self.feature_model})
            names = ("prob", "feature")
        for result in iter_batches(model, images, batch_size=batch_size, outputs=names):
            if result.errors:
                raise Illust2VecError(f"video frame could not be processed: {result.errors[0].message}")
            out = result.outputs
            yield out["prob"], out.get("feature")

    def thresholds(self, threshold: Any, rule: str) -> np.ndarray:
        if self.is_image_model and hasattr(self.model, "thresholds_for"):
            return np.asarray(self.model.thresholds_for(threshold, rule), dtype=np.float64)
        if rule != "constant":
            raise ValueError(f"threshold_rule={rule!r} needs an ImageModel with calibrated thresholds")
        return resolve_thresholds(self.table, DEFAULT_THRESHOLD if threshold is None else threshold)


# ---------------------------------------------------------------------------
# tagging


def expected_samples(info: VideoInfo, sampling: SamplingOptions) -> int | None:
    """How many frames ``sampling`` tags in a video of ``info`` (``None``: not known before)."""
    dur = info.duration
    if dur is None or sampling.scenes:
        return None
    start = sampling.start or 0.0
    end = min(dur, sampling.end) if sampling.end is not None else dur
    span = max(0.0, end - start)
    if sampling.every:
        return max(1, math.ceil(span / sampling.every - 1e-9))
    if sampling.fps:
        return max(1, math.ceil(span * sampling.fps - 1e-9))
    if info.frame_count and sampling.start is None and sampling.end is None:
        return info.frame_count
    return round(span * info.average_rate) if info.average_rate else None


@dataclass
class _Samples:
    """Stage 1's result: the frames to tag and what sampling knows of the shots."""

    frames: Any
    sampling: dict[str, Any]
    detection: Any = None
    shots: list[Shot] = field(default_factory=list)
    pick_shot: dict[float, int] = field(default_factory=dict)


def sample_frames(path: str | Path, sampling: SamplingOptions, shots: ShotOptions, *, progress: Any = None
                  ) -> _Samples:
    """Stage 1: the frames ``sampling`` picks (with ``scenes``, after finding the shots)."""
    sampling.check()
    if sampling.scenes:
        detection = detect_shots(
            path, start=sampling.start, end=sampling.end, threshold=shots.threshold, min_shot=shots.min_shot,
            keep_histograms=sampling.representative == "typical", progress=progress,
        )
        picks = representative_times(detection, per_shot=sampling.per_shot, method=sampling.representative)
        frames = iter_video_frames(path, times=[t for _, t in picks], max_side=sampling.max_side)
        mode: dict[str, Any] = {"mode": "scenes", "per_shot": sampling.per_shot,
                                "representative": sampling.representative}
        out = _Samples(frames, mode, detection, detection.shots, {round(t, 6): k for k, t in picks})
    else:
        frames = iter_video_frames(path, every=sampling.every, fps=sampling.fps, start=sampling.start,
                                   end=sampling.end, max_side=sampling.max_side)
        if sampling.every is not None:
            mode = {"mode": "every", "every": sampling.every}
        elif sampling.fps is not None:
            mode = {"mode": "fps", "fps": sampling.fps}
        else:
            mode = {"mode": "all"}
        out = _Samples(frames, mode)
    if sampling.start is not None:
        out.sampling["start"] = sampling.start
    if sampling.end is not None:
        out.sampling["end"] = sampling.end
    return out


def _tag_frames(runner: _Runner, samples: _Samples, detector: ShotDetector | None, batch_size: int,
                frame_sink: FrameSink | None, report: Callable[[int], None]
                ) -> tuple[list[tuple[float, int, int]], np.ndarray, np.ndarray | None]:
    """Stage 2: decode (and detect cuts) in a thread, tag in batches; ``(meta, probs, features)``.

    ``meta`` holds ``(time, frame index, shot)`` per sample.  ImageModels take
    the image pipeline's path (``iter_batches``: preprocessing overlapped with
    ONNX Runtime, which releases the GIL).
    """
    frames = samples.frames
    meta: list[tuple[float, int, int]] = []

    def frame_images() -> Iterator[np.ndarray]:
        shot_idx = 0
        try:
            for fr in frames:
                if samples.detection is not None:
                    shot_idx = samples.pick_shot.get(round(fr.time, 6), assign_shots([fr.time], samples.shots)[0])
                elif detector is not None:
                    if detector.update(fr.time, fr.index, fr.image):
                        shot_idx = len(detector.cuts) - 1
                meta.append((fr.time, fr.index, shot_idx))
                if frame_sink is not None:
                    frame_sink(fr, shot_idx)
                yield fr.image
        except GeneratorExit:  # stopped early: release the decoder
            frames.close()
            raise

    probs: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    done = 0
    stream = iterate_in_thread(frame_images(), maxsize=max(4, 2 * batch_size), name="illust2vec-video-decode")
    try:
        for p, f in runner.batches(stream, batch_size):
            probs.append(p)
            if f is not None:
                feats.append(f)
            done += p.shape[0]
            report(done)
    finally:
        stream.close()
    prob = np.concatenate(probs).astype(np.float32) if probs else np.zeros((0, len(runner.table)), np.float32)
    return meta, prob, (np.concatenate(feats) if feats else None)


def _coverage(samples: _Samples, sampling: SamplingOptions, times: np.ndarray, shot_of: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Stage 3: where each sample's coverage starts and ends, and where the covered time ends."""
    n = times.size
    frames, info = samples.frames, samples.frames.info
    if samples.detection is not None:
        shot_end = {s.index: s.end for s in samples.shots}
        shot_start = {s.index: s.start for s in samples.shots}
        ends = np.empty(n, dtype=np.float64)
        cover_start = times.copy()
        for i in range(n):
            # Representative samples of one shot split the shot between them.
            same = np.flatnonzero(shot_of == shot_of[i])
            k = int(np.searchsorted(same, i))
            ends[i] = times[same[k + 1]] if k + 1 < same.size else shot_end.get(int(shot_of[i]), times[i])
            if k == 0:
                cover_start[i] = shot_start.get(int(shot_of[i]), times[i])
                ends[i] = max(ends[i], cover_start[i])
        return cover_start, ends, samples.shots[-1].end if samples.shots else 0.0
    every, fps = sampling.every, sampling.fps
    step = every if every is not None else (1.0 / fps if fps is not None else info.frame_duration)
    end_time = float(times[-1]) + step if n else 0.0
    if sampling.end is not None:
        end_time = min(end_time, sampling.end)
    dur = info.duration
    if n and dur and frames.problem is None and dur > times[-1]:
        end_time = min(end_time, dur)
    ends = np.append(times[1:], end_time) if n else np.zeros(0)
    return times, ends, end_time


def _intervals(table: TagTable, cover_start: np.ndarray, ends: np.ndarray, prob: np.ndarray, thr: np.ndarray,
               exit_thr: np.ndarray, options: IntervalOptions) -> dict[str, list[Interval]]:
    """Stage 4: the intervals of every tag that reaches its threshold somewhere."""
    intervals: dict[str, list[Interval]] = {}
    if not prob.shape[0]:
        return intervals
    for j in np.flatnonzero((prob >= thr).any(axis=0)):
        ivs = tag_intervals(cover_start, ends, prob[:, j], enter=float(thr[j]), exit=float(exit_thr[j]),
                            min_gap=options.min_gap, min_duration=options.min_duration)
        if ivs:
            intervals[table.names[j]] = ivs
    return intervals


def tag_video(
    path: str | Path,
    model: Any,
    options: VideoOptions = VideoOptions(),
    *,
    feature_model: Any | None = None,
    tag_names: Sequence[str] | None = None,
    progress: Any = None,
    frame_sink: FrameSink | None = None,
) -> Timeline:
    """Tag a video frame by frame and build its :class:`Timeline`.

    Stages: :func:`sample_frames` (with ``scenes``, shots first) -> tag the
    frames in batches (cuts found on the way) -> coverage of each sample ->
    tag intervals with hysteresis (:func:`tag_intervals`).

    Args:
        path: the video file.
        model: an ``ImageModel`` with a tag output (frames go through its
            ``preprocess`` and ``run`` in batches), or a plain callable
            ``list[RGB array] -> (N, T) probabilities`` with ``tag_names``.
        options: sampling, shot detection, thresholds and intervals, batch size
            (:class:`~illust2vec.video.options.VideoOptions`).
        feature_model: also keep feature vectors from this ImageModel (its
            ``feature`` output; may be ``model`` itself if it has one).
        tag_names: names of the callable's outputs (plain callables only).
        progress: ``True`` for bars on stderr, or a callback
            (:mod:`illust2vec.runtime.progress`) counting frames: ``"finding
            shots"`` (with ``scenes``) then ``"tagging"``; returning ``True`` stops.
        frame_sink: receives each tagged frame and its shot index.

    Returns:
        The :class:`Timeline`.  If the stream breaks half-way, the timeline
        covers the part before the break and ``problem``/``stopped_at`` say where.
    """
    sampling, shots, iv = options.sampling, options.shots, options.intervals
    if options.batch_size < 1:
        raise ValueError(f"batch_size={options.batch_size!r}: must be >= 1")
    if not 0 < iv.exit_ratio <= 1:
        raise ValueError(f"exit_ratio={iv.exit_ratio!r}: must be in (0, 1]")
    sampling.check()
    runner = _Runner(model, tag_names, feature_model)
    table = runner.table
    thr = runner.thresholds(iv.threshold, iv.threshold_rule)
    t0 = _time.perf_counter()
    bars = None
    if progress is True:
        from illust2vec.runtime.progress import ProgressBar

        progress = bars = ProgressBar(unit="frame")
    try:
        samples = sample_frames(path, sampling, shots, progress=progress)
        frames, detection = samples.frames, samples.detection
        detector = (ShotDetector(threshold=shots.threshold, min_shot=shots.min_shot)
                    if (shots.detect and detection is None) else None)
        report, close = progress_callback(progress, label="tagging", unit="frame",
                                          total=expected_samples(frames.info, sampling))
        try:
            meta, prob, feat = _tag_frames(runner, samples, detector, options.batch_size, frame_sink, report)
        finally:
            close()
    finally:
        if bars is not None:
            bars.close()

    times = np.asarray([m[0] for m in meta], dtype=np.float64)
    idx = np.asarray([m[1] for m in meta], dtype=np.int64)
    shot_of = np.asarray([m[2] for m in meta], dtype=np.int64)
    problem = frames.problem or (detection.problem if detection is not None else None)
    stopped_at = frames.stopped_at if frames.problem else (detection.stopped_at if detection else None)
    cover_start, ends, end_time = _coverage(samples, sampling, times, shot_of)
    shot_list = samples.shots
    if detector is not None and len(meta):
        shot_list = shots_from_cuts(detector.cuts, end_time, int(idx[-1]) + 1)
    exit_thr = thr * iv.exit_ratio
    return Timeline(
        source=str(path),
        info=frames.info,
        sampling=samples.sampling,
        tags=table,
        times=times,
        ends=ends,
        frame_indices=idx,
        shot_of=shot_of,
        probs=prob,
        thresholds=thr,
        exit_thresholds=exit_thr,
        shots=shot_list,
        intervals=_intervals(table, cover_start, ends, prob, thr, exit_thr, iv),
        features=feat,
        problem=problem,
        stopped_at=stopped_at,
        frames_decoded=frames.decoded + (detection.frames_decoded if detection else 0),
        seconds=_time.perf_counter() - t0,
        model_name=runner.name,
        interval_options={"exit_ratio": iv.exit_ratio, "min_gap": iv.min_gap, "min_duration": iv.min_duration},
    )
