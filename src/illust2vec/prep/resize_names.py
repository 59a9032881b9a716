"""The names of the resize rules (no heavy imports: the CLI's parser lists them)."""
from __future__ import annotations

from typing import Literal, get_args

ResizeMethod = Literal[
    "skimage-bilinear", "skimage-bilinear-aa", "pil-bilinear", "pil-bicubic", "pil-lanczos", "pil-area",
    "area", "area-lanczos",
]

#: Every value :attr:`illust2vec.prep.preprocess.InputRecipe.resize` accepts.
RESIZE_METHODS: tuple[str, ...] = get_args(ResizeMethod)

#: One line per rule, for ``--help`` and error messages.
RESIZE_HELP: dict[str, str] = {
    "skimage-bilinear": "scikit-image bilinear without anti-aliasing (caffe.io.resize_image, as i2v was published)",
    "skimage-bilinear-aa": "the same with scikit-image's Gaussian anti-aliasing when shrinking",
    "pil-bilinear": "Pillow BILINEAR",
    "pil-bicubic": "Pillow BICUBIC (the WD taggers' reference)",
    "pil-lanczos": "Pillow LANCZOS",
    "pil-area": "Pillow BOX (pixels whose centre lies in the cell, weight 1: not an area average)",
    "area": "area average (each output pixel is the mean of the area it covers; OpenCV INTER_AREA bit for bit "
            "when shrinking)",
    "area-lanczos": "area when shrinking, Pillow LANCZOS when enlarging (kohya-ss' tagger)",
}
