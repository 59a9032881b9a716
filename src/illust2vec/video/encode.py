"""Writing videos with PyAV: H.264 (libx264) when the FFmpeg build has it, else MPEG-4 Part 2.

Used for annotated videos and to build test and benchmark clips.  Frames are
RGB arrays; time stamps can be given per frame (variable frame rate) in the
stream's time base, or are ``0, 1, 2, ...`` frame periods.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.video.decode import VideoDecodeError, _import_av

__all__ = ["VideoWriter", "pick_codec"]


def pick_codec(preferred: str | None = None) -> str:
    """The best available encoder: ``preferred`` if given and present, else libx264, else mpeg4."""
    av = _import_av()
    available = av.codecs_available
    for name in ([preferred] if preferred else []) + ["libx264", "mpeg4"]:
        if name in available:
            try:
                av.codec.Codec(name, "w")
            except Exception:
                continue
            return name
    raise VideoDecodeError(
        f"no usable video encoder (tried {preferred or ''} libx264 mpeg4) in this FFmpeg build"
    )


class VideoWriter:
    """Encode RGB frames into a video file.

    Args:
        path: output file; the container comes from its extension (.mp4, .mkv, ...).
        width, height: frame size in pixels; yuv420p needs even sizes, so odd
            sizes are rounded down to even (frames are cropped by one pixel).
        rate: nominal frame rate (frames per second).
        time_base: the stream's time base; ``pts`` values passed to
            :meth:`write` are in it (default ``1 / (rate * 1000)`` so custom
            times are fine-grained).
        codec: encoder name; ``None`` picks libx264 if present, else mpeg4.
        rotation: counter-clockwise degrees written as display-matrix side
            data (players turn the picture by this much).
        options: extra encoder options (e.g. ``{"crf": "23", "preset": "fast"}``).
        container_options: muxer options (e.g. ``{"movflags": "faststart"}``).
        gop: keyframe interval in frames (``None``: encoder default).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        *,
        rate: float | Fraction = 25,
        time_base: Fraction | None = None,
        codec: str | None = None,
        rotation: int = 0,
        options: dict[str, str] | None = None,
        container_options: dict[str, str] | None = None,
        gop: int | None = None,
        bit_rate: int | None = None,
    ) -> None:
        av = _import_av()
        self.codec = pick_codec(codec)
        self.width = max(2, int(width) - int(width) % 2)
        self.height = max(2, int(height) - int(height) % 2)
        rate_q = Fraction(rate).limit_denominator(1001000)
        self.time_base = time_base or Fraction(1, max(1, round(float(rate_q) * 1000)))
        self.rate = rate_q
        self._container = av.open(str(path), mode="w", options=container_options or {})
        stream = self._container.add_stream(self.codec, rate=rate_q, options=options or {})
        stream.width = self.width
        stream.height = self.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if gop:
            stream.codec_context.gop_size = int(gop)
        if bit_rate:
            stream.bit_rate = int(bit_rate)
        if rotation:
            stream.set_display_rotation(rotation)
        self._stream = stream
        self._count = 0
        self._period = 1 / (rate_q * self.time_base)

    def write(self, image: np.ndarray | Any, pts: int | None = None) -> None:
        """Encode one (H, W, 3) uint8 RGB frame (or a PyAV frame) at ``pts`` (time-base units)."""
        av = _import_av()
        if isinstance(image, np.ndarray):
            if image.shape[0] != self.height or image.shape[1] != self.width:
                image = image[: self.height, : self.width]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        else:
            frame = image
        frame.pts = int(pts) if pts is not None else int(round(self._count * self._period))
        frame.time_base = self.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._count += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
