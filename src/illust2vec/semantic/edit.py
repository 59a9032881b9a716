"""Tag-guided editing: push a picture toward some tags and away from others, keeping it close.

The picture is changed by gradient steps (:meth:`ImageModel.forward_backward`)
on the objective ``sum(log p[add]) + sum(log(1 - p[remove]))`` (log
probabilities, so a tag far from its goal still pulls; each step's weights use
the previous step's probabilities).  The change is held in a grid of the
model's input size (224x224 for i2v) and carried up to the picture's own
resolution by bilinear interpolation, so the result keeps the original size
and all its detail outside the change.

Regularisers (what keeps the result a picture, not noise):

- a bound on the change: its root-mean-square over the full-size picture is at
  most ``strength`` levels (0-255), which guarantees
  ``PSNR >= 20 * log10(255 / strength)`` dB (13 -> 25.8 dB, before the final
  rounding to 8 bits), and no pixel moves by more than ``4 * strength``;
- smoothing: each step's direction is blurred with a Gaussian of ``smooth``
  input pixels, so changes are blobs rather than single-pixel noise;
- a step-size schedule: steps of RMS ``strength / 3`` that decay linearly to a
  tenth of that, with momentum 0.5, and an early stop once every added tag is at
  or above ``goal`` and every removed tag at or below ``1 - goal``.

Every step is evaluated on the real picture (change added at full resolution,
then the model's own preprocessing), so the probabilities reported are what a
tagger sees; :func:`edit_image` re-tags the final 8-bit picture.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from illust2vec.errors import Illust2VecError
from illust2vec.models.image_model import ImageModel
from illust2vec.prep.preprocess import preprocess
from illust2vec.semantic.imagespace import (
    content_box,
    input_grad_to_pixels,
    resize_planes,
)

__all__ = ["EditResult", "edit_image", "psnr", "tag_objective_weights"]


@dataclass(frozen=True)
class EditResult:
    """The edited picture and the probabilities of the chosen tags before and after.

    ``after`` is measured on the returned 8-bit picture.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB, the original size
    before: dict[str, float]
    after: dict[str, float]
    psnr: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "psnr": round(self.psnr, 3), "steps": self.steps}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures in dB (``inf`` when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def tag_objective_weights(n_tags: int, add: np.ndarray, remove: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Weights on the probabilities whose weighted sum has the gradient of
    ``sum(log p[add]) + sum(log(1 - p[remove]))`` at ``prob``."""
    w = np.zeros(n_tags, np.float32)
    w[add] += 1.0 / np.maximum(prob[add], 1e-6)
    w[remove] -= 1.0 / np.maximum(1.0 - prob[remove], 1e-6)
    return w


def _unit_rms(d: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(d))))
    return d / rms if rms > 0 else d


def _direction(grad_pixels: np.ndarray, smooth: float) -> np.ndarray:
    """A smoothed step direction with a root-mean-square of 1."""
    d = grad_pixels
    if smooth > 0:
        d = np.stack([gaussian_filter(d[..., c], smooth) for c in range(d.shape[-1])], axis=-1)
    return _unit_rms(d)


def edit_image(
    model: ImageModel,
    image: Any,
    add: Sequence[str | int] = (),
    remove: Sequence[str | int] = (),
    *,
    steps: int = 25,
    strength: float = 13.0,
    smooth: float = 0.5,
    goal: float = 0.95,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> EditResult:
    """Change a picture so that ``add`` tags rise and ``remove`` tags fall.

    Parameters
    ----------
    image:
        Path, PIL image or (H, W, 3) array.
    add, remove:
        Tag names or columns; at least one tag in all.
    steps:
        Most gradient steps (each is one forward and backward run: about 0.9 s for
        the full-size i2v tagger on 2 CPU cores).  0 returns the picture unchanged.
    strength:
        Largest root-mean-square change of the picture, in 0-255 levels (the
        bound that keeps it close: PSNR >= 20*log10(255/strength) dB).
        Typical 4-14 (14 is 25.1 dB).
    smooth:
        Gaussian sigma, in input pixels, applied to each step (0 turns it off).
    goal:
        Stop early once added tags reach it and removed tags fall to ``1 - goal``.
    progress:
        Called after each step with the step number and the current probabilities.
    """
    if not add and not remove:
        raise Illust2VecError("edit needs at least one tag to add or remove")
    if strength <= 0:
        raise Illust2VecError(f"strength must be positive (levels 0-255), not {strength}")
    if steps < 0:
        raise Illust2VecError(f"steps must be 0 or more, not {steps}")
    table = model._require_tags()
    add_cols, remove_cols = model.tag_columns(list(add)), model.tag_columns(list(remove))
    overlap = set(add_cols.tolist()) & set(remove_cols.tolist())
    if overlap:
        raise Illust2VecError(f"tags both added and removed: {', '.join(table.names[c] for c in sorted(overlap))}")
    cols = np.concatenate([add_cols, remove_cols])
    names = [table.names[c] for c in cols]

    original = model.load(image)
    height, width = original.shape[:2]
    top, left, bottom, right = content_box(model.recipe, height, width)
    grid = (bottom - top, right - left)
    base = original.astype(np.float32)
    change = np.zeros((*grid, 3), np.float32)
    velocity = np.zeros_like(change)

    def picture(delta: np.ndarray) -> np.ndarray:
        return np.clip(base + resize_planes(delta, (height, width)), 0.0, 255.0)

    prob = model.run(preprocess([original], model.recipe), "prob")[0]
    before = {n: float(prob[c]) for n, c in zip(names, cols)}
    done = 0
    for step in range(steps):
        if _reached(prob, add_cols, remove_cols, goal):
            break
        weights = tag_objective_weights(len(table), add_cols, remove_cols, prob)
        batch = preprocess([picture(change)], model.recipe)
        grad, outputs = model.forward_backward(batch, tag_weights=weights)
        prob = outputs["prob"][0]
        g = input_grad_to_pixels(grad, model.recipe)[0, top:bottom, left:right]
        rate = strength / 3 * (1.0 - 0.9 * step / max(1, steps - 1))
        velocity = 0.5 * velocity + _direction(g, smooth)
        change = np.clip(change + rate * _unit_rms(velocity), -4 * strength, 4 * strength)
        # The bound holds on the picture itself: measure the change at full size (resizing smooths it).
        rms = float(np.sqrt(np.mean(np.square(picture(change) - base))))
        if rms > strength:
            change *= strength / rms
        done = step + 1
        if progress is not None:
            progress(done, {n: float(prob[c]) for n, c in zip(names, cols)})
    result = np.clip(np.rint(picture(change)), 0, 255).astype(np.uint8) if done else original.copy()
    final = model.run(preprocess([result], model.recipe), "prob")[0]
    after = {n: float(final[c]) for n, c in zip(names, cols)}
    return EditResult(image=result, before=before, after=after, psnr=psnr(original, result), steps=done)


def _reached(prob: np.ndarray, add: np.ndarray, remove: np.ndarray, goal: float) -> bool:
    return bool(np.all(prob[add] >= goal) and np.all(prob[remove] <= 1.0 - goal))
