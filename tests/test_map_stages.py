"""Map stages on numpy arrays: reduction, quality, grid, clusters, labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from illust2vec.maps.clusters import distinctive_tags, explain_clusters, find_clusters
from illust2vec.maps.grid import grid_shape, snap_to_grid
from illust2vec.maps.labels import LabelSpecError, labels_from_spec
from illust2vec.maps.quality import knn_preservation, map_quality, trustworthiness
from illust2vec.maps.reduce import ReduceError, default_perplexity, pca, reduce
from map_synthetic import clustered_features


def _blobs(n_per: int = 15, k: int = 4, dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 4
    x = np.concatenate([c + rng.standard_normal((n_per, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(k), n_per)
    return x, y


# ---------------------------------------------------------------- reduce

def test_reduce_tsne_is_deterministic_with_a_seed_and_changes_with_another():
    x, _ = _blobs()
    a = reduce(x, method="tsne", seed=3)
    b = reduce(x, method="tsne", seed=3)
    c = reduce(x, method="tsne", seed=4)
    assert a.shape == (60, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_tsne_separates_clusters():
    x, y = _blobs()
    emb = reduce(x, method="tsne", seed=0)
    q = map_quality(x, emb, list(y), k=5)
    assert q["knn_label_accuracy_map"] == 1.0
    assert q["trustworthiness"] > 0.9


def test_perplexity_is_scaled_for_twenty_images():
    assert default_perplexity(20) == pytest.approx(19 / 3)
    assert default_perplexity(1000) == 30.0
    assert default_perplexity(4) == 1.0
    x, y = _blobs(n_per=5, k=4)
    emb = reduce(x, method="tsne", seed=0)  # openTSNE would refuse perplexity 30 with 20 points
    assert emb.shape == (20, 2) and np.all(np.isfinite(emb))
    assert len({tuple(r) for r in np.round(emb, 4).tolist()}) == 20


def test_tiny_inputs_and_pca_method():
    assert reduce(np.ones((1, 8))).shape == (1, 2)
    two = reduce(np.eye(2, 8, dtype=np.float32))
    assert two.shape == (2, 2) and not np.allclose(two[0], two[1])
    x, _ = _blobs()
    p = reduce(x, method="pca")
    # PCA method = first two principal components of the L2-normalised rows
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    xc = xn - xn.mean(0)
    _, s, _ = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(p, axis=0), s[:2], rtol=1e-4)


def test_randomized_pca_matches_exact_subspace():
    x, _ = clustered_features(1200, 600, n_clusters=8, seed=1)
    p = pca(x, 20, seed=0)
    xc = x - x.mean(0)
    _, s, _ = np.linalg.svd(xc, full_matrices=False)
    got = np.linalg.norm(p, axis=0)
    # the 7 between-cluster directions exactly, the flat noise spectrum closely
    np.testing.assert_allclose(got[:7], s[:7], rtol=1e-3)
    np.testing.assert_allclose(got, s[:20], rtol=0.03)


def test_reduce_errors_name_the_problem():
    with pytest.raises(ReduceError, match="unknown map method 'isomap'"):
        reduce(np.ones((5, 3)), method="isomap")
    with pytest.raises(ReduceError, match="NaN"):
        reduce(np.full((5, 3), np.nan))


def test_umap_missing_says_how_to_install():
    pytest.importorskip("numpy")
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ReduceError, match="pip install"):
            reduce(_blobs()[0], method="umap")
    else:  # pragma: no cover - only where umap-learn is installed
        assert reduce(_blobs()[0], method="umap").shape == (60, 2)


# ---------------------------------------------------------------- quality

@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_trustworthiness_equals_sklearn(metric):
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(1)
    x = rng.standard_normal((150, 20))
    emb = x[:, :2] + 0.5 * rng.standard_normal((150, 2))
    for k in (1, 5, 12):
        assert trustworthiness(x, emb, k, metric=metric) == pytest.approx(
            sk_trust(x, emb, n_neighbors=k, metric=metric), abs=1e-12)


def test_sampled_quality_is_close_to_exact():
    x, y = clustered_features(3000, 64, n_clusters=10, seed=2)
    emb = reduce(x, method="pca")
    exact = map_quality(x, emb, k=10, max_queries=None)
    sampled = map_quality(x, emb, k=10, max_queries=600, seed=1)
    assert sampled["queries"] == 600 and exact["queries"] == 3000
    assert sampled["trustworthiness"] == pytest.approx(exact["trustworthiness"], abs=0.02)
    assert sampled["knn_preservation"] == pytest.approx(exact["knn_preservation"], abs=0.03)


def test_knn_preservation_and_label_accuracy_by_hand():
    # 1-D line: neighbours known exactly
    x = np.arange(10, dtype=float)[:, None] * np.array([[1.0, 0.0]]) + np.array([[0.0, 1.0]])
    same = np.column_stack([np.arange(10.0), np.zeros(10)])
    assert knn_preservation(x, same, 2, metric="euclidean") == 1.0
    reversed_pairs = same[[1, 0, 3, 2, 5, 4, 7, 6, 9, 8]]
    assert knn_preservation(x, reversed_pairs, 1, metric="euclidean") < 0.5
    labels = ["a"] * 5 + ["b"] * 5
    gap = np.r_[np.arange(5.0), 100 + np.arange(5.0)]
    x = np.column_stack([gap, np.ones(10)])
    same = np.column_stack([gap, np.zeros(10)])
    q = map_quality(x, same, labels, k=2, label_k=1, metric="euclidean")
    assert q["knn_label_accuracy_features"] == 1.0 and q["knn_label_accuracy_map"] == 1.0
    shuffled = same[np.random.default_rng(0).permutation(10)]
    q2 = map_quality(x, shuffled, labels, k=2, label_k=3, metric="euclidean")
    assert q2["knn_label_accuracy_map"] < 1.0


# ---------------------------------------------------------------- grid

def _assert_grid_ok(layout, n):
    cells = layout.cells
    assert cells.shape == (n, 2)
    assert len({tuple(c) for c in cells.tolist()}) == n  # no two images share a cell
    assert cells[:, 0].min() >= 0 and cells[:, 0].max() < layout.cols
    assert cells[:, 1].min() >= 0 and cells[:, 1].max() < layout.rows
    assert layout.cols * layout.rows >= n


@pytest.mark.parametrize("n,exact_max", [(36, 1500), (500, 1500), (5000, 1000)])
def test_grid_has_no_overlaps_and_keeps_neighbours(n, exact_max):
    rng = np.random.default_rng(n)
    pos = rng.standard_normal((n, 2)) * np.array([2.0, 1.0])
    layout = snap_to_grid(pos, exact_max=exact_max)
    _assert_grid_ok(layout, n)
    assert layout.cols > layout.rows  # wide data, wide grid
    jitter = rng.random((n, 2)) * 1e-3
    kp = knn_preservation(pos, layout.cells + jitter, 10, metric="euclidean", max_queries=500)
    assert kp > 0.4  # random placement would give about 10/n


def test_grid_shape():
    assert grid_shape(36) == (6, 6)
    c, r = grid_shape(100, 2.0)
    assert c * r >= 100 and c > r
    with pytest.raises(ValueError):
        snap_to_grid(np.zeros((10, 2)), shape=(3, 3))


# ---------------------------------------------------------------- clusters

def test_clusters_found_and_explained_by_planted_tags():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [20, 0], [0, 20]])
    emb = np.concatenate([c + rng.standard_normal((40, 2)) for c in centres])
    names = ["common", "red hair", "cat ears", "glasses", "hat", "smile"]
    probs = rng.random((120, 6)) * 0.2
    probs[:, 0] = 0.9  # in every image: not distinctive
    probs[:40, 1] = 0.95
    probs[:40, 4] = 0.7
    probs[40:80, 2] = 0.9
    probs[80:, 3] = 0.85
    ids = find_clusters(emb, min_cluster_size=10)
    assert len(set(ids[ids >= 0])) == 3
    for block in range(3):
        assert len(set(ids[block * 40 : (block + 1) * 40])) == 1
    infos = explain_clusters(emb, ids, probs, names)
    by_block = {int(ids[b * 40]): b for b in range(3)}
    expected = {0: ["red hair", "hat"], 1: ["cat ears"], 2: ["glasses"]}
    for info in infos:
        got = [t for t, _, _ in info.tags]
        want = expected[by_block[info.id]]
        assert got[: len(want)] == want
        assert "common" not in got
        assert info.size == 40
    assert infos[0].name.startswith("#0: ")


def test_distinctive_tags_excludes_and_thresholds():
    probs = np.array([[0.9, 0.9], [0.9, 0.8], [0.1, 0.1], [0.1, 0.2]])
    mask = np.array([True, True, False, False])
    assert [t for t, _, _ in distinctive_tags(probs, ["a", "b"], mask)] == ["a", "b"]
    assert [t for t, _, _ in distinctive_tags(probs, ["a", "b"], mask, exclude=np.array([True, False]))] == ["b"]
    assert distinctive_tags(probs, ["a", "b"], ~mask) == []  # nothing more probable inside


# ---------------------------------------------------------------- labels

def test_labels_from_folder_regex_csv(tmp_path: Path):
    files = []
    for folder, name in [("alice", "alice_01.png"), ("alice", "alice_02.png"), ("bob", "bob_01.png"), (".", "x.png")]:
        p = tmp_path / folder / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"")
        files.append(p)
    assert labels_from_spec("folder", files, tmp_path) == ["alice", "alice", "bob", None]
    assert labels_from_spec("folder", files) == ["alice", "alice", "bob", tmp_path.name]
    assert labels_from_spec(r"regex:([a-z]+)_\d+", files, tmp_path) == ["alice", "alice", "bob", None]
    assert labels_from_spec(r"regex:(?P<label>\d+)\.png$", files, tmp_path) == ["01", "02", "01", None]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nalice/alice_01.png,A\n" + str(files[2]) + ",B\nx.png,X\n", encoding="utf-8")
    assert labels_from_spec(f"csv:{csv}", files, tmp_path) == ["A", None, "B", "X"]
    with pytest.raises(LabelSpecError, match="regex:\\(: not a valid"):
        labels_from_spec("regex:(", files)
    with pytest.raises(LabelSpecError, match="folder \\| regex:PATTERN \\| csv:FILE"):
        labels_from_spec("colour", files)
    with pytest.raises(LabelSpecError, match="not found"):
        labels_from_spec(f"csv:{tmp_path / 'none.csv'}", files)


def test_clusters_on_a_sample_for_big_maps_agree_with_the_full_run():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 2)) * 30
    emb = centres[rng.integers(0, 8, 3000)] + rng.standard_normal((3000, 2))
    full = find_clusters(emb)
    sampled = find_clusters(emb, max_points=800)
    assert len(set(full[full >= 0])) == len(set(sampled[sampled >= 0])) >= 6
    # same partition up to renumbering
    pairs = {(a, b) for a, b in zip(full.tolist(), sampled.tolist()) if a >= 0 and b >= 0}
    assert len(pairs) == len(set(full[full >= 0]))


def test_pca_fitted_on_a_sample_for_many_rows_spans_the_same_subspace():
    x, _ = clustered_features(3000, 300, n_clusters=6, seed=4)
    full = pca(x, 5, seed=0)
    sampled = pca(x, 5, seed=0, fit_max=800)
    assert sampled.shape == full.shape == (3000, 5)
    # the cluster directions are found either way: projections agree up to a rotation
    coef, *_ = np.linalg.lstsq(sampled, full, rcond=None)
    resid = np.linalg.norm(full - sampled @ coef) / np.linalg.norm(full)
    assert resid < 0.05  # an unrelated 5-d projection gives about 1
    np.testing.assert_array_equal(sampled, pca(x, 5, seed=0, fit_max=800))
