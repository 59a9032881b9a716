"""Annotated videos: every frame of the input with its top tags drawn on it.

The input is decoded again frame by frame (upright), each frame gets the tags
of the timeline sample on screen at its time (for ``scenes`` timelines: the
tags of its shot), drawn with Pillow, and is encoded with H.264 (libx264)
when the bundled FFmpeg has it, else MPEG-4.  Time stamps are copied from the
input stream (in its own time base), so the output has the same frame count
and duration.  Audio is not copied.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.runtime.progress import progress_callback
from illust2vec.video.decode import iter_video_frames
from illust2vec.video.encode import VideoWriter, pick_codec
from illust2vec.video.timeline import Timeline

__all__ = ["annotate_video", "draw_tags"]


def draw_tags(image: np.ndarray, lines: list[str], *, font_size: int | None = None) -> np.ndarray:
    """Draw text lines in a translucent box at the top-left of an RGB frame; returns a new array."""
    from PIL import Image, ImageDraw

    from illust2vec.io.drawing import font as default_font

    h, w = image.shape[:2]
    size = font_size or max(10, min(32, h // 24))
    font = default_font(size)
    base = Image.fromarray(image).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    pad = max(2, size // 4)
    line_h = size + pad
    text_w = max([draw.textlength(s, font=font) for s in lines] + [0])
    box_h = pad + line_h * len(lines)
    if lines:
        draw.rectangle([0, 0, min(w - 1, int(text_w) + 2 * pad), min(h - 1, box_h)], fill=(0, 0, 0, 150))
        for k, s in enumerate(lines):
            draw.text((pad, pad + k * line_h), s, fill=(255, 255, 255, 255), font=font)
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"))


def annotate_video(
    timeline: Timeline,
    output: str | Path,
    *,
    source: str | Path | None = None,
    top: int = 5,
    codec: str | None = None,
    crf: int = 23,
    progress: Any = None,
) -> dict[str, Any]:
    """Write ``output`` (e.g. ``.mp4``): ``source`` (default: the timeline's video) with tags drawn on.

    Args:
        timeline: the timeline whose tags are drawn.
        output: the video to write.
        source: the video to annotate (the one the timeline was made from).
        top: most tags drawn per frame.
        codec: encoder (default libx264 if available, else mpeg4).
        crf: quality for libx264 (lower is better, 18-28 is typical).
        progress: ``True`` or a callback (:mod:`illust2vec.runtime.progress`)
            counting the frames written.

    Returns:
        ``{"frames": written, "codec": name, "problem": message or None}``.
    """
    src = Path(source if source is not None else timeline.source)
    frames = iter_video_frames(src)
    info = frames.info
    report, close = progress_callback(progress, label="annotating", unit="frame", total=info.frame_count)
    tb = info.time_base
    scenes = timeline.sampling.get("mode") == "scenes"
    shot_starts = np.asarray([s.start for s in timeline.shots], dtype=np.float64)
    shot_cache: dict[int, list[tuple[str, float]]] = {}
    writer: VideoWriter | None = None
    written = 0
    try:
        for fr in frames:
            if writer is None:
                h, w = fr.image.shape[:2]
                chosen = pick_codec(codec)
                if chosen == "libx264":
                    extra: dict[str, Any] = {"options": {"crf": str(crf), "preset": "veryfast"}}
                else:
                    extra = {"bit_rate": max(400_000, w * h * 4)}
                writer = VideoWriter(output, w, h, rate=info.average_rate or 25, time_base=tb, codec=chosen, **extra)
            lines = [f"{fr.time:7.2f} s  frame {fr.index}"]
            if len(timeline):
                if scenes and shot_starts.size:
                    k = int(np.clip(np.searchsorted(shot_starts, fr.time + 1e-9, side="right") - 1, 0, None))
                    if k not in shot_cache:
                        shot_cache[k] = timeline.shot_tags(k, top=top)
                    tags = shot_cache[k]
                    lines[0] += f"  shot {k}"
                else:
                    i = int(np.clip(np.searchsorted(timeline.times, fr.time + 1e-9, side="right") - 1, 0, None))
                    tags = timeline.frame_tags(i, top=top)
                    if timeline.shots:
                        lines[0] += f"  shot {int(timeline.shot_of[i])}"
                lines += [f"{t}  {p:.2f}" for t, p in tags]
            pts = int(round(fr.time / float(tb)))
            writer.write(draw_tags(fr.image, lines), pts=pts)
            written += 1
            report(written)
    finally:
        close()
        if writer is not None:
            writer.close()
        frames.close()
    return {"frames": written, "codec": writer.codec if writer else None, "problem": frames.problem}
