"""FAISS search indexes built from a collection's stored vectors.

* Float features: L2-normalised, so inner product is cosine similarity.
  Up to ``FLAT_MAX`` live rows (20 000) an exact inner-product scan of the
  full vectors (``IndexFlatIP``).  Above it, and up to ``IVF_MIN`` (2 000 000)
  rows, a 4-bit product quantiser over the full vectors, scanned with
  FAISS's SIMD look-up-table kernel (``IndexPQFastScan``, ``PQ_M`` = 256
  sub-vectors: 128 bytes per row for 4096-d features, ~2 ms per 100k rows
  on one core; at 1M rows 1000 candidates in 13 ms p50 on 2 cores, with
  all of the exact top 20 among them on the benchmark's data).  Above
  ``IVF_MIN`` a projection to ``PCA_DIM`` (256) principal directions in
  front of an inner-product ``IndexIVFFlat`` (``nlist`` about sqrt(N),
  searched with ``nprobe`` lists): faster per row, but the projection loses
  neighbours where the features' energy is spread over many directions
  (recall@20 0.21 at 1M rows with nprobe 32 on the benchmark's synthetic
  features; ``benchmarks/bench_search.py --parts ivf1m``).  These
  approximate indexes only pick candidates: search re-ranks them by exact
  cosine on the stored full vectors (:mod:`.search`), using the row norms
  kept with the index, so a 4096-d scan of every row is never needed.
* Binary codes: up to ``BINARY_SHORT_MIN`` (200 000) live rows, exact
  Hamming distance over every code (``IndexBinaryFlat``).  From there on a
  scan of every code is memory-bound (512 MB per query at 1M 4096-bit codes:
  ~50 ms on 2 cores), so the index holds a *short code* of each row instead:
  ``SHORT_BYTES`` (64) of the code's bytes, the most varied ones on a
  sample (:func:`short_code_columns`), 64 MB per 1M rows; a query takes the
  best candidates by the short code's Hamming distance and :mod:`.search`
  re-ranks them exactly on the full codes in ``codes.u8`` (a memory map).
  A short code is a coarser estimate of the same distance (for codes whose
  bits are sign projections, such as i2v's and SimHash, 512 of the 4096
  bits estimate the Hamming fraction to about 2%), so candidates and the
  exact re-rank find the exact top k unless the neighbours are crowded
  within that noise (recall on the benchmark's clustered 1M codes:
  ``benchmarks/bench_1m.py --parts binary``).

Exhaustive scans are split into shards (:class:`ShardedIndex`: disjoint
row ranges, each a FAISS index; one per CPU, four per CPU for binary codes)
that a single query searches in parallel threads taking shards from a
common queue (FAISS releases the GIL); the per-shard results are merged
exactly.  FAISS on its own parallelises over queries only, so one query
used one core.

Ids are the collection's vector row numbers.  Float indexes live in
``<collection>/index/feature.faiss`` with a JSON file beside it that records
the model identity, the vector rows covered and the collection's
``delete_gen``; an index whose identity or ``delete_gen`` differs is rebuilt,
one that only lacks newly added rows is extended.  They are caches: deleting
the ``index`` directory is always safe.  The binary index is not written to
disk: its data is exactly the ``codes.u8`` file, so it is built from that in
memory (as fast as reading a copy would be).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

import numpy as np

INDEX_FORMAT = 2
FLAT_MAX = 20_000
#: From this many rows on (exclusive) the PCA + IVF index; below, the full-vector PQ FastScan, whose scan
#: grows linearly (~24 ms of CPU per 1M rows for 1000 candidates): ~30 ms end to end at 2M rows on 2 cores.
IVF_MIN = 2_000_000
PCA_DIM = 256
#: From this many rows on, a PQ FastScan index is built on a PCA projection (PCA_DIM dimensions, two per
#: sub-quantiser) when the projection keeps PCA_PQ_ENERGY of the sample's energy (see :func:`new_float_index`).
PCA_PQ_MIN = 200_000
PCA_PQ_ENERGY = 0.9
PQ_M = 256  # at most 256: FastScan adds M 8-bit table entries in 16-bit accumulators
DEFAULT_NPROBE = 32
#: Shards searched by parallel threads; ``None``: one per CPU this process may use (at most 8).
SEARCH_THREADS: int | None = None
#: Below this many bytes of index data a query searches the shards one after the other (threads cost more).
PARALLEL_MIN_BYTES = 4 << 20
#: Binary indexes are cut finer than one shard per thread, so that threads can balance the work between them.
BINARY_SHARDS_PER_THREAD = 4
#: From this many live rows on, the binary index holds short codes (candidates for an exact re-rank).
BINARY_SHORT_MIN = 200_000
#: Bytes of a short code.
SHORT_BYTES = 64
#: Binary indexes from this many bytes get their code arrays moved to 2 MB pages (see :func:`_huge_pages_later`).
HUGE_PAGES_MIN_BYTES = 64 << 20
_CHUNK = 16_384


@dataclass
class IndexMeta:
    """What an index file covers (stored as JSON beside it)."""

    format: int
    kind: str  # "flat-ip", "pq4fs-ip", "pca-pq4fs-ip", "pca-ivf-ip", "binary-flat", "binary-short"
    identity: str
    rows_upto: int  # vector rows [0, rows_upto) were considered
    delete_gen: int
    ntotal: int
    dim: int
    built_ntotal: int = 0  # rows when it was trained (0: an index saved before this was recorded)


def search_threads() -> int:
    """Threads (and shards) for one query: :data:`SEARCH_THREADS`, else the CPUs available (1-8)."""
    if SEARCH_THREADS is not None:
        return max(1, int(SEARCH_THREADS))
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def _normalize_with_norms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    safe = np.where(norms == 0, np.float32(1), norms)
    return x / safe[:, None], norms


@contextlib.contextmanager
def _one_omp_thread() -> Iterator[None]:
    """FAISS's OpenMP at one thread in this thread (a single query gains nothing from it;
    the idle OpenMP workers would spin on the cores the shard threads need)."""
    import faiss

    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(prev)


def project(x: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``x @ transform.T`` as contiguous float32.

    A single row goes through FAISS's single-threaded inner-product kernel:
    a multi-threaded BLAS call per query would leave OpenBLAS's worker
    threads spinning (for ~0.1 s) on the cores the searches need.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) != 1:
        return np.ascontiguousarray(x @ transform.T)
    out = np.empty((1, transform.shape[0]), dtype=np.float32)
    t = np.ascontiguousarray(transform, dtype=np.float32)
    faiss.fvec_inner_products_ny(faiss.swig_ptr(out), faiss.swig_ptr(x), faiss.swig_ptr(t), x.shape[1], t.shape[0])
    return out


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        import faiss

        _POOL = ThreadPoolExecutor(7, thread_name_prefix="i2v-search",
                                   initializer=lambda: faiss.omp_set_num_threads(1))
    return _POOL


class ShardedIndex:
    """FAISS indexes over disjoint sets of rows, searched in parallel, merged exactly.

    Each shard holds its rows in ascending order (``ids[s]``: row of each
    shard position; ``None`` when the shard stores the rows as its own ids,
    like an IVF index).  Results are ordered by distance (binary: smaller
    first; float: larger inner product first), ties by smaller row, and are
    the same as one exhaustive index over all rows would give.

    Args:
        shards: FAISS indexes (``IndexBinaryFlat``, ``IndexFlatIP``,
            ``IndexPQFastScan``, ...), all of one kind.
        ids: per shard, the row of each of its entries (or ``None``).
        binary: Hamming distances (smaller is closer) instead of inner products.
        transform: ``(d_out, d_in)`` matrix applied to float queries and added
            vectors before the shards see them (the PCA projection).
        columns: binary only: the byte columns of the full codes that the
            shards hold (short codes: candidates to re-rank), ``None``: all.
        norms: float32 norm of every stored vector row ``[0, len(norms))``
            (NaN for rows not in the index), for exact re-ranking.
    """

    def __init__(self, shards: list, ids: list[np.ndarray | None], *, binary: bool,
                 transform: np.ndarray | None = None, norms: np.ndarray | None = None,
                 columns: np.ndarray | None = None) -> None:
        self.shards = list(shards)
        self.ids = [None if i is None else np.asarray(i, dtype=np.int64) for i in ids]
        self.binary = binary
        self.transform = None if transform is None else np.ascontiguousarray(transform, dtype=np.float32)
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self.norms = np.zeros(0, np.float32) if norms is None else np.asarray(norms, dtype=np.float32)
        self.threads: int | None = None  # None: search_threads()

    @property
    def ntotal(self) -> int:
        return int(sum(s.ntotal for s in self.shards))

    @property
    def code_bytes(self) -> int:
        s = self.shards[0]
        return int(s.code_size) if hasattr(s, "code_size") else int(s.d) * 4

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: codes (or the whole IVF index as serialised), row ids, norms, projection."""
        import faiss

        total = self.norms.nbytes + (0 if self.transform is None else self.transform.nbytes)
        for shard, ids in zip(self.shards, self.ids):
            if ids is None:
                total += len(faiss.serialize_index(shard))
            else:
                total += int(shard.ntotal) * self.code_bytes + ids.nbytes
        return total

    # ------------------------------------------------------------------ add
    def add_with_ids(self, x: np.ndarray, rows: np.ndarray, norms: np.ndarray | None = None) -> None:
        """Add vectors (float: already L2-normalised; their original ``norms``) of ``rows`` (ascending, above all present rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if norms is not None:
            top = int(rows.max()) + 1
            if len(self.norms) < top:
                self.norms = np.concatenate([self.norms, np.full(top - len(self.norms), np.nan, np.float32)])
            self.norms[rows] = norms
        if self.binary:
            x = np.ascontiguousarray(x if self.columns is None else x[:, self.columns], dtype=np.uint8)
        else:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if self.transform is not None:
                x = np.ascontiguousarray(x @ self.transform.T)
        # contiguous parts, smallest shards first, so shards stay balanced and rows ascending within each
        order = np.argsort([s.ntotal for s in self.shards], kind="stable")
        bounds = np.linspace(0, len(rows), len(self.shards) + 1).astype(int)
        for part, s in enumerate(order):
            a, b = bounds[part], bounds[part + 1]
            if a == b:
                continue
            if self.ids[s] is None:
                self.shards[s].add_with_ids(x[a:b], rows[a:b])
            else:
                self.shards[s].add(x[a:b])
                self.ids[s] = np.concatenate([self.ids[s], rows[a:b]])

    # ------------------------------------------------------------------ search
    def _map(self, s: int, labels: np.ndarray) -> np.ndarray:
        ids = self.ids[s]
        if ids is None:
            return labels.astype(np.int64)
        out = np.full(labels.shape, -1, np.int64)
        ok = labels >= 0
        out[ok] = ids[labels[ok]]
        return out

    @property
    def exact(self) -> bool:
        """Whether results are final (``False``: short codes, whose candidates need an exact re-rank)."""
        return self.columns is None

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        if self.binary:
            return np.ascontiguousarray(x if self.columns is None else x[:, self.columns], dtype=np.uint8)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.transform is not None:
            x = project(x, self.transform)
        return x

    def _each(self, fn: Callable[[int], object], nq: int, threads: int | None) -> list:
        """``[fn(s) for s in shards]``: in parallel threads for single queries on big shards, else in turn."""
        n = len(self.shards)
        t = min(n, self.threads or search_threads() if threads is None else threads)
        big = self.ntotal * self.code_bytes >= PARALLEL_MIN_BYTES
        if nq > 1:
            return [fn(s) for s in range(n)]  # FAISS parallelises over queries itself
        with _one_omp_thread():
            if t <= 1 or n == 1 or not big:
                return [fn(s) for s in range(n)]
            # t threads (this one included) take shards from a common queue: when another process
            # holds a core, the thread on the free core takes more shards instead of waiting
            results: list = [None] * n
            todo = iter(range(n))
            lock = threading.Lock()

            def work() -> None:
                while True:
                    with lock:
                        s = next(todo, None)
                    if s is None:
                        return
                    results[s] = fn(s)

            futs = [_pool().submit(work) for _ in range(t - 1)]
            work()
            for f in futs:
                f.result()
            return results

    def search(self, x: np.ndarray, k: int, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, rows)``, each ``(nq, k)``, like a FAISS index (rows ``-1`` past the end).

        Order: by distance, ties by smaller row.  Each shard returns its own
        first ``k`` in that order (FAISS's heaps break ties by position, and a
        shard's positions are in row order), so the merged first ``k`` are
        exactly those of one index over all rows.
        """
        xq = self._prepare(x)
        nq, k = len(xq), int(k)

        def one(s: int):
            shard = self.shards[s]
            if shard.ntotal == 0:
                return np.zeros((nq, 0), np.int32 if self.binary else np.float32), np.zeros((nq, 0), np.int64)
            D, L = shard.search(xq, min(k, int(shard.ntotal)))
            return D, self._map(s, L)

        res = self._each(one, nq, threads)
        D = np.concatenate([r[0] for r in res], axis=1)
        I = np.concatenate([r[1] for r in res], axis=1)
        if self.binary:
            key = np.where(I >= 0, D.astype(np.int64), np.iinfo(np.int64).max)
        else:
            key = np.where(I >= 0, -D.astype(np.float64), np.inf)
        order = np.lexsort((np.where(I >= 0, I, np.iinfo(np.int64).max), key), axis=-1)[:, :k]
        D_out = np.take_along_axis(D, order, 1)
        I_out = np.take_along_axis(I, order, 1)
        if D_out.shape[1] < k:  # fewer rows than k: pad like FAISS
            pad = k - D_out.shape[1]
            D_out = np.concatenate([D_out, np.full((nq, pad), np.iinfo(np.int32).max if self.binary else -np.inf,
                                                   D_out.dtype)], axis=1)
            I_out = np.concatenate([I_out, np.full((nq, pad), -1, np.int64)], axis=1)
        return D_out, I_out

    def range_search(self, x: np.ndarray, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lims, distances, rows)`` like FAISS ``range_search`` (binary: distances below ``radius``)."""
        xq = self._prepare(x)
        nq = len(xq)
        res = self._each(lambda s: self.shards[s].range_search(xq, radius), nq, None)
        qidx, D, I = [], [], []
        for s, (lims, d, lab) in enumerate(res):
            lims = np.asarray(lims, dtype=np.int64)
            qidx.append(np.repeat(np.arange(nq), np.diff(lims)))
            D.append(np.asarray(d))
            I.append(self._map(s, np.asarray(lab, dtype=np.int64)))
        qidx = np.concatenate(qidx)
        order = np.argsort(qidx, kind="stable")
        lims = np.concatenate([[0], np.cumsum(np.bincount(qidx, minlength=nq))]).astype(np.int64)
        return lims, np.concatenate(D)[order], np.concatenate(I)[order]

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        import faiss

        out = {"binary": np.array([self.binary]), "nshards": np.array([len(self.shards)]),
               "transform": np.zeros((0, 0), np.float32) if self.transform is None else self.transform,
               "norms": self.norms}
        for s, (shard, ids) in enumerate(zip(self.shards, self.ids)):
            out[f"shard{s}"] = (faiss.serialize_index_binary if self.binary else faiss.serialize_index)(shard)
            out[f"ids{s}"] = np.full(1, -2, np.int64) if ids is None else ids
        return out

    @classmethod
    def from_arrays(cls, a) -> ShardedIndex:
        import faiss

        binary = bool(a["binary"][0])
        n = int(a["nshards"][0])
        shards, ids = [], []
        for s in range(n):
            shards.append((faiss.deserialize_index_binary if binary else faiss.deserialize_index)(a[f"shard{s}"]))
            i = a[f"ids{s}"]
            ids.append(None if len(i) == 1 and i[0] == -2 else i)
        t = a["transform"]
        return cls(shards, ids, binary=binary, transform=t if t.size else None, norms=a["norms"])


def _live_in(live_rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    lo, hi = np.searchsorted(live_rows, [start, stop])
    return live_rows[lo:hi]


def float_kind(n: int, *, flat_max: int | None = None, ivf_min: int | None = None) -> str:
    """The float index kind used for ``n`` rows."""
    flat_max = FLAT_MAX if flat_max is None else flat_max
    ivf_min = IVF_MIN if ivf_min is None else ivf_min
    return "flat-ip" if n <= flat_max else "pq4fs-ip" if n <= ivf_min else "pca-ivf-ip"


def size_class(kind: str) -> str:
    """The :func:`float_kind` a float index of ``kind`` was built for (the PQ kinds share one size class)."""
    return "pq4fs-ip" if kind == "pca-pq4fs-ip" else kind


def outgrown(meta: IndexMeta, n: int) -> bool:
    """Whether a float index described by ``meta`` should be rebuilt to hold ``n`` rows.

    When ``n`` is in another :func:`size_class`; and when a full-vector PQ index trained on fewer than
    :data:`PCA_PQ_MIN` rows grows past it, so that the choice of a PCA projection is made (once) on a
    sample of the collection it has become.
    """
    if float_kind(n) != size_class(meta.kind):
        return True
    trained_on = meta.built_ntotal or meta.ntotal
    return meta.kind == "pq4fs-ip" and trained_on < PCA_PQ_MIN <= n


def _pca(sample: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Top ``k`` principal directions ``(k, D)`` of the *uncentred* sample (randomized SVD:
    seconds, not the minutes of a full 4096-d eigendecomposition).  With orthonormal rows
    and no bias, inner products in the projected space approximate the original cosines."""
    from sklearn.utils.extmath import randomized_svd

    x = np.ascontiguousarray(sample, dtype=np.float32)
    _, _, vt = randomized_svd(x, k, n_iter=2, random_state=seed)
    return np.ascontiguousarray(vt, dtype=np.float32)


