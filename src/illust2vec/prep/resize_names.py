"""The names of the resize rules (no heavy imports: the CLI's parser lists them)."""
from __future__ import annotations

from typing import Literal, get_args

ResizeMethod = Literal[
    "skimage-bilinear", "skimage-bilinear-aa", "pil-bilinear", "pil-bicubic", "pil-lanczos", "pil-area"
]

#: Every value :attr:`illust2vec.prep.preprocess.InputRecipe.resize` accepts.
RESIZE_METHODS: tuple[str, ...] = get_args(ResizeMethod)
