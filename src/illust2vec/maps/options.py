"""Option records of the map stages (features -> layout -> PNG / viewer), one field per CLI flag.

Each stage of :func:`illust2vec.maps.pipeline.make_map` reads one frozen record;
``illust2vec map`` and ``illust2vec demo`` fill them from their flags one to one
(:func:`illust2vec.cli.map.map_options`), so a flag and a field share a name:

| flag | option field |
| --- | --- |
| ``--db`` | ``FeatureOptions.db`` |
| ``--tagger`` | ``FeatureOptions.tagger`` |
| ``--batch-size`` | ``FeatureOptions.batch_size`` |
| ``--workers`` | ``FeatureOptions.workers`` |
| ``--method`` | ``LayoutOptions.method`` |
| ``--seed`` | ``LayoutOptions.seed`` |
| ``--perplexity`` | ``LayoutOptions.perplexity`` |
| ``--grid`` | ``LayoutOptions.grid`` |
| ``--title`` | ``RenderOptions.title`` |
| ``--max-size`` | ``RenderOptions.max_size`` |
| ``--thumb-size`` | ``RenderOptions.thumb_size`` |
| ``--label-by`` | ``MapOptions.label_by`` |

>>> MapOptions(layout=LayoutOptions(method="pca", grid=True)).layout.method
'pca'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable

__all__ = ["FeatureOptions", "LayoutOptions", "RenderOptions", "MapOptions"]


@dataclass(frozen=True)
class FeatureOptions:
    """Where a map's features come from when they are computed.

    ``db``: a collection used as a feature cache (images are indexed into it
    first, then read back).  ``tagger``: whose tag probabilities a collection's
    points carry (default: its most recently added tagger).  ``batch_size``,
    ``workers``: the model runner's (default: the model's batch size, one
    decode thread).
    """

    db: Path | str | None = None
    tagger: str | None = None
    batch_size: int | None = None
    workers: int | None = None


@dataclass(frozen=True)
class LayoutOptions:
    """The 2-D layout: reduction, optional grid, clusters and quality numbers.

    ``method``: ``"tsne"`` (openTSNE), ``"umap"`` (optional extra) or ``"pca"``.
    ``perplexity``: t-SNE's (lowered automatically for small sets).  ``grid``:
    snap to one image per cell.  ``min_cluster_size``: HDBSCAN's (default: from
    N).  ``quality_k``: neighbours in the quality numbers.  ``n_jobs``: threads.
    """

    method: str = "tsne"
    seed: int = 0
    perplexity: float = 30.0
    grid: bool = False
    min_cluster_size: int | None = None
    quality_k: int = 10
    n_jobs: int = 2


@dataclass(frozen=True)
class RenderOptions:
    """How the PNG is drawn (:func:`illust2vec.maps.render.render_map`); ``title`` is the viewer's too.

    ``max_size`` bounds both canvas sides (pixels); ``thumb_size`` overrides the
    automatic thumbnail size; ``legend`` lists labels, clusters and noise;
    ``frame_colors`` fixes a colour per label; ``avoid_overlap`` nudges
    thumbnails apart so that none hides another (up to 50,000 images);
    ``workers``: threads reading thumbnails.
    """

    title: str | None = None
    max_size: int = 4096
    thumb_size: int | None = None
    legend: bool = True
    background: tuple[int, int, int] = (255, 255, 255)
    frame_colors: dict[Hashable, tuple[int, int, int]] | None = None
    workers: int = 2
    avoid_overlap: bool = True


@dataclass(frozen=True)
class MapOptions:
    """Everything :func:`~illust2vec.maps.pipeline.make_map` can be told, stage by stage.

    ``label_by``: ``folder``, ``regex:PATTERN`` or ``csv:FILE`` (frame colours
    and label accuracy).
    """

    features: FeatureOptions = field(default_factory=FeatureOptions)
    layout: LayoutOptions = field(default_factory=LayoutOptions)
    render: RenderOptions = field(default_factory=RenderOptions)
    label_by: str | None = None
