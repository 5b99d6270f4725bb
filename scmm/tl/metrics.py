"""The paper's evaluation: Pearson r of predictions, CLR error for proteins, batch-mixing entropy,
and a comparison of cross-modal prediction with a k-nearest-neighbour regressor."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..normalise import lognorm


def _dense(x) -> np.ndarray:
    if hasattr(x, "X"):
        x = x.X
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _pearson(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    num = (a * b).sum(axis=axis)
    den = np.sqrt((a ** 2).sum(axis=axis) * (b ** 2).sum(axis=axis))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def pearson(a, b) -> float:
    """Pearson r of two vectors (NaN when either is constant or shorter than 2)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2:
        return float("nan")
    return float(_pearson(a, b, axis=0))


def pearson_per_feature(predicted, observed) -> np.ndarray:
    """Pearson r between predicted and observed values of each feature, across cells (NaN if constant).

    Arguments: arrays, sparse matrices or AnnData (cells x features), same shape.
    """
    p, o = _dense(predicted), _dense(observed)
    if p.shape != o.shape:
        raise ValueError(f"shapes differ: predicted {p.shape}, observed {o.shape}")
    return _pearson(p, o, axis=0)


def pearson_per_cell(predicted, observed) -> np.ndarray:
    """Pearson r between predicted and observed values of each cell, across features (NaN if constant)."""
    p, o = _dense(predicted), _dense(observed)
    if p.shape != o.shape:
        raise ValueError(f"shapes differ: predicted {p.shape}, observed {o.shape}")
    return _pearson(p, o, axis=1)


def clr(counts) -> np.ndarray:
    """Centered log-ratio per cell: log1p(x) minus the cell's mean of log1p(x) over features."""
    x = np.log1p(_dense(counts))
    return x - x.mean(axis=1, keepdims=True)


def clr_sse(predicted, observed) -> np.ndarray:
    """Per cell: sum of squared differences of CLR-transformed predicted and observed values."""
    p, o = _dense(predicted), _dense(observed)
    if p.shape != o.shape:
        raise ValueError(f"shapes differ: predicted {p.shape}, observed {o.shape}")
    return ((clr(p) - clr(o)) ** 2).sum(axis=1)


