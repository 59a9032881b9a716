"""FAISS search indexes built from a collection's stored vectors.

* Float features: L2-normalised, so inner product is cosine similarity.
  Up to ``FLAT_MAX`` live rows (20 000) an exact ``IndexFlatIP`` on the full
  vectors.  Above it a projection to ``pca_dim`` (256) principal directions
  in front of an ``IndexFlatIP`` (up to ``IVF_MIN`` = 200 000 rows) or an
  inner-product ``IndexIVFFlat`` (``nlist`` about sqrt(N), searched with
  ``nprobe`` lists).  The projected indexes only pick candidates: search
  re-ranks them by exact cosine on the stored full vectors
  (:mod:`.search`), so a 4096-d scan of every row is never needed.
* Binary codes: exact ``IndexBinaryFlat`` (Hamming distance).

Both are wrapped so that FAISS ids are the collection's vector row numbers.
Indexes live in ``<collection>/index/`` with a JSON file beside each that
records the model identity, the vector rows covered and the collection's
``delete_gen``; an index whose identity or ``delete_gen`` differs is rebuilt,
one that only lacks newly added rows is extended.  They are caches: deleting
the ``index`` directory is always safe.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

INDEX_FORMAT = 1
FLAT_MAX = 20_000
IVF_MIN = 200_000
PCA_DIM = 256
DEFAULT_NPROBE = 32
_CHUNK = 16_384


@dataclass
class IndexMeta:
    """What an index file covers (stored as JSON beside it)."""

    format: int
    kind: str  # "flat-ip", "pca-flat-ip", "pca-ivf-ip", "binary-flat"
    identity: str
    rows_upto: int  # vector rows [0, rows_upto) were considered
    delete_gen: int
    ntotal: int
    dim: int


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def _live_in(live_rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    lo, hi = np.searchsorted(live_rows, [start, stop])
    return live_rows[lo:hi]


def float_kind(n: int, *, flat_max: int | None = None, ivf_min: int | None = None) -> str:
    """The float index kind used for ``n`` rows."""
    flat_max = FLAT_MAX if flat_max is None else flat_max
    ivf_min = IVF_MIN if ivf_min is None else ivf_min
    return "flat-ip" if n <= flat_max else "pca-flat-ip" if n <= ivf_min else "pca-ivf-ip"


def new_float_index(dim: int, n: int, *, flat_max: int | None = None, ivf_min: int | None = None,
                    pca_dim: int = PCA_DIM, nlist: int | None = None):
    """An empty float index suitable for ``n`` vectors; returns ``(index, kind)``.

    The projected kinds (a ``LinearTransform`` filled by
    :func:`train_float_index`, then a flat or IVF inner-product index) must be
    trained before use.
    """
    import faiss

    kind = float_kind(n, flat_max=flat_max, ivf_min=ivf_min)
    if kind == "flat-ip":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), kind
    pca = max(1, min(pca_dim, dim, n))
    proj = faiss.LinearTransform(dim, pca, False)
    if kind == "pca-flat-ip":
        inner = faiss.IndexIDMap2(faiss.IndexFlatIP(pca))
    else:
        if nlist is None:
            nlist = int(min(4096, max(64, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))))
        nlist = max(1, min(nlist, n // 39))  # FAISS wants ~39 training points per list
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(pca), pca, nlist, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexPreTransform(proj, inner)
    index.is_trained = False
    return index, kind


def train_float_index(index, sample: np.ndarray, *, seed: int = 0) -> None:
    """Train an IVF index on a sample of (normalised) vectors; no-op for flat ones.

    The projection keeps the top principal directions of the *uncentred*
    sample (randomized SVD, so a 4096-d PCA costs seconds, not the minutes of
    a full eigendecomposition): with orthonormal rows and no bias, inner
    products in the projected space approximate the original cosines.
    """
    import faiss
    from sklearn.utils.extmath import randomized_svd

    if index.is_trained:
        return
    x = np.ascontiguousarray(sample, dtype=np.float32)
    proj = faiss.downcast_VectorTransform(index.chain.at(0))
    k = proj.d_out
    _, _, vt = randomized_svd(x, k, n_iter=2, random_state=seed)
    faiss.copy_array_to_vector(np.ascontiguousarray(vt, dtype=np.float32).ravel(), proj.A)
    proj.is_trained = True
    inner = faiss.downcast_index(index.index)
    if not inner.is_trained:
        inner.train(np.ascontiguousarray(x @ vt.T, dtype=np.float32))
    index.is_trained = True


def set_nprobe(index, nprobe: int) -> None:
    import faiss

    try:
        ivf = faiss.extract_index_ivf(index)
    except Exception:  # not an IVF index
        return
    ivf.nprobe = int(nprobe)


def build_float_index(
    vectors: np.ndarray,
    live_rows: np.ndarray,
    *,
    flat_max: int | None = None,
    ivf_min: int | None = None,
    pca_dim: int = PCA_DIM,
    nlist: int | None = None,
    train_size: int = 32_768,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
):
    """Index the ``live_rows`` of ``vectors`` (an (R, D) array or memmap); returns ``(index, kind)``."""
    n = len(live_rows)
    dim = vectors.shape[1]
    index, kind = new_float_index(dim, n, flat_max=flat_max, ivf_min=ivf_min, pca_dim=pca_dim, nlist=nlist)
    if kind != "flat-ip":
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(live_rows, size=min(train_size, n), replace=False))
        train_float_index(index, l2_normalize(vectors[pick]), seed=seed)
    add_float_rows(index, vectors, live_rows, progress=progress)
    return index, kind


def add_float_rows(index, vectors: np.ndarray, rows: np.ndarray, *, progress: Callable[[int], None] | None = None) -> None:
    for i in range(0, len(rows), _CHUNK):
        ids = np.asarray(rows[i : i + _CHUNK], dtype=np.int64)
        index.add_with_ids(l2_normalize(vectors[ids]), ids)
        if progress:
            progress(len(ids))


def build_binary_index(codes: np.ndarray, live_rows: np.ndarray):
    """Exact Hamming index over the ``live_rows`` of ``codes`` ((R, B) uint8)."""
    import faiss

    index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(codes.shape[1] * 8))
    add_binary_rows(index, codes, live_rows)
    return index


def add_binary_rows(index, codes: np.ndarray, rows: np.ndarray) -> None:
    for i in range(0, len(rows), _CHUNK * 4):
        ids = np.asarray(rows[i : i + _CHUNK * 4], dtype=np.int64)
        index.add_with_ids(np.ascontiguousarray(codes[ids], dtype=np.uint8), ids)


def save(index, path: Path, meta: IndexMeta) -> None:
    """Write ``index`` and its JSON meta atomically (tmp file + rename)."""
    import faiss

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if meta.kind == "binary-flat":
        faiss.write_index_binary(index, str(tmp))
    else:
        faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    jtmp = path.with_name(f".{path.name}.{os.getpid()}.json.tmp")
    jtmp.write_text(json.dumps(asdict(meta), indent=1))
    os.replace(jtmp, path.with_suffix(".json"))


def load(path: Path) -> tuple[object, IndexMeta] | None:
    """Read an index and its meta; ``None`` if either is missing or unreadable."""
    import faiss

    mpath = path.with_suffix(".json")
    if not path.exists() or not mpath.exists():
        return None
    try:
        meta = IndexMeta(**json.loads(mpath.read_text()))
        if meta.format != INDEX_FORMAT:
            return None
        if meta.kind == "binary-flat":
            index = faiss.read_index_binary(str(path))
        else:
            index = faiss.read_index(str(path))
    except Exception:  # corrupt or from another version: it is only a cache
        return None
    if index.ntotal != meta.ntotal:
        return None
    return index, meta