def pq_subquantizers(dim: int) -> int:
    """Sub-vectors of the product quantiser: the largest divisor of ``dim`` up to :data:`PQ_M`."""
    return next(m for m in range(min(PQ_M, dim), 0, -1) if dim % m == 0)


def new_float_index(dim: int, n: int, *, flat_max: int | None = None, ivf_min: int | None = None,
                    pca_dim: int | None = None, nlist: int | None = None, sample: np.ndarray | None = None,
                    shards: int | None = None, seed: int = 0) -> tuple[ShardedIndex, str]:
    """An empty float index for ``n`` vectors; returns ``(index, kind)``.

    The approximate kinds need ``sample``: normalised vectors to train the
    product quantiser (or the projection and IVF lists) on.
    """
    import faiss

    kind = float_kind(n, flat_max=flat_max, ivf_min=ivf_min)
    nsh = max(1, min(search_threads() if shards is None else shards, max(1, n)))
    if kind == "flat-ip":
        return ShardedIndex([faiss.IndexFlatIP(dim) for _ in range(nsh)], [np.zeros(0, np.int64)] * nsh,
                            binary=False), kind
    if sample is None:
        raise ValueError(f"a {kind} index needs a sample of vectors to train on")
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if kind == "pq4fs-ip" and n >= PCA_PQ_MIN and dim > PCA_DIM:
        # Features whose energy lies in a few hundred directions (measured at 1M: the benchmark's clustered
        # vectors keep 99.96% in 256): 4 bits per 16 dimensions of the full vectors lose the fine
        # differences between neighbours (candidate recall 0.73 of the top 20), 4 bits per 2 projected
        # dimensions keep them (0.97) at half the scan.  Vectors spread over thousands of directions (57%
        # in 256) keep the full-vector PQ, which finds them (bench_search.py --parts ivf1m).
        pd = min(PCA_DIM, len(sample))
        A = _pca(sample, pd, seed)
        proj = np.ascontiguousarray(sample @ A.T)
        if float(np.square(proj, dtype=np.float64).sum()) >= PCA_PQ_ENERGY * float(np.square(sample, dtype=np.float64).sum()):
            m = next(m for m in range(max(1, pd // 2), 0, -1) if pd % m == 0)
            pq = faiss.IndexPQFastScan(pd, m, 4, faiss.METRIC_INNER_PRODUCT)
            pq.train(proj)
            return ShardedIndex([faiss.clone_index(pq) for _ in range(nsh)], [np.zeros(0, np.int64)] * nsh,
                                binary=False, transform=A), "pca-pq4fs-ip"
    if kind == "pq4fs-ip":
        m = pq_subquantizers(dim)
        pq = faiss.IndexPQFastScan(dim, m, 4, faiss.METRIC_INNER_PRODUCT)
        pq.train(sample)
        return ShardedIndex([faiss.clone_index(pq) for _ in range(nsh)], [np.zeros(0, np.int64)] * nsh,
                            binary=False), kind
    pd = max(1, min(PCA_DIM if pca_dim is None else pca_dim, dim, len(sample)))
    A = _pca(sample, pd, seed)
    proj = np.ascontiguousarray(sample @ A.T)
    if nlist is None:
        nlist = int(min(4096, max(64, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))))
    nlist = max(1, min(nlist, len(sample) // 39))  # FAISS wants ~39 training points per list
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(pd), pd, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(proj)
    return ShardedIndex([ivf], [None], binary=False, transform=A), kind


def set_nprobe(index, nprobe: int) -> None:
    import faiss

    for shard in getattr(index, "shards", [index]):
        try:
            ivf = faiss.extract_index_ivf(shard)
        except Exception:  # not an IVF index
            continue
        ivf.nprobe = int(nprobe)


def build_float_index(
    vectors: np.ndarray,
    live_rows: np.ndarray,
    *,
    flat_max: int | None = None,
    ivf_min: int | None = None,
    pca_dim: int | None = None,
    nlist: int | None = None,
    train_size: int = 32_768,
    seed: int = 0,
    shards: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[ShardedIndex, str]:
    """Index the ``live_rows`` of ``vectors`` (an (R, D) array or memmap); returns ``(index, kind)``."""
    n = len(live_rows)
    dim = vectors.shape[1]
    sample = None
    if float_kind(n, flat_max=flat_max, ivf_min=ivf_min) != "flat-ip":
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(live_rows, size=min(train_size, n), replace=False))
        sample = l2_normalize(vectors[pick])
    index, kind = new_float_index(dim, n, flat_max=flat_max, ivf_min=ivf_min, pca_dim=pca_dim, nlist=nlist,
                                  sample=sample, shards=shards, seed=seed)
    add_float_rows(index, vectors, live_rows, progress=progress, balanced=True)
    return index, kind


def add_float_rows(index: ShardedIndex, vectors: np.ndarray, rows: np.ndarray, *,
                   progress: Callable[[int], None] | None = None, balanced: bool = False) -> None:
    """Add ``rows`` of ``vectors`` (normalised here; their norms are kept for re-ranking).

    ``balanced``: split the rows into one contiguous range per shard first
    (a fresh build), instead of spreading every chunk over the shards.
    """
    rows = np.asarray(rows, dtype=np.int64)
    groups = np.array_split(rows, len(index.shards)) if balanced and len(index.shards) > 1 else [rows]
    for g, part in enumerate(groups):
        for i in range(0, len(part), _CHUNK):
            ids = part[i : i + _CHUNK]
            x, norms = _normalize_with_norms(vectors[ids])
            if balanced and len(groups) > 1:
                _add_to_shard(index, g, x, ids, norms)
            else:
                index.add_with_ids(x, ids, norms)
            if progress:
                progress(len(ids))


def _add_to_shard(index: ShardedIndex, s: int, x: np.ndarray, rows: np.ndarray, norms: np.ndarray | None) -> None:
    top = int(rows.max()) + 1
    if norms is not None:
        if len(index.norms) < top:
            index.norms = np.concatenate([index.norms, np.full(top - len(index.norms), np.nan, np.float32)])
        index.norms[rows] = norms
    x = index._prepare(x)
    if index.ids[s] is None:
        index.shards[s].add_with_ids(x, rows)
    else:
        index.shards[s].add(x)
        index.ids[s] = np.concatenate([index.ids[s], rows])


def binary_exact(n: int, code_bytes: int, *, short_min: int | None = None) -> bool:
    """Whether the binary index for ``n`` live rows of ``code_bytes``-byte codes holds the full codes (else short codes)."""
    return n < (BINARY_SHORT_MIN if short_min is None else short_min) or code_bytes <= SHORT_BYTES


def short_code_columns(sample: np.ndarray, short: int = SHORT_BYTES) -> np.ndarray:
    """The ``short`` byte columns of a code that vary most on ``sample`` (entropy), ascending."""
    from illust2vec.collection.mih import byte_entropy

    ent = byte_entropy(np.asarray(sample))
    return np.sort(np.argsort(-ent, kind="stable")[:short])


def build_binary_index(codes: np.ndarray, live_rows: np.ndarray, *, shards: int | None = None,
                       short_min: int | None = None) -> ShardedIndex:
    """Hamming index over the ``live_rows`` of ``codes`` ((R, B) uint8), :data:`BINARY_SHARDS_PER_THREAD` shards per search thread.

    Exact (the full codes) below ``short_min`` (:data:`BINARY_SHORT_MIN`) live
    rows; from there on the :data:`SHORT_BYTES` most varied bytes of each code
    (see the module docstring).  Runs of consecutive rows go into FAISS in one
    call each, straight from ``codes`` (a memory map of ``codes.u8``).
    """
    import faiss

    live_rows = np.asarray(live_rows, dtype=np.int64)
    columns = None
    if not binary_exact(len(live_rows), codes.shape[1], short_min=short_min):
        pick = live_rows[np.linspace(0, len(live_rows) - 1, min(len(live_rows), 8192)).astype(np.int64)]
        columns = short_code_columns(codes[pick])
    # short codes: one shard per thread (a query asks each shard for thousands of candidates: fewer, bigger
    # shards cost less than balancing gains); exact codes: finer shards that threads balance between them
    per_thread = BINARY_SHARDS_PER_THREAD if columns is None else 1
    nsh = max(1, min(search_threads() * per_thread if shards is None else shards, max(1, len(live_rows))))
    width = codes.shape[1] if columns is None else len(columns)
    index = ShardedIndex([faiss.IndexBinaryFlat(width * 8) for _ in range(nsh)],
                         [np.zeros(0, np.int64)] * nsh, binary=True, columns=columns)
    if columns is not None:
        for shard in index.shards:
            # counting selection instead of a heap: 3-4x faster for thousands of candidates (measured at 1M:
            # 2000 candidates 15 -> 4 ms); the same distances, ties at the cut in scan order (the re-rank is exact)
            shard.use_heap = False

    def part_of(block: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(block if columns is None else block[:, columns], dtype=np.uint8)

    for s, part in enumerate(np.array_split(live_rows, nsh)):
        runs = np.split(part, np.nonzero(np.diff(part) != 1)[0] + 1) if len(part) else []
        if len(runs) * 1024 <= len(part):  # long runs: slices of the memory map
            for run in runs:
                for a in range(run[0], run[-1] + 1, _CHUNK * 4):
                    index.shards[s].add(part_of(codes[a : min(run[-1] + 1, a + _CHUNK * 4)]))
        else:  # scattered rows (many deletions): gathered in chunks
            for i in range(0, len(part), _CHUNK * 4):
                index.shards[s].add(part_of(codes[part[i : i + _CHUNK * 4]]))
        index.ids[s] = part.copy()
    _huge_pages_later(index)
    return index


def _huge_pages_later(index: ShardedIndex) -> None:
    """Back the shards' code arrays with 2 MB pages, in a background thread (best effort).

    ``madvise(MADV_COLLAPSE)`` (Linux 6.1+) on FAISS's own arrays: the scan
    then misses the TLB far less and runs ~10% faster (measured: 36 -> 31 ms
    per 500k codes).  Collapsing 512 MB takes ~1 s of one core, so it is not
    done on the caller's time; searches meanwhile are correct either way.
    """
    if not sys.platform.startswith("linux") or index.ntotal * index.code_bytes < HUGE_PAGES_MIN_BYTES:
        return
    threading.Thread(target=_collapse, args=(list(index.shards),), name="i2v-hugepages", daemon=True).start()


def _collapse(shards: list) -> None:
    import ctypes

    import faiss

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        page = 2 << 20
        for shard in shards:
            xb = shard.xb
            n = int(xb.size())
            if n < 2 * page:
                continue
            addr = int(faiss.rev_swig_ptr(xb.data(), n).ctypes.data)
            start, end = -(-addr // page) * page, (addr + n) // page * page
            if end > start and madvise(start, end - start, 25) != 0:  # 25: MADV_COLLAPSE
                return  # not supported here (older kernel, THP off): nothing to gain
    except Exception:  # noqa: BLE001 - only an optimisation
        return


def add_binary_rows(index: ShardedIndex, codes: np.ndarray, rows: np.ndarray) -> None:
    for i in range(0, len(rows), _CHUNK * 4):
        ids = np.asarray(rows[i : i + _CHUNK * 4], dtype=np.int64)
        index.add_with_ids(np.ascontiguousarray(codes[ids], dtype=np.uint8), ids)
    if len(rows):
        _huge_pages_later(index)  # the arrays grew: FAISS moved them to new memory


def save(index: ShardedIndex, path: Path, meta: IndexMeta) -> None:
    """Write ``index`` and its JSON meta atomically (tmp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **index.to_arrays())
    os.replace(tmp, path)
    jtmp = path.with_name(f".{path.name}.{os.getpid()}.json.tmp")
    jtmp.write_text(json.dumps(asdict(meta), indent=1))
    os.replace(jtmp, path.with_suffix(".json"))


def load(path: Path) -> tuple[ShardedIndex, IndexMeta] | None:
    """Read an index and its meta; ``None`` if either is missing, unreadable or of another format."""
    mpath = path.with_suffix(".json")
    if not path.exists() or not mpath.exists():
        return None
    try:
        meta = IndexMeta(**json.loads(mpath.read_text()))
        if meta.format != INDEX_FORMAT:
            return None
        with np.load(path, allow_pickle=False) as a:
            index = ShardedIndex.from_arrays(a)
    except Exception:  # corrupt or from another version: it is only a cache
        return None
    if index.ntotal != meta.ntotal:
        return None
    return index, meta