def batch_mixing_entropy(latent: np.ndarray, batches, n_cells: int = 100, n_neighbors: int = 100,
                         n_repeats: int = 100, seed: int = 0) -> np.ndarray:
    """Entropy of batch mixing (as in the paper), one value per repeat.

    Each repeat picks ``n_cells`` random cells, takes each one's ``n_neighbors``
    nearest neighbours (itself excluded) in ``latent``, computes the regional
    entropy -Σ_b x_b log x_b of the neighbours' batch fractions x_b, and sums
    it over the picked cells.  Higher is better mixed (max n_cells·log B).
    """
    from sklearn.neighbors import NearestNeighbors
    latent = np.asarray(latent, dtype=np.float32)
    codes, uniques = pd.factorize(np.asarray(batches))
    n = len(latent)
    if len(codes) != n:
        raise ValueError(f"{len(codes)} batch labels for {n} cells")
    if n < 2:
        raise ValueError("need at least 2 cells")
    k = min(n_neighbors, n - 1)
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(n, size=min(n_cells, n), replace=False) for _ in range(n_repeats)])
    unique_picks, inverse = np.unique(picks, return_inverse=True)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(latent)
    idx = nn.kneighbors(latent[unique_picks], return_distance=False)
    keep = idx != unique_picks[:, None]
    keep[keep.all(axis=1), -1] = False  # self not among the neighbours (duplicates): drop the farthest
    neigh = idx[keep].reshape(len(unique_picks), k)
    frac = np.stack([(codes[neigh] == b).mean(axis=1) for b in range(len(uniques))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(frac > 0, frac * np.log(frac), 0.0).sum(axis=1)
    return ent[inverse.reshape(picks.shape)].sum(axis=1)


def neighbourhood_preservation(high, low, k: int = 15, n_cells: int = 5000, seed: int = 0) -> float:
    """How faithfully an embedding keeps each cell's neighbours (1 = perfectly, ~k/n = randomly).

    For a seeded random sample of ``n_cells`` cells (all when fewer), the mean
    fraction of a cell's ``k`` nearest neighbours in ``high`` (the latent) that
    are also among its ``k`` nearest neighbours in ``low`` (e.g. the 2-D UMAP).
    Neighbours are exact (sklearn, Euclidean) over all cells, the cell itself excluded.
    """
    from sklearn.neighbors import NearestNeighbors
    high, low = np.asarray(high, dtype=np.float32), np.asarray(low, dtype=np.float32)
    n = len(high)
    if len(low) != n:
        raise ValueError(f"{n} cells in high but {len(low)} in low")
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and the number of cells - 1 ({n - 1}), got {k}")
    picks = np.sort(np.random.default_rng(seed).choice(n, size=min(n_cells, n), replace=False))
    neighbours = []
    for space in (high, low):
        idx = NearestNeighbors(n_neighbors=k + 1).fit(space).kneighbors(space[picks], return_distance=False)
        keep = idx != picks[:, None]
        keep[keep.all(axis=1), -1] = False  # self not among the neighbours (duplicates): drop the farthest
        neighbours.append(idx[keep].reshape(len(picks), k))
    in_high, in_low = neighbours
    return float((in_high[:, :, None] == in_low[:, None, :]).sum() / in_high.size)


def knn_baseline(train_source, train_target, query_source, k: int = 20, n_pcs: int = 50,
                 seed: int = 0) -> np.ndarray:
    """k-nearest-neighbour regressor predicting target proportions from source counts.

    Source counts are log-normalised (log1p(x / library x 1e4)) and projected on
    ``n_pcs`` principal components fitted on the training cells; each query cell
    gets the mean per-cell target proportions of its ``k`` nearest training
    cells (multiply by a library size to get counts).
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsRegressor

    xs, xq = lognorm(_dense(train_source)), lognorm(_dense(query_source))
    n_pcs = max(1, min(n_pcs, xs.shape[1], xs.shape[0] - 1))
    pca = PCA(n_components=n_pcs, random_state=seed).fit(xs)
    target = _dense(train_target)
    lib = target.sum(axis=1, keepdims=True)
    props = np.divide(target, lib, out=np.zeros_like(target), where=lib > 0)
    reg = KNeighborsRegressor(n_neighbors=min(k, len(xs))).fit(pca.transform(xs), props)
    return reg.predict(pca.transform(xq))


def prediction_metrics(predicted, observed, protein: bool = False) -> dict:
    """Summary of one prediction: mean / median Pearson r per feature and per cell (+ CLR SSE)."""
    per_feature, per_cell = pearson_per_feature(predicted, observed), pearson_per_cell(predicted, observed)
    out = {"pearson_feature_mean": float(np.nanmean(per_feature)),
           "pearson_feature_median": float(np.nanmedian(per_feature)),
           "pearson_cell_mean": float(np.nanmean(per_cell)),
           "pearson_cell_median": float(np.nanmedian(per_cell))}
    if protein:
        sse = clr_sse(predicted, observed)
        out["clr_sse_mean"] = float(sse.mean())
        out["clr_sse_median"] = float(np.median(sse))
    return out


def query_metrics(model, mdata=None, target: str | None = None, source: str | None = None,
                  query_mask=None, train_mask=None, k: int = 20, n_pcs: int = 50,
                  seed: int = 0) -> pd.DataFrame:
    """Cross-modal prediction of ``target`` from ``source`` by scMM vs a kNN regressor baseline.

    ``mdata`` (default: the model's data) must hold both modalities: the query
    cells (default the ``scmm_split == 'test'`` cells) have their observed
    ``target`` counts for scoring only; the baseline (k nearest neighbours on
    ``n_pcs`` PCs of log-normalised ``source``) is fitted on the training cells
    (default ``'train'``).  Both predictions are scaled to each query cell's
    observed ``target`` library, so that they are on the scale of the counts.
    Default: ``source`` the RNA modality (else the first), ``target`` the other.

    Returns one row per method (``scmm``, ``knn``) with the mean / median
    Pearson r per feature and per cell, and for proteins the CLR SSE per cell.
    """
    from ..preprocess import modality_kind
    from ..runfolder import SPLIT_KEY
    mdata = mdata if mdata is not None else model.mdata
    if mdata is None:
        raise ValueError("no data: pass mdata or load the run with its results")
    names = list(model.names)
    if source is None:
        source = next((m for m in names if model.kinds.get(m) == "rna" and m != target), None)
        source = source or next(m for m in names if m != target)
    if target is None:
        target = next(m for m in names if m != source)
    if source == target:
        raise ValueError("source and target must differ")
    split = mdata.obs[SPLIT_KEY].to_numpy() if SPLIT_KEY in mdata.obs else None
    if query_mask is None:
        if split is None:
            raise ValueError("no query cells: pass query_mask or preprocess the data (scmm_split)")
        query_mask = split == "test"
    if train_mask is None:
        train_mask = split == "train" if split is not None else ~np.asarray(query_mask)
    query_mask, train_mask = np.asarray(query_mask, bool), np.asarray(train_mask, bool)
    if query_mask.sum() < 2 or train_mask.sum() < 2:
        raise ValueError("need at least 2 query and 2 training cells")
    src, tgt = mdata.mod[source], mdata.mod[target]
    observed = _dense(tgt.X[query_mask])
    library = observed.sum(axis=1)
    scmm_pred = model.predict(target, from_modality=source, adata=src[query_mask],
                              library=np.maximum(library, 1e-8)).X
    knn_props = knn_baseline(src.X[train_mask], tgt.X[train_mask], src.X[query_mask], k=k,
                             n_pcs=n_pcs, seed=seed)
    protein = model.kinds.get(target, modality_kind(target)) == "protein"
    rows = []
    for method, pred in (("scmm", _dense(scmm_pred)), ("knn", knn_props * library[:, None])):
        rows.append({"method": method, "source": source, "target": target,
                     "n_query": int(query_mask.sum()), **prediction_metrics(pred, observed, protein)})
    return pd.DataFrame(rows)
