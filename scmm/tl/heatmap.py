"""Cluster x feature tables (the paper's heatmaps) and marker ranking with scanpy's Wilcoxon test.

For every modality m and cluster c, the table value of feature f is the
cluster's total counts of f divided by the cluster's total depth (sum of the
cells' library sizes in m), z-scored across clusters.  It is computed for the
observed counts ("original"), for the reconstruction from m itself, and for
the generation from every other modality (cross-modal); a similarity table
gives the Pearson r between the original z-scores and each generated table.

Approximations at atlas scale (100k-1M cells), each with its switch (``None``
gives the exact, all-cells computation):

- :func:`markers`: the one-vs-rest Wilcoxon test runs on a seeded random
  subset of at most ``max_cells_per_group`` (:data:`MARKER_CELLS_PER_GROUP`)
  cells of each group; the "rest" of a group is then the other groups' subsets,
  so large groups weigh less in it than in the full data.  Scores and p-values
  come from fewer cells (smaller |score|, larger p); the ranking within a
  group is what is kept.  Groups under the cap keep all their cells.
- :func:`rank_features`: the selection and the other cells are each capped at
  ``max_cells`` (:data:`RANK_CELLS`) random cells.
- :func:`heatmap_tables`: the generated (decoded) profiles use at most
  ``max_cells_per_group`` (:data:`PROFILE_CELLS_PER_GROUP`) random cells of
  each cluster, the ratio total counts / total depth being estimated on them;
  the original profile always uses every cell (a sparse product, cheap).

Only the chosen cells are log-normalised, encoded and decoded.  What was done
is recorded: ``attrs["cells_tested"]`` / ``attrs["subsampled"]`` of the
Wilcoxon tables, column ``cells_decoded`` of the similarity table.
"""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import normalise
from ..runfolder import CLUSTER_KEY, LIBRARY_KEY
from .metrics import pearson


MARKER_CELLS_PER_GROUP = 2_000
"""Default cap on the cells of each group in the :func:`markers` Wilcoxon test."""
RANK_CELLS = 20_000
"""Default cap on the selected cells, and on the other cells, in :func:`rank_features`."""
PROFILE_CELLS_PER_GROUP = 2_000
"""Default cap on the cells of each cluster decoded for the generated profiles."""


def subsample(labels: np.ndarray, cap: int | None, seed: int = 0) -> np.ndarray | None:
    """Sorted positions of at most ``cap`` seeded random cells of each group of ``labels``.

    None (keep every cell) when ``cap`` is None or no group is larger than it.
    """
    if cap is None:
        return None
    if int(cap) < 1:
        raise ValueError(f"the cap on cells must be at least 1 or None, not {cap!r}")
    _, codes, sizes = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    if sizes.max() <= cap:
        return None
    rng = np.random.default_rng(seed)
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(sizes)[:-1])
    keep = [m if len(m) <= cap else rng.choice(m, int(cap), replace=False) for m in members]
    return np.sort(np.concatenate(keep))


def _at(cells, idx: np.ndarray | None):
    """The rows ``idx`` of an AnnData (a view) or array; all of them when ``idx`` is None."""
    return cells if idx is None else cells[idx]


def _record(table: pd.DataFrame, labels: np.ndarray, idx: np.ndarray | None) -> pd.DataFrame:
    """Store the cells tested per group and whether they were subsampled in ``table.attrs``."""
    groups, sizes = np.unique(labels, return_counts=True)
    table.attrs["cells_tested"] = {str(g): int(n) for g, n in zip(groups, sizes)}
    table.attrs["subsampled"] = idx is not None
    return table


def lognorm(adata: ad.AnnData, target_sum: float = 1e4) -> ad.AnnData:
    """A copy of ``adata`` with X = log1p(counts / library x ``target_sum``) (CSR float32)."""
    X = normalise.lognorm(sp.csr_matrix(adata.X), target_sum=target_sum)
    return ad.AnnData(X, obs=pd.DataFrame(index=[str(o) for o in adata.obs_names]),
                      var=pd.DataFrame(index=[str(v) for v in adata.var_names]))


