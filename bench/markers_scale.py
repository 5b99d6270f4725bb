"""Markers, selection ranking and heatmap tables at atlas scale (100k-1M cells): capped vs uncapped.

    nice -n 5 python bench/markers_scale.py [--sizes 100000,1000000] [--uncapped-max 200000]
                                            [--epochs 3] [--threads 1]

Base data: pbmc10k_cite (``/work/shared/data/pbmc10k_cite/pbmc10k_cite.h5mu``,
read with ``scmm.read``, ``scmm.preprocess``; 4,000 genes + 14 proteins) or,
when missing, 10,000 simulated demo cells.  About 20 synthetic clusters come
from k-means (k = 20, seeded) on a 30-component PCA of the log-normalised RNA
of the original cells; the "lasso" selection is the 10 % of original cells
nearest to cluster 0's centre in that PCA.  A tiny model (``scmm.SCMM``,
``--epochs`` epochs) is trained on the original cells.

For each size N a fresh subprocess draws N cells with replacement from the
original ones, thins every count binomially (p = 0.8), gives each cell its
source cell's cluster and selection, and times (wall clock, seconds):

- ``markers`` (one-vs-rest Wilcoxon) on RNA and on protein, capped at
  ``MARKER_CELLS_PER_GROUP`` cells per cluster and uncapped;
- ``rank_features`` for the selection (~10 % of cells) vs the rest, RNA and
  protein, capped at ``RANK_CELLS`` each side and uncapped;
- ``heatmap_tables`` with fixed features (top-5 markers of each cluster on the
  original cells), i.e. the original + generated (encode, decode) profiles,
  capped at ``PROFILE_CELLS_PER_GROUP`` cells per cluster and uncapped.

Uncapped runs only where N <= ``--uncapped-max`` (default 200,000; at 1M they
take far too long on 2 cores and are skipped).  Agreement where both ran
(markers, rank_features): mean over clusters of |capped top-5 ∩ uncapped
top-5| / 5, and of the share of the capped top-5 in the uncapped top-10;
(heatmap) the lowest Pearson r between capped and uncapped generated z-scores.
Memory: peak RSS of each step, data in memory included (the kernel's
high-water mark is reset before it, ``/proc/self/clear_refs``), after building
the data, and the largest of these for the subprocess.  JSON to
``bench/out/markers_scale.json``; a markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scmm  # noqa: E402
from scmm.tl import heatmap_tables, markers, rank_features  # noqa: E402
from scmm.tl.heatmap import (MARKER_CELLS_PER_GROUP, PROFILE_CELLS_PER_GROUP,  # noqa: E402
                             RANK_CELLS, lognorm, marker_features)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbmc10k_cite" / "pbmc10k_cite.h5mu"
OUT = Path(__file__).resolve().parent / "out" / "markers_scale.json"
CLUSTER = "bench_cluster"
SELECTED = "bench_selected"
THIN = 0.8


# ------------------------------------------------------------ base data and model
def base_data(path: Path):
    """pbmc10k_cite preprocessed (or 10,000 demo cells when the file is missing), and its name."""
    if path.exists():
        mdata, name = scmm.read(str(path)), path.name
    else:
        mdata, name = scmm.demo.simulate(n_cells=10_000, seed=0), "demo (simulated, 10,000 cells)"
    scmm.preprocess(mdata)
    return mdata, name


def label_cells(mdata, k: int = 20, seed: int = 0) -> None:
    """k-means clusters on a PCA of the RNA (``obs[CLUSTER]``) and a 10 % "lasso" (``obs[SELECTED]``)."""
    import scanpy as sc
    from sklearn.cluster import KMeans
    rna = lognorm(mdata.mod["rna"])
    sc.pp.pca(rna, n_comps=30, random_state=seed)
    pcs = rna.obsm["X_pca"]
    clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(pcs)
    distance = np.linalg.norm(pcs - pcs[clusters == 0].mean(axis=0), axis=1)
    mdata.obs[CLUSTER] = clusters.astype(str)
    mdata.obs[SELECTED] = distance <= np.quantile(distance, 0.1)


def prepare(args, workdir: Path) -> dict:
    """Write the labelled base data and a tiny trained model under ``workdir``; a summary."""
    mdata, name = base_data(args.data)
    label_cells(mdata)
    model = scmm.SCMM(mdata, device="cpu")
    seconds, _ = timed(lambda: model.train(epochs=args.epochs, progress=False, seed=0))
    model.save(workdir / "model")
    mdata.write(workdir / "base.h5mu")
    return {"data": name, "cells": int(mdata.n_obs),
            "features": {m: int(a.n_vars) for m, a in mdata.mod.items()},
            "clusters": int(mdata.obs[CLUSTER].nunique()), "selected": float(mdata.obs[SELECTED].mean()),
            "model_epochs": args.epochs, "train_seconds": seconds}


# ------------------------------------------------------------ resampled data
def thinned(X, pick: np.ndarray, rng, chunk: int = 50_000_000):
    """Rows ``pick`` of CSR ``X``, every count thinned binomially (p = THIN), in place by chunks."""
    import scipy.sparse as sp
    out = sp.csr_matrix(X, dtype=np.float32)[pick]
    for start in range(0, out.nnz, chunk):
        part = out.data[start:start + chunk]
        part[:] = rng.binomial(part.astype(np.int64), THIN)
    out.eliminate_zeros()
    return out


def resampled(base, n_cells: int, seed: int = 0):
    """``n_cells`` cells drawn with replacement from ``base``, thinned, with their source's labels."""
    import anndata as ad
    import mudata as md
    import pandas as pd
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, base.n_obs, n_cells)
    names = pd.Index([f"c{i}" for i in range(n_cells)])
    mods = {}
    for m, adata in base.mod.items():
        X = thinned(adata.X, pick, rng)
        obs = pd.DataFrame({"scmm_library": np.asarray(X.sum(axis=1)).ravel()}, index=names)
        mods[m] = ad.AnnData(X, obs=obs, var=adata.var[[]].copy())
    data = md.MuData(mods)
    data.obs[CLUSTER] = base.obs[CLUSTER].to_numpy()[pick]
    data.obs[SELECTED] = base.obs[SELECTED].to_numpy()[pick]
    return data


