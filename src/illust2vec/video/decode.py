"""Decoding video frames with PyAV: sampling, seeking, rotation, damaged streams.

:func:`iter_video_frames` streams upright RGB frames out of a video file, one
at a time, so a two-hour film never sits in memory.  Sampling:

* ``every=SECONDS``: the frame on screen at ``start``, ``start + SECONDS``, ...
  When the next sample is past the next keyframe the decoder seeks there
  instead of decoding everything in between, so sparse sampling of a long
  video decodes only a small part of it.
* ``fps=N``: the same with ``every = 1 / N`` (no seeking for dense rates).
* neither: every frame.

Times are seconds from the stream's own ``time_base`` and each frame's
``pts`` (minus the stream's start time), so variable-frame-rate videos get
their real times, not ``index / fps``.  Rotation metadata (the display
matrix, or the legacy ``rotate`` tag) is applied so frames come out upright.

A stream that breaks half-way does not raise: iteration stops, the frames
decoded so far have been yielded, and the iterator's :attr:`VideoFrames.stopped_at`
/ :attr:`VideoFrames.problem` say where and why.  A file that cannot be opened
as video at all raises :class:`VideoDecodeError` naming it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from illust2vec.errors import Illust2VecError, missing_extra_message

__all__ = [
    "VideoDecodeError",
    "VideoFrame",
    "VideoInfo",
    "VideoFrames",
    "probe_video",
    "iter_video_frames",
]

#: A gap (seconds) above which sparse sampling seeks when the container has no
#: keyframe index to tell exactly whether seeking would skip anything.
SEEK_GAP_WITHOUT_INDEX = 3.0


class VideoDecodeError(Illust2VecError):
    """A video file could not be opened or decoded (missing, not a video, unsupported codec)."""


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame.

    ``index`` is the frame's position in the stream (0-based, display order).
    It is counted exactly while decoding forward from the start; after a seek
    it is estimated from the time and the stream's average frame rate (exact
    for constant-frame-rate video).  ``time`` is in seconds from the start of
    the stream, from the frame's own pts.  ``image`` is (H, W, 3) uint8 RGB,
    upright (rotation metadata applied).
    """

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about its first video stream.

    ``width``/``height`` are the display size (after rotation);
    ``duration`` is in seconds (``None`` when the container does not say);
    ``frame_count`` is the container's count (0 when unknown);
    ``rotation`` is counter-clockwise degrees to turn the coded frames upright.
    """

    path: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    duration: float | None
    frame_count: int
    average_rate: float | None
    time_base: Fraction
    start_pts: int
    codec: str
    has_index: bool

    @property
    def frame_duration(self) -> float:
        """Nominal duration of one frame in seconds (1/25 s if the rate is unknown)."""
        if self.average_rate and self.average_rate > 0:
            return 1.0 / self.average_rate
        return 1.0 / 25.0


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:  # the video extra is not installed
        raise VideoDecodeError(missing_extra_message("av")) from exc
    return av


def _open(path: str | Path) -> tuple[Any, Any]:
    """Open ``path`` and return (container, first video stream) or raise VideoDecodeError."""
    av = _import_av()
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(f"{p}: file not found")
    if p.is_dir():
        raise VideoDecodeError(f"{p}: is a directory, not a video file")
    try:
        container = av.open(str(p), mode="r")
    except Exception as exc:  # av.error.FFmpegError and OSError subclasses
        raise VideoDecodeError(
            f"{p}: cannot open as a video ({_short(exc)}); is it a complete video file "
            "in a format FFmpeg reads (mp4, mkv, webm, mov, avi, ...)?"
        ) from exc
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{p}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise VideoDecodeError(f"{p}: video codec is not supported by this FFmpeg build")
    return container, stream


def _short(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg.splitlines()[0][:200]


def _stream_rotation(stream: Any) -> int:
    """Rotation (counter-clockwise degrees) from legacy stream metadata (older PyAV/FFmpeg)."""
    rotate = (stream.metadata or {}).get("rotate")
    if rotate is None:
        return 0
    try:
        # The legacy tag is clockwise degrees.
        return int(-round(float(rotate))) % 360
    except ValueError:
        return 0


def _frame_rotation(frame: Any, fallback: int) -> int:
    """Counter-clockwise rotation of one decoded frame, normalised to 0/90/180/270."""
    rot = getattr(frame, "rotation", None)  # PyAV >= 14: from the DISPLAYMATRIX side data
    if rot is None or (rot == 0 and fallback):
        rot = fallback
    rot = int(round(float(rot) / 90.0)) * 90
    return rot % 360


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video file's header (and its first frame, for rotation) without decoding the rest.

    Raises :class:`VideoDecodeError` when the file cannot be opened as video.
    """
    container, stream = _open(path)
    try:
        rotation = _stream_rotation(stream)
        try:
            for frame in container.decode(stream):
                rotation = _frame_rotation(frame, rotation)
                break
        except Exception:
            pass
        return _info(path, container, stream, rotation)
    finally:
        container.close()


