"""PhenoGraph-style clustering of a latent space: kNN graph, Jaccard weights, Leiden/Louvain."""
from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..runfolder import CLUSTER_KEY, LATENT_KEY


def default_k(mdata) -> int:
    """The paper's neighbourhood size: 15 when a modality is ATAC (SHARE-seq), else 20 (CITE-seq)."""
    from ..preprocess import modality_kind
    kinds = dict(mdata.uns.get("scmm_preprocess", {}).get("kinds", {})) if hasattr(mdata, "uns") else {}
    names = list(getattr(mdata, "mod", {}) or [])
    if any(kinds.get(n, modality_kind(n, mdata.mod[n])) == "atac" for n in names):
        return 15
    return 20


APPROXIMATE_ABOVE = 50_000  # "auto" neighbours: exact kNN up to this many cells, approximate above
NEIGHBORS = ("auto", "exact", "approximate")
IGRAPH_LEIDEN_ABOVE = 50_000  # "auto" flavor: leidenalg up to this many cells, igraph's Leiden above
FLAVORS = ("auto", "leidenalg", "igraph")


def _n_neighbors(n: int, k: int) -> int:
    """``k`` capped at ``n - 1`` (the other cells); at least 2 cells are needed."""
    if n < 2:
        raise ValueError(f"need at least 2 cells to cluster, got {n}")
    return min(k, n - 1)


def _drop_self(idx: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``k + 1`` neighbour indices without the row's own index.

    Self is normally column 0, but duplicated points may put it elsewhere or leave
    it out; then the farthest neighbour is dropped instead.
    """
    n = idx.shape[0]
    keep = idx != np.arange(n)[:, None]
    keep[keep.all(axis=1), -1] = False
    return idx[keep].reshape(n, k)


def knn_indices(X: np.ndarray, k: int) -> np.ndarray:
    """Indices (n x k) of each row's ``k`` nearest other rows (Euclidean, exact), self excluded."""
    from sklearn.neighbors import NearestNeighbors
    X = np.asarray(X, dtype=np.float32)
    k = _n_neighbors(X.shape[0], k)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    return _drop_self(nn.kneighbors(X, return_distance=False), k)


def approximate_knn_indices(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Like ``knn_indices`` but approximate: pynndescent's NN-descent, seeded by ``seed``."""
    from pynndescent import NNDescent
    X = np.ascontiguousarray(X, dtype=np.float32)
    k = _n_neighbors(X.shape[0], k)
    idx = NNDescent(X, n_neighbors=k + 1, random_state=seed).neighbor_graph[0]
    if (idx < 0).any():
        raise RuntimeError("approximate kNN left some neighbours unfound; use neighbors='exact'")
    return _drop_self(idx, k)


def resolve_neighbors(neighbors: str, n: int) -> str:
    """``"exact"`` or ``"approximate"``: ``"auto"`` is approximate above ``APPROXIMATE_ABOVE`` cells."""
    if neighbors not in NEIGHBORS:
        raise ValueError(f"neighbors must be one of {NEIGHBORS}, not {neighbors!r}")
    if neighbors == "auto":
        return "approximate" if n > APPROXIMATE_ABOVE else "exact"
    return neighbors


def neighbor_indices(X: np.ndarray, k: int, neighbors: str = "auto",
                     seed: int = 0) -> tuple[np.ndarray, str]:
    """kNN indices (self excluded) and the search used, ``"exact"`` or ``"approximate"``."""
    used = resolve_neighbors(neighbors, X.shape[0])
    if used == "approximate":
        return approximate_knn_indices(X, k, seed), used
    return knn_indices(X, k), used


def _shared_counts(adj: sp.csr_matrix, block_size: int) -> sp.csr_matrix:
    """``adj.multiply(adj @ adj.T)`` (shared neighbours on kNN edges), ``block_size`` rows at a time."""
    adj_t = adj.T.tocsr()
    blocks = []
    for start in range(0, adj.shape[0], block_size):
        rows = adj[start:start + block_size]
        blocks.append(rows.multiply(rows @ adj_t).tocsr())
    return sp.vstack(blocks, format="csr")


def jaccard_graph(indices: np.ndarray, block_size: int = 10_000) -> sp.csr_matrix:
    """Symmetric Jaccard-weighted kNN graph (PhenoGraph).

    An edge i -> j of the kNN graph gets weight |N(i) ∩ N(j)| / |N(i) ∪ N(j)|
    over the neighbour sets; the graph is symmetrised as (W + Wᵀ) / 2.  The
    shared-neighbour counts are computed ``block_size`` cells at a time, so memory
    stays near ``block_size * k * k`` entries rather than ``n * k * k``.
    """
    n, k = indices.shape
    rows = np.repeat(np.arange(n), k)
    adj = sp.csr_matrix((np.ones(n * k, np.float32), (rows, indices.ravel())), shape=(n, n))
    shared = _shared_counts(adj, block_size)
    shared.data = shared.data / (2 * k - shared.data)
    shared.eliminate_zeros()
    graph = (shared + shared.T) * 0.5
    return graph.tocsr()


@contextmanager
def _igraph_seeded(seed: int):
    """igraph's random numbers drawn from ``random.Random(seed)`` inside the block."""
    import igraph as ig
    state = random.getstate()
    ig.set_random_number_generator(random.Random(seed))
    try:
        yield
    finally:
        ig.set_random_number_generator(random)
        random.setstate(state)


def resolve_flavor(flavor: str, method: str, n: int) -> str:
    """Implementation used: ``"leidenalg"`` or ``"igraph"`` (always igraph for Louvain).

    ``"auto"`` is leidenalg up to ``IGRAPH_LEIDEN_ABOVE`` cells and igraph's own
    (C, about 10x faster) Leiden above.
    """
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, not {flavor!r}")
    if method != "leiden":
        return "igraph"
    if flavor == "auto":
        return "igraph" if n > IGRAPH_LEIDEN_ABOVE else "leidenalg"
    return flavor


def _communities(graph: sp.csr_matrix, method: str, resolution: float, seed: int,
                 n_iterations: int = 2, flavor: str = "leidenalg") -> np.ndarray:
    import igraph as ig
    upper = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=graph.shape[0], edges=np.column_stack([upper.row, upper.col]), directed=False)
    weights = upper.data.astype(float).tolist()
    if method == "leiden" and flavor == "leidenalg":
        import leidenalg
        part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=weights,
                                        resolution_parameter=resolution, seed=seed,
                                        n_iterations=n_iterations)
        return np.asarray(part.membership)
    if method == "leiden":
        with _igraph_seeded(seed):
            part = g.community_leiden(objective_function="modularity", weights=weights,
                                      resolution=resolution, n_iterations=n_iterations)
        return np.asarray(part.membership)
    if method == "louvain":
        with _igraph_seeded(seed):
            part = g.community_multilevel(weights=weights, resolution=resolution)
        return np.asarray(part.membership)
    raise ValueError(f"method must be 'leiden' or 'louvain', not {method!r}")


