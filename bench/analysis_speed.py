"""Speed of the analyses (scmm.tl) at 10,000 cells and when the cell count doubles twice.

    python bench/analysis_speed.py [--cells 10000] [--doublings 2] [--epochs 5] [--no-heatmap]

A model is trained briefly on the demo data (2,000 cells); the benchmark data
are 10,000 simulated cells, doubled by appending a copy whose counts are
Poisson-resampled (cells replicated with noise), so latents, clusters and
tables are computed on real counts at every size.  Timed (seconds, wall clock):

- traversal, all dims: decoding 10 dims x 21 points (+ the occupied-range ends) for
  both modalities and the Spearman statistics (no cache);
- threshold change: reading the cached traversal back and listing the associated
  features of every dim and modality at a new p-value (what the app does);
- UMAP (joint latent), umap-learn, seeded (single thread);
- clustering: kNN graph (k = 20), Jaccard weights, Leiden;
- heatmap: Wilcoxon markers + original/reconstructed/cross-modal tables, both modalities.

UMAP's numba compilation is done once before timing (reported separately).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scmm  # noqa: E402
from scmm.tl import cluster, heatmap_tables, traverse, umap  # noqa: E402
from scmm.tl.traversal import Traversal  # noqa: E402
from scmm.tl.umaps import run_umap  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def doubled(mdata: md.MuData, seed: int) -> md.MuData:
    """``mdata`` followed by a copy of its cells with Poisson-resampled counts."""
    rng = np.random.default_rng(seed)
    mods = {}
    for name, adata in mdata.mod.items():
        X = sp.csr_matrix(adata.X)
        noisy = X.copy()
        noisy.data = rng.poisson(noisy.data).astype(np.float32)
        noisy.eliminate_zeros()
        obs = pd.DataFrame(index=[f"{o}-r{seed}" for o in adata.obs_names])
        mods[name] = ad.AnnData(sp.vstack([X, noisy]).tocsr(),
                                obs=pd.DataFrame(index=list(map(str, adata.obs_names)) + list(obs.index)),
                                var=adata.var[[]].copy())
    out = md.MuData(mods)
    out.obs["cell_type"] = np.concatenate([mdata.obs["cell_type"].astype(str).to_numpy()] * 2)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--doublings", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--no-heatmap", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default torch's; 1 is far faster on a busy 2-core machine)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; CPUs visible: {len(__import__('os').sched_getaffinity(0))}")

    train = scmm.demo.simulate(n_cells=2000, seed=0)
    scmm.preprocess(train)
    model = scmm.SCMM(train, device="cpu")
    t_train, _ = timed(lambda: model.train(epochs=args.epochs, progress=False))
    print(f"model trained on 2,000 demo cells, {args.epochs} epochs: {t_train:.1f} s")
    # 5,000 points: past umap-learn's exact-neighbour cut-off, so pynndescent is compiled too
    t_jit, _ = timed(lambda: run_umap(np.random.default_rng(0).normal(size=(5000, 10))))
    print(f"UMAP warm-up (numba compilation): {t_jit:.1f} s\n")

    data = scmm.demo.simulate(n_cells=args.cells, seed=1)
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="scmm-bench-"))
    for step in range(args.doublings + 1):
        if step:
            data = doubled(data, seed=step)
        n = data.n_obs
        for m in model.names:
            data.mod[m].obs["scmm_library"] = np.asarray(data.mod[m].X.sum(axis=1)).ravel()
        t_lat, lat = timed(lambda: model.get_latent(data))
        run = workdir / f"n{n}"
        t_trav, trav = timed(lambda: traverse(model, run_dir=run, latent=lat["X_scmm"]))

        def threshold_change():
            loaded = Traversal.load(run / "traversal.npz")
            return sum(len(loaded.associated(d, mm, pvalue=1e-6))
                       for d in range(loaded.n_dims) for mm in loaded.modalities)
        t_thr, n_assoc = timed(threshold_change)
        t_umap, _ = timed(lambda: umap(data, keys=["X_scmm"]))
        t_clu, labels = timed(lambda: cluster(data))
        row = {"cells": n, "latents (encode)": t_lat, "traversal, all dims": t_trav,
               "threshold change (cached)": t_thr, "UMAP (joint)": t_umap, "clustering (Leiden)": t_clu}
        if not args.no_heatmap:
            t_hm, _ = timed(lambda: heatmap_tables(model, data))
            row["heatmap tables"] = t_hm
        rows.append(row)
        print(f"{n:>7,} cells: " + ", ".join(f"{k} {v:.3f}s" for k, v in row.items() if k != "cells")
              + f"  [{labels.cat.categories.size} clusters, {n_assoc} associations at p<1e-6]",
              flush=True)

    table = pd.DataFrame(rows).set_index("cells").T
    table.columns = [f"{c:,} cells (s)" for c in table.columns]
    if len(rows) > 1:
        first, last = table.columns[0], table.columns[-1]
        table[f"x{rows[-1]['cells'] // rows[0]['cells']} cells: time ratio"] = table[last] / table[first]
    print()
    with pd.option_context("display.width", 140, "display.float_format", "{:.3f}".format):
        print(table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
