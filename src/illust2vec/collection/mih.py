"""Exact Hamming range self-join of binary codes: multi-index hashing, or an exhaustive scan.

Every pair of codes within ``r`` bits, exactly the pairs a brute-force scan
finds, in close to linear time while ``r`` is small against the code length
(Norouzi, Punjani and Fleet, "Fast search in Hamming space with multi-index
hashing", CVPR 2012):

1. **Identical codes are collapsed** first (a 64-bit hash of the whole code,
   then a byte comparison, :func:`collapse_identical`): a thousand blank
   pictures with one code cost one representative, not half a million pairs.
2. **Pigeonhole.**  The bytes of a code are split into ``m = r + 1`` disjoint
   substrings (:class:`Substrings`; contiguous, or balanced by the bytes'
   entropy on a sample when some bytes hardly vary, so that they do not make
   one substring useless).  Two codes within ``r`` bits differ in at most
   ``r`` substrings, so they agree exactly on at least one.
3. **Buckets by sorting.**  For each substring, the codes are sorted by a
   64-bit hash of its bytes packed with the code's position into one
   ``uint64`` (one ``np.sort``); codes in one run of equal hashes are the
   candidates.  The hashes of a group of substrings are computed together,
   block of codes by block of codes, so each code is read from memory once
   per group, not once per substring.
4. **Verification and de-duplication** by the XOR of the two full codes: a
   pair is kept when its popcount is ``<= r`` and the substring that brought
   it is the *first* one on which the two codes agree exactly (a pair that
   agrees on many substrings is emitted once, without a global set of pairs;
   a hash collision is never an exact agreement, so it is dropped).

Candidates are generated and verified in chunks of bounded size (a huge
bucket of near-identical codes costs time, never quadratic memory).  Groups
of substrings run in threads (numpy's sort and array operations release the
GIL).  With ``new_start``, only pairs with at least one of the last codes
(the ones added since the others were joined) are found: the old codes are
hashed but only those sharing a substring hash with a new one are sorted.

**When it stops paying.**  With ``r + 1`` substrings of ``L`` bytes, two
unrelated codes share a substring with probability about ``m / 2**(8 L)``;
from 2-byte substrings on (``r >= nbytes / 2``) this grows towards all
pairs, and with more substrings than bytes (``r >= nbytes``) the pigeonhole
needs sub-byte substrings whose candidates exceed all pairs.
:func:`choose_method` estimates the candidates from a sample of the codes
(the pigeonhole collisions multi-index hashing would verify, scaled up) and
takes FAISS's exhaustive range search (:func:`scan_pairs`, block by block)
when that is cheaper, from the measured unit costs :data:`NS_PER_KEY`,
:data:`NS_PER_CANDIDATE` and :data:`NS_PER_BYTE_SCAN`
(``benchmarks/bench_dupes.py --parts costs``).

:func:`pairs_among` puts it together (collapse, choose, search, expand the
identical codes again); it is what :func:`illust2vec.collection.dupes.near_duplicate_pairs`
and the collection's pair cache (:mod:`.pair_cache`) run.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Measured costs (2-core Xeon, numpy 2.4, faiss-cpu 1.15; ``benchmarks/bench_dupes.py --parts costs``):
#: one code in one substring pass (hash, sort of the packed keys, runs),
NS_PER_KEY = 60.0
#: verifying one candidate pair of 512-byte codes (two gathers, XOR, popcount, first-agreement check),
NS_PER_CANDIDATE = 700.0
#: FAISS's exhaustive Hamming scan (``hamming_range_search``), per byte of code compared, per thread.
NS_PER_BYTE_SCAN = 0.07
#: Codes sampled to balance the substrings and to estimate the candidates.
SAMPLE = 8192
#: Bytes of codes gathered per verification chunk, and of substring hashes per thread.
CHUNK_BYTES = 32 << 20
KEY_BYTES = 64 << 20
#: Codes read per block while hashing substrings (a block stays in the CPU's cache).
BLOCK = 4096
#: Below this many distinct codes the exhaustive scan is always used.
SMALL = 2048

_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
#: Odd multipliers, one per 64-bit word of a key (a multiply-add hash, finished by :func:`_mix`).
_WORD_MULT = (np.random.default_rng(0x1D2C).integers(0, 2**62, 4096, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)


def _threads(threads: int | None) -> int:
    if threads is not None:
        return max(1, int(threads))
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, min(8, os.cpu_count() or 1))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array."""
    h ^= h >> np.uint64(30)
    h *= _M2
    h ^= h >> np.uint64(27)
    h *= _M3
    h ^= h >> np.uint64(31)
    return h


