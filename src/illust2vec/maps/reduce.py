"""Dimensionality reduction for maps: features -> PCA (50) -> t-SNE / UMAP -> 2-D.

Every stage is a plain function on numpy arrays, seeded, with an optional
``progress`` (:mod:`illust2vec.runtime.progress`: t-SNE reports its iterations and
stops when the callback returns ``True``):

* :func:`pca` - centred PCA by randomized SVD on float32 (fast for 4096-d).
* :func:`knn` - exact (or HNSW for very large N) nearest neighbours with FAISS.
* :func:`tsne` - openTSNE with FFT-accelerated gradients on precomputed neighbours.
* :func:`umap` - umap-learn (optional extra: ``pip install 'illust2vec[umap]'``).
* :func:`reduce` - chains them (``method="tsne"|"umap"|"pca"``).

Features are compared by cosine similarity: rows are L2-normalised before PCA,
so Euclidean distance in the PCA space approximates cosine distance.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.runtime.progress import Cancelled, progress_callback

METHODS = ("tsne", "umap", "pca")


#: t-SNE uses FFT gradients from this many points up (Barnes-Hut below).
FFT_MIN_N = 5000
#: Map units per FFT interpolation interval (openTSNE: 1); see :func:`tsne`.
DEFAULT_INTS_IN_INTERVAL = 1.5
#: Below this many points every stage runs single-threaded.
THREADS_MIN_N = 5000


def effective_jobs(n: int, n_jobs: int) -> int:
    """Threads to use for ``n`` points: 1 below :data:`THREADS_MIN_N`, else ``n_jobs``."""
    return 1 if n < THREADS_MIN_N else max(1, int(n_jobs))


class ReduceError(Illust2VecError):
    """Bad arguments or missing optional dependency for a reduction."""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def default_perplexity(n: int, perplexity: float = 30.0) -> float:
    """Perplexity usable for ``n`` points: ``min(perplexity, (n - 1) / 3)``, at least 1.

    t-SNE needs about ``3 * perplexity`` neighbours per point, so for 20 images the
    usual 30 is impossible; ``(n - 1) / 3`` uses every other point as a neighbour.
    """
    if n < 2:
        return 1.0
    return float(max(1.0, min(float(perplexity), (n - 1) / 3.0)))


def pca(
    x: np.ndarray,
    n_components: int = 50,
    *,
    seed: int = 0,
    n_iter: int = 4,
    fit_max: int = 25_000,
) -> np.ndarray:
    """Project rows of ``x`` onto their top ``n_components`` principal components.

    Randomized SVD (Halko et al.) on float32 with ``n_iter`` power iterations; exact
    SVD when the matrix is small.  Above ``fit_max`` rows the components are
    fitted on a seeded random sample of ``fit_max`` rows and all rows are
    projected (one pass over the data instead of ten).  Components get a
    deterministic sign (largest loading positive), so the same seed gives the
    same result.  Returns ``(N, min(n_components, N, D))`` float32.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ReduceError(f"features must be a 2-D array (N, D), got shape {x.shape}")
    n, d = x.shape
    if n > fit_max:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=fit_max, replace=False))
        sample = x[rows]
        mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
        vt = _components(sample - mean, n_components, seed, n_iter)
        out = np.empty((n, vt.shape[0]), dtype=np.float32)
        for s in range(0, n, 8192):
            out[s : s + 8192] = (x[s : s + 8192] - mean) @ vt.T
        return out
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    vt = _components(x - mean, n_components, seed, n_iter)
    return np.ascontiguousarray(((x - mean) @ vt.T).astype(np.float32))


def _components(xc: np.ndarray, n_components: int, seed: int, n_iter: int) -> np.ndarray:
    """Top principal axes (k, D) of centred ``xc``, sign-fixed (largest loading positive)."""
    n, d = xc.shape
    k = int(min(n_components, n, d))
    if k >= min(n, d) or min(n, d) <= 500:
        vt = np.linalg.svd(xc, full_matrices=False)[2][:k]
    else:
        rng = np.random.default_rng(seed)
        p = min(k + 10, min(n, d))
        q = xc @ rng.standard_normal((d, p), dtype=np.float32)
        q, _ = np.linalg.qr(q)
        for _ in range(n_iter):
            z, _ = np.linalg.qr(xc.T @ q)
            q, _ = np.linalg.qr(xc @ z)
        vt = np.linalg.svd(q.T @ xc, full_matrices=False)[2][:k]
    signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
    signs[signs == 0] = 1
    return np.ascontiguousarray((vt * signs[:, None]).astype(np.float32))


