"""Maps of image collections: reduction, layout, PNG renderer and interactive HTML viewer.

Stages, each a plain function on arrays (imported lazily, so ``import illust2vec`` stays fast):

- :func:`illust2vec.maps.reduce.reduce` (import it from the submodule): features -> PCA 50 -> openTSNE / UMAP / PCA, 2-D
- :func:`~illust2vec.maps.grid.snap_to_grid`: one image per grid cell, neighbourhoods kept
- :func:`~illust2vec.maps.clusters.find_clusters`, :func:`~illust2vec.maps.clusters.explain_clusters`
- :func:`~illust2vec.maps.quality.map_quality`: trustworthiness, k-NN preservation, label accuracy
- :func:`~illust2vec.maps.render.render_map`: the PNG; :func:`~illust2vec.maps.viewer.write_viewer`: the HTML
- :func:`~illust2vec.maps.pipeline.make_map`: all of it, as ``illust2vec map`` does, configured by
  :class:`~illust2vec.maps.options.MapOptions` (one record per stage)
"""
from __future__ import annotations

from illust2vec.lazy import lazy_exports

_EXPORTS = {
    "make_map": "pipeline",
    "MapResult": "pipeline",
    "MapData": "pipeline",
    "gather_features": "pipeline",
    "layout_map": "pipeline",
    "MapOptions": "options",
    "FeatureOptions": "options",
    "LayoutOptions": "options",
    "RenderOptions": "options",
    "snap_to_grid": "grid",
    "find_clusters": "clusters",
    "explain_clusters": "clusters",
    "map_quality": "quality",
    "render_map": "render",
    "labels_from_spec": "labels",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("illust2vec.maps", _EXPORTS)