# ------------------------------------------------------------ measurement
def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measured(fn):
    """(seconds, peak RSS in GiB during ``fn``, result): the RSS high-water mark is reset first."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    seconds, out = timed(fn)
    return seconds, peak_rss_gib(), out


def peak_rss_gib() -> float:
    """The RSS high-water mark (VmHWM, resettable) or the process's maximum RSS, GiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def overlaps(capped, uncapped) -> dict:
    """Mean over groups of |capped top-5 ∩ uncapped top-5| / 5 and of the capped top-5's share
    in the uncapped top-10 (a single group for a table without a group column)."""
    def tops(table, k):
        if "group" not in table:
            return {"": set(table["feature"].head(k))}
        return {str(g): set(t["feature"].head(k)) for g, t in table.groupby("group", observed=True)}
    mine, top5, top10 = tops(capped, 5), tops(uncapped, 5), tops(uncapped, 10)
    return {"top5_overlap": float(np.mean([len(mine[g] & top5[g]) / 5 for g in top5])),
            "top5_in_top10": float(np.mean([len(mine[g] & top10[g]) / 5 for g in top10]))}


def generated_r(capped: dict, uncapped: dict) -> dict:
    """Lowest Pearson r between capped and uncapped generated z-scores over the tables."""
    keys = [k for k in uncapped if "|from_" in k]
    return {"generated_r_min": float(min(
        np.corrcoef(capped[k].to_numpy().ravel(), uncapped[k].to_numpy().ravel())[0, 1] for k in keys))}


def cells_tested(result) -> int:
    """Cells tested (a markers / rank_features table) or decoded (heatmap tables)."""
    if isinstance(result, dict):
        return int(result["similarity"]["cells_decoded"].iloc[0])
    return int(sum(result.attrs["cells_tested"].values()))


def compare(step: str, capped_fn, uncapped_fn, agree, run_uncapped: bool) -> dict:
    """Time ``capped_fn`` and (when ``run_uncapped``) ``uncapped_fn``; their agreement."""
    seconds, rss, capped = measured(capped_fn)
    row = {"step": step, "capped_s": seconds, "capped_peak_rss_gib": rss, "cells": cells_tested(capped)}
    if run_uncapped:
        seconds, rss, uncapped = measured(uncapped_fn)
        row.update(uncapped_s=seconds, uncapped_peak_rss_gib=rss, agreement=agree(capped, uncapped))
    print(f"  {step}: {row}", flush=True)
    return row


