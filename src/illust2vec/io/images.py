"""Decoding images into RGB arrays, and finding image files on disk.

:func:`load_image` is the one entry point for every kind of image source the
library accepts (paths, encoded bytes, Pillow images, numpy arrays).  It
always returns an ``(H, W, 3)`` ``uint8`` RGB array and raises
:class:`~illust2vec.errors.ImageDecodeError` -- never anything else -- when a
file cannot be turned into one, with a one-line message that names the file.

:func:`iter_image_files` expands the paths a user typed (files, directories,
glob patterns) into the list of files to process.
"""
from __future__ import annotations

import glob
import io
import os
import re
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Union

import numpy as np
from PIL import Image, ImageOps

from illust2vec.errors import Illust2VecError, ImageDecodeError
from illust2vec.io.atomic import atomic_write

__all__ = [
    "save_image",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "failure_reason",
    "iter_image_files",
    "load_image",
    "source_name",
]

#: Largest image (width x height) that :func:`load_image` decodes by default.
#: Equal to Pillow's own ``Image.MAX_IMAGE_PIXELS`` default (~89.5 megapixels,
#: about 256 MiB as 8-bit RGB).  Larger files are refused *before* their
#: pixels are allocated.
DEFAULT_MAX_PIXELS: int = 89_478_485

#: File name extensions (lower case, with the dot) that directory and glob
#: expansion picks up.  All are formats Pillow decodes without extra plugins.
#: A file named directly on the command line is tried whatever its extension.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif",
        ".png", ".apng",
        ".gif",
        ".bmp", ".dib",
        ".webp",
        ".tif", ".tiff",
        ".avif",
        ".tga",
        ".ppm", ".pgm", ".pbm", ".pnm",
        ".qoi",
        ".jp2", ".j2k", ".jpx",
    }
)

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray]

