"""PhenoGraph-style clustering."""
import anndata as ad
import mudata as md
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from scmm.tl import cluster
from scmm.tl.clustering import default_k, jaccard_graph, knn_indices, relabel_by_size
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


def test_knn_excludes_self_even_with_duplicates():
    X = np.array([[0.0], [0.0], [0.0], [5.0], [6.0]])
    idx = knn_indices(X, 2)
    assert idx.shape == (5, 2)
    assert all(i not in row for i, row in enumerate(idx))


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
