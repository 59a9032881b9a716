"""PNG renderer: a map drawn with the images themselves.

Thumbnails are pasted at their map positions (aspect kept, size chosen from
the number of images and the canvas), each in a frame coloured by its label
(or cluster), with a legend, cluster numbers and an optional title.  The
canvas never exceeds ``max_size`` pixels per side and every thumbnail lies
inside it.  Images are decoded lazily, a few at a time (JPEG draft mode decodes
straight at thumbnail scale), so 100k images need no more memory than the
canvas itself.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Union

import numpy as np
from PIL import Image, ImageDraw

from illust2vec.io.atomic import atomic_write
from illust2vec.io.drawing import ThumbSource, thumbnail
from illust2vec.io.drawing import font as _font
from illust2vec.io.images import save_image
from illust2vec.maps.grid import GridLayout
from illust2vec.maps.options import RenderOptions
from illust2vec.runtime.progress import progress_callback
from illust2vec.runtime.pool import decode_threads

Thumbnails = Union[Sequence[ThumbSource], Callable[[int], ThumbSource]]

#: Distinct frame colours (Tableau 20 order, strong colours first).
PALETTE: list[tuple[int, int, int]] = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229), (57, 59, 121),
]
UNLABELLED = (200, 200, 200)


def color_for(i: int) -> tuple[int, int, int]:
    """Colour number ``i``: the palette, then golden-ratio hues for more."""
    if i < len(PALETTE):
        return PALETTE[i]
    h = (i * 0.618033988749895) % 1.0
    s = 0.55 + 0.35 * ((i // 7) % 2)
    v = 0.75 + 0.2 * ((i // 3) % 2)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def label_colors(labels: Sequence[Hashable | None]) -> dict[Hashable, tuple[int, int, int]]:
    """Colour per distinct label, most frequent label first (ties by name)."""
    counts: dict[Hashable, int] = {}
    for lab in labels:
        if lab is not None:
            counts[lab] = counts.get(lab, 0) + 1
    order = sorted(counts, key=lambda k: (-counts[k], str(k)))
    return {lab: color_for(i) for i, lab in enumerate(order)}


@dataclass
class RenderResult:
    """What :func:`render_map` drew.

    ``rects[i] = (x0, y0, x1, y1)``: canvas pixels covered by image ``i`` and its
    frame (``x1``, ``y1`` exclusive).  ``failed``: indices whose image could not be
    read (drawn as a grey placeholder).  ``map_box``: the area reserved for the map.
    """

    path: Path | None
    size: tuple[int, int]
    rects: np.ndarray
    thumb_size: int
    frame_width: int
    map_box: tuple[int, int, int, int]
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    image: Image.Image | None = None


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def remove_overlaps(
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    box: tuple[float, float, float, float],
    *,
    gap: float = 2.0,
    iters: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Push ``size`` x ``size`` squares with top-left corners ``(x, y)`` apart until none overlap.

    Each overlapping pair moves apart along the axis where it overlaps less
    (so the layout changes as little as possible); corners stay within ``box =
    (x_min, y_min, x_max, y_max)``.  Stops when no pair overlaps or after
    ``iters`` rounds (best effort for very crowded maps).  Returns float arrays.
    """
    from scipy.spatial import cKDTree

    pts = np.column_stack([x, y]).astype(np.float64)
    s = float(size) + gap
    lo = np.array(box[:2], dtype=np.float64)
    hi = np.array(box[2:], dtype=np.float64)
    for _ in range(iters):
        pairs = cKDTree(pts).query_pairs(r=s * 1.415, output_type="ndarray")
        if len(pairs) == 0:
            break
        d = pts[pairs[:, 1]] - pts[pairs[:, 0]]
        ov = s - np.abs(d)
        hit = (ov[:, 0] > 0) & (ov[:, 1] > 0)
        if not hit.any():
            break
        pairs, d, ov = pairs[hit], d[hit], ov[hit]
        sign = np.where(d >= 0, 1.0, -1.0)
        # deterministic tie-break for coincident points: by index order
        axis_x = ov[:, 0] <= ov[:, 1]
        move = np.zeros_like(d)
        move[axis_x, 0] = (ov[axis_x, 0] / 2 + 0.25) * sign[axis_x, 0]
        move[~axis_x, 1] = (ov[~axis_x, 1] / 2 + 0.25) * sign[~axis_x, 1]
        push = np.zeros_like(pts)
        np.add.at(push, pairs[:, 0], -move)
        np.add.at(push, pairs[:, 1], move)
        pts += push
        np.clip(pts, lo, hi, out=pts)
    return pts[:, 0], pts[:, 1]


