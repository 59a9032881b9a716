"""Drawing shared by every picture the package makes: the font, thumbnails, contact sheets, bar charts.

* :func:`font`: Pillow's built-in font at a pixel size (any Pillow version; no font files);
* :func:`thumbnail`: a path, PIL image or array as RGB fitting a square box (JPEGs decoded at
  reduced scale, EXIF orientation applied, transparency on white);
* :func:`contact_sheet`: a grid of captioned thumbnails (search hits, duplicate groups,
  morph strips, faces);
* :func:`bar_chart`: labelled horizontal bars (tag frequencies).

Each returns a PIL image; write it with :func:`illust2vec.io.images.save_image` (atomic).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = ["ThumbSource", "bar_chart", "contact_sheet", "font", "thumbnail"]

#: What :func:`thumbnail` accepts: a file path, a PIL image or an ``HxWx3`` ``uint8`` array.
ThumbSource = Union[str, Path, Image.Image, np.ndarray]

_UNREADABLE = (200, 200, 200)


def font(size: int | None = None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font, ``size`` pixels tall where Pillow can scale it (>= 10.1), else its bitmap font."""
    if size is None:
        return ImageFont.load_default()
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def thumbnail(source: ThumbSource, box: int) -> Image.Image:
    """Open ``source`` (path, PIL image or HxWx3 array) as RGB fitting in ``box`` x ``box``.

    JPEGs are decoded at reduced scale (draft mode); EXIF orientation is
    applied; transparency is composited onto white.  A picture already
    smaller than the box keeps its size.
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


def _caption_lines(text: str, chars: int, lines: int) -> list[str]:
    """``text`` in at most ``lines`` lines of ``chars``; a longer one loses its middle (names differ at the end)."""
    room = chars * lines
    if len(text) > room:
        head = (room - 1) // 2
        text = text[:head] + "…" + text[len(text) - (room - 1 - head):]
    return [text[j:j + chars] for j in range(0, len(text), chars)][:lines] or [""]


def contact_sheet(cells: Sequence[tuple[str, ThumbSource | None]], *, cell: int = 192, columns: int | None = None,
                  title: str | None = None, caption_lines: int = 2, pad: int = 6, dark: bool = False) -> Image.Image:
    """A grid of ``(caption, picture)`` cells: each picture fitted into a ``cell``-pixel square, centred.

    ``picture`` is anything :func:`thumbnail` takes; one that cannot be read (or ``None``) gets a
    grey square (``unreadable`` when it failed).  ``columns`` defaults to a square-ish grid;
    ``caption_lines`` lines of text under each cell; ``title`` a line above the grid; ``pad``
    pixels around and between the cells; ``dark`` light text on a dark grey background.
    """
    n = len(cells)  # none: the title alone
    cols = max(1, columns or math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    face = font()
    line_h = 14
    cap_h = caption_lines * line_h + (4 if caption_lines > 1 else 0)
    title_h = line_h + 8 if title else 0
    background, ink = ((40, 40, 40), (230, 230, 230)) if dark else ((255, 255, 255), (0, 0, 0))
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, title_h + rows * (cell + cap_h + pad) + pad), background)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title[:200], fill=ink, font=face)
    for i, (caption, picture) in enumerate(cells):
        x = pad + (i % cols) * (cell + pad)
        y = title_h + pad + (i // cols) * (cell + cap_h + pad)
        try:
            if picture is None or (isinstance(picture, (str, Path)) and not str(picture)):
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_UNREADABLE)
            else:
                im = thumbnail(picture, cell)
                sheet.paste(im, (x + (cell - im.width) // 2, y + (cell - im.height) // 2))
        except Exception:  # one unreadable file must not stop the sheet
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_UNREADABLE)
            draw.text((x + 4, y + cell // 2), "unreadable", fill=(0, 0, 0), font=face)
        for k, line in enumerate(_caption_lines(caption, max(4, cell // 6), caption_lines)):
            draw.text((x + 2, y + cell + 1 + k * line_h), line, fill=ink, font=face)
    return sheet


def bar_chart(bars: Sequence[tuple[str, float, str, tuple[int, int, int]]], title: str, *,
              label_width: int = 230, bar_width: int = 420) -> Image.Image:
    """Horizontal bars, one a row: ``(label, share 0..1, text after the bar, colour)``, under ``title``."""
    face = font()
    row_h, pad = 18, 10
    img = Image.new("RGB", (label_width + bar_width + 90 + 2 * pad, pad * 3 + row_h * (len(bars) + 1)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), title, fill="black", font=face)
    for i, (label, share, note, color) in enumerate(bars):
        y = pad * 2 + row_h * (i + 1)
        draw.text((pad, y + 2), label if len(label) <= 36 else label[:35] + "…", fill="black", font=face)
        w = max(1, round(bar_width * share))
        draw.rectangle([label_width + pad, y + 2, label_width + pad + w, y + row_h - 3], fill=color)
        draw.text((label_width + pad + w + 5, y + 2), note, fill="black", font=face)
    return img
