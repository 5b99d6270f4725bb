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
    python bench/quality.py --dataset both --precision bf16   # beside --precision fp32 (issue 12)

Small data (issue 15): ``--sizes 1000,2000,5000 --seeds 0,1,2`` subsamples
each dataset to those many cells (seeded) and reports, for each size and
seed, Leiden ARI / NMI against reference labels of the joint latent, of each
modality's own latent and of three baselines on the same cells (RNA PCA50;
RNA PCA50 + CLR protein, or RNA PCA50 + ATAC LSI50; the modality latents),
and for CITE-seq protein-from-RNA median r on the test split beside kNN.

Reference labels: snare_cortex's 23 published types; pbmc10k_cite has none,
so cells are gated on CLR protein (:func:`protein_gates`; a 2-component
Gaussian mixture per marker decides positive / negative): CD4 T, CD8 T, B,
CD14 monocytes, CD16 monocytes, NK; cells matching no gate or several are
left out of the ARI.  Protein-derived labels favour representations that
include the protein (the concatenation baseline uses it directly).

    python bench/quality.py --dataset both --sizes 1000,2000,5000 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsRegressor

import scmm
from scmm.tl.clustering import cluster
from scmm.tl.metrics import clr, pearson_per_feature

DATA = Path(os.environ.get("SCMM_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
OUT = Path(__file__).resolve().parent / "out"


def lognorm_pcs(counts, train_mask, n_pcs=50, seed=0):
    """50 PCs of log-normalised counts, the PCA fitted on the training cells."""
    x = counts.toarray()
    lib = x.sum(1, keepdims=True)
    x = np.log1p(x / np.maximum(lib, 1) * 1e4)
    pca = PCA(n_components=n_pcs, random_state=seed).fit(x[train_mask])
    return pca.transform(x)


def train_model(mdata, args, progress=True):
    model = scmm.SCMM(mdata, preset=args.preset, device=args.device, latent_dim=args.latent_dim,
                      posterior_scale=args.posterior_scale, encoder_dropout=args.encoder_dropout)
    tic = time.perf_counter()
    result = model.train(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         progress=progress, precision=args.precision)
    return model, result, time.perf_counter() - tic


def saved_model(run, mdata):
    """A run saved by ``--save-runs``, checked to hold ``mdata``'s cells and split, as ``train_model``
    returns it (no training time)."""
    model = scmm.SCMM.load(run)
    if model.mdata is None or list(model.mdata.obs_names) != list(mdata.obs_names):
        raise SystemExit(f"{run} does not hold the same cells as this subsample")
    if not (model.mdata.obs["scmm_split"].astype(str) == mdata.obs["scmm_split"].astype(str)).all():
        raise SystemExit(f"{run} has another train/test split than this subsample")
    return model, {"history": model.history, "best_epoch": None, "status": model.status}, None


def protein_gates(prot_counts, names, seed=0) -> np.ndarray:
    """Reference cell types of a PBMC CITE-seq set gated on CLR protein ("" when no single gate fits)."""
    x = clr(prot_counts)
    col = {n: i for i, n in enumerate(names)}
    pos = {}
    for marker in ("CD3", "CD4", "CD8a", "CD19", "CD14", "CD16", "CD56"):
        v = x[:, col[marker]].reshape(-1, 1)
        gmm = GaussianMixture(2, random_state=seed).fit(v)
        high = int(np.argmax(gmm.means_.ravel()))
        pos[marker] = gmm.predict(v) == high
    gates = {
        "CD4 T": pos["CD3"] & pos["CD4"] & ~pos["CD8a"] & ~pos["CD19"],
        "CD8 T": pos["CD3"] & pos["CD8a"] & ~pos["CD4"] & ~pos["CD19"],
        "B": pos["CD19"] & ~pos["CD3"] & ~pos["CD14"],
        "CD14 mono": pos["CD14"] & ~pos["CD3"] & ~pos["CD19"] & ~pos["CD56"],
        "CD16 mono": pos["CD16"] & ~pos["CD14"] & ~pos["CD3"] & ~pos["CD56"] & ~pos["CD19"],
        "NK": pos["CD56"] & ~pos["CD3"] & ~pos["CD19"] & ~pos["CD14"],
    }
    labels = np.full(len(x), "", dtype=object)
    hits = np.zeros(len(x), dtype=int)
    for name, where in gates.items():
        labels[where] = name
        hits += where
    labels[hits != 1] = ""
    return labels


def lsi(counts, train_mask, n_comps=50, seed=0):
    """LSI of accessibility counts (TF-IDF, truncated SVD, first component dropped), fitted on training cells."""
    x = counts.tocsr().astype(np.float32)
    tf = x.multiply(1 / np.maximum(x.sum(1), 1)).tocsr()
    idf = x.shape[0] / np.maximum(np.asarray((x > 0).sum(0)).ravel(), 1)
    tfidf = tf.multiply(np.log1p(idf)).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    svd = TruncatedSVD(n_components=n_comps + 1, random_state=seed).fit(tfidf[train_mask])
    out = svd.transform(tfidf)[:, 1:]
    return out / np.maximum(out.std(0), 1e-8)


def scaled(x):
    """Columns scaled to unit variance, the block to unit total variance (for concatenating blocks)."""
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    return x / np.sqrt(x.shape[1])


def leiden_scores(mdata, reps: dict, labels, seed) -> dict:
    """ARI / NMI / cluster count of Leiden on each representation, against ``labels`` ("" left out)."""
    keep = labels != ""
    scores = {}
    for name, x in reps.items():
        mdata.obsm[f"X_bench_{name}"] = np.asarray(x, dtype=np.float32)
        found = cluster(mdata, use_rep=f"X_bench_{name}", key_added=f"leiden_{name}", seed=seed)
        found = found.astype(str).to_numpy()
        scores[name] = {"ARI": round(float(adjusted_rand_score(labels[keep], found[keep])), 3),
                        "NMI": round(float(normalized_mutual_info_score(labels[keep], found[keep])), 3),
                        "n_clusters": int(len(set(found)))}
    return scores


def resolution_sweep(mdata, reps: dict, labels, seed, resolutions) -> dict:
    """Leiden over a resolution grid on each representation (the scIB protocol): the ARI at the
    NMI-best resolution, the best ARI, and the ARI where the cluster count is nearest the label count."""
    keep = labels != ""
    n_types = len(set(labels[keep]))
    out = {}
    for name, x in reps.items():
        mdata.obsm[f"X_bench_{name}"] = np.asarray(x, dtype=np.float32)
        grid = []
        for res in resolutions:
            found = cluster(mdata, use_rep=f"X_bench_{name}", key_added=f"sweep_{name}", resolution=res,
                            seed=seed).astype(str).to_numpy()
            grid.append((res, adjusted_rand_score(labels[keep], found[keep]),
                         normalized_mutual_info_score(labels[keep], found[keep]), len(set(found))))
        by_nmi = max(grid, key=lambda g: g[2])
        by_count = min(grid, key=lambda g: (abs(g[3] - n_types), -g[0]))
        out[name] = {"ARI_at_best_NMI": round(by_nmi[1], 3), "resolution_best_NMI": by_nmi[0],
                     "ARI_best": round(max(g[1] for g in grid), 3),
                     "ARI_at_type_count": round(by_count[1], 3), "n_clusters_at_type_count": by_count[3],
                     "grid": [[g[0], round(g[1], 3), round(g[2], 3), g[3]] for g in grid]}
    return out


def bench_small(dataset: str, n_cells: int, args) -> dict:
    """One row of the small-data table: ``n_cells`` cells of ``dataset`` subsampled with ``args.seed``."""
    path = DATA / ("pbmc10k_cite/pbmc10k_cite.h5mu" if dataset == "cite" else "snare_cortex/snare_cortex.h5mu")
    full = scmm.read(path)
    rng = np.random.default_rng(args.seed)
    cells = np.sort(rng.choice(full.n_obs, size=min(n_cells, full.n_obs), replace=False))
    mdata = full[cells].copy()
    scmm.preprocess(mdata, seed=args.seed)
    other = "prot" if dataset == "cite" else "atac"
    labels = protein_gates(mdata["prot"].X, list(mdata["prot"].var_names), args.seed) if dataset == "cite" \
        else mdata.obs["cell_type"].astype(str).to_numpy()
    name = f"{dataset}-{n_cells}-seed{args.seed}"
    if args.from_runs:
        model, result, seconds = saved_model(Path(args.from_runs) / f"{name}{args.run_tag}", mdata)
    else:
        model, result, seconds = train_model(mdata, args, progress=False)
    latents = model.get_latent()
    if args.save_runs:
        model.save(Path(args.save_runs) / f"{name}{args.tag}")
    train = (mdata.obs["scmm_split"] == "train").to_numpy()
    test = ~train
    rna_pcs = lognorm_pcs(mdata["rna"].X, train, n_pcs=min(50, int(train.sum()) - 1), seed=args.seed)
    second = clr(mdata["prot"].X) if dataset == "cite" else lsi(mdata["atac"].X, train, seed=args.seed)
    reps = {"scmm_joint": latents["X_scmm"], "scmm_rna": latents["X_scmm_rna"],
            f"scmm_{other}": latents[f"X_scmm_{other}"],
            f"scmm_rna+{other}": np.hstack([latents["X_scmm_rna"], latents[f"X_scmm_{other}"]]),
            "rna_pca50": rna_pcs,
            f"rna_pca50+{'clr_prot' if dataset == 'cite' else 'atac_lsi50'}":
                np.hstack([scaled(rna_pcs), scaled(second)])}
    row = {"dataset": dataset, "n_cells": int(mdata.n_obs), "seed": args.seed, "latent_dim": model.latent_dim,
           "posterior_scale": model.posterior_scale, "encoder_dropout": model.settings.encoder_dropout,
           "n_labelled": int((labels != "").sum()), "n_types": int(len(set(labels) - {""})),
           "steps_per_epoch": max(1, int(train.sum()) // model.settings.batch_size),
           "epochs_run": len(result["history"]), "best_epoch": result["best_epoch"],
           "status": result["status"], "train_seconds": None if seconds is None else round(seconds, 1),
           **({"from_run": str(Path(args.from_runs) / f"{name}{args.run_tag}")} if args.from_runs else {}),
           "leiden": leiden_scores(mdata, reps, labels, args.seed)}
    if args.resolutions:
        row["sweep"] = resolution_sweep(mdata, reps, labels, args.seed,
                                        [float(r) for r in args.resolutions.split(",")])
    if dataset == "cite":
        observed = clr(mdata["prot"].X[test])
        predicted = clr(model.predict("prot", from_modality="rna", adata=mdata["rna"][test].copy()).X)
        knn = KNeighborsRegressor(n_neighbors=min(20, int(train.sum()))).fit(rna_pcs[train], clr(mdata["prot"].X[train]))
        row["protein_r_scmm"] = round(float(np.nanmedian(pearson_per_feature(predicted, observed))), 3)
        row["protein_r_knn"] = round(float(np.nanmedian(pearson_per_feature(knn.predict(rna_pcs[test]), observed))), 3)
    return row


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

    return {"dataset": "pbmc10k_cite", "preset": model.preset, "precision": model.train_config["precision"],
            "epochs_run": len(result["history"]),
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
    return {"dataset": "snare_cortex", "preset": model.preset, "precision": model.train_config["precision"],
            "epochs_run": len(result["history"]),
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
    parser.add_argument("--latent-dim", type=int, default=None)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--posterior-scale", default=None, choices=["softplus", "softmax"],
                        help="the encoders' scale (default: the library's, softplus)")
    parser.add_argument("--encoder-dropout", type=float, default=None,
                        help="the encoders' dropout rate (default: the library's; 0 gives the paper's network)")
    parser.add_argument("--sizes", default=None, help="small-data table: comma-separated cell counts")
    parser.add_argument("--seeds", default="0", help="small-data table: comma-separated seeds")
    parser.add_argument("--resolutions", default=None,
                        help="small-data table: also Leiden over these resolutions (comma-separated)")
    parser.add_argument("--save-runs", default=None,
                        help="small-data table: save each trained model as a run folder here")
    parser.add_argument("--from-runs", default=None,
                        help="small-data table: score the runs saved there by --save-runs instead of training")
    parser.add_argument("--run-tag", default="", help="with --from-runs: the --tag the runs were saved with")
    parser.add_argument("--tag", default="", help="suffix of the output file")
    parser.add_argument("--summarise", nargs="+", metavar="JSONL", default=None,
                        help="print the markdown table of small-data rows (label=file.jsonl ...)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.summarise:
        return print(summarise(dict(item.split("=", 1) for item in args.summarise)))
    if args.sizes:
        return small_table(args)
    results = []
    if args.dataset in ("cite", "both"):
        results.append(bench_cite(args))
    if args.dataset in ("snare", "both"):
        results.append(bench_snare(args))
    out_dir = Path(os.environ.get("SCMM_BENCH_OUT") or OUT)
    out_dir.mkdir(exist_ok=True)
    tag = f"{args.dataset}-{args.preset or 'paper'}-bs{args.batch_size or 'preset'}-seed{args.seed}-{args.precision}"
    (out_dir / f"quality-{tag}.json").write_text(json.dumps(results, indent=1))
    for res in results:
        print(json.dumps(res, indent=1))


def summarise(files: dict[str, str]) -> str:
    """Markdown table of small-data rows from ``{label: jsonl}`` (e.g. before / after), mean over the
    seeds that every label has for that dataset and size."""
    rows = {label: [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
            for label, path in files.items()}
    shared = set.intersection(*({(r["dataset"], r["n_cells"], r["seed"]) for r in rs} for rs in rows.values()))
    rows = {label: [r for r in rs if (r["dataset"], r["n_cells"], r["seed"]) in shared] for label, rs in rows.items()}
    first = next(iter(rows.values()))
    keys = sorted({(r["dataset"], r["n_cells"]) for r in first})
    model_reps = sorted({b for r in first for b in r["leiden"] if b.startswith("scmm_")})   # per label
    baselines = sorted({b for r in first for b in r["leiden"] if not b.startswith("scmm_")})  # same cells
    head = ["dataset", "cells", "seeds"] + [f"{rep} ARI {label}" for rep in model_reps for label in rows]
    head += [f"{b} ARI" for b in baselines] + [f"protein r {label}" for label in rows] + ["protein r kNN"] + \
        [f"steps {label}" for label in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def mean(values):
        values = [v for v in values if v is not None]
        return f"{np.mean(values):.3f}" if values else "–"

    for dataset, n_cells in keys:
        def of(label):
            return [r for r in rows[label] if (r["dataset"], r["n_cells"]) == (dataset, n_cells)]
        base = of(next(iter(rows)))
        cells = [dataset, str(n_cells), ",".join(str(r["seed"]) for r in base)]
        cells += [mean([r["leiden"][rep]["ARI"] for r in of(label)]) for rep in model_reps for label in rows]
        cells += [mean([r["leiden"][b]["ARI"] for r in base if b in r["leiden"]]) for b in baselines]
        cells += [mean([r.get("protein_r_scmm") for r in of(label)]) for label in rows]
        cells += [mean([r.get("protein_r_knn") for r in base])]
        cells += [mean([r["epochs_run"] * r["steps_per_epoch"] for r in of(label)]).split(".")[0] for label in rows]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def small_table(args) -> None:
    """The small-data table (sizes x seeds x datasets), one JSON line per row, then a summary."""
    out_dir = Path(os.environ.get("SCMM_BENCH_OUT") or OUT)
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"quality-small-{args.dataset}{args.tag}.jsonl"
    datasets = ["cite", "snare"] if args.dataset == "both" else [args.dataset]
    rows = []
    for dataset in datasets:
        for size in [int(s) for s in args.sizes.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                args.seed = seed
                row = bench_small(dataset, size, args)
                rows.append(row)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    print(f"rows appended to {out}")


if __name__ == "__main__":
    main()