def _rank(adata: ad.AnnData, labels: np.ndarray, groups, reference: str) -> pd.DataFrame:
    import scanpy as sc
    adata.obs["_group"] = pd.Categorical(np.asarray(labels).astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(adata, "_group", groups=groups, reference=reference,
                                method="wilcoxon", use_raw=False, tie_correct=False)
        table = sc.get.rank_genes_groups_df(adata, group=None)
    if "group" not in table:
        table.insert(0, "group", groups[0] if groups != "all" else "")
    return table.rename(columns={"names": "feature", "scores": "score",
                                 "logfoldchanges": "log2_fc", "pvals": "pvalue",
                                 "pvals_adj": "pvalue_adj"})


def markers(mdata, modality: str, groupby: str = CLUSTER_KEY, n: int | None = 5,
            max_cells_per_group: int | None = MARKER_CELLS_PER_GROUP, seed: int = 0) -> pd.DataFrame:
    """Top marker features of each group (cluster) in ``modality``: one-vs-rest Wilcoxon.

    On log-normalised counts (log1p(counts / library x 1e4)).  Columns: ``group,
    feature, score, log2_fc, pvalue, pvalue_adj``; ``n`` per group (None: all),
    best first.  At most ``max_cells_per_group`` seeded random cells (``seed``)
    of each group are tested (None: all; see the module's approximations).
    ``attrs["cells_tested"]``: ``{group: cells tested}``; ``attrs["subsampled"]``:
    whether any group was subsampled.
    """
    if groupby not in mdata.obs:
        raise KeyError(f"obs[{groupby!r}] not found: cluster first (scmm.tl.cluster)")
    labels = mdata.obs[groupby].astype(str)
    if labels.nunique() < 2:
        raise ValueError(f"obs[{groupby!r}] has a single group; markers need at least two")
    adata = mdata.mod[modality]
    labels = labels.reindex(adata.obs_names).to_numpy().astype(str)
    idx = subsample(labels, max_cells_per_group, seed)
    labels = _at(labels, idx)
    table = _rank(lognorm(_at(adata, idx)), labels, "all", "rest")
    table = table.sort_values(["group", "score"], ascending=[True, False], kind="stable")
    if n is not None:
        table = table.groupby("group", sort=False, observed=True).head(int(n))
    order = _group_order(table["group"].unique())
    table["group"] = pd.Categorical(table["group"], categories=order)
    table = table.sort_values(["group", "score"], ascending=[True, False]).reset_index(drop=True)
    return _record(table, labels, idx)


def marker_features(table: pd.DataFrame, n: int) -> list[str]:
    """The top ``n`` features of each group of a :func:`markers` table, in group order, unique."""
    top = table.groupby("group", sort=True, observed=True).head(int(n))
    return list(dict.fromkeys(top["feature"].astype(str)))


def _group_order(groups) -> list[str]:
    groups = [str(g) for g in groups]
    return sorted(groups, key=lambda g: (0, int(g)) if g.isdigit() else (1, g))


def rank_features(mdata, modality: str, cells_mask, n: int | None = None,
                  max_cells: int | None = RANK_CELLS, seed: int = 0) -> pd.DataFrame:
    """Features of ``modality`` ranked for a selection of cells against all other cells.

    ``cells_mask``: boolean array over cells, or a list of cell names (e.g. a
    lasso selection).  Wilcoxon rank-sum (scanpy) on log-normalised counts;
    columns ``feature, score, log2_fc, pvalue, pvalue_adj``, most enriched first.
    The selection and the other cells are each capped at ``max_cells`` seeded
    random cells (``seed``; None: all); ``attrs["cells_tested"]`` (``{"selection":
    n, "rest": n}``) and ``attrs["subsampled"]`` say what was tested.
    """
    adata = mdata.mod[modality]
    mask = np.asarray(cells_mask)
    if mask.dtype != bool:
        mask = adata.obs_names.astype(str).isin([str(c) for c in mask])
    if mask.shape != (adata.n_obs,):
        raise ValueError(f"cells_mask has {mask.shape[0]} entries for {adata.n_obs} cells")
    if mask.sum() < 2 or (~mask).sum() < 2:
        raise ValueError("need at least 2 selected and 2 unselected cells to rank features")
    labels = np.where(mask, "selection", "rest")
    idx = subsample(labels, max_cells, seed)
    labels = _at(labels, idx)
    table = _rank(lognorm(_at(adata, idx)), labels, ["selection"], "rest")
    table = table.drop(columns="group", errors="ignore")
    table = table.sort_values("score", ascending=False).reset_index(drop=True)
    table = table.head(int(n)) if n is not None else table
    return _record(table, labels, idx)


def zscore(table: pd.DataFrame) -> pd.DataFrame:
    """z-score of each column across rows (population s.d.; a constant column gives 0)."""
    values = table.to_numpy(dtype=np.float64)
    mean = values.mean(axis=0)
    sd = values.std(axis=0)
    z = np.divide(values - mean, sd, out=np.zeros_like(values), where=sd > 0)
    return pd.DataFrame(z, index=table.index, columns=table.columns)


def _indicator(labels: np.ndarray, groups: list[str]) -> sp.csr_matrix:
    codes = pd.Categorical(labels, categories=groups).codes
    return sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))),
                         shape=(len(groups), len(codes)))


def cluster_profile(counts, library: np.ndarray, labels: np.ndarray, groups: list[str],
                    features: list[str]) -> pd.DataFrame:
    """Per group: total counts of each feature / total depth of the group (groups x features)."""
    G = _indicator(labels, groups)
    totals = np.asarray((G @ counts).todense() if sp.issparse(counts) else G @ counts)
    depth = np.asarray(G @ library).ravel()
    values = np.divide(totals, depth[:, None], out=np.zeros_like(totals, dtype=np.float64),
                       where=depth[:, None] > 0)
    return pd.DataFrame(values, index=pd.Index(groups, name="cluster"), columns=features)


