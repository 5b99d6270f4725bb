"""``analyze(run_dir)``: everything the explorer shows, computed once after training and saved.

Loads the run, computes latents if missing, clusters (PhenoGraph), UMAPs of
every latent, the latent traversal and the cluster x feature tables, and
saves them into the run folder:

- ``results.h5mu``: ``obs['scmm_cluster']``, ``obsm['X_umap_scmm*']`` (rewritten atomically);
- ``umap.npz``, ``traversal.npz`` + ``traversal.json``: caches (see :mod:`scmm.tl.umaps`,
  :mod:`scmm.tl.traversal`);
- ``analysis/heatmap_<target>_<kind>.csv``, ``analysis/heatmap_similarity.csv``,
  ``analysis/markers.csv`` and ``analysis/summary.json``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..model import SCMM
from ..runfolder import (ANALYSIS_DIR, CLUSTER_PARAMS, CONFIG_FILE, DEFAULT_CLUSTER_ON, RESULTS_FILE, SUMMARY_FILE,
                         check_writable, labels_digest, latent_key, replace_atomic, write_heatmap_tables,
                         write_json_atomic)
from .clustering import cluster
from .heatmap import heatmap_tables, marker_features, markers
from .traversal import traverse
from .umaps import PARAMS_KEY as UMAP_PARAMS, umap as run_umap

CLUSTER_INPUT = "X_cluster_input"  # obsm key of the clustered representation while clustering


def write_results(mdata, run_dir) -> Path:
    """Rewrite ``run_dir/results.h5mu`` from ``mdata`` atomically.

    The file is written beside it under a temporary name and renamed over it;
    a failure (full disk) removes the temporary file and leaves the previous
    results untouched.
    """
    return replace_atomic(lambda tmp: mdata.write(tmp), Path(run_dir) / RESULTS_FILE)


def _json_safe(value):
    """``value`` with NaN / infinite floats as None (summary.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cluster_representation(mdata, names: list[str], cluster_on: str) -> np.ndarray:
    """The cells' representation that ``analyze`` clusters.

    ``"joint"`` (the default): the joint latent ``X_scmm``, the mean of the
    modality posterior locations (the paper's); ``"concat"``: the locations side
    by side (cells x modalities*D), which keeps what one modality's encoder
    separates when another's is weaker instead of averaging it away; a modality
    name: that modality's latent alone.
    """
    if cluster_on == "joint":
        return np.asarray(mdata.obsm[latent_key()])
    if cluster_on == "concat":
        return np.hstack([np.asarray(mdata.obsm[latent_key(m)]) for m in names])
    if cluster_on in names:
        return np.asarray(mdata.obsm[latent_key(cluster_on)])
    raise ValueError(f"cluster_on must be 'joint', 'concat' or a modality ({', '.join(names)}), "
                     f"not {cluster_on!r}")


def ensure_latents(model) -> None:
    """Compute the joint and modality latents of ``model.mdata`` unless all are stored already."""
    if any(latent_key(m) not in model.mdata.obsm for m in [None, *model.names]):
        model.get_latent()


def cluster_cells(mdata, names: list[str], cluster_on: str = DEFAULT_CLUSTER_ON, **options) -> pd.Series:
    """:func:`scmm.tl.cluster` on :func:`cluster_representation` (``options``: its settings);
    the representation is recorded as ``cluster_on`` in ``uns['scmm_cluster_params']``."""
    mdata.obsm[CLUSTER_INPUT] = cluster_representation(mdata, names, cluster_on)
    try:
        labels = cluster(mdata, use_rep=CLUSTER_INPUT, **options)
    finally:
        del mdata.obsm[CLUSTER_INPUT]
    params = dict(mdata.uns.get(CLUSTER_PARAMS, {}))
    params["cluster_on"] = cluster_on
    mdata.uns[CLUSTER_PARAMS] = params
    return labels


def analyze(run_dir, resolution: float = 1.0, k: int | None = None, method: str = "leiden",
            seed: int = 0, n_markers: int = 5, umap: bool = True, progress=None,
            device: str | None = None, cluster_on: str = DEFAULT_CLUSTER_ON, neighbors: str = "auto",
            umap_fit_cells="auto") -> dict:
    """Cluster, embed, traverse and tabulate a saved run; save everything into ``run_dir``.

    ``cluster_on``: the representation clustered (:func:`cluster_representation`;
    default the joint latent, as the paper).  ``neighbors`` (clustering's kNN search) and
    ``umap_fit_cells`` (the UMAPs' ``fit_cells``) switch the atlas-scale approximations
    (:func:`scmm.tl.cluster`, :func:`scmm.tl.umap`); what was used is in the summary.  ``progress(step, message)`` is
    called before each step (for the app's job status).  Returns a summary dict
    (cluster sizes, similarity of the heatmap tables, seconds per step, files
    written).
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a scMM run folder (no {CONFIG_FILE})")
    results = run_dir / RESULTS_FILE
    # results.h5mu is rewritten beside itself: room for a second copy (and the tables)
    check_writable(run_dir, need_bytes=2 * results.stat().st_size if results.is_file() else 0)
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
    ensure_latents(model)
    lap("load")
    report("cluster", f"clustering the {cluster_on} latent")
    labels = cluster_cells(mdata, list(model.names), cluster_on, k=k, resolution=resolution, method=method,
                           seed=seed, neighbors=neighbors)
    lap("cluster")
    if umap:
        report("umap", "UMAP of each latent")
        run_umap(mdata, seed=seed, run_dir=run_dir, fit_cells=umap_fit_cells)
        lap("umap")
    report("traversal", "latent traversal")
    trav = traverse(model, run_dir=run_dir)
    lap("traversal")
    report("markers", "marker features of each cluster")
    folder = run_dir / ANALYSIS_DIR
    folder.mkdir(exist_ok=True)
    # the tables are about to change: an old summary must not vouch for them if this run fails
    (folder / SUMMARY_FILE).unlink(missing_ok=True)
    n_clusters = labels.cat.categories.size
    tables = {}
    if n_clusters >= 2:
        marker_tables = {m: markers(mdata, m, n=max(n_markers, 10)) for m in model.names}
        features = {m: marker_features(t, n_markers) for m, t in marker_tables.items()}
        lap("markers")
        report("heatmap", "cluster x feature tables")
        tables = heatmap_tables(model, mdata, features=features)
        write_heatmap_tables(tables, folder)
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
        "cluster_params": dict(mdata.uns[CLUSTER_PARAMS]),
        "umap_params": mdata.uns.get(UMAP_PARAMS) if umap else None,
        "heatmap_tables": [key for key in tables if key != "similarity"],
        "similarity": tables["similarity"].to_dict(orient="records") if tables else [],
        "associated_counts": trav.summary().to_dict(orient="records"),
        "seconds": timings,
    }
    write_json_atomic(folder / SUMMARY_FILE, _json_safe(summary))
    report("done", "analysis saved")
    return summary
