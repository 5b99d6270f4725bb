"""``analyze(run_dir)``: everything the explorer shows, computed once after training and saved.

Loads the run, computes latents if missing, clusters (PhenoGraph), UMAPs of
every latent, the latent traversal and the cluster x feature tables, and
saves them into the run folder:

- ``results.h5mu``: ``obs['scmm_cluster']``, ``obsm['X_umap_scmm*']`` (rewritten atomically);
- ``umap.npz``, ``traversal.npz`` + ``traversal.json``: caches (see :mod:`scmm.tl.embed`,
  :mod:`scmm.tl.traversal`);
- ``analysis/heatmap_<target>_<kind>.csv``, ``analysis/heatmap_similarity.csv``,
  ``analysis/markers.csv`` and ``analysis/summary.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd

ANALYSIS_DIR = "analysis"


def write_results(mdata, run_dir) -> Path:
    """Rewrite ``run_dir/results.h5mu`` from ``mdata`` atomically (temporary file, then rename)."""
    from ..run import RESULTS_FILE
    path = Path(run_dir) / RESULTS_FILE
    tmp = path.with_name(f".{path.stem}.tmp.h5mu")
    mdata.write(tmp)
    os.replace(tmp, path)
    return path


def labels_digest(labels) -> str:
    """A short hash of cluster labels (to tell whether saved tables match the current clusters)."""
    text = "\n".join(map(str, labels))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_heatmap_tables(run_dir, labels=None) -> dict | None:
    """The cluster x feature tables saved by :func:`analyze` (same keys as
    :func:`scmm.tl.heatmap_tables`), or None when the run has none, or when
    ``labels`` (current clusters) differ from those the tables were made with."""
    folder = Path(run_dir) / ANALYSIS_DIR
    summary = folder / "summary.json"
    if not summary.exists():
        return None
    saved = json.loads(summary.read_text())
    if labels is not None and saved.get("cluster_digest") != labels_digest(labels):
        return None
    keys = saved.get("heatmap_tables", [])
    out = {}
    for key in keys:
        target, kind = key.split("|", 1)
        file = folder / f"heatmap_{target}_{kind}.csv"
        if not file.exists():
            return None
        table = pd.read_csv(file, index_col=0)
        table.index = table.index.astype(str)
        out[key] = table
    sim = folder / "heatmap_similarity.csv"
    if sim.exists():
        out["similarity"] = pd.read_csv(sim)
    return out


def analyze(run_dir, resolution: float = 1.0, k: int | None = None, method: str = "leiden",
            seed: int = 0, n_markers: int = 5, umap: bool = True, progress=None,
            device: str | None = None) -> dict:
    """Cluster, embed, traverse and tabulate a saved run; save everything into ``run_dir``.

    ``progress(step, message)`` is called before each step (for the app's job
    status).  Returns a summary dict (cluster sizes, similarity of the heatmap
    tables, seconds per step, files written).
    """
    from ..api import SCMM
    from .cluster import cluster
    from .embed import umap as run_umap
    from .export import export_heatmap
    from .heatmap import heatmap_tables, marker_features, markers
    from .traversal import traverse

    run_dir = Path(run_dir)
    report = progress or (lambda step, message: None)
    timings = {}
    started = time.perf_counter()

    def lap(name):
        nonlocal started
        now = time.perf_counter()
        timings[name] = round(now - started, 3)
        started = now

    report("load", "loading the run")
    model = SCMM.load(run_dir, device=device)
    if model.mdata is None:
        raise FileNotFoundError(f"{run_dir} has no results.h5mu: train and save the run first")
    mdata = model.mdata
    if "X_scmm" not in mdata.obsm or any(f"X_scmm_{m}" not in mdata.obsm for m in model.names):
        model.get_latent()
    lap("load")
    report("cluster", "clustering the joint latent")
    labels = cluster(mdata, k=k, resolution=resolution, method=method, seed=seed)
    lap("cluster")
    if umap:
        report("umap", "UMAP of each latent")
        run_umap(mdata, seed=seed, run_dir=run_dir)
        lap("umap")
    report("traversal", "latent traversal")
    trav = traverse(model, run_dir=run_dir)
    lap("traversal")
    report("heatmap", "cluster x feature tables")
    folder = run_dir / ANALYSIS_DIR
    folder.mkdir(exist_ok=True)
    n_clusters = labels.cat.categories.size
    tables = {}
    if n_clusters >= 2:
        marker_tables = {m: markers(mdata, m, n=max(n_markers, 10)) for m in model.names}
        features = {m: marker_features(t, n_markers) for m, t in marker_tables.items()}
        tables = heatmap_tables(model, mdata, features=features)
        export_heatmap(tables, folder)
        pd.concat([t.assign(modality=m) for m, t in marker_tables.items()], ignore_index=True)[
            ["modality", "group", "feature", "score", "log2_fc", "pvalue", "pvalue_adj"]
        ].to_csv(folder / "markers.csv", index=False)
    lap("heatmap")
    report("save", "saving results")
    write_results(mdata, run_dir)
    lap("save")
    summary = {
        "n_cells": int(mdata.n_obs), "n_clusters": int(n_clusters),
        "cluster_sizes": {str(c): int(v) for c, v in labels.value_counts(sort=False).items()},
        "cluster_digest": labels_digest(labels),
        "cluster_params": {"k": k, "resolution": resolution, "method": method, "seed": seed},
        "heatmap_tables": [key for key in tables if key != "similarity"],
        "similarity": tables["similarity"].to_dict(orient="records") if tables else [],
        "associated_counts": trav.summary().to_dict(orient="records"),
        "seconds": timings,
    }
    tmp = folder / ".summary.tmp.json"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, folder / "summary.json")
    report("done", "analysis saved")
    return summary