def knn(
    x: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    n_jobs: int = 2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest neighbours of every row of ``x`` (itself excluded), Euclidean.

    ``method``: ``"exact"`` (FAISS flat index, exact), ``"hnsw"`` (FAISS HNSW graph,
    approximate, for very large N) or ``"auto"`` (exact up to 200,000 points).
    Returns ``(indices (N, k) int64, distances (N, k) float64)``, nearest first.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    k = int(min(k, n - 1))
    if k < 1:
        raise ReduceError(f"need at least 2 points for neighbours, got {n}")
    if method == "auto":
        method = "exact" if n <= 200_000 else "hnsw"
    faiss.omp_set_num_threads(max(1, int(n_jobs)))
    if method == "exact":
        index = faiss.IndexFlatL2(d)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 2 * k)
    else:
        raise ReduceError(f"unknown neighbour method {method!r}; use 'auto', 'exact' or 'hnsw'")
    index.add(x)
    dist, idx = index.search(x, k + 1)
    # Drop self: normally column 0, but duplicates may tie with it.
    rows = np.arange(n)[:, None]
    is_self = idx == rows
    has_self = is_self.any(axis=1)
    keep = ~is_self
    keep[~has_self, -1] = False  # self not found (HNSW miss): drop the farthest
    idx = idx[keep].reshape(n, k)
    dist = dist[keep].reshape(n, k)
    dist = np.sqrt(np.maximum(dist, 0)).astype(np.float64)
    return idx.astype(np.int64), dist


def tsne(
    x: np.ndarray,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int = 2,
    early_exaggeration_iter: int = 250,
    n_iter: int = 500,
    early_exaggeration: float = 12.0,
    init: np.ndarray | None = None,
    neighbors: str = "auto",
    gradient: str = "auto",
    ints_in_interval: float = DEFAULT_INTS_IN_INTERVAL,
    progress: Any = None,
) -> np.ndarray:
    """t-SNE of ``x`` (e.g. PCA-50 coordinates) to 2-D with openTSNE.

    ``perplexity`` is lowered to :func:`default_perplexity` for small N.
    Neighbours (``3 * perplexity``) come from :func:`knn` (``neighbors``).
    ``init`` defaults to the first two principal components of ``x``
    (rescaled to std 1e-4, as openTSNE does), which keeps global structure
    and makes the result deterministic.  The optimisation runs
    ``early_exaggeration_iter`` steps with exaggeration ``early_exaggeration``,
    then ``n_iter`` plain steps; learning rate ``N / exaggeration`` (Belkina 2019).
    ``gradient``: ``"fft"`` (FFT-accelerated interpolation, O(N)), ``"bh"``
    (Barnes-Hut) or ``"auto"``: FFT from :data:`FFT_MIN_N` points, Barnes-Hut
    below (FFT has a fixed per-iteration cost that dominates for small sets).
    ``ints_in_interval``: map units per FFT interpolation interval (openTSNE's
    default is 1).  The FFT grid grows with the map's extent, which dominates
    the late iterations; 1.5 cuts the CPU time at 10k points from 76 s to 41 s
    (one thread) for a k-NN preservation of 0.451 instead of 0.457 and the same
    trustworthiness (0.998); 2 gives 27 s and 0.444.  Only used with FFT.
    Below :data:`THREADS_MIN_N` points one thread is used whatever ``n_jobs``
    says: thread start-up costs more than it saves there, and much more on a
    busy machine.  ``progress`` counts iterations (unit ``"it"``); when it returns
    ``True`` the optimisation stops and :class:`~illust2vec.runtime.progress.Cancelled`
    is raised with the embedding so far in its ``partial`` attribute.  Returns ``(N, 2)`` float32.
    """
    from openTSNE import TSNEEmbedding, affinity, initialization
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < 4:
        return _tiny_layout(x)
    if gradient == "auto":
        gradient = "fft" if n >= FFT_MIN_N else "bh"
    if gradient not in ("fft", "bh"):
        raise ReduceError(f"unknown gradient method {gradient!r}; use 'auto', 'fft' or 'bh'")
    n_jobs = effective_jobs(n, n_jobs)
    perp = default_perplexity(n, perplexity)
    k = int(min(n - 1, max(1, int(3 * perp))))
    total = early_exaggeration_iter + n_iter
    report, close = progress_callback(progress, label="t-SNE", unit="it", total=total)
    idx, dist = knn(x, k, method=neighbors, n_jobs=n_jobs, seed=seed)
    aff = affinity.PerplexityBasedNN(
        knn_index=PrecomputedNeighbors(idx, dist), perplexity=perp, n_jobs=n_jobs,
        random_state=seed,
    )
    if init is None:
        init = x[:, :2] - x[:, :2].mean(axis=0)
        if x.shape[1] < 2:
            init = np.column_stack([init[:, 0], np.zeros(n, np.float32)])
    init = initialization.rescale(np.array(init, dtype=np.float64))
    init = initialization.jitter(init, random_state=seed)
    done = [0]
    stop: list[Cancelled] = []

    def _callback(iteration: int, error: float, embedding) -> bool:
        try:
            report(min(total, done[0] + iteration))
        except Cancelled as exc:  # openTSNE stops cleanly when a callback returns True
            stop.append(exc)
            return True
        return False

    from openTSNE.tsne import OptimizationInterrupt

    fft_kw = {"ints_in_interval": float(ints_in_interval)} if gradient == "fft" else {}
    emb = TSNEEmbedding(
        np.ascontiguousarray(init), aff, negative_gradient_method=gradient, n_jobs=n_jobs,
        random_state=seed, callbacks=_callback if progress else None, callbacks_every_iters=25,
    )
    try:
        if early_exaggeration_iter > 0:
            emb = emb.optimize(
                n_iter=early_exaggeration_iter, exaggeration=early_exaggeration, momentum=0.8,
                learning_rate="auto", inplace=True, propagate_exception=True, **fft_kw,
            )
        done[0] = early_exaggeration_iter
        if n_iter > 0:
            emb = emb.optimize(n_iter=n_iter, momentum=0.8, learning_rate="auto", inplace=True,
                               propagate_exception=True, **fft_kw)
        report(total)
    except OptimizationInterrupt as interrupt:
        exc = stop[0] if stop else Cancelled("t-SNE: stopped by a callback")
        exc.partial = np.asarray(interrupt.final_embedding, dtype=np.float32)  # type: ignore[attr-defined]
        raise exc from None
    finally:
        close()
    return np.asarray(emb, dtype=np.float32)


