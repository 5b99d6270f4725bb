"""A synthetic, analysed run folder for tests and benchmarks (no model, no torch).

It has the files the pages read — ``config.json``, ``results.h5mu`` (latents,
UMAPs, clusters), ``traversal.npz``/``.json`` and ``analysis/`` heatmap
tables — with random but well-formed contents, at any number of cells.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp


def make_run(path: str | Path, n_cells: int = 2000, n_genes: int = 300, n_prots: int = 20,
             latent_dim: int = 10, n_clusters: int = 8, seed: int = 0) -> Path:
    """Write a synthetic analysed run with modalities ``rna`` and ``prot`` into ``path``."""
    import anndata as ad
    import mudata as md
    from scmm.tl.traversal import Traversal
    md.set_options(pull_on_update=False)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clusters = rng.integers(0, n_clusters, n_cells)
    centres = rng.normal(0, 6, (n_clusters, 2))
    cells = [f"cell{i:06d}" for i in range(n_cells)]
    genes = [f"G{i:04d}" for i in range(n_genes)]
    prots = [f"P{i:02d}" for i in range(n_prots)]
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{c % 5}" for c in clusters])}, index=cells)
    density = min(0.1, 4e6 / (n_cells * n_genes))  # at most ~4M non-zeros
    if n_cells * n_genes <= 10**9:
        rna = sp.random(n_cells, n_genes, density=density, format="csr", random_state=seed, dtype=np.float32)
    else:  # sp.random draws positions without replacement from all n x g (32 GB at 1M x 4,000)
        nnz = int(density * n_cells * n_genes)
        rna = sp.csr_matrix((rng.random(nnz, dtype=np.float32), (rng.integers(0, n_cells, nnz),
                                                                 rng.integers(0, n_genes, nnz))),
                            shape=(n_cells, n_genes))
    rna.data = np.ceil(rna.data * 10)
    prot = rng.poisson(5, (n_cells, n_prots)).astype(np.float32)
    mods = {"rna": ad.AnnData(rna, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)),
            "prot": ad.AnnData(sp.csr_matrix(prot), obs=pd.DataFrame(index=cells),
                               var=pd.DataFrame(index=prots))}
    for m, a in mods.items():
        a.obs["scmm_library"] = np.asarray(a.X.sum(axis=1)).ravel().astype(np.float32) + 1
    mdata = md.MuData(mods)
    mdata.obs["cell_type"] = obs["cell_type"]
    mdata.obs["scmm_cluster"] = pd.Categorical(clusters.astype(str))
    latent = rng.normal(0, 1, (n_cells, latent_dim)).astype(np.float32)
    for suffix in ("", "_rna", "_prot"):
        mdata.obsm[f"X_scmm{suffix}"] = latent + rng.normal(0, 0.1, latent.shape).astype(np.float32)
        mdata.obsm[f"X_umap_scmm{suffix}"] = (centres[clusters] + rng.normal(0, 1, (n_cells, 2))).astype(np.float32)
    mdata.write(path / "results.h5mu")
    history = [{"epoch": e, "train_loss": 100.0 / e, "test_loss": 110.0 / e, "beta": 1.0, "seconds": 1.0}
               for e in range(1, 6)]
    names = {"rna": genes, "prot": prots}
    specs = [{"name": m, "n_features": len(f), "likelihood": "nb", "hidden": [16]} for m, f in names.items()]
    (path / "config.json").write_text(json.dumps({
        "modalities": {"rna": "nb", "prot": "nb"}, "preset": "cite", "latent_dim": latent_dim,
        "posterior_scale": "softplus", "log_input": True, "specs": specs, "feature_names": names,
        "median_library": {"rna": 100.0, "prot": 90.0}, "settings": {"preset": "cite", "latent_dim": latent_dim}, "history": history,
        "status": "completed"}))
    (path / "model.pt").write_bytes(b"")  # never loaded by the pages
    (path / "progress.json").write_text(json.dumps({"status": "done", "epoch": 5, "epochs": 5,
                                                    "history": history}))
    _traversal(Traversal, path, rng, latent_dim, {"rna": genes, "prot": prots})
    _tables(path, rng, n_clusters, {"rna": genes[:12], "prot": prots[:8]})
    return path


def _traversal(Traversal, path, rng, D, features):
    steps = np.arange(-10, 11) * 0.5
    means, rho, pval, edges = {}, {}, {}, {}
    for m, names in features.items():
        F = len(names)
        slope = rng.normal(0, 0.6, (D, F))
        base = rng.uniform(0.5, 5, F)
        means[m] = base[None, None, :] * np.exp(slope[:, None, :] * steps[None, :, None] / 5)
        rho[m] = np.tanh(slope * 3)
        pval[m] = 10 ** (-np.abs(slope) * 40)
        edges[m] = means[m][:, [4, 16], :]
    trav = Traversal(steps, np.full(D, 1.4), means, rho, pval, np.tile([-2.0, 2.0], (D, 1)), edges,
                     features, {"rna": "rna", "prot": "protein"}, {"rna": 1e4, "prot": 1e3})
    trav.save(path / "traversal.npz")


def _tables(path, rng, n_clusters, features):
    folder = path / "analysis"
    folder.mkdir(exist_ok=True)
    keys, sims = [], []
    index = pd.Index([str(c) for c in range(n_clusters)], name="cluster")
    for target, names in features.items():
        original = pd.DataFrame(rng.normal(size=(n_clusters, len(names))), index=index, columns=names)
        for source in features:
            kind = f"from_{source}"
            table = original + rng.normal(0, 0.3, original.shape)
            table.to_csv(folder / f"heatmap_{target}_{kind}.csv")
            keys.append(f"{target}|{kind}")
            sims.append({"target": target, "source": source,
                         "kind": "reconstruction" if source == target else "cross-modal",
                         "pearson_r": 0.9, "n_features": len(names), "n_clusters": n_clusters})
        original.to_csv(folder / f"heatmap_{target}_original.csv")
        keys.append(f"{target}|original")
    pd.DataFrame(sims).to_csv(folder / "heatmap_similarity.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"heatmap_tables": keys}))
