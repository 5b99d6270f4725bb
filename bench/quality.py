"""Quality on real data, beside simple baselines computed in the same run.

CITE-seq (pbmc10k_cite): RNA -> protein on the held-out 20 % of cells;
median per-protein Pearson r and median per-cell SSE of CLR values, for scMM
and for a k-nearest-neighbour regressor (k = 20 on 50 PCs of log-normalised
RNA, fitted on the same training cells, averaging the neighbours' CLR values).

RNA + ATAC (snare_cortex): ARI and NMI of Leiden clusters (PhenoGraph graph)
on the joint latent against obs["cell_type"], beside Leiden on 50 PCs of RNA.

    python bench/quality.py --dataset cite            # paper CITE-seq preset
    python bench/quality.py --dataset snare           # paper RNA+ATAC preset
    python bench/quality.py --dataset cite --preset cite-large-batch
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsRegressor

import scmm
from scmm.tl.clustering import cluster
from scmm.tl.metrics import clr, pearson_per_feature

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OUT = Path(__file__).resolve().parent / "out"


def lognorm_pcs(counts, train_mask, n_pcs=50, seed=0):
    """50 PCs of log-normalised counts, the PCA fitted on the training cells."""
    x = counts.toarray()
    lib = x.sum(1, keepdims=True)
    x = np.log1p(x / np.maximum(lib, 1) * 1e4)
    pca = PCA(n_components=n_pcs, random_state=seed).fit(x[train_mask])
    return pca.transform(x)


def train_model(mdata, args):
    model = scmm.SCMM(mdata, preset=args.preset, device=args.device)
    tic = time.perf_counter()
    result = model.train(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         progress=True)
    return model, result, time.perf_counter() - tic


def bench_cite(args) -> dict:
    mdata = scmm.read(DATA / "pbmc10k_cite" / "pbmc10k_cite.h5mu")
    scmm.preprocess(mdata, seed=args.seed)
    model, result, seconds = train_model(mdata, args)
    test = (mdata.obs["scmm_split"] == "test").to_numpy()
    observed = clr(mdata["prot"].X[test])
    predicted = model.predict("prot", from_modality="rna", adata=mdata["rna"][test].copy()).X

    pcs = lognorm_pcs(mdata["rna"].X, ~test, seed=args.seed)
    knn = KNeighborsRegressor(n_neighbors=20).fit(pcs[~test], clr(mdata["prot"].X[~test]))
    knn_pred = knn.predict(pcs[test])

    def summary(pred_clr):
        r = pearson_per_feature(pred_clr, observed)
        sse = ((pred_clr - observed) ** 2).sum(1)
        return {"median_protein_pearson": float(np.nanmedian(r)), "median_cell_clr_sse": float(np.median(sse))}

    return {"dataset": "pbmc10k_cite", "preset": model.preset, "epochs_run": len(result["history"]),
            "best_epoch": result["best_epoch"], "train_seconds": round(seconds, 1),
            "n_test_cells": int(test.sum()), "scmm": summary(clr(predicted)), "knn_k20_pca50": summary(knn_pred)}


def bench_snare(args) -> dict:
    mdata = scmm.read(DATA / "snare_cortex" / "snare_cortex.h5mu")
    scmm.preprocess(mdata, seed=args.seed)
    model, result, seconds = train_model(mdata, args)
    model.get_latent()
    labels = mdata.obs["cell_type"].astype(str).to_numpy()
    train = (mdata.obs["scmm_split"] == "train").to_numpy()
    mdata.obsm["X_pca_rna"] = lognorm_pcs(mdata["rna"].X, train, seed=args.seed)
    scores = {}
    for name, rep in (("scmm_joint", "X_scmm"), ("rna_pca50", "X_pca_rna")):
        found = cluster(mdata, use_rep=rep, key_added=f"leiden_{name}", seed=args.seed).astype(str)
        scores[name] = {"ARI": float(adjusted_rand_score(labels, found)),
                        "NMI": float(normalized_mutual_info_score(labels, found)),
                        "n_clusters": int(found.nunique())}
    return {"dataset": "snare_cortex", "preset": model.preset, "epochs_run": len(result["history"]),
            "best_epoch": result["best_epoch"], "train_seconds": round(seconds, 1), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["cite", "snare", "both"], default="both")
    parser.add_argument("--preset", default=None, help="default: the paper's preset for the data")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    results = []
    if args.dataset in ("cite", "both"):
        results.append(bench_cite(args))
    if args.dataset in ("snare", "both"):
        results.append(bench_snare(args))
    OUT.mkdir(exist_ok=True)
    tag = f"{args.dataset}-{args.preset or 'paper'}-bs{args.batch_size or 'preset'}-seed{args.seed}"
    (OUT / f"quality-{tag}.json").write_text(json.dumps(results, indent=1))
    for res in results:
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