def _hash_words(words: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash of ``len(words)`` uint64 columns (equal columns, equal hashes)."""
    h = np.full(len(words[0]), len(words), np.uint64)
    for k, w in enumerate(words):
        h += w * _WORD_MULT[k % len(_WORD_MULT)]
    return _mix(h)


def _padded_words(block: np.ndarray) -> np.ndarray:
    """A ``(n, L)`` uint8 block as ``(n, ceil(L / 8))`` little-endian uint64 words (zero padded), a copy."""
    n, width = block.shape
    buf = np.zeros((n, max(1, -(-width // 8)) * 8), np.uint8)
    buf[:, :width] = block
    return buf.view(np.dtype("<u8"))


def hash_rows(block: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of a ``(n, L)`` uint8 array (equal rows, equal hashes)."""
    w = _padded_words(np.asarray(block))
    return _hash_words([w[:, k] for k in range(w.shape[1])])


def _runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal values in a sorted array."""
    return np.diff(np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1], [True]])))


def byte_entropy(sample: np.ndarray) -> np.ndarray:
    """Shannon entropy (bits) of each byte column of a ``(n, nbytes)`` uint8 sample."""
    n, nb = sample.shape
    flat = (sample.astype(np.int64) + 256 * np.arange(nb)).ravel()
    p = np.bincount(flat, minlength=256 * nb).reshape(nb, 256) / max(1, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)


class Substrings:
    """A split of the byte columns ``0..nbytes-1`` into ``m`` disjoint sets of ``nbytes // m`` or one more.

    Contiguous runs when the bytes of ``sample`` (codes) are about equally
    varied; otherwise each set gets a share of the varied bytes (greedy on
    the bytes' entropy), so that no substring is made of bytes that are the
    same in most codes.
    """

    def __init__(self, nbytes: int, m: int, sample: np.ndarray | None = None) -> None:
        self.nbytes = int(nbytes)
        m = max(1, min(int(m), self.nbytes))
        sizes = [self.nbytes // m + (1 if k < self.nbytes % m else 0) for k in range(m)]
        ent = None if sample is None or len(sample) < 64 else byte_entropy(np.asarray(sample[:2048]))
        if ent is None or ent.max() - ent.min() < 0.5:
            bounds = np.cumsum([0] + sizes)
            self.cols = [np.arange(bounds[k], bounds[k + 1]) for k in range(m)]
        else:
            groups: list[list[int]] = [[] for _ in range(m)]
            total = np.zeros(m)
            for col in np.argsort(-ent, kind="stable"):
                k = min((g for g in range(m) if len(groups[g]) < sizes[g]), key=lambda g: (total[g], g))
                groups[k].append(int(col))
                total[k] += ent[col]
            self.cols = [np.asarray(sorted(g), dtype=np.int64) for g in groups]
        # the contiguous ones as the 64-bit words they cover, masked at their ends: hashing without byte copies
        self._words = [self._word_masks(c) for c in self.cols]
        perm = np.concatenate(self.cols)
        self.perm = None if np.array_equal(perm, np.arange(self.nbytes)) else perm
        self.starts = np.cumsum([0] + [len(c) for c in self.cols[:-1]])

    def __len__(self) -> int:
        return len(self.cols)

    @staticmethod
    def _word_masks(cols: np.ndarray) -> list[tuple[int, int]] | None:
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        if hi - lo != len(cols):
            return None
        out = []
        for k in range(lo // 8, (hi - 1) // 8 + 1):
            a, b = max(lo, 8 * k) - 8 * k, min(hi, 8 * k + 8) - 8 * k
            out.append((k, ((1 << (8 * (b - a))) - 1) << (8 * a)))
        return out

    def keys(self, codes: np.ndarray, rows: np.ndarray | None, parts: range) -> np.ndarray:
        """``(len(parts), n)`` uint64: a hash of each substring in ``parts`` of each code (of ``codes[rows]``).

        Read block by block (:data:`BLOCK` codes): each code is read once for
        all the substrings, and the words of all contiguous substrings are
        gathered, masked, multiplied and summed in one go.  Equal bytes give
        equal hashes.
        """
        n = len(codes) if rows is None else len(rows)
        out = np.empty((len(parts), n), np.uint64)
        fast = [j for j, p in enumerate(parts) if self._words[p] is not None]
        slow = [j for j, p in enumerate(parts) if self._words[p] is None]
        if fast:
            spec = [(k, mask, pos) for pos, j in enumerate(fast) for k, mask in self._words[parts[j]]]
            widx = np.array([k for k, _, _ in spec], np.int64)
            mask = np.array([m for _, m, _ in spec], np.uint64)
            heads = np.flatnonzero(np.diff(np.array([-1] + [pos for *_, pos in spec])) != 0)
            nwords = np.diff(np.append(heads, len(spec))).astype(np.uint64)
            mult = np.concatenate([_WORD_MULT[: int(c)] for c in nwords])
        for s in range(0, n, BLOCK):
            block = np.asarray(codes[s : s + BLOCK] if rows is None else codes[rows[s : s + BLOCK]])
            if fast:
                w = _padded_words(block) if block.shape[1] % 8 or not block.flags.c_contiguous else \
                    block.view(np.dtype("<u8"))
                x = w[:, widx]
                x &= mask
                x *= mult
                h = np.add.reduceat(x, heads, axis=1)
                h += nwords
                out[fast, s : s + BLOCK] = _mix(h).T
            for j in slow:
                out[j, s : s + BLOCK] = hash_rows(block[:, self.cols[parts[j]]])
        return out

    def equal(self, xor: np.ndarray, upto: int) -> np.ndarray:
        """``(K, upto + 1)`` bool: whether each pair (its codes' XOR) agrees exactly on substrings ``0..upto``."""
        x = xor if self.perm is None else xor[:, self.perm]
        return np.bitwise_or.reduceat(x, self.starts[: upto + 2], axis=1)[:, : upto + 1] == 0


# --------------------------------------------------------------------------- identical codes
def collapse_identical(codes: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(reps, group)`` of ``codes[rows]`` (``rows`` ``None``: all codes), in positions ``0..n-1`` of ``rows``.

    ``reps``: the first position of each distinct code, ascending; ``group``:
    per position, the index in ``reps`` of its code.  Codes are grouped by a
    64-bit hash of all their bytes and compared byte for byte; a group whose
    codes are not all equal (a hash collision) is left as single codes, which
    is still exact (identical codes are then found at distance 0 by the search).
    """
    n = len(codes) if rows is None else len(rows)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    h = Substrings(codes.shape[1], 1).keys(codes, rows, range(1))[0]
    order = np.argsort(h, kind="stable")  # ties by position: each run starts with its smallest position
    length = _runs(h[order])
    first = np.repeat(order[np.cumsum(length) - length], length)  # each sorted position's run head
    dup = np.flatnonzero(first != order)
    at = np.arange(n) if rows is None else np.asarray(rows)
    step = max(1, CHUNK_BYTES // max(1, codes.shape[1]))
    for s in range(0, len(dup), step):
        part = dup[s : s + step]
        same = (np.asarray(codes[at[order[part]]]) == np.asarray(codes[at[first[part]]])).all(axis=1)
        if not same.all():  # hash collision: every member of such a run stays on its own
            split = np.isin(first, first[part[~same]])
            first[split] = order[split]
    rep_of = np.empty(n, np.int64)
    rep_of[order] = first
    reps = np.flatnonzero(rep_of == np.arange(n))
    return reps, np.searchsorted(reps, rep_of)


# --------------------------------------------------------------------------- costs and choice
def _sample(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    s = min(len(rows), SAMPLE)
    return np.asarray(codes[np.sort(rng.choice(np.asarray(rows), s, replace=False))])


def choose_method(codes: np.ndarray, rows: np.ndarray, max_distance: int, *, new_start: int = 0,
                  threads: int | None = None) -> tuple[str, dict]:
    """``("mih" | "scan", estimate)``: the cheaper exact method for the pairs among ``codes[rows]``.

    ``new_start`` as in :func:`mih_pairs`.  The estimate holds the pairs the
    scan compares (``pairs``), the candidates multi-index hashing would verify
    (``candidates``: the pigeonhole collisions of a sample, scaled up) and
    both methods' expected seconds (``mih_s``, ``scan_s``).
    """
    n, nbytes = len(rows), codes.shape[1]
    new = n - int(new_start)
    pairs = new * (n - new) + new * (new - 1) / 2
    t = _threads(threads)
    m = int(max_distance) + 1
    est = {"pairs": pairs, "substrings": m, "mih_s": math.inf,
           "scan_s": pairs * max(nbytes, 8) * NS_PER_BYTE_SCAN * 1e-9 / t}
    if m > nbytes or n < SMALL:
        return "scan", est
    sample = _sample(codes, rows)
    parts = Substrings(nbytes, m, sample)
    keys = parts.keys(sample, None, range(len(parts)))
    keys.sort(axis=1)
    coll = sum(int((g * (g - 1) // 2).sum()) for g in map(_runs, keys))
    s = len(sample)
    est["candidates"] = coll * pairs / max(1.0, s * (s - 1) / 2)
    est["mih_s"] = (m * n * NS_PER_KEY + est["candidates"] * NS_PER_CANDIDATE * nbytes / 512) * 1e-9 / t
    return ("mih" if est["mih_s"] <= est["scan_s"] else "scan"), est


# --------------------------------------------------------------------------- multi-index hashing
def run_pairs(packed: np.ndarray, idx_bits: int, new_start: int, limit: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``(a, b)``, ``a < b``, ``b >= new_start``, of entries in one run of a sorted packed array, ``limit`` at a time.

    ``packed`` is sorted ``key << idx_bits | index``: runs are equal keys,
    and within a run indexes ascend, so each member from ``new_start`` on
    pairs with the members before it.
    """
    hi = packed >> np.uint64(idx_bits)
    same = hi[1:] == hi[:-1]
    if not same.any():
        return
    n = len(packed)
    idx = (packed & np.uint64((1 << idx_bits) - 1)).astype(np.int64)
    start = np.concatenate([[True], ~same])
    run_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    rank = np.arange(n) - run_start
    emit = np.flatnonzero((rank > 0) & (idx >= new_start))
    if not len(emit):
        return
    count = rank[emit]
    end = np.cumsum(count)
    for s in range(0, int(end[-1]), limit):
        f = np.arange(s, min(int(end[-1]), s + limit), dtype=np.int64)
        e = np.searchsorted(end, f, side="right")
        t = emit[e]
        yield idx[run_start[t] + f - (end[e] - count[e])], idx[t]


def _verify(codes: np.ndarray, parts: Substrings, a: np.ndarray, b: np.ndarray, part: int, r: int) -> np.ndarray:
    """``(a, b, distance)`` of the candidate pairs within ``r`` whose first exactly equal substring is ``part``."""
    x = np.bitwise_xor(np.asarray(codes[a]), np.asarray(codes[b]))
    d = np.bitwise_count(x.view(np.uint64) if x.shape[1] % 8 == 0 else x).sum(axis=1, dtype=np.int64)
    near = np.flatnonzero(d <= r)
    eq = parts.equal(x[near], part)
    sel = near[eq[:, part] & ~eq[:, :part].any(axis=1)]  # equal here (no hash collision), and not found before
    return np.stack([a[sel], b[sel], d[sel]], axis=1)


def _pass(codes: np.ndarray, rows: np.ndarray, parts: Substrings, part: int, keys: np.ndarray, r: int,
          new_start: int) -> np.ndarray:
    """The pairs that substring ``part`` (hashes ``keys`` of ``codes[rows]``) brings and first agrees on."""
    n = len(rows)
    pos = None  # positions in rows of the codes sorted (None: all of them)
    if new_start > 0:  # only the old codes whose hash may equal a new one's (a bitmap of the new hashes)
        bits = min(26, max(16, int(n - new_start).bit_length() + 4))
        low = np.uint64((1 << bits) - 1)
        seen = np.zeros(1 << bits, bool)
        seen[(keys[new_start:] & low).astype(np.int64)] = True
        near = np.flatnonzero(seen[(keys[:new_start] & low).astype(np.int64)])
        pos = np.concatenate([near, np.arange(new_start, n)])
        keys = keys[pos]
        new_start = len(near)
    idx_bits = max(1, int(len(keys) - 1).bit_length())
    packed = (keys >> np.uint64(idx_bits)) << np.uint64(idx_bits)
    packed |= np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    out = [np.zeros((0, 3), np.int64)]
    for a, b in run_pairs(packed, idx_bits, new_start, max(1024, CHUNK_BYTES // max(1, codes.shape[1]))):
        if pos is not None:
            a, b = pos[a], pos[b]
        out.append(_verify(codes, parts, rows[a], rows[b], part, r))
    return np.concatenate(out)


def mih_pairs(codes: np.ndarray, rows: np.ndarray, max_distance: int, *, new_start: int = 0,
              threads: int | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Pairs ``(a, b, distance)`` of ``codes`` indexes within ``max_distance``, by multi-index hashing.

    Only ``codes[rows]`` are searched; with ``new_start``, only the pairs
    with at least one of ``rows[new_start:]``.  Every pair is found exactly
    once, ``a`` before ``b`` in the order of ``rows``.  ``progress`` is called
    with the number of substrings done.  Raises :class:`ValueError` when
    ``max_distance + 1`` substrings do not fit in the code's bytes (use
    :func:`scan_pairs`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    nbytes = codes.shape[1]
    m = int(max_distance) + 1
    if m > nbytes:
        raise ValueError(f"{m} substrings do not fit in {nbytes}-byte codes: max_distance {max_distance} "
                         "needs the exhaustive scan")
    n = len(rows)
    if n < 2 or n == int(new_start):
        return np.zeros((0, 3), np.int64)
    parts = Substrings(nbytes, m, _sample(codes, rows))
    every = n == len(codes) and bool((rows == np.arange(n)).all())
    group = max(1, min(m, KEY_BYTES // (8 * n)))
    t = min(_threads(threads), -(-m // group))
    group = min(group, -(-m // t))  # at least one group per thread

    def run(first: int) -> np.ndarray:
        span = range(first, min(m, first + group))
        keys = parts.keys(codes, None if every else rows, span)
        out = []
        for j, p in enumerate(span):
            out.append(_pass(codes, rows, parts, p, keys[j], int(max_distance), int(new_start)))
            if progress:
                progress(1)
        return np.concatenate(out)

    starts = range(0, m, group)
    if t <= 1:
        return np.concatenate([run(s) for s in starts])
    with ThreadPoolExecutor(t, thread_name_prefix="i2v-mih") as pool:
        return np.concatenate(list(pool.map(run, starts)))


# --------------------------------------------------------------------------- exhaustive scan
def scan_pairs(codes: np.ndarray, rows: np.ndarray, max_distance: int, *, new_start: int = 0,
               block: int = 16_384, threads: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
    """The same pairs as :func:`mih_pairs` by FAISS's exhaustive Hamming range search, block by block.

    Block ``i`` of ``rows`` is compared with the blocks from ``i`` on (and
    with new rows only, when ``new_start`` is set), so each pair once;
    ``progress`` is called with the number of rows done.
    """
    import faiss

    rows = np.asarray(rows, dtype=np.int64)
    n, nbytes = len(rows), codes.shape[1]
    if n < 2:
        return np.zeros((0, 3), np.int64)
    if nbytes == 0:  # every pair is at distance 0
        i, j = np.triu_indices(n, 1)
        keep = j >= new_start
        return np.stack([rows[i[keep]], rows[j[keep]], np.zeros(int(keep.sum()), np.int64)], axis=1)
    radius = min(int(max_distance), 8 * nbytes) + 1  # FAISS keeps distances strictly below the radius
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(_threads(threads))
    out = [np.zeros((0, 3), np.int64)]
    try:
        bounds = list(range(0, n, block)) + [n]
        blocks = list(zip(bounds[:-1], bounds[1:]))
        for qi, (qa, qb) in enumerate(blocks):
            q = np.ascontiguousarray(codes[rows[qa:qb]], dtype=np.uint8)
            for da, db in blocks[qi:]:
                if db <= new_start:  # old rows with old rows: joined before
                    continue
                x = q if da == qa else np.ascontiguousarray(codes[rows[da:db]], dtype=np.uint8)
                res = faiss.RangeSearchResult(len(q))
                faiss.hamming_range_search(faiss.swig_ptr(q), faiss.swig_ptr(x), len(q), len(x), radius, nbytes, res)
                lims = faiss.rev_swig_ptr(res.lims, len(q) + 1).astype(np.int64)
                total = int(lims[-1])
                if not total:
                    continue
                b = faiss.rev_swig_ptr(res.labels, total).astype(np.int64) + da
                d = faiss.rev_swig_ptr(res.distances, total).astype(np.int64)
                a = np.repeat(np.arange(qa, qb), np.diff(lims))
                keep = (a < b) & (b >= new_start)
                out.append(np.stack([rows[a[keep]], rows[b[keep]], d[keep]], axis=1))
            if progress:
                progress(qb - qa)
    finally:
        faiss.omp_set_num_threads(prev)
    return np.concatenate(out)


# --------------------------------------------------------------------------- all together
METHODS = ("auto", "mih", "scan")


def pairs_among(codes: np.ndarray, rows: np.ndarray | None, max_distance: int, *, new_from: int = 0,
                method: str = "auto", threads: int | None = None, progress=None) -> np.ndarray:
    """Every pair of ``codes[rows]`` within ``max_distance``, as sorted ``(i, j, distance)`` positions in ``rows``.

    ``rows`` (ascending) ``None`` means all codes (positions are then code indexes).  See
    :func:`illust2vec.collection.dupes.near_duplicate_pairs` for the
    arguments; no validation here.
    """
    from illust2vec.runtime.progress import progress_counter

    n = len(codes) if rows is None else len(rows)
    nbytes = codes.shape[1]
    if n - new_from <= 0 or n < 2:
        return np.zeros((0, 3), np.int64)
    r = min(int(max_distance), nbytes * 8)  # from the code length on, every pair is within it
    reps, group = collapse_identical(codes, rows)
    has_new = np.zeros(len(reps), bool)
    has_new[group[new_from:]] = True
    # search the representatives, those of groups with a new member last (new_start in mih_pairs, scan_pairs)
    order = np.concatenate([reps[~has_new], reps[has_new]])
    at = order if rows is None else np.asarray(rows)[order]
    old = int((~has_new).sum())
    if method == "auto":
        method = choose_method(codes, at, r, new_start=old, threads=threads)[0]
    update, close = progress_counter(progress, label="dupes", total=r + 1 if method == "mih" else len(at),
                                     unit="pass" if method == "mih" else "code")
    try:
        search = mih_pairs if method == "mih" else scan_pairs
        found = search(codes, at, r, new_start=old, threads=threads, progress=update)
    finally:
        close()
    if rows is not None and len(found):  # code indexes -> positions in (ascending) rows
        found = np.stack([np.searchsorted(rows, found[:, 0]), np.searchsorted(rows, found[:, 1]), found[:, 2]], axis=1)
    return with_copies(found, group, new_from)


def with_copies(found: np.ndarray, group: np.ndarray, new_from: int = 0) -> np.ndarray:
    """Pairs of representatives of identical codes -> the pairs of all codes, sorted (``i < j``, ``j >= new_from``).

    ``found`` holds ``(a, b, distance)`` of positions (each the first of its
    group); ``group`` maps every position to its group (see :func:`collapse_identical`).
    """
    n = len(group)
    size = np.bincount(group) if n else np.zeros(0, np.int64)
    members = np.argsort(group, kind="stable")  # by group, ascending position within a group
    first = np.cumsum(size) - size
    a, b, d = found[:, 0], found[:, 1], found[:, 2]
    ga, gb = group[a], group[b]
    single = (size[ga] == 1) & (size[gb] == 1)
    out = [np.stack([np.minimum(a, b)[single], np.maximum(a, b)[single], d[single]], axis=1)]
    multi = np.flatnonzero(~single)
    if len(multi):  # every member of one group with every member of the other
        sa, sb = size[ga[multi]], size[gb[multi]]
        count = sa * sb
        end = np.cumsum(count)
        f = np.arange(int(end[-1]), dtype=np.int64)
        p = np.searchsorted(end, f, side="right")
        local = f - (end[p] - count[p])
        i = members[first[ga[multi][p]] + local // sb[p]]
        j = members[first[gb[multi][p]] + local % sb[p]]
        out.append(np.stack([np.minimum(i, j), np.maximum(i, j), d[multi][p]], axis=1))
    if (size > 1).any():  # identical codes: distance 0 within a group
        bits = max(1, int(n - 1).bit_length())
        packed = (group.astype(np.uint64) << np.uint64(bits)) | np.arange(n, dtype=np.uint64)
        packed.sort()
        for i, j in run_pairs(packed, bits, new_from, 1 << 22):
            out.append(np.stack([i, j, np.zeros(len(i), np.int64)], axis=1))
    res = np.concatenate(out)
    res = res[res[:, 1] >= new_from]
    return res[np.lexsort((res[:, 1], res[:, 0]))]
