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
from PIL import Image, ImageDraw, ImageFont, ImageOps

from illust2vec.io.atomic import atomic_write
from illust2vec.io.images import save_image
from illust2vec.maps.grid import GridLayout
from illust2vec.runtime.pool import decode_threads

ThumbSource = Union[str, Path, Image.Image, np.ndarray]
Thumbnails = Union[Sequence[ThumbSource], Callable[[int], ThumbSource]]
ProgressFn = Callable[[str, int, int], None]

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


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def load_thumbnail(source: ThumbSource, box: int) -> Image.Image:
    """Open ``source`` (path, PIL image or HxWx3 array) as RGB fitting in ``box`` x ``box``.

    JPEGs are decoded at reduced scale (draft mode); EXIF orientation is
    applied; transparency is composited onto white.
    """
    box = max(1, int(box))
    if isinstance(source, (str, Path)):
        im = Image.open(source)
        if im.format == "JPEG":
            im.draft("RGB", (box, box))
    elif isinstance(source, np.ndarray):
        im = Image.fromarray(np.asarray(source, dtype=np.uint8))
    elif isinstance(source, Image.Image):
        im = source
    else:
        raise TypeError(f"cannot make a thumbnail from {type(source).__name__}")
    im = ImageOps.exif_transpose(im) if isinstance(source, (str, Path)) else im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        im = bg
    elif im.mode != "RGB":
        im = im.convert("RGB")
    else:
        im = im.copy() if im is source else im
    im.thumbnail((box, box), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im


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


def render_map(
    out_path: Path | str | None,
    positions: np.ndarray,
    thumbnails: Thumbnails,
    *,
    labels: Sequence[Hashable | None] | None = None,
    cluster_ids: np.ndarray | None = None,
    cluster_names: dict[int, str] | None = None,
    title: str | None = None,
    grid: GridLayout | None = None,
    max_size: int = 4096,
    thumb_size: int | None = None,
    legend: bool = True,
    background: tuple[int, int, int] = (255, 255, 255),
    frame_colors: dict[Hashable, tuple[int, int, int]] | None = None,
    workers: int = 2,
    avoid_overlap: bool = True,
    keep_image: bool = False,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Draw the map as a PNG (or any format Pillow writes, by extension) at ``out_path``.

    ``positions``: (N, 2) map coordinates (ignored for placement when ``grid`` is
    given, except for cluster numbers).  ``thumbnails``: a sequence or a callable
    ``i -> path | PIL image | array``, read lazily.  Frames are coloured by
    ``labels`` if given, else by ``cluster_ids`` (noise grey); the legend lists
    labels and ``cluster_names``.  ``max_size`` bounds both canvas sides;
    ``thumb_size`` overrides the automatic thumbnail size.  ``out_path=None``
    skips writing (use ``keep_image=True`` to get the picture).
    ``avoid_overlap`` nudges thumbnails apart (as little as needed) so that no
    image hides another, up to 50,000 images.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[0]
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {pos.shape}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} positions")
    if max_size < 128:
        raise ValueError(f"max_size {max_size} is too small; use at least 128 pixels")
    get = thumbnails if callable(thumbnails) else thumbnails.__getitem__
    if not callable(thumbnails) and len(thumbnails) != n:
        raise ValueError(f"{len(thumbnails)} thumbnails for {n} positions")

    # colours and legend entries
    colors: list[tuple[int, int, int]]
    entries: list[tuple[tuple[int, int, int] | None, str]] = []
    if labels is not None:
        cmap = dict(frame_colors or label_colors(labels))
        counts: dict[Hashable, int] = {}
        for lab in labels:
            if lab is not None:
                counts[lab] = counts.get(lab, 0) + 1
        for lab in sorted(counts, key=lambda k: (-counts[k], str(k))):
            cmap.setdefault(lab, color_for(len(cmap)))
            entries.append((cmap[lab], f"{lab} ({counts[lab]})"))
        colors = [cmap[lab] if lab is not None else UNLABELLED for lab in labels]
    elif cluster_ids is not None:
        colors = [color_for(int(c)) if c >= 0 else UNLABELLED for c in cluster_ids]
    else:
        colors = [UNLABELLED] * n
    cluster_entries: list[tuple[tuple[int, int, int] | None, str]] = []
    if cluster_ids is not None and cluster_names:
        for cid in sorted(cluster_names):
            size = int((np.asarray(cluster_ids) == cid).sum())
            col = color_for(cid) if labels is None else None
            cluster_entries.append((col, f"{cluster_names[cid]} ({size})"))

    has_legend = legend and bool(entries or cluster_entries)
    margin = max(8, min(32, max_size // 128))
    base_font = max(11, min(22, max_size // 160))
    legend_w = int(min(480, max(220, max_size * 0.2))) if has_legend else 0
    title_h = int(base_font * 2.2) if title else 0
    span = pos.max(0) - pos.min(0) if n else np.ones(2)
    aspect = float(span[0] / span[1]) if span[1] > 0 and span[0] > 0 else 1.0
    _, _, map_w, map_h, t, cell = _layout(n, aspect, grid, max_size, thumb_size, legend_w, title_h, margin)
    legend_h_needed = (len(entries) + len(cluster_entries) + 3) * int(base_font * 1.5) + 2 * margin
    canvas_w = map_w + 2 * margin + legend_w
    canvas_h = max(map_h + title_h + 2 * margin, min(max_size, legend_h_needed) if has_legend else 0)
    canvas_w, canvas_h = min(canvas_w, max_size), min(canvas_h, max_size)
    mx0, my0 = margin, margin + title_h
    canvas = Image.new("RGB", (canvas_w, canvas_h), background)
    draw = ImageDraw.Draw(canvas)

    fw = max(1, t // 24)
    inner = max(1, t - 2 * fw)
    # top-left of each thumbnail box (t x t)
    if grid is not None:
        cells = np.asarray(grid.cells, dtype=np.int64)
        off = (cell - t) // 2
        bx = mx0 + cells[:, 0] * cell + off
        by = my0 + cells[:, 1] * cell + off
    else:
        lo = pos.min(0) if n else np.zeros(2)
        sp = np.where(span > 0, span, 1.0)
        u = (pos - lo) / sp
        u[:, span <= 0] = 0.5
        fx = mx0 + u[:, 0] * (map_w - t)
        fy = my0 + u[:, 1] * (map_h - t)
        if avoid_overlap and 1 < n <= 50_000:
            fx, fy = remove_overlaps(fx, fy, t, (mx0, my0, mx0 + map_w - t, my0 + map_h - t))
        bx = np.round(fx).astype(np.int64)
        by = np.round(fy).astype(np.int64)

    rects = np.zeros((n, 4), dtype=np.int64)
    failed: list[int] = []

    def _load(i: int) -> Image.Image | None:
        try:
            return load_thumbnail(get(i), inner)
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
            if progress:
                progress("render", min(n, start + chunk), n)

    # cluster numbers at cluster centres
    if cluster_ids is not None and cluster_names:
        cid_arr = np.asarray(cluster_ids)
        cf = _font(max(10, min(base_font, t // 2 + 6)))
        for cid in sorted(cluster_names):
            m = cid_arr == cid
            if not m.any():
                continue
            cx = float(((rects[m, 0] + rects[m, 2]) / 2).mean())
            cy = float(((rects[m, 1] + rects[m, 3]) / 2).mean())
            text = f"#{cid}"
            tw = draw.textlength(text, font=cf)
            th = cf.size if hasattr(cf, "size") else 12
            x0 = int(min(max(mx0, cx - tw / 2 - 3), mx0 + map_w - tw - 6))
            y0 = int(min(max(my0, cy - th / 2 - 2), my0 + map_h - th - 4))
            draw.rectangle((x0, y0, x0 + tw + 6, y0 + th + 4), fill=(255, 255, 255), outline=(0, 0, 0))
            draw.text((x0 + 3, y0 + 1), text, fill=(0, 0, 0), font=cf)

    if title:
        tf = _font(int(base_font * 1.4))
        draw.text((margin, margin // 2), _fit_text(draw, title, tf, canvas_w - 2 * margin), fill=(0, 0, 0), font=tf)

    if has_legend:
        lf = _font(base_font)
        hf = _font(int(base_font * 1.15))
        lx = canvas_w - legend_w + margin // 2
        lw = legend_w - margin
        line = int(base_font * 1.5)
        y = my0
        max_y = canvas_h - margin - line
        sections = []
        if entries:
            sections.append(("Labels", entries))
        if cluster_entries:
            sections.append(("Clusters", cluster_entries))
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

    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        ext = out_path.suffix.lower()
        kwargs: dict[str, Any] = {"compress_level": 3} if ext in ("", ".png") else {}
        if ext in (".jpg", ".jpeg", ".webp"):
            kwargs = {"quality": 90}
        if ext == "":
            atomic_write(out_path, lambda fh: canvas.save(fh, format="PNG", **kwargs))
        else:  # atomic: a failure (full disk...) leaves an earlier map as it was, never a 0-byte file
            save_image(canvas, out_path, **kwargs)
    return RenderResult(
        path=Path(out_path) if out_path is not None else None,
        size=(canvas_w, canvas_h),
        rects=rects,
        thumb_size=t,
        frame_width=fw,
        map_box=(mx0, my0, mx0 + map_w, my0 + map_h),
        colors=colors,
        failed=failed,
        image=canvas if keep_image else None,
    )
