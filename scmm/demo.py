"""The built-in demo dataset: a simulated CITE-seq experiment with known cell types.

Cells of seven PBMC-like types get RNA counts from a negative binomial around
type-specific expression profiles (named marker genes plus random programs)
and surface-protein counts from a negative binomial around type-specific
antibody levels over a background.  A continuous "activation" programme runs
through the T cells so that the latent space has a gradient as well as clusters.
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

# cell type: (share of cells, marker genes, high proteins)
CELL_TYPES = {
    "CD4 T": (0.28, ["CD3E", "CD3D", "CD4", "IL7R", "CCR7"], ["CD3", "CD4", "CD45RA", "CD127"]),
    "CD8 T": (0.16, ["CD3E", "CD3D", "CD8A", "CD8B", "GZMK"], ["CD3", "CD8a", "CD45RA"]),
    "NK": (0.10, ["NKG7", "GNLY", "KLRD1", "PRF1", "NCAM1"], ["CD56", "CD16"]),
    "B": (0.14, ["MS4A1", "CD19", "CD79A", "CD79B", "PAX5"], ["CD19", "CD20", "HLA-DR"]),
    "CD14 Mono": (0.20, ["CD14", "LYZ", "S100A8", "S100A9", "FCN1"], ["CD14", "CD11b", "HLA-DR"]),
    "CD16 Mono": (0.07, ["FCGR3A", "MS4A7", "LST1", "AIF1", "IFITM3"], ["CD16", "CD11b", "HLA-DR"]),
    "DC": (0.05, ["FCER1A", "CST3", "CLEC10A", "CD1C", "IRF8"], ["HLA-DR", "CD11c", "CD123"]),
}
ACTIVATION_GENES = ["CD69", "IFNG", "TNFRSF9", "HLA-DRA", "MKI67"]
ACTIVATION_PROTEINS = ["CD69", "CD25", "CD30"]


def _protein_names() -> list[str]:
    names = sorted({p for _, _, prots in CELL_TYPES.values() for p in prots})
    return names + ACTIVATION_PROTEINS + ["IgG1-isotype"]


def _gene_names(n_genes: int) -> list[str]:
    named = sorted({g for _, genes, _ in CELL_TYPES.values() for g in genes}) + ACTIVATION_GENES
    return named + [f"GENE{i:04d}" for i in range(n_genes - len(named))]


def _nb(rng, mean, theta):
    return rng.poisson(rng.gamma(theta, mean / theta)).astype(np.float32)


def simulate(n_cells: int = 3000, n_genes: int = 2000, seed: int = 0) -> md.MuData:
    """A MuData with mods ``rna`` and ``prot`` of raw counts and ``obs['cell_type']``."""
    rng = np.random.default_rng(seed)
    types = list(CELL_TYPES)
    shares = np.array([CELL_TYPES[t][0] for t in types])
    labels = rng.choice(len(types), size=n_cells, p=shares / shares.sum())
    is_t = np.isin(np.array(types)[labels], ["CD4 T", "CD8 T"])
    activation = np.where(is_t, rng.beta(1.2, 3.0, n_cells), 0.0)

    genes = _gene_names(n_genes)
    gene_index = {g: i for i, g in enumerate(genes)}
    base = rng.normal(0.0, 1.2, n_genes)
    type_logit = np.tile(base, (len(types), 1))
    for k, t in enumerate(types):
        type_logit[k, [gene_index[g] for g in CELL_TYPES[t][1]]] += 4.0
        program = rng.choice(np.arange(len(genes) // 10, n_genes), 60, replace=False)
        type_logit[k, program] += rng.normal(1.5, 0.5, 60)
    act_idx = [gene_index[g] for g in ACTIVATION_GENES]
    logits = type_logit[labels]
    logits[:, act_idx] += 5.0 * activation[:, None]
    prop = np.exp(logits - logits.max(1, keepdims=True))
    prop /= prop.sum(1, keepdims=True)
    rna_lib = rng.lognormal(np.log(3000), 0.35, n_cells)
    rna = _nb(rng, prop * rna_lib[:, None], theta=3.0)

    prots = _protein_names()
    prot_index = {p: i for i, p in enumerate(prots)}
    level = np.full((len(types), len(prots)), 1.0)
    for k, t in enumerate(types):
        level[k, [prot_index[p] for p in CELL_TYPES[t][2]]] = rng.uniform(15, 40, len(CELL_TYPES[t][2]))
    prot_level = level[labels]
    prot_level[:, [prot_index[p] for p in ACTIVATION_PROTEINS]] += 30.0 * activation[:, None]
    prot_lib = rng.lognormal(np.log(25.0), 0.3, n_cells)
    prot = _nb(rng, prot_level * prot_lib[:, None], theta=8.0)

    barcodes = [f"SIM{i:06d}" for i in range(n_cells)]
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.array(types)[labels], categories=types),
                        "activation": activation.astype(np.float32)}, index=barcodes)
    mods = {
        "rna": ad.AnnData(sp.csr_matrix(rna), obs=obs.copy(), var=pd.DataFrame(index=genes)),
        "prot": ad.AnnData(sp.csr_matrix(prot), obs=obs.copy(), var=pd.DataFrame(index=prots)),
    }
    mdata = md.MuData(mods)
    mdata.obs["cell_type"] = obs["cell_type"]
    mdata.obs["activation"] = obs["activation"]
    mdata.uns["scmm_demo"] = {"n_cells": n_cells, "n_genes": n_genes, "seed": seed}
    return mdata


def write_demo(path: str | Path, n_cells: int = 3000, seed: int = 0) -> Path:
    """Simulate the demo dataset and write it as ``.h5mu`` (kept if it already exists)."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        simulate(n_cells=n_cells, seed=seed).write(tmp)
        tmp.replace(path)
    return path
