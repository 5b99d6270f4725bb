"""PhenoGraph-style clustering."""
import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from scmm.tl import cluster, clustering
from scmm.tl.clustering import (APPROXIMATE_ABOVE, IGRAPH_LEIDEN_ABOVE, approximate_knn_indices,
                                default_k, jaccard_graph, knn_indices, relabel_by_size,
                                resolve_flavor, resolve_neighbors)
from _tl_data import trained_model


def _blobs(n_per=60, centers=4, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 20, size=(centers, dim))
    labels = np.repeat(np.arange(centers), n_per)
    X = means[labels] + rng.normal(size=(len(labels), dim))
    adata = ad.AnnData(np.zeros((len(labels), 1), np.float32))
    adata.obsm["X_scmm"] = X.astype(np.float32)
    return adata, labels


def test_jaccard_weights_by_hand():
    # neighbour sets: 0:{1,2} 1:{0,2} 2:{0,1} 3:{2,1}
    idx = np.array([[1, 2], [0, 2], [0, 1], [2, 1]])
    g = jaccard_graph(idx).toarray()
    # edge 0->1: N(0)={1,2}, N(1)={0,2}: shared 1 -> 1/(4-1); symmetric, so (1/3 + 1/3)/2
    assert g[0, 1] == pytest.approx(1 / 3)
    # edge 3->2: N(3)={2,1}, N(2)={0,1}: shared 1 -> 1/3 one way, no edge 2->3: halved
    assert g[3, 2] == pytest.approx(1 / 6) and g[2, 3] == pytest.approx(1 / 6)
    # edge 3->1 and 1->3? N(1)={0,2} has no 3: shared(3,1) = |{2,1} & {0,2}| = 1 -> 1/3 / 2
    assert g[1, 3] == pytest.approx(1 / 6)
    assert np.allclose(g, g.T) and np.all(np.diag(g) == 0)


def _whole_matrix_jaccard(indices):
    """The formula before blocks: all shared-neighbour counts at once (n * k * k entries)."""
    n, k = indices.shape
    rows = np.repeat(np.arange(n), k)
    adj = sp.csr_matrix((np.ones(n * k, np.float32), (rows, indices.ravel())), shape=(n, n))
    shared = adj.multiply(adj @ adj.T).tocsr()
    shared.data = shared.data / (2 * k - shared.data)
    shared.eliminate_zeros()
    return ((shared + shared.T) * 0.5).tocsr()


@pytest.mark.parametrize("block_size", [1, 97, 2003, 10_000])
def test_blockwise_jaccard_equals_whole_matrix(block_size):
    n, k = 2003, 15
    rng = np.random.default_rng(1)
    idx = np.stack([(i + 1 + rng.choice(n - 1, k, replace=False)) % n for i in range(n)])
    want, got = _whole_matrix_jaccard(idx), jaccard_graph(idx, block_size=block_size)
    assert got.dtype == want.dtype
    for attr in ("indptr", "indices", "data"):   # same storage, so Leiden sees the same graph
        assert np.array_equal(getattr(got, attr), getattr(want, attr))


def test_knn_excludes_self_even_with_duplicates():
    X = np.array([[0.0], [0.0], [0.0], [5.0], [6.0]])
    idx = knn_indices(X, 2)
    assert idx.shape == (5, 2)
    assert all(i not in row for i, row in enumerate(idx))


def test_approximate_knn_excludes_self_even_with_duplicates():
    X = np.repeat(np.arange(40, dtype=np.float32)[:, None], 3, axis=0)   # every point three times
    idx = approximate_knn_indices(X, 4, seed=0)
    assert idx.shape == (120, 4)
    assert all(i not in row and len(set(row)) == 4 for i, row in enumerate(idx))


