"""Feature selection, train/test split and library sizes with the paper's defaults."""
from __future__ import annotations

import re
import warnings

import mudata as md
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from .options import validate_preprocess_options
from .runfolder import LIBRARY_KEY, SPLIT_KEY

RNA_NAMES = ("rna", "gex", "gene expression", "genes")
ATAC_NAMES = ("atac", "peaks", "chromatin", "accessibility")


def modality_kind(name, adata=None) -> str:
    """'rna', 'atac' or 'protein' (any other name is treated like a protein panel).

    ``name`` is a modality name or its AnnData; with an AnnData (as ``name`` or
    ``adata``) the kind that :func:`scmm.read` stored in ``uns['scmm_kind']``
    (given by the user, or recognised from the name / the features) wins.  A
    name says its kind when it is one of the RNA / ATAC names, or one of them
    followed by ``_<digits>`` (``rna_2``: names made unique by :func:`scmm.read`).
    """
    if adata is None and not isinstance(name, str) and hasattr(name, "uns"):
        name, adata = None, name
    if adata is not None:
        stored = str(adata.uns.get("scmm_kind", "")).lower()
        if stored in ("rna", "atac", "protein"):
            return stored
    if name is None:
        return "protein"
    low = str(name).lower()
    base = re.sub(r"_\d+$", "", low)
    if low in RNA_NAMES or base in RNA_NAMES:
        return "rna"
    if low in ATAC_NAMES or base in ATAC_NAMES:
        return "atac"
    return "protein"


def select_variable_genes(adata, n_top: int = 5000) -> np.ndarray:
    """Boolean mask of the ``n_top`` most variable genes (Seurat v3 flavour, on counts)."""
    if adata.n_vars <= n_top:
        return np.ones(adata.n_vars, dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat_v3",
                                            inplace=False)
    return table["highly_variable"].to_numpy()


def select_top_peaks(adata, fraction: float = 0.25) -> np.ndarray:
    """Boolean mask of the top ``fraction`` of peaks by total counts (Signac's FindTopFeatures)."""
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    n_keep = max(1, int(round(fraction * adata.n_vars)))
    keep = np.zeros(adata.n_vars, dtype=bool)
    keep[np.argsort(-totals, kind="stable")[:n_keep]] = True
    return keep


def train_test_split(n_cells: int, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Array of 'train' / 'test' labels, a seeded random ``test_fraction`` of cells in test."""
    rng = np.random.default_rng(seed)
    labels = np.full(n_cells, "train", dtype=object)
    n_test = int(round(test_fraction * n_cells))
    labels[rng.permutation(n_cells)[:n_test]] = "test"
    return labels


def preprocess(mdata: md.MuData, n_top_genes: int | None = 5000, peak_fraction: float | None = 0.25,
               test_fraction: float = 0.2, seed: int = 0, kinds: dict | None = None) -> md.MuData:
    """Prepare a MuData of raw counts for scMM, in place; returns it.

    - RNA: the ``n_top_genes`` most variable genes (None keeps all);
    - ATAC: the top ``peak_fraction`` of peaks by total counts (None keeps all);
    - proteins (any other modality): all features;
    - ``obs['scmm_split']``: a seeded 80/20 train/test split (``test_fraction`` in [0, 0.9]);
    - ``mod[m].obs['scmm_library']``: each cell's total counts over the kept features.

    Cells left with no counts in a modality after selection are dropped with a
    warning.  ``kinds`` maps a modality name to 'rna' / 'atac' / 'protein'
    where its name does not say it.  ``n_top_genes`` >= 1 and ``peak_fraction`` in
    (0, 1] when given; a value out of range raises ``ValueError`` naming it.
    The selection is recorded in ``uns['scmm_preprocess']``.
    """
    validate_preprocess_options(test_fraction=test_fraction, n_top_genes=n_top_genes,
                                peak_fraction=peak_fraction)
    kinds = {name: (kinds or {}).get(name, modality_kind(name, mdata.mod[name])) for name in mdata.mod}
    for name, adata in list(mdata.mod.items()):
        if kinds[name] == "rna" and n_top_genes is not None:
            keep = select_variable_genes(adata, n_top_genes)
        elif kinds[name] == "atac" and peak_fraction is not None:
            keep = select_top_peaks(adata, peak_fraction)
        else:
            keep = np.ones(adata.n_vars, dtype=bool)
        mdata.mod[name] = adata[:, keep].copy()
    mdata.update()

    empty = np.zeros(mdata.n_obs, dtype=bool)
    for name, adata in mdata.mod.items():
        adata.X = sp.csr_matrix(adata.X)
        empty |= np.asarray(adata.X.sum(axis=1)).ravel() == 0
    if empty.all():
        raise ValueError("after feature selection no cell has counts in every modality")
    if empty.any():
        warnings.warn(f"dropped {int(empty.sum())} of {mdata.n_obs} cells with no counts in a "
                      "modality after feature selection", UserWarning, stacklevel=2)
        for name in list(mdata.mod):
            mdata.mod[name] = mdata.mod[name][~empty].copy()
        mdata.update()

    for adata in mdata.mod.values():
        adata.obs[LIBRARY_KEY] = np.asarray(adata.X.sum(axis=1)).ravel().astype(np.float32)
    mdata.obs[SPLIT_KEY] = train_test_split(mdata.n_obs, test_fraction, seed)
    mdata.uns["scmm_preprocess"] = {
        "n_top_genes": -1 if n_top_genes is None else int(n_top_genes),
        "peak_fraction": -1.0 if peak_fraction is None else float(peak_fraction),
        "test_fraction": float(test_fraction), "seed": int(seed),
        "kinds": dict(kinds),
    }
    return mdata