def umap(
    x: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    n_jobs: int = 2,
    progress: Any = None,
) -> np.ndarray:
    """UMAP of ``x`` to 2-D (umap-learn, an optional extra).

    ``n_neighbors`` is capped at ``N - 1``.  Raises :class:`ReduceError` with the
    pip command when umap-learn is not installed.
    """
    try:
        import umap as umap_lib  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ReduceError(
            "method 'umap' needs umap-learn, which is not installed; run "
            "\"pip install 'illust2vec[umap]'\" (or 'pip install umap-learn'), "
            "or use --method tsne"
        ) from exc
    n = x.shape[0]
    if n < 4:
        return _tiny_layout(x)
    report, close = progress_callback(progress, label="UMAP", unit="step", total=1)
    report(0)
    reducer = umap_lib.UMAP(
        n_components=2, n_neighbors=int(min(n_neighbors, n - 1)), min_dist=min_dist,
        random_state=seed, init="spectral" if n > 10 else "random",
    )
    out = reducer.fit_transform(np.asarray(x, dtype=np.float32))
    report(1)
    close()
    return np.asarray(out, dtype=np.float32)


def _tiny_layout(x: np.ndarray) -> np.ndarray:
    """Layout for fewer than 4 points: first two principal components (or a line)."""
    n = x.shape[0]
    out = np.zeros((n, 2), dtype=np.float32)
    if n >= 2:
        p = pca(x, 2)
        out[:, : p.shape[1]] = p
        if not np.any(out):
            out[:, 0] = np.arange(n, dtype=np.float32)
    return out


def reduce(
    features: np.ndarray,
    *,
    method: str = "tsne",
    seed: int = 0,
    pca_dims: int = 50,
    normalize: bool = True,
    perplexity: float = 30.0,
    n_jobs: int = 2,
    progress: Any = None,
    **method_kwargs,
) -> np.ndarray:
    """Map ``features`` (N, D) to 2-D: L2-normalise (cosine), PCA to ``pca_dims``, then ``method``.

    ``method``: ``"tsne"`` (openTSNE, default), ``"umap"`` (optional extra) or
    ``"pca"`` (the first two principal components, instant).  Deterministic for a
    given ``seed``.  Extra keywords go to :func:`tsne` or :func:`umap`.
    Returns ``(N, 2)`` float32.
    """
    from threadpoolctl import threadpool_limits

    n_threads = effective_jobs(len(features), n_jobs)
    with threadpool_limits(limits=n_threads):
        return _reduce(features, method=method, seed=seed, pca_dims=pca_dims, normalize=normalize,
                       perplexity=perplexity, n_jobs=n_threads, progress=progress, **method_kwargs)


def _reduce(features, *, method, seed, pca_dims, normalize, perplexity, n_jobs, progress, **method_kwargs):
    if method not in METHODS:
        raise ReduceError(f"unknown map method {method!r}; choose one of {', '.join(METHODS)}")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ReduceError(f"features must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ReduceError("features contain NaN or infinite values; recompute them")
    if normalize:
        x = l2_normalize(x)
    n = x.shape[0]
    if n == 1:
        return np.zeros((1, 2), dtype=np.float32)
    reduced = pca(x, pca_dims if method != "pca" else max(2, min(pca_dims, 2)), seed=seed)
    if method == "pca":
        out = np.zeros((n, 2), dtype=np.float32)
        out[:, : reduced.shape[1]] = reduced[:, :2]
        return out
    if method == "umap":
        return umap(reduced, seed=seed, n_jobs=n_jobs, progress=progress, **method_kwargs)
    return tsne(reduced, perplexity=perplexity, seed=seed, n_jobs=n_jobs, progress=progress,
                **method_kwargs)