def _generated_profile(model, target, z, feature_idx, library, labels, groups, features,
                       batch_size=4096):
    """Cluster profile of ``target`` decoded (NB/ZINB means) from the cells' latents ``z``, in chunks."""
    G = _indicator(labels, groups)
    totals = np.zeros((len(groups), len(feature_idx)))
    for start in range(0, len(z), batch_size):
        stop = min(start + batch_size, len(z))
        decoded = model.decode(z[start:stop], target, library=library[start:stop])
        totals += G[:, start:stop] @ decoded[:, feature_idx]
    depth = np.asarray(G @ library).ravel()
    values = np.divide(totals, depth[:, None], out=np.zeros_like(totals), where=depth[:, None] > 0)
    return pd.DataFrame(values, index=pd.Index(groups, name="cluster"), columns=features)


def heatmap_tables(model, mdata=None, groupby: str = CLUSTER_KEY, features: dict | None = None,
                   n_markers: int = 5, modalities: list[str] | None = None,
                   zscored: bool = True,
                   max_cells_per_group: int | None = PROFILE_CELLS_PER_GROUP,
                   seed: int = 0) -> dict[str, pd.DataFrame]:
    """The paper's cluster x feature tables for original, reconstructed and generated counts.

    Parameters
    ----------
    model
        A trained :class:`scmm.SCMM`; ``mdata`` defaults to its attached data.
    groupby
        Column of ``mdata.obs`` with the clusters (default ``scmm_cluster``).
    features
        ``{modality: [features]}``; default the top ``n_markers`` Wilcoxon
        markers of each cluster (log-normalised counts), in cluster order.
    modalities
        Target modalities (default all of the model's).
    zscored
        z-score each feature across clusters (as the paper); False keeps the
        ratio total counts / total depth.
    max_cells_per_group
        The generated profiles decode at most this many seeded random cells
        (``seed``) of each cluster, the ratio being estimated on them (None:
        every cell); the original profile and the default markers (capped by
        :data:`MARKER_CELLS_PER_GROUP`) are not affected by it.

    Returns a dict: ``"<target>|original"``, ``"<target>|from_<source>"`` for
    every source modality (source == target is the reconstruction), each a
    clusters x features DataFrame, and ``"similarity"``: one row per generated
    table with ``target, source, kind`` ("reconstruction" / "cross-modal") and
    ``pearson_r`` between its z-scores and the original's, ``n_features``,
    ``n_clusters`` and ``cells_decoded`` (cells encoded and decoded for it).
    """
    mdata = mdata if mdata is not None else model.mdata
    if mdata is None:
        raise ValueError("no data: pass mdata or load the run with its results")
    if groupby not in mdata.obs:
        raise KeyError(f"obs[{groupby!r}] not found: cluster first (scmm.tl.cluster)")
    labels = mdata.obs[groupby].astype(str).to_numpy()
    groups = _group_order(np.unique(labels))
    if len(groups) < 2:
        raise ValueError("need at least two clusters for cluster x feature tables")
    targets = list(modalities) if modalities is not None else list(model.names)
    cells = subsample(labels, max_cells_per_group, seed)
    latents = {s: model.encode(s, _at(mdata.mod[s], cells)) for s in model.names}
    n_decoded = len(labels) if cells is None else len(cells)
    out, similarity = {}, []
    for target in targets:
        adata = mdata.mod[target]
        if features and target in features:
            feats = [str(f) for f in features[target]]
        else:
            table = markers(mdata, target, groupby=groupby, n=n_markers, seed=seed)
            feats = marker_features(table, n_markers)
        name_index = {str(v): i for i, v in enumerate(model.feature_names[target])}
        missing = [f for f in feats if f not in name_index]
        if missing:
            raise KeyError(f"features not in the model's {target!r} features: {missing[:5]}")
        idx = np.array([name_index[f] for f in feats], dtype=int)
        counts = sp.csr_matrix(adata.X, dtype=np.float32)
        if LIBRARY_KEY in adata.obs:
            library = adata.obs[LIBRARY_KEY].to_numpy(dtype=np.float64)
        else:
            library = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        data_index = {str(v): i for i, v in enumerate(adata.var_names)}
        original = cluster_profile(counts[:, [data_index[f] for f in feats]], library, labels,
                                   groups, feats)
        tables = {"original": original}
        for source in model.names:
            tables[f"from_{source}"] = _generated_profile(
                model, target, latents[source], idx, _at(library.astype(np.float32), cells),
                _at(labels, cells), groups, feats)
        zs = {k: zscore(v) for k, v in tables.items()}
        for key, value in (zs if zscored else tables).items():
            out[f"{target}|{key}"] = value
        for source in model.names:
            a, b = zs["original"].to_numpy().ravel(), zs[f"from_{source}"].to_numpy().ravel()
            r = pearson(a, b)
            similarity.append({"target": target, "source": source,
                               "kind": "reconstruction" if source == target else "cross-modal",
                               "pearson_r": r, "n_features": len(feats), "n_clusters": len(groups),
                               "cells_decoded": n_decoded})
    out["similarity"] = pd.DataFrame(similarity)
    return out
