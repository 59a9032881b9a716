"""Between a model's input tensor and the picture: layouts, colour order, padding, sizes.

The explanation, editing and generation tools compute in the network's input
space (e.g. 224x224, BGR, mean subtracted) and show or apply the result on the
picture; these helpers carry arrays across, following the model's
:class:`~illust2vec.prep.preprocess.InputRecipe`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from illust2vec.io.atomic import atomic_write
from illust2vec.prep.preprocess import InputRecipe

__all__ = ["content_box", "input_grad_to_pixels", "input_to_rgb", "resize_plane", "resize_planes", "save_png"]


def input_to_rgb(batch: np.ndarray, recipe: InputRecipe) -> np.ndarray:
    """(N, H, W, 3) RGB view of an array laid out as the model's input (NCHW/NHWC, RGB/BGR)."""
    x = np.asarray(batch)
    if recipe.layout == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    if recipe.channel_order == "BGR":
        x = x[..., ::-1]
    return x


def input_grad_to_pixels(grad: np.ndarray, recipe: InputRecipe) -> np.ndarray:
    """The gradient with respect to the resized picture's 0-255 RGB values, (N, H, W, 3) float32.

    The input is ``(pixel * scale - mean) / std``, so by the chain rule each
    channel's gradient is multiplied by ``scale / std``.
    """
    g = input_to_rgb(grad, recipe).astype(np.float32)
    factor = np.full(3, recipe.scale, np.float32)
    if recipe.std is not None:
        std = np.asarray(recipe.std, np.float32)
        factor = factor / (std[::-1] if recipe.channel_order == "BGR" else std)
    return np.ascontiguousarray(g * factor)


def content_box(recipe: InputRecipe, height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of an ``height`` x ``width`` picture inside the input tensor.

    The whole input unless the recipe pads to a square first (WD taggers).
    """
    in_h, in_w = recipe.size
    side = max(height, width, max(recipe.size) if recipe.pad_to_input else 0)
    if not recipe.pad_to_square or height == width == side:
        return 0, 0, in_h, in_w
    top, left = (side - height) // 2, (side - width) // 2
    sy, sx = in_h / side, in_w / side
    return (round(top * sy), round(left * sx),
            round((top + height) * sy), round((left + width) * sx))


def resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float array to ``(height, width)``."""
    h, w = size
    if plane.shape == (h, w):
        return np.asarray(plane, np.float32)
    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))  # mode "F"
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def resize_planes(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float array to ``(height, width, C)``."""
    return np.stack([resize_plane(x[..., c], size) for c in range(x.shape[-1])], axis=-1)


def save_png(path: str | os.PathLike, image: np.ndarray | Image.Image) -> Path:
    """Write a picture as PNG atomically (an existing file is replaced only by a complete one)."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: picture.save(fh, format="PNG"))
