"""Static figures of the analyses (matplotlib, no display needed): UMAP, traversal bars, heatmap.

Every function returns a :class:`matplotlib.figure.Figure`; with ``save=path``
it is also written, in the format named by the extension (.png, .svg, .pdf).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = (".png", ".svg", ".pdf")


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path``; the format comes from the extension (.png, .svg or .pdf)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"figure format must be one of {FORMATS}, not {path.suffix or 'none'!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format=path.suffix[1:].lower())
    return path


def _figure(size):
    from matplotlib.figure import Figure
    return Figure(figsize=size, layout="constrained")


def umap(mdata, key: str = "X_umap_scmm", color: str | None = "scmm_cluster", title: str | None = None,
         point_size: float | None = None, save: str | Path | None = None):
    """Scatter of ``obsm[key]`` coloured by ``obs[color]`` (categories get a legend, numbers a colour bar)."""
    if key not in mdata.obsm:
        raise KeyError(f"obsm[{key!r}] not found: run scmm.tl.umap first")
    xy = np.asarray(mdata.obsm[key])
    fig = _figure((6.2, 5))
    ax = fig.add_subplot()
    size = point_size or max(1.0, min(12.0, 3e4 / max(len(xy), 1)))
    if color is not None and color in mdata.obs:
        values = mdata.obs[color]
        if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
            cats = pd.Categorical(values.astype(str))
            import matplotlib
            cmap = matplotlib.colormaps["tab20"]
            for i, cat in enumerate(cats.categories):
                sel = np.asarray(cats == cat)
                ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=cmap(i % 20), label=cat,
                           linewidths=0, rasterized=True)
            ax.legend(markerscale=max(1, 6 / size), fontsize=7, frameon=False, title=color,
                      loc="center left", bbox_to_anchor=(1, 0.5))
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=values.to_numpy(dtype=float),
                            cmap="viridis", linewidths=0, rasterized=True)
            fig.colorbar(sc, ax=ax, label=color)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, color="#444", linewidths=0, rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title or key)
    if save is not None:
        save_figure(fig, save)
    return fig


def traversal(trav, dim: int, modality: str, n: int = 20, pvalue: float | None = None,
              save: str | Path | None = None):
    """Bar chart of the top ``n`` features associated with ``dim`` (log2 fold change, ρ in the label)."""
    table = trav.associated(dim, modality, pvalue=pvalue, n=n)
    fig = _figure((6, max(2.0, 0.28 * len(table) + 1.2)))
    ax = fig.add_subplot()
    if table.empty:
        ax.text(0.5, 0.5, "no associated features at this threshold", ha="center", va="center")
        ax.set_axis_off()
    else:
        table = table.iloc[::-1]
        colors = np.where(table["direction"] == "positive", "#c0392b", "#2e86c1")
        ax.barh(np.arange(len(table)), table["log2_fc"], color=colors)
        ax.set_yticks(np.arange(len(table)))
        ax.set_yticklabels([f"{f} (ρ={r:.2f})" for f, r in zip(table["feature"], table["rho"])],
                           fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("log2 fold change over the cells' range of z")
    ax.set_title(f"dimension {dim}, {modality}")
    if save is not None:
        save_figure(fig, save)
    return fig


def heatmap(table: pd.DataFrame, title: str | None = None, vmax: float | None = None,
            save: str | Path | None = None):
    """Cluster x feature heatmap (e.g. a z-scored table of :func:`scmm.tl.heatmap_tables`).

    Cells are drawn with ``pcolormesh``, so SVG and PDF files hold one vector
    cell per value (``imshow`` would embed a raster image); every feature and
    cluster is labelled, feature names rotated.
    """
    values = np.ma.masked_invalid(table.to_numpy(dtype=float))
    fig = _figure((max(4.0, 0.22 * table.shape[1] + 2), max(2.5, 0.3 * table.shape[0] + 1.5)))
    ax = fig.add_subplot()
    finite = values.compressed()
    limit = vmax or (float(np.abs(finite).max()) if finite.size else 1.0) or 1.0
    mesh = ax.pcolormesh(np.arange(table.shape[1] + 1) - 0.5, np.arange(table.shape[0] + 1) - 0.5, values,
                         cmap="RdBu_r", vmin=-limit, vmax=limit, edgecolors="none")
    ax.set_xlim(-0.5, table.shape[1] - 0.5)
    ax.set_ylim(table.shape[0] - 0.5, -0.5)  # first row on top, as in a table
    ax.set_xticks(np.arange(table.shape[1]))
    ax.set_xticklabels([str(c) for c in table.columns], rotation=90, fontsize=7)
    ax.set_yticks(np.arange(table.shape[0]))
    ax.set_yticklabels([str(i) for i in table.index], fontsize=8)
    ax.set_ylabel(table.index.name or "")
    bar = fig.colorbar(mesh, ax=ax, label="z-score", shrink=0.8)
    bar.solids.set_rasterized(False)  # matplotlib rasterises colour bars of many levels
    if title:
        ax.set_title(title)
    if save is not None:
        save_figure(fig, save)
    return fig