def _layout(
    n: int,
    aspect: float,
    grid: GridLayout | None,
    max_size: int,
    thumb_size: int | None,
    legend_w: int,
    title_h: int,
    margin: int,
) -> tuple[int, int, int, int, int, int]:
    """Return (canvas_w, canvas_h, map_w, map_h, thumb, cell)."""
    avail_w = max(64, max_size - legend_w - 2 * margin)
    avail_h = max(64, max_size - title_h - 2 * margin)
    if grid is not None:
        cols, rows = max(1, grid.cols), max(1, grid.rows)
        if thumb_size:
            cell = int(thumb_size + max(2, thumb_size // 12))
        else:
            cell = 176
        cell_max = min(avail_w // cols, avail_h // rows)
        if cell_max < 3:
            raise ValueError(
                f"a {cols}x{rows} grid does not fit in max_size {max_size}; raise max_size "
                f"to at least {3 * max(cols, rows) + legend_w + 2 * margin + title_h}"
            )
        cell = int(min(cell, cell_max))
        map_w, map_h = cell * cols, cell * rows
        pad = max(1, cell // 12)
        return map_w, map_h, map_w, map_h, max(2, cell - pad), cell
    spacing = 2.0
    aspect = float(min(2.0, max(0.5, aspect)))
    t = int(thumb_size) if thumb_size else 160
    # map big enough for n thumbnails with room around them, within the bounds
    area = spacing * spacing * n * t * t
    map_h = math.sqrt(area / aspect)
    map_w = map_h * aspect
    scale = min(1.0, avail_w / map_w, avail_h / map_h)
    map_w, map_h = max(256.0, map_w * scale), max(256.0, map_h * scale)
    map_w, map_h = min(map_w, avail_w), min(map_h, avail_h)
    if not thumb_size:
        t = int(min(160, max(8, math.sqrt(map_w * map_h / n) / spacing)))
    t = int(max(2, min(t, map_w, map_h)))
    return int(map_w), int(map_h), int(map_w), int(map_h), t, 0


@dataclass(frozen=True)
class _Canvas:
    """Sizes of one drawing: canvas, map area, thumbnail box and fonts."""

    width: int
    height: int
    map_box: tuple[int, int, int, int]
    thumb: int
    cell: int
    margin: int
    font: int
    legend_w: int
    title_h: int


def legend_entries(labels: Sequence[Hashable | None] | None, cluster_ids: np.ndarray | None,
                   cluster_names: dict[int, str] | None,
                   frame_colors: dict[Hashable, tuple[int, int, int]] | None = None,
                   ) -> tuple[list[tuple[int, int, int]] | None, list[tuple[str, list]]]:
    """``(colour per label or None, legend sections)``; sections are ``(heading, [(colour, text)])``.

    The names, counts and order are those of the HTML viewer (:mod:`.legend`),
    the grey noise points included.
    """
    from illust2vec.maps.legend import cluster_legend, label_legend

    sections: list[tuple[str, list]] = []
    colors = None
    if labels is not None:
        cmap = dict(frame_colors or label_colors(labels))
        entries = []
        for lab, count in label_legend(labels):
            cmap.setdefault(lab, color_for(len(cmap)))
            entries.append((cmap[lab], f"{lab} ({count})"))
        colors = [cmap[lab] if lab is not None else UNLABELLED for lab in labels]
        if entries:
            sections.append(("Labels", entries))
    if cluster_ids is not None and (cluster_names or (np.asarray(cluster_ids) == -1).any()):
        shown = cluster_legend(cluster_ids, cluster_names)
        entries = [((UNLABELLED if c == -1 else color_for(c)) if labels is None else None, f"{name} ({k})")
                   for c, name, k in shown if c == -1 or c in (cluster_names or {})]
        if entries:
            sections.append(("Clusters", entries))
    return colors, sections


def _frame_colors(n: int, labels, cluster_ids, label_cols) -> list[tuple[int, int, int]]:
    if label_cols is not None:
        return label_cols
    if cluster_ids is not None:
        return [color_for(int(c)) if c >= 0 else UNLABELLED for c in cluster_ids]
    return [UNLABELLED] * n


def _plan(pos: np.ndarray, grid: GridLayout | None, options: RenderOptions, sections: list, title: str | None
          ) -> _Canvas:
    n = pos.shape[0]
    max_size = options.max_size
    has_legend = options.legend and bool(sections)
    margin = max(8, min(32, max_size // 128))
    font = max(11, min(22, max_size // 160))
    legend_w = int(min(480, max(220, max_size * 0.2))) if has_legend else 0
    title_h = int(font * 2.2) if title else 0
    span = pos.max(0) - pos.min(0) if n else np.ones(2)
    aspect = float(span[0] / span[1]) if span[1] > 0 and span[0] > 0 else 1.0
    _, _, map_w, map_h, t, cell = _layout(n, aspect, grid, max_size, options.thumb_size, legend_w, title_h, margin)
    rows = sum(len(items) for _, items in sections)
    legend_h_needed = (rows + 3) * int(font * 1.5) + 2 * margin
    canvas_w = map_w + 2 * margin + legend_w
    canvas_h = max(map_h + title_h + 2 * margin, min(max_size, legend_h_needed) if has_legend else 0)
    mx0, my0 = margin, margin + title_h
    return _Canvas(min(canvas_w, max_size), min(canvas_h, max_size), (mx0, my0, mx0 + map_w, my0 + map_h), t, cell,
                   margin, font, legend_w, title_h)


def _boxes(pos: np.ndarray, grid: GridLayout | None, c: _Canvas, avoid_overlap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corner of each ``thumb`` x ``thumb`` box on the canvas."""
    n = pos.shape[0]
    mx0, my0, mx1, my1 = c.map_box
    t = c.thumb
    if grid is not None:
        cells = np.asarray(grid.cells, dtype=np.int64)
        off = (c.cell - t) // 2
        return mx0 + cells[:, 0] * c.cell + off, my0 + cells[:, 1] * c.cell + off
    lo = pos.min(0) if n else np.zeros(2)
    span = pos.max(0) - lo if n else np.ones(2)
    u = (pos - lo) / np.where(span > 0, span, 1.0)
    u[:, span <= 0] = 0.5
    fx = mx0 + u[:, 0] * (mx1 - mx0 - t)
    fy = my0 + u[:, 1] * (my1 - my0 - t)
    if avoid_overlap and 1 < n <= 50_000:
        fx, fy = remove_overlaps(fx, fy, t, (mx0, my0, mx1 - t, my1 - t))
    return np.round(fx).astype(np.int64), np.round(fy).astype(np.int64)


def _paste(canvas: Image.Image, get: Callable[[int], ThumbSource], bx, by, colors, c: _Canvas, workers: int,
           report: Callable[[int], None]) -> tuple[np.ndarray, list[int], int]:
    """Paste every thumbnail in its frame; ``(rects, failed, frame width)``."""
    n = len(colors)
    draw = ImageDraw.Draw(canvas)
    t = c.thumb
    fw = max(1, t // 24)
    inner = max(1, t - 2 * fw)
    rects = np.zeros((n, 4), dtype=np.int64)
    failed: list[int] = []

    def _load(i: int) -> Image.Image | None:
        try:
            return thumbnail(get(i), inner)
        except Exception:  # noqa: BLE001 - an unreadable image becomes a placeholder
            return None

    chunk = 64
    with decode_threads(workers, name="i2v-thumbnails") as pool:  # the decode pool (runtime.pool)
        for start in range(0, n, chunk):
            idx = list(range(start, min(n, start + chunk)))
            for i, im in zip(idx, pool.map(_load, idx)):
                if im is None:
                    failed.append(i)
                    w = h = inner
                else:
                    w, h = im.size
                x0 = int(bx[i]) + (t - (w + 2 * fw)) // 2
                y0 = int(by[i]) + (t - (h + 2 * fw)) // 2
                x1, y1 = x0 + w + 2 * fw, y0 + h + 2 * fw
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colors[i])
                if im is None:
                    draw.rectangle((x0 + fw, y0 + fw, x1 - fw - 1, y1 - fw - 1), fill=(235, 235, 235))
                    draw.line((x0 + fw, y0 + fw, x1 - fw - 1, y1 - fw - 1), fill=(150, 150, 150))
                else:
                    canvas.paste(im, (x0 + fw, y0 + fw))
                rects[i] = (x0, y0, x1, y1)
            report(min(n, start + chunk))
    return rects, failed, fw


def _cluster_numbers(draw: ImageDraw.ImageDraw, rects: np.ndarray, cluster_ids, cluster_names, c: _Canvas) -> None:
    """``#N`` at the centre of each named cluster."""
    cid_arr = np.asarray(cluster_ids)
    mx0, my0, mx1, my1 = c.map_box
    cf = _font(max(10, min(c.font, c.thumb // 2 + 6)))
    for cid in sorted(cluster_names):
        m = cid_arr == cid
        if not m.any():
            continue
        cx = float(((rects[m, 0] + rects[m, 2]) / 2).mean())
        cy = float(((rects[m, 1] + rects[m, 3]) / 2).mean())
        text = f"#{cid}"
        tw = draw.textlength(text, font=cf)
        th = cf.size if hasattr(cf, "size") else 12
        x0 = int(min(max(mx0, cx - tw / 2 - 3), mx1 - tw - 6))
        y0 = int(min(max(my0, cy - th / 2 - 2), my1 - th - 4))
        draw.rectangle((x0, y0, x0 + tw + 6, y0 + th + 4), fill=(255, 255, 255), outline=(0, 0, 0))
        draw.text((x0 + 3, y0 + 1), text, fill=(0, 0, 0), font=cf)


def _legend(draw: ImageDraw.ImageDraw, sections: list, c: _Canvas) -> None:
    base_font, margin = c.font, c.margin
    lf = _font(base_font)
    hf = _font(int(base_font * 1.15))
    lx = c.width - c.legend_w + margin // 2
    lw = c.legend_w - margin
    line = int(base_font * 1.5)
    y = c.map_box[1]
    max_y = c.height - margin - line
    for head, items in sections:
        if y > max_y:
            break
        draw.text((lx, y), head, fill=(0, 0, 0), font=hf)
        y += line
        for j, (col, text) in enumerate(items):
            if y > max_y - line and j < len(items) - 1:
                draw.text((lx, y), f"… and {len(items) - j} more", fill=(80, 80, 80), font=lf)
                y += line
                break
            sw = int(base_font * 0.9)
            tx = lx
            if col is not None:
                draw.rectangle((lx, y + 2, lx + sw, y + 2 + sw), fill=col, outline=(60, 60, 60))
                tx = lx + sw + 6
            draw.text((tx, y), _fit_text(draw, text, lf, lw - (tx - lx)), fill=(20, 20, 20), font=lf)
            y += line
        y += line // 2


def _save(canvas: Image.Image, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ext = out_path.suffix.lower()
    kwargs: dict[str, Any] = {"compress_level": 3} if ext in ("", ".png") else {}
    if ext in (".jpg", ".jpeg", ".webp"):
        kwargs = {"quality": 90}
    if ext == "":
        atomic_write(out_path, lambda fh: canvas.save(fh, format="PNG", **kwargs))
    else:  # atomic: a failure (full disk...) leaves an earlier map as it was, never a 0-byte file
        save_image(canvas, out_path, **kwargs)


def render_map(
    out_path: Path | str | None,
    positions: np.ndarray,
    thumbnails: Thumbnails,
    *,
    labels: Sequence[Hashable | None] | None = None,
    cluster_ids: np.ndarray | None = None,
    cluster_names: dict[int, str] | None = None,
    grid: GridLayout | None = None,
    options: RenderOptions = RenderOptions(),
    keep_image: bool = False,
    progress: Any = None,
) -> RenderResult:
    """Draw the map as a PNG (or any format Pillow writes, by extension) at ``out_path``.

    ``positions``: (N, 2) map coordinates (ignored for placement when ``grid`` is
    given, except for cluster numbers).  ``thumbnails``: a sequence or a callable
    ``i -> path | PIL image | array``, read lazily.  Frames are coloured by
    ``labels`` if given, else by ``cluster_ids`` (noise grey); the legend lists
    labels, ``cluster_names`` and the noise points, as the viewer does.
    ``options`` (:class:`~illust2vec.maps.options.RenderOptions`): title, size
    bounds, overlap removal.  ``out_path=None`` skips writing (use
    ``keep_image=True`` to get the picture).  ``progress`` counts images drawn.

    Stages: legend and colours -> canvas plan -> thumbnail boxes -> paste ->
    cluster numbers, title, legend -> save.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[0]
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {pos.shape}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} positions")
    if options.max_size < 128:
        raise ValueError(f"max_size {options.max_size} is too small; use at least 128 pixels")
    get = thumbnails if callable(thumbnails) else thumbnails.__getitem__
    if not callable(thumbnails) and len(thumbnails) != n:
        raise ValueError(f"{len(thumbnails)} thumbnails for {n} positions")

    label_cols, sections = legend_entries(labels, cluster_ids, cluster_names, options.frame_colors)
    colors = _frame_colors(n, labels, cluster_ids, label_cols)
    c = _plan(pos, grid, options, sections, options.title)
    canvas = Image.new("RGB", (c.width, c.height), options.background)
    bx, by = _boxes(pos, grid, c, options.avoid_overlap)
    report, close = progress_callback(progress, label="map image", unit="img", total=n)
    try:
        rects, failed, fw = _paste(canvas, get, bx, by, colors, c, options.workers, report)
    finally:
        close()
    draw = ImageDraw.Draw(canvas)
    if cluster_ids is not None and cluster_names:
        _cluster_numbers(draw, rects, cluster_ids, cluster_names, c)
    if options.title:
        tf = _font(int(c.font * 1.4))
        draw.text((c.margin, c.margin // 2), _fit_text(draw, options.title, tf, c.width - 2 * c.margin),
                  fill=(0, 0, 0), font=tf)
    if c.legend_w:
        _legend(draw, sections, c)
    if out_path is not None:
        _save(canvas, Path(out_path))
    return RenderResult(
        path=Path(out_path) if out_path is not None else None,
        size=(c.width, c.height),
        rects=rects,
        thumb_size=c.thumb,
        frame_width=fw,
        map_box=c.map_box,
        colors=colors,
        failed=failed,
        image=canvas if keep_image else None,
    )
