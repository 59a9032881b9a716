"""Tag visualisation: a picture that the model scores high for some tags (activation maximisation).

This shows what the network has learned to respond to, not what such a
picture looks like: illust2vec has no generative model.  The result is
usually a texture of the colours and strokes that raise the tags; tags a
tagger can tell from colour (hair and eye colours) show most clearly.

Method: start from a flat canvas of the training mean colour with faint
noise (seeded), at the model's input size; repeat gradient steps on
``sum(log p[tags])`` (:meth:`ImageModel.forward_backward`) with the usual
regularisers:

- jitter (optional): the canvas is shifted by up to ``jitter`` pixels (wrapping round)
  before each step and shifted back after, so no single pixel grid is
  exploited;
- blur (optional): a Gaussian of ``blur`` pixels is applied to the canvas every
  ``blur_every`` steps, shrinking over the run (high frequencies are what
  fool a network without looking like anything);
- the canvas is kept within 0-255;
- steps of RMS ``rate`` levels (normalised gradient with momentum 0.5),
  decaying linearly to a tenth, stopping early once every tag is at ``goal``
  or above.

Jitter and blur are off by default: on the random-weight test models they
only slow the climb (those networks respond to fine texture); with real
weights ``jitter=2..4`` and ``blur=0.5..1`` give more readable pictures.

The tags are re-scored on the final 8-bit picture.
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
from illust2vec.semantic.edit import _unit_rms, tag_objective_weights
from illust2vec.semantic.imagespace import input_grad_to_pixels

__all__ = ["GenerateResult", "generate_image"]


@dataclass(frozen=True)
class GenerateResult:
    """The picture and its probabilities for the tags (scored on the 8-bit picture)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB at the model's input size
    probabilities: dict[str, float]
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities, "steps": self.steps}


def _canvas_colour(model: ImageModel) -> np.ndarray:
    """The recipe's mean as an RGB colour (grey 128 when it has none)."""
    recipe = model.recipe
    if recipe.mean is None:
        return np.full(3, 128.0, np.float32)
    mean = np.asarray(recipe.mean, np.float32) / recipe.scale
    return mean[::-1] if recipe.channel_order == "BGR" else mean


def generate_image(
    model: ImageModel,
    tags: Sequence[str | int],
    *,
    steps: int = 200,
    rate: float = 2.0,
    jitter: int = 0,
    blur: float = 0.0,
    blur_every: int = 25,
    goal: float = 0.95,
    seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> GenerateResult:
    """A picture on which ``tags`` score high.

    Parameters
    ----------
    tags:
        Tag names or columns (at least one).
    steps:
        Most gradient steps (one forward and backward run each).
    rate:
        RMS size of the first step in 0-255 levels (decays to a tenth).
    jitter:
        Largest random shift in pixels before each step (0: none).
    blur, blur_every:
        Gaussian sigma in pixels applied to the canvas every ``blur_every``
        steps; it shrinks linearly to a quarter over the run (0: none, the default).
    goal:
        Stop once every tag is at this probability or above.
    seed:
        Seeds the starting noise and the jitter (the same call gives the same picture).
    """
    if not tags:
        raise Illust2VecError("generate needs at least one tag")
    if steps < 1:
        raise Illust2VecError(f"steps must be at least 1, not {steps}")
    table = model._require_tags()
    cols = model.tag_columns(list(tags))
    names = [table.names[c] for c in cols]
    rng = np.random.default_rng(seed)
    h, w = model.recipe.size
    canvas = _canvas_colour(model) + rng.normal(0.0, 4.0, (h, w, 3)).astype(np.float32)
    canvas = np.clip(canvas, 0.0, 255.0)
    prob = model.run(preprocess([canvas], model.recipe), "prob")[0]
    done = 0
    velocity = np.zeros_like(canvas)
    for step in range(steps):
        if np.all(prob[cols] >= goal):
            break
        dy, dx = (rng.integers(-jitter, jitter + 1, size=2) if jitter else (0, 0))
        shifted = np.roll(canvas, (dy, dx), axis=(0, 1))
        weights = tag_objective_weights(len(table), cols, cols[:0], prob)
        grad, outputs = model.forward_backward(preprocess([shifted], model.recipe), tag_weights=weights)
        prob = outputs["prob"][0]
        g = np.roll(input_grad_to_pixels(grad, model.recipe)[0], (-dy, -dx), axis=(0, 1))
        velocity = 0.5 * velocity + _unit_rms(g)
        size = rate * (1.0 - 0.9 * step / max(1, steps - 1))
        canvas = canvas + size * _unit_rms(velocity)
        if blur > 0 and blur_every > 0 and (step + 1) % blur_every == 0:
            sigma = blur * (1.0 - 0.75 * step / max(1, steps - 1))
            canvas = np.stack([gaussian_filter(canvas[..., c], sigma) for c in range(3)], axis=-1)
        canvas = np.clip(canvas, 0.0, 255.0)
        done = step + 1
        if progress is not None:
            progress(done, {n: float(prob[c]) for n, c in zip(names, cols)})
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    final = model.run(preprocess([image], model.recipe), "prob")[0]
    return GenerateResult(image=image, probabilities={n: float(final[c]) for n, c in zip(names, cols)}, steps=done)
