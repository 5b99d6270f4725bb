"""Figures of the chromatin analyses: motif enrichment bars and region tracks (Plotly)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.figures import NEG_COLOUR, POS_COLOUR, TEMPLATE, empty

GENE_COLOUR = "#34495e"


def motif_bars(table: pd.DataFrame, title: str = "", n: int = 15) -> go.Figure:
    """Top ``n`` motifs of an enrichment table as horizontal bars of -log10 p (fold in the hover)."""
    if table is None or table.empty:
        return empty("no enrichment for this peak set", height=420)
    top = table.sort_values(["pvalue", "fold_enrichment"], ascending=[True, False]).head(n)[::-1]
    logp = -np.log10(np.clip(top["pvalue"].to_numpy(float), 1e-300, 1))
    labels = [f"{name} ({motif})" for name, motif in zip(top["name"], top["motif"])]
    fig = go.Figure(layout={"template": TEMPLATE, "title": title, "height": max(360, 20 * len(top) + 120),
                            "xaxis_title": "-log10 p (hypergeometric, vs matched background)",
                            "margin": {"l": 160, "r": 20, "t": 50, "b": 50}})
    fig.add_bar(y=labels, x=logp, orientation="h", marker_color=POS_COLOUR,
                customdata=np.stack([top["fold_enrichment"], top["percent_observed"],
                                     top["percent_background"], top["p_adjust"]], axis=1),
                hovertemplate="%{y}<br>-log10 p %{x:.1f}<br>fold %{customdata[0]:.2f}<br>"
                              "%{customdata[1]:.1f} % of query vs %{customdata[2]:.1f} % of background"
                              "<br>BH-adjusted p %{customdata[3]:.2g}<extra></extra>")
    fig.update_yaxes(type="category", automargin=True)
    return fig


def _gene_shapes(models: pd.DataFrame, start: int, end: int, row: int, col: int, fig) -> None:
    """Gene bodies (thin lines) with exons (boxes) and the gene names, on one track row."""
    if models is None or models.empty:
        return
    for i, gene in enumerate(models.itertuples()):
        level = i % 3
        y = -level
        fig.add_shape(type="line", x0=max(gene.start, start), x1=min(gene.end, end), y0=y, y1=y,
                      line={"color": GENE_COLOUR, "width": 1}, row=row, col=col)
        for ex_start, ex_end in gene.exons:
            if ex_end >= start and ex_start <= end:
                fig.add_shape(type="rect", x0=max(ex_start, start), x1=min(ex_end, end), y0=y - 0.3,
                              y1=y + 0.3, fillcolor=GENE_COLOUR, line={"width": 0}, row=row, col=col)
        arrow = "→" if gene.strand == "+" else "←"
        mid = (max(gene.start, start) + min(gene.end, end)) / 2
        fig.add_annotation(x=mid, y=y + 0.55, text=f"{gene.gene} {arrow}", showarrow=False,
                           font={"size": 10}, row=row, col=col)


def region_tracks(tracks: dict[str, pd.DataFrame], chrom: str, start: int, end: int,
                  models: pd.DataFrame | None = None, titles: dict[str, str] | None = None,
                  title: str = "") -> go.Figure:
    """Accessibility per cluster in a window, one column per source (original, generated).

    ``tracks`` maps a column key to a long table ``group, peak, start, end,
    value`` (:func:`scmm.tl.regions.region_track` layout); each cluster is a
    row of bars spanning its peaks; the last row shows gene models.  Columns
    share the y scale so that original and generated can be compared.
    """
    tracks = {k: v for k, v in tracks.items() if v is not None and not v.empty}
    if not tracks:
        return empty("no peak in this region", height=300)
    keys = list(tracks)
    groups = list(dict.fromkeys(tracks[keys[0]]["group"]))
    n_rows = len(groups) + 1
    fig = make_subplots(rows=n_rows, cols=len(keys), shared_xaxes=True, vertical_spacing=0.01,
                        horizontal_spacing=0.04, column_titles=[(titles or {}).get(k, k) for k in keys],
                        row_heights=[1.0] * len(groups) + [1.6])
    for c, key in enumerate(keys, start=1):
        table = tracks[key]
        top = float(table["value"].max()) or 1.0
        for r, group in enumerate(groups, start=1):
            part = table[table["group"] == group]
            fig.add_bar(x=(part["start"] + part["end"]) / 2, y=part["value"], width=(part["end"] - part["start"]),
                        marker_color=POS_COLOUR if c == 1 else NEG_COLOUR, showlegend=False,
                        customdata=part[["peak"]].to_numpy(), row=r, col=c,
                        hovertemplate=f"cluster {group}<br>%{{customdata[0]}}<br>%{{y:.3g}} per 10k<extra>{key}</extra>")
            fig.update_yaxes(range=[0, top * 1.05], showticklabels=False, row=r, col=c,
                             title_text=str(group) if c == 1 else None, title_font={"size": 10},
                             title_standoff=2)
        _gene_shapes(models, start, end, n_rows, c, fig)
        fig.update_yaxes(range=[-2.8, 1.2], showticklabels=False, row=n_rows, col=c,
                         title_text="genes" if c == 1 else None)
    fig.update_xaxes(range=[start, end], showticklabels=False)
    fig.update_xaxes(showticklabels=True, title_text=f"{chrom} (bp)", row=n_rows)
    fig.update_layout(template=TEMPLATE, title=title, height=max(360, 34 * n_rows + 170),
                      margin={"l": 80, "r": 20, "t": 80, "b": 50}, bargap=0)
    return fig
