"""Synthetic clustered features for tests and benchmarks of the map stages."""
from __future__ import annotations

import numpy as np


def clustered_features(
    n: int,
    dim: int = 4096,
    *,
    n_clusters: int = 20,
    intrinsic_dim: int = 10,
    spread: float = 0.6,
    noise: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``dim`` dimensions around ``n_clusters`` centres.

    Each cluster has its own random ``intrinsic_dim``-dimensional subspace
    (spread ``spread``) plus isotropic noise (``noise`` per unit norm), so the
    data has local manifold structure as well as clusters.  Returns
    ``(features (n, dim) float32, labels (n,) int64)``.  Built in chunks to keep
    memory at about the size of the output.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    bases = rng.standard_normal((n_clusters, intrinsic_dim, dim), dtype=np.float32) / np.sqrt(
        intrinsic_dim
    )
    labels = rng.integers(0, n_clusters, size=n)
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 4096
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        m = lab.shape[0]
        coef = rng.standard_normal((m, intrinsic_dim), dtype=np.float32) * spread
        block = centres[lab] + np.einsum("mi,mid->md", coef, bases[lab])
        block += rng.standard_normal((m, dim), dtype=np.float32) * noise
        out[start : start + m] = block
    return out, labels.astype(np.int64)