def _info(path: str | Path, container: Any, stream: Any, rotation: int) -> VideoInfo:
    tb = stream.time_base or Fraction(1, 1_000_000)
    duration: float | None = None
    if stream.duration:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate
    cw, ch = stream.codec_context.width, stream.codec_context.height
    w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
    try:
        has_index = len(stream.index_entries) > 0
    except Exception:
        has_index = False
    return VideoInfo(
        path=str(path),
        width=w,
        height=h,
        coded_width=cw,
        coded_height=ch,
        rotation=rotation,
        duration=duration,
        frame_count=int(stream.frames or 0),
        average_rate=float(rate) if rate else None,
        time_base=tb,
        start_pts=int(stream.start_time or 0),
        codec=stream.codec_context.name,
        has_index=has_index,
    )


def _scaled_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def frame_to_rgb(frame: Any, rotation: int, max_side: int | None = None) -> np.ndarray:
    """Convert a PyAV frame to an upright (H, W, 3) uint8 RGB array, optionally downscaled."""
    w, h = _scaled_size(frame.width, frame.height, max_side)
    if (w, h) != (frame.width, frame.height):
        frame = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA")
    arr = frame.to_ndarray(format="rgb24")
    if rotation:
        arr = np.ascontiguousarray(np.rot90(arr, k=rotation // 90))
    return arr


class VideoFrames:
    """Iterator over the sampled frames of one video (see :func:`iter_video_frames`).

    After iteration ends, :attr:`problem` is ``None`` for a clean end, or a
    message when decoding stopped early (damaged or truncated stream), and
    :attr:`stopped_at` is the time (seconds) of the last frame decoded then.
    :attr:`info` describes the stream, :attr:`decoded` counts decoded frames
    (including those skipped by sampling) and :attr:`seeks` the seeks made.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        every: float | None = None,
        fps: float | None = None,
        times: Iterable[float] | None = None,
        start: float | None = None,
        end: float | None = None,
        max_side: int | None = None,
        threads: int | None = None,
    ) -> None:
        if sum(x is not None for x in (every, fps, times)) > 1:
            raise ValueError("give at most one of every=, fps= and times=")
        if every is not None and not (every > 0 and math.isfinite(every)):
            raise ValueError(f"every={every!r}: must be a positive number of seconds")
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps={fps!r}: must be a positive number of frames per second")
        if start is not None and start < 0:
            raise ValueError(f"start={start!r}: must be >= 0 seconds")
        if end is not None and start is not None and end <= start:
            raise ValueError(f"end={end!r} must be after start={start!r}")
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side={max_side!r}: must be a positive number of pixels")
        self.path = str(path)
        self.step: float | None = every if every is not None else (1.0 / fps if fps else None)
        self.times: list[float] | None = None
        if times is not None:
            self.times = sorted(float(t) for t in times)
            if any(not math.isfinite(t) or t < 0 for t in self.times):
                raise ValueError("times=: every time must be a finite number of seconds >= 0")
        self.allow_seek = every is not None or times is not None
        self.start = float(start or 0.0)
        self.end = end
        self.max_side = max_side
        self.threads = threads
        self.problem: str | None = None
        self.stopped_at: float | None = None
        self.decoded = 0
        self.seeks = 0
        self.yielded = 0
        self.finished = False
        self._container, self._stream = _open(path)
        self.info = _info(path, self._container, self._stream, _stream_rotation(self._stream))
        self._gen = self._frames()

    def __iter__(self) -> "VideoFrames":
        return self

    def __next__(self) -> VideoFrame:
        return next(self._gen)

    def close(self) -> None:
        """Stop decoding and close the file (also done when iteration ends)."""
        self._gen.close()
        self._close_container()

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding ---------------------------------------------------------
    def _packets_frames(self, container: Any, stream: Any) -> Iterator[Any]:
        """Decoded frames in display order; raises what the demuxer/decoder raises."""
        for packet in container.demux(stream):
            yield from packet.decode()  # a flush packet (data None) drains the decoder at EOF

    def _frames(self) -> Iterator[VideoFrame]:
        container, stream = self._container, self._stream
        info = self.info
        stream.thread_type = "AUTO"
        if self.threads:
            stream.thread_count = self.threads
        tb = info.time_base
        start_pts = info.start_pts
        rate = info.average_rate
        fdur = info.frame_duration
        eps = min(fdur / 4.0, 1e-3)
        rotation = info.rotation
        legacy_rotation = rotation

        def seconds(fr: Any, fallback_index: int) -> float:
            pts = fr.pts if fr.pts is not None else fr.dts
            if pts is None:
                return fallback_index * fdur
            return float((pts - start_pts) * tb)

        def frame_end(fr: Any, t: float) -> float:
            d = getattr(fr, "duration", None)
            if d:
                return t + float(d * tb)
            return t + fdur

        step = self.step
        sampled = step is not None or self.times is not None
        if self.times is not None:
            pending = iter([t for t in self.times if t >= self.start])
        else:
            pending = iter(())

        def next_target(current: float) -> float:
            if step is not None:
                return current + step
            return next(pending, math.inf)

        target = self.start if step is not None else next_target(0.0)
        if sampled and target == math.inf:  # times=[]: nothing to decode
            self.finished = True
            self._close_container()
            return
        end = self.end
        count_exact = True  # frame indices are exact until the first seek
        index = -1
        # Sampled modes keep the last decoded frame at or before the target: it is
        # the one on screen at the target time, known once a later frame shows up.
        prev: tuple[Any, float, int] | None = None
        last_t: float | None = None
        early = False  # stopped on purpose before the end of the stream

        def emit(fr: Any, t: float, i: int) -> VideoFrame:
            self.yielded += 1
            rot = _frame_rotation(fr, legacy_rotation)
            return VideoFrame(index=int(i), time=t, image=frame_to_rgb(fr, rot, self.max_side))

        if self.start > 0:
            self._seek(container, stream, self.start)
            count_exact = False

        frames = self._packets_frames(container, stream)
        try:
            while True:
                try:
                    fr = next(frames)
                except StopIteration:
                    break
                self.decoded += 1
                t = seconds(fr, index + 1)
                if count_exact:
                    index += 1
                else:
                    index = round(t * rate) if rate else index + 1
                last_t = t
                if end is not None and t >= end - eps:
                    break
                if not sampled:
                    if t >= self.start - eps:
                        yield emit(fr, t, index)
                    continue
                if t <= target + eps:
                    prev = (fr, t, index)
                    continue
                if prev is None:
                    # Nothing was on screen at the target (stream starts later, or a
                    # seek landed after it): this first frame stands in for it.
                    yield emit(fr, t, index)
                    while target <= t + eps:
                        target = next_target(target)
                    if target == math.inf:
                        early = True
                        break
                    continue
                yield emit(*prev)
                prev = None
                target = next_target(target)
                # Targets before t still show the frame just emitted: skip them.
                while target + eps < t:
                    target = next_target(target)
                if target == math.inf:
                    early = True
                    break
                prev = (fr, t, index)
                if self.allow_seek and self._should_seek(stream, t, target):
                    frames.close()
                    self._seek(container, stream, target)
                    count_exact = False
                    prev = None
                    frames = self._packets_frames(container, stream)
        except Exception as exc:  # damaged/truncated stream: keep what we have
            t_stop = last_t if last_t is not None else 0.0
            self.problem = f"{self.path}: decoding stopped at {t_stop:.3f} s ({_short(exc)})"
            self.stopped_at = t_stop
        finally:
            frames.close()
        if prev is not None:
            fr, t, i = prev
            limit = frame_end(fr, t) if end is None else min(frame_end(fr, t), end)
            if target < limit - eps:
                yield emit(fr, t, i)
        if self.problem is None and not early:
            self._check_complete(last_t, fdur, end)
        self.finished = True
        self._close_container()

    def _check_complete(self, last_t: float | None, fdur: float, end: float | None) -> None:
        """Flag a stream that ended well before the duration its container announced."""
        dur = self.info.duration
        if dur is None:
            return
        if end is not None:
            dur = min(dur, end)
        if last_t is None and self.start >= dur - max(3 * fdur, 0.25):
            return  # asked to start at (or after) the end: nothing to decode is not damage
        got = (last_t + fdur) if last_t is not None else 0.0
        if got < dur - max(3 * fdur, 0.25):
            t = last_t if last_t is not None else 0.0
            self.stopped_at = t
            self.problem = (
                f"{self.path}: stream ended at {t:.3f} s of the {self.info.duration:.3f} s the file "
                "announces (truncated or damaged file); the frames up to there were used"
            )

    def _should_seek(self, stream: Any, current_t: float, target: float) -> bool:
        """Seek when a keyframe lies between the current position and the target."""
        info = self.info
        if target - current_t <= 2 * info.frame_duration:
            return False
        if info.has_index:
            try:
                entries = stream.index_entries
                ts = int(round(target / float(info.time_base))) + info.start_pts
                k = entries.search_timestamp(ts, backward=True)
                if k < 0:
                    return False
                key_ts = entries[k].timestamp
                cur_ts = int(round(current_t / float(info.time_base))) + info.start_pts
                # Index timestamps are DTS: allow for a couple of frames of B-frame delay.
                slack = int(round(2 * info.frame_duration / float(info.time_base)))
                return key_ts > cur_ts + slack
            except Exception:
                pass
        return target - current_t > SEEK_GAP_WITHOUT_INDEX

    def _seek(self, container: Any, stream: Any, t: float) -> None:
        """Seek to the keyframe at or before ``t`` seconds (decoder buffers are flushed)."""
        ts = int(math.floor(t / float(self.info.time_base))) + self.info.start_pts
        container.seek(ts, stream=stream, backward=True, any_frame=False)
        self.seeks += 1


def iter_video_frames(
    path: str | Path,
    *,
    every: float | None = None,
    fps: float | None = None,
    times: Iterable[float] | None = None,
    start: float | None = None,
    end: float | None = None,
    max_side: int | None = None,
    threads: int | None = None,
) -> VideoFrames:
    """Stream upright RGB frames from a video file.

    Args:
        path: video file (anything the bundled FFmpeg reads).
        every: sample one frame every this many seconds (the frame on screen at
            ``start + k * every``); seeks over long gaps instead of decoding them.
        fps: sample this many frames per second (no seeking).
        times: sample the frames on screen at these times (seconds); seeks like
            ``every``.  At most one of ``every``, ``fps``, ``times``; with none,
            every frame is returned.
        start: first time (seconds) to return; the decoder seeks there.
        end: stop before this time (seconds).
        max_side: downscale frames (in FFmpeg, area filter) so the longer side
            is at most this many pixels; ``None`` keeps the full size.
        threads: decoder threads (default: FFmpeg's automatic choice).

    Returns:
        A :class:`VideoFrames` iterator of :class:`VideoFrame`; after it ends,
        its ``problem``/``stopped_at`` tell whether and where the stream broke.

    Raises:
        VideoDecodeError: the file is missing or cannot be opened as video.
        ValueError: invalid sampling arguments.
    """
    return VideoFrames(
        path, every=every, fps=fps, times=times, start=start, end=end, max_side=max_side,
        threads=threads,
    )