_ORIENTATION_TAG = 0x0112
_GLOB_CHARS = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------- #
# load_image
# --------------------------------------------------------------------------- #
def source_name(source: object) -> str:
    """A short human-readable name for an image source, used in error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        fn = getattr(source, "filename", None)
        return str(fn) if fn else "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    alpha: Literal["white", "drop"] = "white",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_orientation: Literal["apply", "ignore"] = "apply",
) -> np.ndarray:
    """Decode an image into an ``(H, W, 3)`` ``uint8`` RGB array (C-contiguous).

    Parameters
    ----------
    source:
        A file path (``str`` or ``os.PathLike``), the encoded file contents
        (``bytes``), a ``PIL.Image.Image`` or a numpy array.
    alpha:
        What to do with transparency.  ``"white"`` (default) composites the
        image onto a white background (``c * a + 255 * (1 - a)`` in float,
        rounded), which is what a viewer shows.  ``"drop"`` ignores the alpha
        channel and keeps the stored colours, as the original illustration2vec
        did (it used ``np.asarray(img)[:, :, :3]``); a palette image's
        transparent index then shows its palette colour.
    max_pixels:
        Refuse images with more than this many pixels (width x height) with an
        :class:`ImageDecodeError`, checked from the header before any pixel
        is decoded.  ``None`` disables this limit (Pillow's own hard limit of
        ``2 * Image.MAX_IMAGE_PIXELS`` still applies to files).
    exif_orientation:
        ``"apply"`` (default) turns the picture upright by its EXIF orientation
        tag; ``"ignore"`` keeps the pixels as stored (what kohya-ss' scripts,
        the WD14 web UI extension and most trainers see).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` ``uint8``, RGB, C-contiguous.

    Conversions
    -----------
    * EXIF orientation (tag 274) is applied (unless ``exif_orientation="ignore"``),
      so the array is upright as viewers show it.  A broken EXIF block is ignored.
    * Animated GIF / WebP / APNG and multi-page TIFF: the first frame.
    * Grey (``L``, ``1``), palette (``P``), ``CMYK`` (Adobe-inverted JPEGs are
      handled by Pillow), ``YCbCr``, ``LAB`` and ``HSV`` become RGB.
    * 16-bit grey (``I;16*``) keeps its high byte (``v >> 8``), as Pillow does
      for 16-bit RGB PNGs.  32-bit integer ``I`` images are taken as 16-bit
      data when any value exceeds 255, as 8-bit otherwise; values are clipped.
    * Float data (Pillow mode ``F`` or float arrays): if every value lies in
      ``[0, 1]`` the data are taken as 0-1 intensities and multiplied by 255,
      otherwise as 0-255 values; then clipped to 0-255 and rounded.
      NaN or infinity is an error.
    * Arrays may be ``(H, W)``, ``(H, W, 1)`` (grey), ``(H, W, 2)`` (grey +
      alpha), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA); ``bool`` maps to
      0/255, ``uint16`` to ``v >> 8``, other integer types are clipped to 0-255.

    Raises
    ------
    ImageDecodeError
        For a missing file, a directory, an empty, truncated or corrupt file,
        something that is not an image, an image above ``max_pixels``, a file
        that cannot be read (permissions, I/O error), or an unsupported array.
        The message is one line and starts with the file's name.

    Examples
    --------
    >>> import numpy as np
    >>> load_image(np.zeros((2, 3), dtype=np.uint8)).shape
    (2, 3, 3)
    >>> rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255]]], dtype=np.uint8)
    >>> load_image(rgba).tolist()
    [[[255, 255, 255], [255, 0, 0]]]
    >>> load_image(rgba, alpha="drop").tolist()
    [[[255, 0, 0], [255, 0, 0]]]
    """
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', not {alpha!r}")
    if exif_orientation not in ("apply", "ignore"):
        raise ValueError(f"exif_orientation must be 'apply' or 'ignore', not {exif_orientation!r}")
    arr = _load(source, alpha=alpha, max_pixels=max_pixels, upright=exif_orientation == "apply")
    if arr is source or not (arr.flags.c_contiguous and arr.flags.writeable):
        arr = np.array(arr, dtype=np.uint8, order="C")
    return arr


def _load(source: ImageSource, *, alpha: str, max_pixels: int | None, upright: bool) -> np.ndarray:
    name = source_name(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, alpha=alpha, name=name)
    if isinstance(source, Image.Image):
        try:
            _check_size(source.size, max_pixels, name)
            source.load()
            return _from_pil(source, alpha=alpha, name=name, upright=upright)
        except ImageDecodeError:
            raise
        except Exception as exc:  # Pillow raises many types for bad data
            raise _error(name, f"cannot decode image: {_describe(exc)}") from exc
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise _error(name, "empty data (0 bytes), not an image")
        return _decode_stream(io.BytesIO(bytes(source)), alpha=alpha, max_pixels=max_pixels, name=name,
                              upright=upright)
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        return _decode_path(path, alpha=alpha, max_pixels=max_pixels, name=name, upright=upright)
    raise TypeError(
        "load_image() takes a path, bytes, a PIL.Image.Image or a numpy array, "
        f"not {type(source).__name__}"
    )


def failure_reason(source: object, exc: BaseException) -> str:
    """The ``reason`` of an ``error: NAME: reason`` line for an input that failed with ``exc``.

    Expected faults (:class:`~illust2vec.errors.Illust2VecError`) give their
    message without the repeated name; anything else names its type, so that
    a decoder bug on one file reads as such and the run goes on.
    """
    if isinstance(exc, Illust2VecError):
        msg, name = str(exc), source_name(source)
        return msg[len(name) + 2 :] if msg.startswith(name + ": ") else msg
    if isinstance(exc, MemoryError):
        return "out of memory while decoding (image too large?)"
    return f"{type(exc).__name__}: {exc}"


def _error(name: str, reason: str) -> ImageDecodeError:
    """``ImageDecodeError("NAME: reason")`` with ``.source`` and ``.reason`` attributes set."""
    err = ImageDecodeError(f"{name}: {reason}")
    err.source = name  # type: ignore[attr-defined]
    err.reason = reason  # type: ignore[attr-defined]
    return err


def _describe(exc: BaseException) -> str:
    """One line describing an exception (message, else its type)."""
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def _check_size(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise _error(name, f"image has no pixels ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise _error(
            name,
            f"image is {w}x{h} = {w * h:,} pixels, more than the limit of "
            f"{max_pixels:,} (possible decompression bomb); raise max_pixels to read it",
        )


def _decode_path(path: str, *, alpha: str, max_pixels: int | None, name: str, upright: bool) -> np.ndarray:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _error(name, "no such file") from None
    except PermissionError:
        raise _error(name, "permission denied") from None
    except OSError as exc:
        raise _error(name, f"cannot read file: {exc.strerror or _describe(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise _error(name, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise _error(name, "not a regular file")
    if st.st_size == 0:
        raise _error(name, "empty file (0 bytes), not an image")
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise _error(name, "no such file") from None
    except PermissionError:
        raise _error(name, "permission denied") from None
    except OSError as exc:
        raise _error(name, f"cannot read file: {exc.strerror or _describe(exc)}") from None
    with fp:
        return _decode_stream(fp, alpha=alpha, max_pixels=max_pixels, name=name, upright=upright)


def _decode_stream(fp, *, alpha: str, max_pixels: int | None, name: str, upright: bool) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # We apply our own limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
        with img:
            _check_size(img.size, max_pixels, name)
            img.load()  # decode now, inside the try: truncation shows up here
            return _from_pil(img, alpha=alpha, name=name, upright=upright)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise _error(name, "not an image file (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise _error(name, f"image too large (possible decompression bomb): {_describe(exc)}") from None
    except MemoryError:
        raise _error(name, "not enough memory to decode this image") from None
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        msg = _describe(exc)
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise _error(name, f"truncated or incomplete image file ({msg})") from None
        raise _error(name, f"cannot decode image: {msg}") from None


def _exif_upright(img: Image.Image) -> Image.Image:
    try:
        orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def _has_transparency(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info


def _rgb_array(img: Image.Image) -> np.ndarray:
    """A writable, C-contiguous (H, W, 3) uint8 copy of a loaded ``RGB`` Pillow image.

    Pillow keeps RGB pixels as 4 bytes; its raw encoder packs them to 3.
    ``np.asarray(img)`` goes through ``img.tobytes()``, which packs into 64 KiB
    pieces and joins them into one more copy, and its result is read-only, so
    :func:`load_image` had to copy it once again.  Here the pieces are copied
    straight into the array that is returned: one large allocation instead of
    three, which matters because fresh memory costs a page fault per 4 KiB.
    """
    w, h = img.size
    n = w * h * 3
    out = np.empty(n, dtype=np.uint8)
    pos = 0
    status = 0
    try:
        encoder = Image._getencoder("RGB", "raw", "RGB")
        encoder.setimage(img.im, (0, 0, w, h))
        piece = max(1 << 16, w * 3)
        while not status and pos < n:
            _, status, data = encoder.encode(min(piece, max(n - pos, w * 3)))
            k = len(data)
            if not k:  # no progress: leave it to the public route
                break
            # a ufunc copy, not memcpy: glibc's memcpy (rep movsb) runs ~10x slower on some
            # AMD CPUs when the destination lies just above the source modulo 4 KiB
            np.positive(np.frombuffer(data, dtype=np.uint8), out=out[pos : pos + k])
            pos += k
    except Exception:  # a Pillow without these internals: the public route below
        status = 0
    if status != 1 or pos != n:  # 1: IMAGING_CODEC_END, every line packed
        return np.array(np.asarray(img, dtype=np.uint8), order="C")
    return out.reshape(h, w, 3)


def _from_pil(img: Image.Image, *, alpha: str, name: str, upright: bool = True) -> np.ndarray:
    """Convert a loaded Pillow image into (H, W, 3) uint8 RGB (upright by its EXIF orientation unless told not to)."""
    if upright:
        img = _exif_upright(img)
    mode = img.mode
    if mode == "RGB":
        if alpha == "white" and "transparency" in img.info:
            return _composite_rgba(np.asarray(img.convert("RGBA")))
        return _rgb_array(img)
    if mode.startswith("I;16") or mode == "I":
        return _grey_to_rgb(_int_to_uint8(np.asarray(img), sixteen_bit=mode.startswith("I;16")))
    if mode == "F":
        return _grey_to_rgb(_float_to_uint8(np.asarray(img, dtype=np.float32), name))
    if mode in ("La", "RGBa"):
        img = img.convert("RGBA")  # un-premultiply
        mode = "RGBA"
    if mode in ("L", "1") and not (alpha == "white" and "transparency" in img.info):
        return _rgb_array(img.convert("RGB"))  # Pillow copies the grey value (0/255 for "1") to R, G, B
    if alpha == "white" and _has_transparency(img):
        if mode in ("LA", "L", "1"):
            la = np.asarray(img.convert("LA"))
            return _composite_rgba(np.concatenate([la[..., :1]] * 3 + [la[..., 1:]], axis=2))
        return _composite_rgba(np.asarray(img.convert("RGBA")))
    if mode == "LA":
        return _grey_to_rgb(np.asarray(img, dtype=np.uint8)[..., 0])
    if mode == "RGBA":
        return _rgb_array(img.convert("RGB"))  # drops the alpha byte
    try:
        rgb = img.convert("RGB")
    except Exception as exc:
        raise _error(name, f"cannot convert image mode {mode!r} to RGB: {_describe(exc)}") from None
    return _rgb_array(rgb)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    out = np.empty(grey.shape + (3,), dtype=np.uint8)
    out[...] = grey[..., None]
    return out


def _composite_rgba(rgba: np.ndarray) -> np.ndarray:
    """Blend (H, W, 4) uint8 RGBA onto white; returns (H, W, 3) uint8."""
    a = rgba[..., 3:4]
    if a.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    af = a.astype(np.float32)
    out = rgba[..., :3].astype(np.float32)
    out *= af
    out += 255.0 * (255.0 - af)
    out /= 255.0
    np.rint(out, out=out)
    return out.astype(np.uint8)


def _int_to_uint8(arr: np.ndarray, *, sixteen_bit: bool) -> np.ndarray:
    arr = arr.astype(np.int64, copy=False)
    if sixteen_bit or (arr.size and arr.max() > 255):
        arr = np.clip(arr, 0, 65535) >> 8
    return np.clip(arr, 0, 255).astype(np.uint8)


def _float_to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size == 0:
        return arr.astype(np.uint8)
    if not np.isfinite(arr).all():
        raise _error(name, "image data contains NaN or infinity")
    lo, hi = float(arr.min()), float(arr.max())
    work = arr.astype(np.float32)
    if lo >= 0.0 and hi <= 1.0:
        work = work * 255.0
    np.clip(work, 0.0, 255.0, out=work)
    np.rint(work, out=work)
    return work.astype(np.uint8)


def _from_array(arr: np.ndarray, *, alpha: str, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise _error(
            name,
            f"array of shape {arr.shape} is not an image; expected (H, W), "
            "(H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4)",
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _error(name, f"array of shape {arr.shape} has no pixels")
    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.bool_:
        u8 = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype == np.uint16:
        u8 = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        u8 = np.clip(arr, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        u8 = _float_to_uint8(arr, name)
    else:
        raise _error(name, f"array dtype {arr.dtype} is not an image type (use uint8 or float)")
    if u8.ndim == 2:
        return _grey_to_rgb(u8)
    channels = u8.shape[2]
    if channels == 2:
        if alpha == "white":
            return _composite_rgba(np.concatenate([u8[..., :1]] * 3 + [u8[..., 1:]], axis=2))
        return _grey_to_rgb(u8[..., 0])
    if channels == 4:
        if alpha == "white":
            return _composite_rgba(u8)
        return np.ascontiguousarray(u8[..., :3])
    return np.ascontiguousarray(u8)


# --------------------------------------------------------------------------- #
# iter_image_files
# --------------------------------------------------------------------------- #
def _natural_key(path: Path) -> tuple:
    text = str(path)
    parts = re.split(r"(\d+)", text)
    key = []
    for i, part in enumerate(parts):
        key.append(int(part) if i % 2 else part.casefold())
    return (key, text)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_dir(root: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for fn in filenames:
                if not fn.startswith(".") and _is_image_name(fn):
                    found.append(Path(dirpath) / fn)
    else:
        try:
            entries = list(os.scandir(root))
        except OSError:
            return found
        for entry in entries:
            if entry.name.startswith(".") or not _is_image_name(entry.name):
                continue
            try:
                if entry.is_file():
                    found.append(root / entry.name)
            except OSError:
                continue
    return found


def iter_image_files(paths: Iterable[str | os.PathLike], *, recursive: bool = True) -> list[Path]:
    """Expand files, directories and glob patterns into a list of image files.

    Each argument is handled in order, and its own results are sorted in
    natural order (``img2.png`` before ``img10.png``, case-insensitive):

    * an existing file is kept whatever its extension (the user named it);
    * a directory contributes the files below it (``recursive=True``, the
      default) or in it whose extension is in :data:`IMAGE_EXTENSIONS`
      (case-insensitive); hidden files and hidden directories (name starting
      with ``.``) are skipped, symbolic links to directories are not followed;
    * a ``str`` containing ``*``, ``?`` or ``[`` that is not an existing path
      is a glob pattern (``**`` matches across directories); matched files
      with an image extension are kept and matched directories are expanded
      as above;
    * anything else (a missing path, a pattern that matches nothing) is
      returned unchanged, so that the caller reports ``PATH: no such file``
      for it when :func:`load_image` fails, and the other inputs still run.

    A file reached twice (same absolute path) is listed once, at its first place.

    Examples
    --------
    >>> iter_image_files(["does-not-exist.png"])
    [PosixPath('does-not-exist.png')]
    """
    result: list[Path] = []
    seen: set[str] = set()

    def add(items: list[Path]) -> None:
        for p in sorted(items, key=_natural_key):
            k = os.path.normcase(os.path.abspath(p))
            if k not in seen:
                seen.add(k)
                result.append(p)

    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            add(_scan_dir(p, recursive))
        elif p.exists() or os.path.lexists(p):
            add([p])
        elif isinstance(arg, str) and _GLOB_CHARS.search(arg):
            matches: list[Path] = []
            for m in glob.glob(arg, recursive=True):
                mp = Path(m)
                if mp.is_dir():
                    matches.extend(_scan_dir(mp, recursive))
                elif _is_image_name(m):
                    matches.append(mp)
            add(matches if matches else [p])
        else:
            add([p])
    return result


def missing_inputs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The arguments of :func:`iter_image_files` that name nothing: no such path, or a glob that matches nothing.

    Examples
    --------
    >>> missing_inputs(["does-not-exist/", "does-not-exist-*.png"])
    ['does-not-exist/', 'does-not-exist-*.png']
    """
    out: list[str] = []
    for arg in paths:
        name = os.fspath(arg)
        if os.path.lexists(name):
            continue
        if isinstance(arg, str) and _GLOB_CHARS.search(arg) and next(glob.iglob(arg, recursive=True), None):
            continue
        out.append(name)
    return out


def save_image(image: Image.Image, path: str | os.PathLike, **params) -> Path:
    """Save a picture atomically (:func:`illust2vec.io.atomic.atomic_write`), its format from the extension.

    A failure (full disk...) leaves an earlier file as it was and never a
    partial or empty one; the folder is created when missing.  ``params``
    go to :meth:`PIL.Image.Image.save` (``quality``, ``compress_level``...).
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise Illust2VecError(f"{path}: unknown image format {path.suffix!r}; use .png, .jpg or .webp")
    return atomic_write(path, lambda fh: image.save(fh, format=fmt, **params))
