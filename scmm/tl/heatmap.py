"""Cluster x feature tables (the paper's heatmaps) and marker ranking with scanpy's Wilcoxon test.

For every modality m and cluster c, the table value of feature f is the
cluster's total counts of f divided by the cluster's total depth (sum of the
cells' library sizes in m), z-scored across clusters.  It is computed for the
observed counts ("original"), for the reconstruction from m itself, and for
the generation from every other modality (cross-modal); a similarity table
gives the Pearson r between the original z-scores and each generated table.
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


def lognorm(adata: ad.AnnData, target_sum: float = 1e4) -> ad.AnnData:
    """A copy of ``adata`` with X = log1p(counts / library x ``target_sum``) (CSR float32)."""
    X = normalise.lognorm(sp.csr_matrix(adata.X), target_sum=target_sum)
    return ad.AnnData(X, obs=pd.DataFrame(index=[str(o) for o in adata.obs_names]),
                      var=pd.DataFrame(index=[str(v) for v in adata.var_names]))


def _rank(adata: ad.AnnData, labels: pd.Series, groups, reference: str) -> pd.DataFrame:
    import scanpy as sc
    adata.obs["_group"] = pd.Categorical(labels.astype(str).to_numpy())
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


def markers(mdata, modality: str, groupby: str = CLUSTER_KEY, n: int | None = 5) -> pd.DataFrame:
    """Top marker features of each group (cluster) in ``modality``: one-vs-rest Wilcoxon.

    On log-normalised counts (log1p(counts / library x 1e4)).  Columns: ``group,
    feature, score, log2_fc, pvalue, pvalue_adj``; ``n`` per group (None: all),
    best first.
    """
    if groupby not in mdata.obs:
        raise KeyError(f"obs[{groupby!r}] not found: cluster first (scmm.tl.cluster)")
    labels = mdata.obs[groupby].astype(str)
    if labels.nunique() < 2:
        raise ValueError(f"obs[{groupby!r}] has a single group; markers need at least two")
    adata = lognorm(mdata.mod[modality])
    table = _rank(adata, labels.reindex(adata.obs_names), "all", "rest")
    table = table.sort_values(["group", "score"], ascending=[True, False], kind="stable")
    if n is not None:
        table = table.groupby("group", sort=False, observed=True).head(int(n))
    order = _group_order(table["group"].unique())
    table["group"] = pd.Categorical(table["group"], categories=order)
    return table.sort_values(["group", "score"], ascending=[True, False]).reset_index(drop=True)


def marker_features(table: pd.DataFrame, n: int) -> list[str]:
    """The top ``n`` features of each group of a :func:`markers` table, in group order, unique."""
    top = table.groupby("group", sort=True, observed=True).head(int(n))
    return list(dict.fromkeys(top["feature"].astype(str)))


def _group_order(groups) -> list[str]:
    groups = [str(g) for g in groups]
    return sorted(groups, key=lambda g: (0, int(g)) if g.isdigit() else (1, g))


def rank_features(mdata, modality: str, cells_mask, n: int | None = None) -> pd.DataFrame:
    """Features of ``modality`` ranked for a selection of cells against all other cells.

    ``cells_mask``: boolean array over cells, or a list of cell names (e.g. a
    lasso selection).  Wilcoxon rank-sum (scanpy) on log-normalised counts;
    columns ``feature, score, log2_fc, pvalue, pvalue_adj``, most enriched first.
    """
    adata = lognorm(mdata.mod[modality])
    mask = np.asarray(cells_mask)
    if mask.dtype != bool:
        mask = adata.obs_names.isin([str(c) for c in mask])
    if mask.shape != (adata.n_obs,):
        raise ValueError(f"cells_mask has {mask.shape[0]} entries for {adata.n_obs} cells")
    if mask.sum() < 2 or (~mask).sum() < 2:
        raise ValueError("need at least 2 selected and 2 unselected cells to rank features")
    labels = pd.Series(np.where(mask, "selection", "rest"), index=adata.obs_names)
    table = _rank(adata, labels, ["selection"], "rest").drop(columns="group", errors="ignore")
    table = table.sort_values("score", ascending=False).reset_index(drop=True)
    return table.head(int(n)) if n is not None else table


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


def _generated_profile(model, target, source, mdata, feature_idx, library, labels, groups,
                       features, batch_size=4096):
    """Cluster profile of ``target`` generated from ``source`` (NB/ZINB means), decoded in chunks."""
    z = model.encode(source, mdata)
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
                   zscored: bool = True) -> dict[str, pd.DataFrame]:
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

    Returns a dict: ``"<target>|original"``, ``"<target>|from_<source>"`` for
    every source modality (source == target is the reconstruction), each a
    clusters x features DataFrame, and ``"similarity"``: one row per generated
    table with ``target, source, kind`` ("reconstruction" / "cross-modal") and
    ``pearson_r`` between its z-scores and the original's.
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
    out, similarity = {}, []
    for target in targets:
        adata = mdata.mod[target]
        if features and target in features:
            feats = [str(f) for f in features[target]]
        else:
            feats = marker_features(markers(mdata, target, groupby=groupby, n=n_markers), n_markers)
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
            tables[f"from_{source}"] = _generated_profile(model, target, source, mdata, idx,
                                                          library.astype(np.float32), labels,
                                                          groups, feats)
        zs = {k: zscore(v) for k, v in tables.items()}
        for key, value in (zs if zscored else tables).items():
            out[f"{target}|{key}"] = value
        for source in model.names:
            a, b = zs["original"].to_numpy().ravel(), zs[f"from_{source}"].to_numpy().ravel()
            r = pearson(a, b)
            similarity.append({"target": target, "source": source,
                               "kind": "reconstruction" if source == target else "cross-modal",
                               "pearson_r": r, "n_features": len(feats), "n_clusters": len(groups)})
    out["similarity"] = pd.DataFrame(similarity)
    return out
