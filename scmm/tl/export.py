"""Every analysis table to CSV, and the figures to PNG/SVG/PDF, one call each."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import pl
from ..model import SCMM
from ..runfolder import (ANALYSIS_DIR, CLUSTER_KEY, LATENT_KEY, SPLIT_KEY, UMAP_KEY, read_heatmap_tables,
                         write_heatmap_tables)
from .analysis import analyze
from .heatmap import heatmap_tables, markers
from .metrics import query_metrics
from .traversal import traverse


def _out_dir(out) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def associated_table(trav, pvalue=None, n: int | None = None) -> pd.DataFrame:
    """All dimensions' associated features in one long table (columns dim, modality, ...).

    ``pvalue``: a number, ``{modality: number}`` or None (the traversal's defaults).
    """
    frames = []
    for m in trav.modalities:
        threshold = pvalue.get(m) if isinstance(pvalue, dict) else pvalue
        for d in range(trav.n_dims):
            table = trav.associated(d, m, pvalue=threshold, n=n)
            table.insert(0, "modality", m)
            table.insert(0, "dim", d)
            table.insert(2, "rank", np.arange(1, len(table) + 1))
            frames.append(table)
    return pd.concat(frames, ignore_index=True)


def export_associated(trav, out, pvalue=None, n: int | None = None) -> list[Path]:
    """Write ``associated_dim<d>_<modality>.csv`` for every dimension and modality, and
    ``associated_all.csv`` (all in one long table) into folder ``out``; returns the paths."""
    out = _out_dir(out)
    table = associated_table(trav, pvalue=pvalue, n=n)
    paths = [out / "associated_all.csv"]
    table.to_csv(paths[0], index=False)
    for (d, m), part in table.groupby(["dim", "modality"], sort=True):
        path = out / f"associated_dim{d}_{m}.csv"
        part.drop(columns=["dim", "modality"]).to_csv(path, index=False)
        paths.append(path)
    for m in trav.modalities:  # dims without any associated feature still get a (header-only) file
        for d in range(trav.n_dims):
            path = out / f"associated_dim{d}_{m}.csv"
            if path not in paths:
                table.iloc[:0].drop(columns=["dim", "modality"]).to_csv(path, index=False)
                paths.append(path)
    summary = out / "associated_summary.csv"
    trav.summary(pvalue if isinstance(pvalue, dict) else
                 ({m: pvalue for m in trav.modalities} if pvalue is not None else None)
                 ).to_csv(summary, index=False)
    return paths + [summary]


def export_markers(mdata, out, modalities=None, groupby: str = CLUSTER_KEY, n: int = 10) -> Path:
    """Write ``markers.csv``: top ``n`` Wilcoxon markers per cluster for each modality."""
    out = _out_dir(out)
    frames = []
    for m in (modalities or list(mdata.mod)):
        table = markers(mdata, m, groupby=groupby, n=n)
        table.insert(0, "modality", m)
        frames.append(table)
    path = out / "markers.csv"
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


def export_heatmap(tables: dict, out) -> list[Path]:
    """Write each table of :func:`scmm.tl.heatmap_tables` as ``heatmap_<target>_<kind>.csv``
    (and ``heatmap_similarity.csv``)."""
    return write_heatmap_tables(tables, _out_dir(out))


def export_metrics(table: pd.DataFrame, path) -> Path:
    """Write a metrics table (e.g. :func:`scmm.tl.query_metrics`) to CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def latent_table(mdata) -> pd.DataFrame:
    """Cells x (obs columns, every scMM latent and UMAP): ``scmm_1..D``, ``scmm_rna_1..``,
    ``umap_scmm_1, umap_scmm_2``..."""
    keys = [k for k in mdata.obsm if k.startswith((LATENT_KEY, UMAP_KEY))]
    keys.sort(key=lambda k: (k.startswith(UMAP_KEY), k not in (LATENT_KEY, UMAP_KEY), k))
    if not keys:
        raise KeyError("no scMM latent in obsm: call model.get_latent() first")
    parts = [mdata.obs.copy()]
    for key in keys:
        values = np.asarray(mdata.obsm[key])
        parts.append(pd.DataFrame(values, index=mdata.obs_names,
                                  columns=[f"{key[2:]}_{i + 1}" for i in range(values.shape[1])]))
    table = pd.concat(parts, axis=1)
    table.index.name = "cell"
    return table


def export_latents(mdata, path) -> Path:
    """Write latents, UMAPs and cell metadata (clusters included) to one CSV, one row per cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    latent_table(mdata).to_csv(path)
    return path


def export_figures(out, mdata=None, trav=None, tables: dict | None = None, format: str = "png",
                   n: int = 20) -> list[Path]:
    """UMAPs (one per latent, coloured by cluster), traversal bar charts (every dimension and
    modality) and heatmaps (every table), as ``.<format>`` files in ``out``."""
    fmt = "." + format.lower().lstrip(".")
    if fmt not in pl.FORMATS:
        raise ValueError(f"format must be one of png, svg, pdf, not {format!r}")
    out = _out_dir(out)
    paths = []
    if mdata is not None:
        color = CLUSTER_KEY if CLUSTER_KEY in mdata.obs else None
        for key in [k for k in mdata.obsm if k.startswith(UMAP_KEY)]:
            paths.append(pl.save_figure(pl.umap(mdata, key=key, color=color),
                                        out / f"{key[2:]}{fmt}"))
    if trav is not None:
        for m in trav.modalities:
            for d in range(trav.n_dims):
                paths.append(pl.save_figure(pl.traversal(trav, d, m, n=n),
                                            out / f"traversal_dim{d}_{m}{fmt}"))
    for key, table in (tables or {}).items():
        if key == "similarity":
            continue
        target, kind = key.split("|", 1)
        paths.append(pl.save_figure(pl.heatmap(table, title=f"{target}: {kind.replace('_', ' ')}"),
                                    out / f"heatmap_{target}_{kind}{fmt}"))
    return paths


def export_all(run_dir, out, format: str = "png", pvalue=None, figures: bool = True) -> dict:
    """Every table (CSV) and figure of a run folder into ``out``; missing analyses are computed.

    Runs :func:`scmm.tl.analyze` first if the run has no clusters/UMAP yet (it
    saves into the run folder), then writes latents.csv, markers.csv,
    associated_*.csv, heatmap_*.csv, metrics.csv and the figures.  Returns
    ``{"tables": [...], "figures": [...]}`` (paths).
    """
    run_dir = Path(run_dir)
    model = SCMM.load(run_dir)
    if model.mdata is None:
        raise FileNotFoundError(f"{run_dir} has no results.h5mu: train and save the run first")
    mdata = model.mdata
    if CLUSTER_KEY not in mdata.obs or UMAP_KEY not in mdata.obsm:
        analyze(run_dir)
        model = SCMM.load(run_dir)
        mdata = model.mdata
    out = _out_dir(out)
    trav = traverse(model, run_dir=run_dir)
    labels = mdata.obs[CLUSTER_KEY].astype(str)
    tables = read_heatmap_tables(run_dir, labels)
    fresh = tables is None  # clusters changed since analyze (e.g. `scmm cluster`): recompute
    if fresh:
        tables = heatmap_tables(model, mdata)
    written = [export_latents(mdata, out / "latents.csv")]
    saved_markers = run_dir / ANALYSIS_DIR / "markers.csv"
    if saved_markers.exists() and not fresh:
        shutil.copyfile(saved_markers, out / "markers.csv")
        written.append(out / "markers.csv")
    else:
        written.append(export_markers(mdata, out, modalities=model.names))
    written += export_associated(trav, out, pvalue=pvalue)
    written += export_heatmap(tables, out)
    if SPLIT_KEY in mdata.obs and (mdata.obs[SPLIT_KEY] == "test").sum() >= 2:
        frames = [query_metrics(model, target=t, source=s)
                  for s in model.names for t in model.names if s != t]
        written.append(export_metrics(pd.concat(frames, ignore_index=True), out / "metrics.csv"))
    figs = export_figures(out / "figures", mdata, trav, tables, format=format) if figures else []
    return {"tables": written, "figures": figs}