def test_approximate_knn_recall():
    adata, _ = _blobs(n_per=500, centers=10, dim=10)
    X = adata.obsm["X_scmm"]
    exact, approx = knn_indices(X, 15), approximate_knn_indices(X, 15, seed=0)
    recall = np.mean([len(set(a) & set(e)) / 15 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_approximate_clusters_match_exact_and_are_seeded():
    adata, labels = _blobs(n_per=400, centers=6, dim=10)
    exact = cluster(adata, k=15, resolution=0.3, neighbors="exact", key_added="exact")
    approx = cluster(adata, k=15, resolution=0.3, neighbors="approximate", key_added="approx")
    again = cluster(adata, k=15, resolution=0.3, neighbors="approximate", key_added="again")
    assert adjusted_rand_score(exact, approx) >= 0.95
    assert adjusted_rand_score(labels, approx) >= 0.95
    assert (approx.astype(str) == again.astype(str)).all()
    assert adata.uns["approx_params"]["neighbors"] == "approximate"


def test_auto_neighbors_switch_above_threshold(monkeypatch):
    assert resolve_neighbors("auto", APPROXIMATE_ABOVE) == "exact"
    assert resolve_neighbors("auto", APPROXIMATE_ABOVE + 1) == "approximate"
    assert resolve_neighbors("exact", 10 ** 7) == "exact"
    adata, _ = _blobs()
    cluster(adata, k=10, resolution=0.3)
    assert adata.uns["scmm_cluster_params"]["neighbors"] == "exact"
    monkeypatch.setattr(clustering, "APPROXIMATE_ABOVE", 100)
    cluster(adata, k=10, resolution=0.3)
    assert adata.uns["scmm_cluster_params"]["neighbors"] == "approximate"


def test_auto_flavor_switches_to_igraph_leiden_above_threshold():
    assert resolve_flavor("auto", "leiden", IGRAPH_LEIDEN_ABOVE) == "leidenalg"
    assert resolve_flavor("auto", "leiden", IGRAPH_LEIDEN_ABOVE + 1) == "igraph"
    assert resolve_flavor("leidenalg", "leiden", 10 ** 7) == "leidenalg"
    assert resolve_flavor("auto", "louvain", 10) == "igraph"


def test_igraph_leiden_recovers_blobs_and_is_seeded():
    adata, labels = _blobs()
    first = cluster(adata, k=10, resolution=0.3, flavor="igraph", key_added="ig")
    again = cluster(adata, k=10, resolution=0.3, flavor="igraph", key_added="ig2")
    assert adjusted_rand_score(labels, first) == pytest.approx(1.0)
    assert (first.astype(str) == again.astype(str)).all()
    assert adata.uns["ig_params"]["flavor"] == "igraph"


def test_params_recorded_and_written_to_h5mu(tmp_path):
    adata, _ = _blobs()
    mdata = md.MuData({"rna": adata})
    mdata.obsm["X_scmm"] = adata.obsm["X_scmm"]
    cluster(mdata, k=12, resolution=0.5, seed=3, neighbors="exact")
    want = {"neighbors": "exact", "k": 12, "resolution": 0.5, "method": "leiden",
            "flavor": "leidenalg", "seed": 3, "n_iterations": 2}
    assert mdata.uns["scmm_cluster_params"] == want
    mdata.write(tmp_path / "clustered.h5mu")
    back = md.read_h5mu(tmp_path / "clustered.h5mu").uns["scmm_cluster_params"]
    assert {key: back[key].item() if hasattr(back[key], "item") else back[key] for key in back} == want


def test_blobs_are_recovered_and_numbered_by_size():
    adata, labels = _blobs()
    adata = adata[np.r_[0:60, 60:100, 120:240]].copy()   # sizes 60, 40, 60, 60
    labels = labels[np.r_[0:60, 60:100, 120:240]]
    out = cluster(adata, k=10, resolution=0.3)
    assert adjusted_rand_score(labels, out) == pytest.approx(1.0)
    sizes = adata.obs["scmm_cluster"].value_counts().reindex(out.cat.categories).to_numpy()
    assert np.all(np.diff(sizes) <= 0)
    assert list(out.cat.categories) == [str(i) for i in range(len(sizes))]
    assert out.index.equals(adata.obs_names)


def test_relabel_by_size():
    assert relabel_by_size(np.array([7, 3, 3, 9, 3, 7])).tolist() == [1, 0, 0, 2, 0, 1]


def test_demo_clusters_match_cell_types_and_are_seeded():
    mdata = trained_model().mdata
    labels = cluster(mdata, key_added="tl_test_cluster")
    assert "tl_test_cluster" in mdata.obs
    assert adjusted_rand_score(mdata.obs["cell_type"], labels) > 0.4
    again = cluster(mdata, key_added="tl_test_cluster2")
    assert (again.astype(str) == labels.astype(str)).all()
    louvain = cluster(mdata, method="louvain", key_added="tl_test_louvain")
    assert adjusted_rand_score(mdata.obs["cell_type"], louvain) > 0.4
    coarse = cluster(mdata, resolution=0.2, key_added="tl_test_coarse")
    assert coarse.cat.categories.size < labels.cat.categories.size


def test_default_k_by_modality_kind():
    def mu(names):
        mods = {n: ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32))) for n in names}
        return md.MuData(mods)
    assert default_k(mu(["rna", "prot"])) == 20
    assert default_k(mu(["rna", "atac"])) == 15


def test_errors():
    adata, _ = _blobs(n_per=5)
    with pytest.raises(KeyError, match="get_latent"):
        cluster(adata, use_rep="X_nope")
    with pytest.raises(ValueError):
        cluster(adata, method="kmeans")
    with pytest.raises(ValueError, match="'auto', 'exact', 'approximate'"):
        cluster(adata, neighbors="annoy")
    with pytest.raises(ValueError, match="'auto', 'leidenalg', 'igraph'"):
        cluster(adata, flavor="scanpy")
