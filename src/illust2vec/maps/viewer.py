"""Self-contained interactive HTML viewer for an image map.

:func:`write_viewer` writes one HTML file that shows every image of a map at
its 2-D position, with pan/zoom, hover details, search, colouring by label or
cluster, box/lasso selection with CSV/JSON export and the map's quality
numbers.  The page needs no network: the JavaScript and CSS are inlined from
``viewer_assets/`` and the thumbnails are packed into atlas pages, embedded as
base64 data (``embed=True``), or with the full-resolution pages beside it in
``NAME_files/`` (``embed=False``).

Atlases
    Every image is letterboxed (aspect kept) into a square cell of
    ``thumb_size`` pixels on 2048x2048 "hi" atlas pages, and again into 32 px
    cells (16 px above 8,192 images, 8 px above 32,768) on "base" pages, so
    that the base atlas stays within about two pages.  The base pages are
    loaded when the page opens (overview, dots and small thumbnails); hi pages
    are decoded only when their points are on screen at a zoom that needs
    them.  Points are assigned to cells in Z-order of their map position, so a
    zoomed-in view touches few hi pages.

Security
    All user strings (paths, labels, tags, cluster names, title) travel as JSON
    inside ``<script type="application/json">`` with ``<``, ``>``, ``&``,
    U+2028 and U+2029 escaped, and the page inserts them into the DOM only via
    ``textContent``.  ``href`` values with a scheme other than http, https or
    file are not opened.

The page exposes a read-only test/automation hook, ``window.illust2vecViewer``
(see ``viewer_assets/viewer.js``): ``ready`` (a promise resolved after the first
frame), ``settled()``, ``pointToScreen(i)``, ``screenToPoint(x, y)``,
``visibleCount()``, ``highlighted()``, ``selection()``, ``hovered()``,
``renderer``, ``count``.

Example:
    >>> from illust2vec.maps.viewer import ViewerPoint, write_viewer
    >>> pts = [ViewerPoint(x=0.0, y=0.0, path="a.png", label="alice")]
    >>> write_viewer(Path("map.html"), pts, [Image.new("RGB", (64, 64))])  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import AtomicFile, DurableBatch, json_safe
from illust2vec.maps.legend import cluster_legend, natural_key
from illust2vec.runtime.progress import progress_callback

__all__ = ["ViewerOptions", "ViewerPoint", "write_viewer", "spread_points", "ATLAS_PAGE_SIZE"]

#: Side of one atlas page in pixels (every WebGL implementation supports 2048).
ATLAS_PAGE_SIZE = 2048
#: Colour of the letterbox around a thumbnail inside its atlas cell.
_LETTERBOX = (32, 33, 36)
_HREF_SCHEMES = ("http:", "https:", "file:")


@dataclass
class ViewerPoint:
    """One image on the map.

    Attributes:
        x, y: Map position (any units; the viewer fits the extent to the window;
            ``y`` grows downwards on screen, as in image coordinates).
        path: The image's path or name; shown on hover, searchable, exported.
        label: Optional label (e.g. the folder); used by "colour by label".
        cluster: Optional cluster id; ``-1`` means noise.  Used by "colour by
            cluster"; names come from ``write_viewer(cluster_names=...)``.
        top_tags: ``(tag, probability)`` pairs shown on hover and searchable,
            most probable first.
        href: What a click opens in a new tab: a URL relative to the HTML file or
            an absolute ``file://``/``http(s)://`` URI.  ``None``: not clickable.
    """

    x: float
    y: float
    path: str
    label: str | None = None
    cluster: int | None = None
    top_tags: list[tuple[str, float]] = field(default_factory=list)
    href: str | None = None


ThumbnailSource = Sequence[Image.Image] | Callable[[int], Image.Image]


@dataclass(frozen=True)
class ViewerOptions:
    """How :func:`write_viewer` builds the page.

    Attributes:
        title: Page title and heading.
        thumb_size: Cell size in pixels of the full-resolution atlas, 16-512
            (128 is sharp on screen; 64 halves the size of big maps).
        embed: ``True``: one self-contained file with all atlases inside as
            base64.  ``False``: the full-resolution atlas pages go to
            ``NAME_files/`` beside the page (loaded on demand through relative
            ``<script src>``; keep the folder with the page) and only the small
            overview atlas stays inside.  Above roughly 20k images
            ``embed=False`` keeps the page quick to open (an embedded map
            costs about 6 kB per image at ``thumb_size=128``, all read at
            open), because the browser then reads only the pages it shows.
        image_format: ``"jpeg"`` (fast to encode and decode, default) or
            ``"webp"`` (about 20% smaller, several times slower to encode).
        image_quality: Encoder quality, 1-100.
        avoid_overlap: Points whose thumbnails would overlap at the first
            (fitted) zoom are nudged apart as little as needed so that none
            hides another (:func:`spread_points`, up to 50,000 points).  The
            page's ``x``/``y`` are then the nudged positions.
    """

    title: str = "illust2vec map"
    thumb_size: int = 128
    embed: bool = True
    image_format: str = "jpeg"
    image_quality: int = 85
    avoid_overlap: bool = True


def write_viewer(
    out_html: Path,
    points: Sequence[ViewerPoint],
    thumbnails: ThumbnailSource,
    options: ViewerOptions = ViewerOptions(),
    *,
    cluster_names: dict[int, str] | None = None,
    quality: dict[str, float] | None = None,
    progress: Any = None,
) -> Path:
    """Write the interactive viewer for ``points`` to ``out_html``.

    Args:
        out_html: The HTML file to write (parent directories are created).  The
            file is written to a temporary name and renamed, so an interrupted
            run leaves no half-written page.
        points: The images and their map positions.
        thumbnails: One image per point: a sequence (same length and order as
            ``points``) or a callable ``f(i) -> PIL.Image`` called once per
            point, one at a time (so 100k originals never sit in memory
            together).  Any size and mode; alpha is composited onto the
            letterbox colour.  Sequence items are not modified.
        options: Title, atlas cell size, embedding, image format, overlap
            removal (:class:`ViewerOptions`).
        cluster_names: Names for cluster ids (shown in the legend), e.g. the
            clusters' most distinctive tags.  Missing ids are shown as
            ``cluster N``; ``-1`` as ``noise`` (:mod:`illust2vec.maps.legend`).
        quality: Map quality numbers shown in the info panel, e.g.
            ``{"trustworthiness": 0.93, "knn_preservation": 0.41,
            "label_accuracy_map": 0.88}``; keys are shown as given (underscores
            as spaces), values with three decimals.
        progress: ``True`` for a bar on stderr, or a callback
            (:mod:`illust2vec.runtime.progress`) counting thumbnails.

    Returns:
        ``out_html``.

    Raises:
        Illust2VecError: empty ``points``, non-finite coordinates, a thumbnail
            sequence of the wrong length, a thumbnail that is not an image, or
            an out-of-range option.
    """
    out_html = Path(out_html)
    title, thumb_size, embed = options.title, options.thumb_size, options.embed
    image_format, image_quality = options.image_format, options.image_quality
    n = len(points)
    if n == 0:
        raise Illust2VecError("write_viewer: no points to show; give at least one ViewerPoint")
    if not 16 <= int(thumb_size) <= 512:
        raise Illust2VecError(f"write_viewer: thumb_size={thumb_size!r} is out of range; use 16 to 512 pixels")
    thumb_size = int(thumb_size)
    fmt = image_format.lower()
    if fmt not in ("jpeg", "webp"):
        raise Illust2VecError(f"write_viewer: image_format={image_format!r} is not supported; use 'jpeg' or 'webp'")
    if not 1 <= int(image_quality) <= 100:
        raise Illust2VecError(f"write_viewer: image_quality={image_quality!r} is out of range; use 1 to 100")
    if not callable(thumbnails) and len(thumbnails) != n:
        raise Illust2VecError(
            f"write_viewer: got {len(thumbnails)} thumbnails for {n} points; give one image per point "
            "(or a callable f(i) -> PIL.Image)"
        )

    xy = np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(n, 2)
    bad = np.flatnonzero(~np.isfinite(xy).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise Illust2VecError(
            f"write_viewer: point {i} ({points[i].path!r}) has a non-finite position "
            f"({points[i].x!r}, {points[i].y!r}); drop it or fix the layout"
        )

    point_size = None
    if options.avoid_overlap and 1 < n <= 50_000:
        xy, point_size = spread_points(xy)
    order = _z_order(xy)  # atlas slot k holds point order[k]
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n)
    base_cell = 32 if n <= 8_192 else 16 if n <= 32_768 else 8

    get_thumb: Callable[[int], Image.Image]
    get_thumb = thumbnails if callable(thumbnails) else thumbnails.__getitem__  # type: ignore[assignment]

    files_dir = out_html.with_name(out_html.stem + "_files")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    if not embed:
        if files_dir.exists():
            foreign = [p.name for p in files_dir.iterdir() if not re.fullmatch(r"(base|hi)-\d{4}\.js", p.name)]
            if foreign or not files_dir.is_dir():
                raise Illust2VecError(
                    f"write_viewer: {files_dir} exists and holds files the viewer did not write "
                    f"({', '.join(sorted(foreign)[:3]) or 'not a folder'}); move them or choose another output name"
                )
            shutil.rmtree(files_dir)
        files_dir.mkdir()

    sizes = np.zeros((n, 4), dtype=np.int32)  # hi w, h, base w, base h
    avg = bytearray(3 * n)  # mean RGB per thumbnail: dots at low zoom and while atlases load
    hi_pages: list[str] = []  # embedded data URIs or relative file names
    base_pages: list[str] = []
    mime = "image/jpeg" if fmt == "jpeg" else "image/webp"

    def encode(img: Image.Image) -> str:
        buf = io.BytesIO()
        if fmt == "jpeg":
            img.save(buf, "JPEG", quality=int(image_quality))
        else:
            img.save(buf, "WEBP", quality=int(image_quality), method=0)
        return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    # Embedded hi pages are spooled to a temporary file as they are made, so a
    # 100k-image map never holds all of its atlases in memory.
    spool = open(out_html.with_name(out_html.name + ".hi.part"), "w+", encoding="ascii") if embed else None
    # Pages are encoded on a worker thread (Pillow releases the GIL) while the
    # next thumbnails are made; at most a few pages wait, so memory stays bounded.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="i2v-atlas")
    pending: deque = deque()
    pages = DurableBatch()  # the atlas files, durable before the page that loads them
    try:
        def emit(kind: str, index: int, img: Image.Image, store: list[str]) -> None:
            pending.append((kind, index, store, pool.submit(encode, img)))
            while len(pending) > 3:
                drain_one()

        def drain_one() -> None:
            kind, index, store, fut = pending.popleft()
            write_page(kind, index, fut.result(), store)

        def write_page(kind: str, index: int, uri: str, store: list[str]) -> None:
            if embed and kind == "hi":
                assert spool is not None
                spool.write(f'<script type="text/x-i2v-atlas" id="i2v-hi-{index}">{uri}</script>\n')
                store.append("")
            elif embed or kind == "base":  # the small overview atlas is always inside the page
                store.append(uri)
            else:
                name = f"{kind}-{index:04d}.js"
                pages.write(files_dir / name, "window.__i2vAtlas&&window.__i2vAtlas(" + json.dumps(kind) + ","
                            + str(index) + "," + json.dumps(uri) + ");\n")
                store.append(f"{files_dir.name}/{name}")

        hi_packer = _Packer(thumb_size, n, lambda idx, img: emit("hi", idx, img, hi_pages))
        base_packer = _Packer(base_cell, n, lambda idx, img: emit("base", idx, img, base_pages))

        report, close = progress_callback(progress, label="viewer thumbnails", unit="img", total=n)
        for k, i in enumerate(order):
            report(k)
            i = int(i)
            try:
                src = get_thumb(i)
            except Illust2VecError:
                raise
            except Exception as exc:  # the caller's thumbnail source failed
                raise Illust2VecError(f"write_viewer: thumbnail {i} ({points[i].path!r}) failed: {exc}") from exc
            if not isinstance(src, Image.Image):
                raise Illust2VecError(
                    f"write_viewer: thumbnail {i} ({points[i].path!r}) is a {type(src).__name__}, not a PIL.Image"
                )
            hi = _fit(src, thumb_size)
            base = _shrink(hi, base_cell)
            sizes[i] = (hi.width, hi.height, base.width, base.height)
            avg[3 * i : 3 * i + 3] = base.reduce((base.width, base.height)).tobytes()
            hi_packer.add(k, hi)
            base_packer.add(k, base)
        report(n)
        close()
        hi_packer.finish()
        base_packer.finish()
        while pending:
            drain_one()
        pages.commit()

        data = _build_data(points, xy, slot, sizes, thumb_size, base_cell, title, cluster_names, quality)
        if point_size is not None:
            data["pointSize"] = point_size
        data["avg"] = base64.b64encode(bytes(avg)).decode("ascii")
        data["atlas"] = {
            "page": ATLAS_PAGE_SIZE,
            "hiCell": thumb_size,
            "baseCell": base_cell,
            "hiPages": len(hi_pages),
            "basePages": len(base_pages),
            "embed": bool(embed),
            "hiDim": list(hi_packer.first_size or (thumb_size, thumb_size)),
            "baseDim": list(base_packer.first_size or (base_cell, base_cell)),
            "hiSrc": [] if embed else hi_pages,
        }

        template = _asset("template.html")
        css = _asset("viewer.css")
        js = _asset("viewer.js")
        head, rest = template.split("{{ATLASES}}", 1)
        pre, post = rest.split("{{SCRIPT}}", 1)
        nonce = base64.b64encode(os.urandom(16)).decode("ascii")
        head = head.replace("{{NONCE}}", nonce)
        pre = pre.replace("{{NONCE}}", nonce)
        with AtomicFile(out_html, text=True, newline="\n") as fh:  # durable; an old page stays until done
            fh.write(_fill(head, {"TITLE": _html_text(title), "CSS": css, "DATA": _json_for_script(data)}))
            for j, uri in enumerate(base_pages):
                fh.write(f'<script type="text/x-i2v-atlas" id="i2v-base-{j}">{uri}</script>\n')
            fh.write(pre)
            fh.write(js.replace("</script", "<\\/script"))
            fh.write(post.split("{{HIATLASES}}", 1)[0])
            if spool is not None:
                spool.seek(0)
                shutil.copyfileobj(spool, fh, 1 << 20)
            fh.write(post.split("{{HIATLASES}}", 1)[1])
        if spool is not None:
            spool.close()
            os.unlink(spool.name)
    except BaseException:
        for *_, fut in pending:
            fut.cancel()
        if spool is not None:
            spool.close()
            Path(spool.name).unlink(missing_ok=True)
        pages.discard()
        if not embed:
            shutil.rmtree(files_dir, ignore_errors=True)
        raise
    finally:
        pool.shutdown(wait=True)
    return out_html


# --------------------------------------------------------------------------- helpers


class _Packer:
    """Pastes cells row by row onto 2048x2048 pages and emits each full page."""

    def __init__(self, cell: int, n: int, emit: Callable[[int, Image.Image], None]) -> None:
        self.cell = cell
        self.per_row = ATLAS_PAGE_SIZE // cell
        self.per_page = self.per_row * self.per_row
        self.n = n
        self.emit = emit
        self.page: Image.Image | None = None
        self.page_index = -1
        self.used = 0
        self.first_size: tuple[int, int] | None = None

    def add(self, k: int, img: Image.Image) -> None:
        p, r = divmod(k, self.per_page)
        if p != self.page_index:
            self._flush()
            remaining = min(self.per_page, self.n - p * self.per_page)
            rows = -(-remaining // self.per_row)
            width = ATLAS_PAGE_SIZE if rows > 1 else remaining * self.cell
            self.page = Image.new("RGB", (width, rows * self.cell), _LETTERBOX)
            if self.first_size is None:
                self.first_size = self.page.size
            self.page_index = p
            self.used = 0
        row, col = divmod(r, self.per_row)
        ox = col * self.cell + (self.cell - img.width) // 2
        oy = row * self.cell + (self.cell - img.height) // 2
        assert self.page is not None
        self.page.paste(img, (ox, oy))
        self.used += 1

    def _flush(self) -> None:
        if self.page is not None:
            self.emit(self.page_index, self.page)
            self.page = None

    def finish(self) -> None:
        self._flush()


def _fit(img: Image.Image, cell: int) -> Image.Image:
    """RGB copy of ``img`` scaled (aspect kept) to fit a ``cell`` x ``cell`` square."""
    if img.mode not in ("RGB", "RGBA", "L", "LA", "P", "I", "I;16", "F", "CMYK", "RGBa", "La", "YCbCr", "LAB", "HSV", "1"):
        img = img.convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, _LETTERBOX)
        bg.paste(rgba, mask=rgba.getchannel("A"))
        img = bg
    elif img.mode in ("I", "I;16", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    elif img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if w < 1 or h < 1:
        return Image.new("RGB", (1, 1), _LETTERBOX)
    scale = cell / max(w, h)
    tw = max(1, min(cell, round(w * scale)))
    th = max(1, min(cell, round(h * scale)))
    if (tw, th) == (w, h):
        return img
    return img.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _shrink(img: Image.Image, cell: int) -> Image.Image:
    """``_fit`` for an RGB image already fitted to a larger cell: a fast box reduction."""
    factor = max(1, -(-max(img.size) // cell))
    if factor > 1 and img.width % factor == 0 and img.height % factor == 0:
        return img.reduce(factor)
    return _fit(img, cell)


def _z_order(xy: np.ndarray) -> np.ndarray:
    """Indices of the points sorted along a Z-order (Morton) curve of their positions."""
    lo = xy.min(axis=0)
    span = np.maximum(xy.max(axis=0) - lo, 1e-12)
    q = np.clip(((xy - lo) / span * 65535.0).astype(np.int64), 0, 65535)

    def spread(v: np.ndarray) -> np.ndarray:
        v = (v | (v << 8)) & 0x00FF00FF
        v = (v | (v << 4)) & 0x0F0F0F0F
        v = (v | (v << 2)) & 0x33333333
        v = (v | (v << 1)) & 0x55555555
        return v

    code = spread(q[:, 0]) | (spread(q[:, 1]) << 1)
    return np.argsort(code, kind="stable")


def _build_data(
    points: Sequence[ViewerPoint],
    xy: np.ndarray,
    slot: np.ndarray,
    sizes: np.ndarray,
    thumb_size: int,
    base_cell: int,
    title: str,
    cluster_names: dict[int, str] | None,
    quality: dict[str, float] | None,
) -> dict:
    labels: list[str] = []
    label_ix: dict[str, int] = {}
    tag_names: list[str] = []
    tag_ix: dict[str, int] = {}
    lab: list[int] = []
    clu: list[int] = []
    tags: list[list[float]] = []
    hrefs: list[str | None] = []
    has_cluster = False
    for p in points:
        if p.label is None:
            lab.append(-1)
        else:
            s = str(p.label)
            if s not in label_ix:
                label_ix[s] = len(labels)
                labels.append(s)
            lab.append(label_ix[s])
        if p.cluster is None:
            clu.append(-2)  # no cluster information
        else:
            has_cluster = True
            clu.append(int(p.cluster))
        flat: list[float] = []
        for name, prob in p.top_tags:
            name = str(name)
            if name not in tag_ix:
                tag_ix[name] = len(tag_names)
                tag_names.append(name)
            flat.append(tag_ix[name])
            flat.append(round(float(prob), 4))
        tags.append(flat)
        hrefs.append(_safe_href(p.href))
    # legend order: natural sort ("char 2" before "char 10"); indices follow it
    order = sorted(range(len(labels)), key=lambda k: natural_key(labels[k]))
    remap = {old: new for new, old in enumerate(order)}
    labels = [labels[k] for k in order]
    lab = [remap[v] if v >= 0 else -1 for v in lab]
    cluster_list = [[c, name] for c, name, _ in cluster_legend([c for c in clu if c != -2], cluster_names)]
    q = []
    for k, v in (quality or {}).items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            continue
        q.append([str(k), fv if math.isfinite(fv) else None])
    return {
        "version": 1,
        "title": str(title),
        "n": len(points),
        "x": [float(v) for v in xy[:, 0]],
        "y": [float(v) for v in xy[:, 1]],
        "path": [str(p.path) for p in points],
        "labels": labels,
        "label": lab if labels else None,
        "cluster": clu if has_cluster else None,
        "clusters": cluster_list,
        "tagNames": tag_names,
        "tags": tags,
        "href": hrefs if any(h is not None for h in hrefs) else None,
        "slot": slot.tolist(),
        "size": sizes.reshape(-1).tolist(),
        "quality": q,
    }


def _safe_href(href: str | None) -> str | None:
    """``href`` if it is relative or uses http(s)/file, else None (no ``javascript:``)."""
    if href is None:
        return None
    h = str(href).strip()
    if not h:
        return None
    head = h.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if ":" in head:
        scheme = head.split(":", 1)[0].lower() + ":"
        if scheme not in _HREF_SCHEMES and not (len(scheme) == 2 and os.name == "nt"):
            return None
    return h


def _json_for_script(obj: object) -> str:
    """JSON that cannot end a ``<script>`` element or break JS parsing."""
    s = json_safe(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
    return (
        s.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{{NAME}}`` placeholders in one pass (values are never re-scanned)."""
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _html_text(s: str) -> str:
    return (
        str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _asset(name: str) -> str:
    return resources.files("illust2vec.maps").joinpath("viewer_assets").joinpath(name).read_text(encoding="utf-8")


def spread_points(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Nudge map positions apart so that thumbnails of the first zoom do not overlap.

    The page fits the map's larger extent to the window and draws a thumbnail
    of ``min(0.25, 0.8 / sqrt(N))`` of that extent.  Overlapping squares of that
    side are pushed apart as little as needed
    (:func:`illust2vec.maps.render.remove_overlaps`; a crowded cluster may grow
    the extent).  Returns the new positions and the side as a fraction of the
    new extent (the page's ``pointSize``).
    """
    from illust2vec.maps.render import remove_overlaps

    n = xy.shape[0]
    lo, hi = xy.min(0), xy.max(0)
    span = float(max(hi - lo)) or 1.0
    side = min(0.25, 0.8 / math.sqrt(n)) * span
    room = np.array([-span, -span, span, span], dtype=np.float64)
    box = np.concatenate([lo, hi]) + room
    x, y = remove_overlaps(xy[:, 0], xy[:, 1], side, tuple(box), gap=0.0)  # centres: the same squares
    out = np.column_stack([x, y])
    new_span = float(max(out.max(0) - out.min(0))) or 1.0
    return out, side / new_span