def relabel_by_size(membership: np.ndarray) -> np.ndarray:
    """Community ids renumbered 0, 1, ... from the largest community down (ties by first cell)."""
    ids, first, counts = np.unique(membership, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new = np.empty(len(ids), dtype=int)
    new[order] = np.arange(len(ids))
    return new[np.searchsorted(ids, membership)]


def cluster(mdata, use_rep: str = LATENT_KEY, k: int | None = None, resolution: float = 1.0,
            method: str = "leiden", seed: int = 0, key_added: str = CLUSTER_KEY,
            n_iterations: int = 2, neighbors: str = "auto", flavor: str = "auto") -> pd.Series:
    """Cluster cells on a latent (PhenoGraph: kNN graph, Jaccard weights, Leiden or Louvain).

    Parameters
    ----------
    mdata
        MuData (or AnnData) with the latent in ``obsm[use_rep]`` (see ``SCMM.get_latent``).
    k
        Neighbours per cell; default 20 for CITE-seq, 15 when a modality is ATAC (paper).
    resolution
        Resolution of the modularity (RB configuration model); higher gives more clusters.
    method
        ``"leiden"`` (default) or ``"louvain"`` (the paper's); both seeded by ``seed``.
    n_iterations
        Leiden iterations (leidenalg's default 2; -1 iterates until no change,
        about 4x slower at 40,000 cells for a modularity gain below 0.1 %).
    neighbors
        kNN search: ``"exact"`` (scikit-learn), ``"approximate"`` (pynndescent's
        NN-descent, seeded by ``seed``; over 99 % of the exact neighbours on a
        10-dimensional latent, so clusters agree closely but not cell for cell) or
        ``"auto"`` (default): exact up to ``APPROXIMATE_ABOVE`` (50,000) cells,
        approximate above, where exact search takes many minutes.  The approximate
        search is reproducible for a seed on a given number of numba threads.
    flavor
        Leiden implementation: ``"leidenalg"`` (Traag's package), ``"igraph"``
        (igraph's built-in Leiden, same quality function, about 10x faster but
        different random choices, so partitions differ slightly) or ``"auto"``
        (default): leidenalg up to ``IGRAPH_LEIDEN_ABOVE`` (50,000) cells, igraph
        above (leidenalg had not finished after 16 minutes at a million cells on 2
        cores; igraph took 1.5 minutes).

    Writes categorical labels ``"0", "1", ...`` (numbered by decreasing size) into
    ``mdata.obs[key_added]`` and returns them as a Series indexed by cell; the
    settings used (``neighbors`` resolved to ``"exact"`` or ``"approximate"``, ``k``,
    ``resolution``, ``method``, ``flavor`` resolved, ``seed``, ``n_iterations``) go to
    ``mdata.uns[f"{key_added}_params"]``.
    """
    if use_rep not in mdata.obsm:
        raise KeyError(f"obsm[{use_rep!r}] not found (have {list(mdata.obsm)}); "
                       "call model.get_latent() first")
    X = np.asarray(mdata.obsm[use_rep])
    k = int(k) if k is not None else default_k(mdata)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    flavor = resolve_flavor(flavor, method, X.shape[0])
    indices, used = neighbor_indices(X, k, neighbors, seed)
    graph = jaccard_graph(indices)
    labels = relabel_by_size(_communities(graph, method, resolution, seed, n_iterations, flavor))
    n_clusters = int(labels.max()) + 1
    categories = [str(i) for i in range(n_clusters)]
    series = pd.Series(pd.Categorical(labels.astype(str), categories=categories),
                       index=mdata.obs_names, name=key_added)
    mdata.obs[key_added] = series
    mdata.uns[f"{key_added}_params"] = {
        "neighbors": used, "k": int(indices.shape[1]), "resolution": float(resolution),
        "method": method, "flavor": flavor, "seed": int(seed), "n_iterations": int(n_iterations)}
    return series
