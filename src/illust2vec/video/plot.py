"""A timeline picture (PNG) with Pillow: one lane per tag, probability as a heat strip.

Each lane shows a tag's probability over time (white = 0, dark = 1), its
appearance intervals as a bar along the lane's bottom edge, shot boundaries as
vertical lines across all lanes, and a time axis with labelled ticks.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from illust2vec.io.atomic import atomic_write
from illust2vec.video.timeline import Timeline

__all__ = ["plot_timeline", "PlotLayout", "nice_tick_step", "format_time"]

BACKGROUND = (255, 255, 255)
LANE_BACKGROUND = (246, 246, 246)
HEAT_COLOUR = (25, 70, 160)
INTERVAL_COLOUR = (235, 120, 20)
SHOT_COLOUR = (200, 30, 30)
TEXT_COLOUR = (30, 30, 30)
AXIS_COLOUR = (90, 90, 90)


def nice_tick_step(span: float, target_ticks: int = 10) -> float:
    """A 1/2/5 x 10^k (or 15 s/30 s/minutes) step giving about ``target_ticks`` ticks over ``span`` seconds."""
    if span <= 0:
        return 1.0
    raw = span / max(1, target_ticks)
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if step >= raw:
            return float(step)
    return float(3600 * math.ceil(raw / 3600))


def format_time(t: float, step: float, duration: float = 0.0) -> str:
    """``12.5s`` for videos under a minute, else ``m:ss`` / ``h:mm:ss`` (decimals only when the step needs them)."""
    if max(t, duration) < 60 and step < 60:
        return f"{t:.1f}s" if step < 1 else f"{t:.0f}s"
    total = int(round(t))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlotLayout:
    """Pixel geometry of a timeline plot (shared with tests and callers that annotate it)."""

    def __init__(self, width: int, n_lanes: int, lane_height: int, label_width: int, duration: float) -> None:
        self.width = width
        self.lane_height = lane_height
        self.top = 28
        self.left = label_width + 12
        self.right = width - 16
        self.n_lanes = n_lanes
        self.axis_y = self.top + n_lanes * lane_height + 4
        self.height = self.axis_y + 34
        self.duration = max(duration, 1e-6)

    def x(self, t: float) -> float:
        return self.left + (self.right - self.left) * min(max(t, 0.0), self.duration) / self.duration

    def lane_box(self, k: int) -> tuple[int, int]:
        """(top, bottom) pixel rows of lane ``k`` (bottom exclusive)."""
        y0 = self.top + k * self.lane_height
        return y0, y0 + self.lane_height - 2


def plot_timeline(
    timeline: Timeline,
    path: str | Path | None = None,
    *,
    tags: Sequence[str] | None = None,
    top: int = 12,
    categories: Sequence[str] | None = None,
    width: int = 1200,
    lane_height: int = 18,
    title: str | None = None,
) -> Any:
    """Draw a timeline as lanes of tag probabilities over time; save to ``path`` if given.

    Args:
        timeline: a :class:`Timeline`.
        path: PNG file to write (optional).
        tags: the tags to draw, top to bottom; default: the ``top`` tags that
            are present longest (:meth:`Timeline.top_tags`), restricted to
            ``categories`` if given.
        width: image width in pixels; the height follows from the lanes.
        lane_height: pixels per lane.
        title: text at the top (default: file name and sampling).

    Returns:
        The ``PIL.Image.Image``.
    """
    from PIL import Image, ImageDraw

    from illust2vec.io.drawing import font as default_font

    if width < 200:
        raise ValueError(f"width={width!r}: use at least 200 pixels")
    names = list(tags) if tags is not None else timeline.top_tags(top, categories=categories)
    index = {n: i for i, n in enumerate(timeline.tags.names)}
    cols = []
    for n in names:
        if n not in index:
            raise ValueError(f"tag {n!r} is not in the timeline's model")
        cols.append(index[n])
    font = default_font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([int(probe.textlength(n, font=font)) for n in names] + [40])
    label_w = min(label_w, width // 3)
    info_dur = timeline.info.duration or 0.0
    duration = max(timeline.end_time, info_dur if timeline.problem is None else 0.0, 1e-3)
    lay = PlotLayout(width, len(names), lane_height, label_w, duration)
    img = Image.new("RGB", (width, lay.height), BACKGROUND)
    draw = ImageDraw.Draw(img)

    src = Path(timeline.source).name
    mode = timeline.sampling.get("mode", "")
    heading = title if title is not None else f"{src}  ({mode}, {len(timeline)} frames, {len(timeline.shots)} shots)"
    draw.text((8, 6), heading, fill=TEXT_COLOUR, font=font)

    starts = timeline.times
    ends = timeline.ends
    heat = np.asarray(HEAT_COLOUR, dtype=np.float64)
    white = np.asarray(LANE_BACKGROUND, dtype=np.float64)
    for k, (name, j) in enumerate(zip(names, cols)):
        y0, y1 = lay.lane_box(k)
        draw.rectangle([lay.left, y0, lay.right, y1], fill=LANE_BACKGROUND)
        # Right-align labels; clip long ones.
        label = name
        while label and probe.textlength(label, font=font) > label_w:
            label = label[:-2] + "…" if len(label) > 2 else ""
        tw = probe.textlength(label, font=font)
        draw.text((lay.left - 6 - tw, y0 + (lane_height - 14) // 2), label, fill=TEXT_COLOUR, font=font)
        p = timeline.probs[:, j] if len(timeline) else np.zeros(0)
        for i in range(len(timeline)):
            xa, xb = lay.x(float(starts[i])), lay.x(float(ends[i]))
            if xb - xa < 1:
                xb = xa + 1
            c = tuple(int(v) for v in np.round(white + (heat - white) * float(np.clip(p[i], 0, 1))))
            draw.rectangle([int(xa), y0, max(int(xa), int(math.ceil(xb)) - 1), y1 - 4], fill=c)
        for iv in timeline.intervals.get(name, []):
            xa, xb = lay.x(iv.start), lay.x(iv.end)
            draw.rectangle([int(xa), y1 - 3, max(int(xa), int(math.ceil(xb)) - 1), y1], fill=INTERVAL_COLOUR)

    # Shot boundaries (not the start of the first shot).
    y_top, y_bot = lay.top - 4, lay.axis_y
    for shot in timeline.shots[1:]:
        x = int(round(lay.x(shot.start)))
        draw.line([x, y_top, x, y_bot], fill=SHOT_COLOUR, width=1)

    # Time axis.
    draw.line([lay.left, lay.axis_y, lay.right, lay.axis_y], fill=AXIS_COLOUR, width=1)
    step = nice_tick_step(duration, max(2, (lay.right - lay.left) // 90))
    n_ticks = int(math.floor(duration / step + 1e-9)) + 1
    for m in range(n_ticks):
        t = m * step
        x = lay.x(t)
        draw.line([x, lay.axis_y, x, lay.axis_y + 5], fill=AXIS_COLOUR, width=1)
        label = format_time(t, step, duration)
        tw = probe.textlength(label, font=font)
        draw.text((min(max(x - tw / 2, 0), width - tw - 1), lay.axis_y + 8), label, fill=TEXT_COLOUR, font=font)
    if timeline.problem is not None and timeline.stopped_at is not None:
        x = lay.x(timeline.stopped_at)
        draw.text((x + 3, lay.axis_y + 20), "stream broke here", fill=SHOT_COLOUR, font=font)
    if path is not None:
        atomic_write(Path(path), lambda fh: img.save(fh, format="PNG"))
    return img