def worker(workdir: Path, n_cells: int, uncapped_max: int) -> dict:
    """All steps at ``n_cells`` resampled cells (run in a fresh subprocess)."""
    import mudata as md
    base = md.read_h5mu(workdir / "base.h5mu")
    model = scmm.SCMM.load(workdir / "model", device="cpu", load_data=False)
    features = {m: marker_features(markers(base, m, groupby=CLUSTER, n=5), 5) for m in model.names}
    build_s, data = timed(lambda: resampled(base, n_cells))
    build_rss = peak_rss_gib()
    full = n_cells <= uncapped_max
    selection = data.obs[SELECTED].to_numpy()
    print(f"{n_cells:,} cells built in {build_s:.1f} s (peak {build_rss:.2f} GiB)", flush=True)
    rows = []
    for m in model.names:
        rows.append(compare(f"markers {m}",
                            lambda: markers(data, m, groupby=CLUSTER, n=10),
                            lambda: markers(data, m, groupby=CLUSTER, n=10, max_cells_per_group=None),
                            overlaps, full))
    for m in model.names:
        rows.append(compare(f"rank_features {m}",
                            lambda: rank_features(data, m, selection, n=10),
                            lambda: rank_features(data, m, selection, n=10, max_cells=None),
                            overlaps, full))
    rows.append(compare("heatmap_tables (profiles)",
                        lambda: heatmap_tables(model, data, groupby=CLUSTER, features=features),
                        lambda: heatmap_tables(model, data, groupby=CLUSTER, features=features,
                                               max_cells_per_group=None),
                        generated_r, full))
    return {"cells": n_cells, "selected": int(selection.sum()), "build_s": build_s,
            "nnz": {m: int(a.X.nnz) for m, a in data.mod.items()}, "uncapped_run": full,
            "steps": rows, "build_peak_rss_gib": build_rss,
            "process_peak_rss_gib": max([build_rss] + [v for r in rows for k, v in r.items()
                                                       if k.endswith("peak_rss_gib")])}


# ------------------------------------------------------------ report
def agreement_text(values: dict | None) -> str:
    """``top-5 overlap / share in top-10`` or ``r = ...`` (skipped when uncapped did not run)."""
    if values is None:
        return "skipped"
    if "generated_r_min" in values:
        return f"r = {values['generated_r_min']:.5f}"
    return f"{values['top5_overlap']:.2f} / {values['top5_in_top10']:.2f}"


def markdown(results: list[dict]) -> str:
    """One row per size and step: times, speed-up, agreement and peak RSS."""
    def fmt(value, spec):
        return "skipped" if value is None else format(value, spec)
    lines = ["| cells | step | cells tested / decoded (capped) | capped s | uncapped s | speed-up | agreement | "
             "peak RSS capped / uncapped GiB |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for row in res["steps"]:
            un = row.get("uncapped_s")
            lines.append(f"| {res['cells']:,} | {row['step']} | {row['cells']:,} | {row['capped_s']:.2f} | "
                         f"{fmt(un, '.2f')} | {fmt(un and un / row['capped_s'], '.1f')} | "
                         f"{agreement_text(row.get('agreement'))} | {row['capped_peak_rss_gib']:.2f} / "
                         f"{fmt(row.get('uncapped_peak_rss_gib'), '.2f')} |")
    return "\n".join(lines)


def run_size(workdir: Path, n_cells: int, args) -> dict:
    """:func:`worker` at ``n_cells`` in a fresh subprocess (its own peak RSS); its result."""
    subprocess.run([sys.executable, __file__, "--worker", str(workdir), str(n_cells), "--uncapped-max",
                    str(args.uncapped_max), "--threads", str(args.threads)], check=True)
    return json.loads((workdir / f"result-{n_cells}.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--uncapped-max", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a busy 2-core machine)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", nargs=2, metavar=("WORKDIR", "CELLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    if args.worker:
        result = worker(Path(args.worker[0]), int(args.worker[1]), args.uncapped_max)
        (Path(args.worker[0]) / f"result-{args.worker[1]}.json").write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="scmm-markers-scale-") as tmp:
        summary = prepare(args, Path(tmp))
        print(f"base: {summary}", flush=True)
        results = [run_size(Path(tmp), int(n), args) for n in args.sizes.split(",")]
    caps = {"MARKER_CELLS_PER_GROUP": MARKER_CELLS_PER_GROUP, "RANK_CELLS": RANK_CELLS,
            "PROFILE_CELLS_PER_GROUP": PROFILE_CELLS_PER_GROUP}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"base": summary, "caps": caps, "thinning_p": THIN,
                                    "torch_threads": args.threads, "results": results}, indent=1))
    print("\n" + markdown(results) + f"\n\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
