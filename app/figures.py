"""Pure figure builders: arrays / DataFrames in, ``plotly.graph_objects.Figure`` out.

Nothing here reads files, knows about Dash callbacks or does model maths, so
every builder is unit-tested directly (tests/test_app_figures.py) and timed in
bench/app_latency.py.  Large arrays go to the browser as base64 typed arrays
(:func:`typed`), and embeddings are WebGL (``Scattergl``).
"""
from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots
from scmm.tl.metrics import pearson

#: categorical palette of the other figures (lines, bars): plotly's D3 + Alphabet, readable on white
PALETTE = qualitative.D3 + qualitative.Alphabet


def distinct_colours(k: int) -> list[str]:
    """``k`` colours that stay distinguishable: D3 up to 10, Dark24 up to 24, then generated.

    Beyond 24, hues step by the golden angle while lightness and saturation
    cycle through three levels, so neighbouring groups never share a shade.
    """
    if k <= 10:
        return list(qualitative.D3[:max(k, 1)])
    if k <= 24:
        return list(qualitative.Dark24[:k])
    out = []
    for i in range(k):
        hue = (i * 137.508) % 360
        light = (45, 62, 33)[i % 3]
        sat = (80, 60, 70)[(i // 3) % 3]
        out.append(f"hsl({hue:.0f},{sat}%,{light}%)")
    return out
CONTINUOUS = "Viridis"
DIVERGING = "RdBu_r"
POS_COLOUR, NEG_COLOUR = "#c0392b", "#2e64b4"
_AXIS = {"gridcolor": "#ebf0f8", "linecolor": "#ebf0f8", "zerolinecolor": "#ebf0f8",
         "ticks": "", "title": {"standoff": 12}}
#: a light white template: plotly_white's look without its per-trace defaults for every
#: trace type, which cost ~25 ms per figure to validate and ~10 kB per response
TEMPLATE = go.layout.Template(layout={
    "paper_bgcolor": "white", "plot_bgcolor": "white", "colorway": qualitative.D3,
    "font": {"color": "#2a3f5f"}, "hoverlabel": {"align": "left"}, "xaxis": _AXIS, "yaxis": _AXIS,
    "title": {"x": 0.05}})
#: above this many points the markers get smaller
BIG = 20_000


def typed(values) -> dict:
    """A numeric array as plotly's base64 typed-array spec (no per-number JSON); uint8 stays one
    byte a value, and a 2-D array keeps its shape."""
    arr = np.ascontiguousarray(values)
    if arr.dtype.kind == "f":
        arr, dtype = arr.astype(np.float32, copy=False), "f4"
    elif arr.dtype == np.uint8:
        dtype = "u1"
    elif arr.dtype.kind in "iub":
        arr, dtype = arr.astype(np.int32, copy=False), "i4"
    else:
        raise TypeError(f"not a numeric array: {arr.dtype}")
    out = {"dtype": dtype, "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}
    if arr.ndim == 2:
        out["shape"] = f"{arr.shape[0]},{arr.shape[1]}"
    return out


def empty(message: str = "", height: int | None = None) -> go.Figure:
    """A blank figure carrying ``message`` in its centre (for 'nothing to show yet')."""
    fig = go.Figure(layout={"template": TEMPLATE, "xaxis": {"visible": False},
                            "yaxis": {"visible": False}})
    if message:
        fig.add_annotation(text=message, showarrow=False, font={"size": 14, "color": "#666"},
                           xref="paper", yref="paper", x=0.5, y=0.5)
    if height:
        fig.update_layout(height=height)
    return fig


# ----------------------------------------------------------------- training
def loss_curve(history: list[dict], title: str = "Loss") -> go.Figure:
    """Train and test loss by epoch from ``model.history`` / progress.json records."""
    if not history:
        return empty("no epochs yet", height=320)
    frame = pd.DataFrame(history)
    fig = go.Figure(layout={"template": TEMPLATE, "height": 320, "title": title,
                            "xaxis_title": "epoch", "yaxis_title": "loss (negative ELBO per cell)",
                            "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                            "legend": {"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"}})
    for col, name, dash in (("train_loss", "train", None), ("test_loss", "test", "dot")):
        if col in frame and frame[col].notna().any():
            fig.add_scatter(x=frame["epoch"], y=frame[col], name=name, mode="lines+markers",
                            line={"dash": dash})
    fig.update_xaxes(tickformat="d", dtick=max(1, len(frame) // 10))
    return fig


# --------------------------------------------------------------- embeddings
#: categories named on a colour bar (and labelled on the plot); above, the bar has no tick labels
NAMED_GROUPS = 60


def colour_scale(values, kind: str, label: str, categories=None, palette=None) -> dict:
    """The colour scale of a colouring, shared by the scatter and the raster image.

    ``{"colorscale", "cmin", "cmax", "colorbar", "colours"}``: for ``"categorical"``
    values (integer codes into ``categories``) a stepped scale with the category
    names on the colour bar and ``colours`` one colour per category; for
    ``"continuous"`` ones Viridis, or a diverging scale centred on 0 when the
    values take both signs (as latent dimensions do), and ``colours`` None.  Above
    ``NAMED_GROUPS`` categories the colour bar names none of them (its title says how many).
    """
    if kind == "categorical":
        categories = [str(c) for c in (categories if categories is not None else np.unique(values))]
        k = max(len(categories), 1)
        palette = list(palette or distinct_colours(k))
        colours = [palette[i % len(palette)] for i in range(k)]
        scale = []
        for i, c in enumerate(colours):
            scale += [[i / k, c], [(i + 1) / k, c]]
        if k <= NAMED_GROUPS:
            colorbar = {"title": {"text": label}, "tickvals": list(range(k)), "ticktext": categories,
                        "lenmode": "fraction", "len": 0.9}
        else:  # too many names to read, and each tick label costs the browser a measurement per redraw
            colorbar = {"title": {"text": f"{label}<br>({k:,} groups,<br>not named here)"},
                        "showticklabels": False, "ticks": "", "lenmode": "fraction", "len": 0.9}
        return {"colorscale": scale, "cmin": -0.5, "cmax": k - 0.5, "colorbar": colorbar,
                "colours": colours[:len(categories)], "categories": categories}
    vals = np.asarray(values, dtype=np.float32)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    colorbar = {"title": {"text": label}}
    if lo < 0 < hi:
        bound = max(-lo, hi)
        return {"colorscale": DIVERGING, "cmin": -bound, "cmax": bound, "colorbar": colorbar, "colours": None}
    return {"colorscale": CONTINUOUS, "cmin": lo, "cmax": hi if hi > lo else lo + 1, "colorbar": colorbar,
            "colours": None}


def colour_spec(values, kind: str, label: str, categories=None, palette=None) -> dict:
    """Marker colour + hover settings for one Scattergl trace.

    ``kind`` and the colours as in :func:`colour_scale`.  The returned dict
    holds ``marker``, ``customdata`` and ``hovertemplate``: what a colour-by
    change needs to send (see :func:`recolour`), and ``order``: the drawing order
    of the cells (:func:`draw_order`; ``None`` for the cells' own order), in
    which marker colours and hover values are already given.
    """
    values = np.asarray(values)
    size = 3 if len(values) > BIG else 5
    scale = colour_scale(values, kind, label, categories, palette)
    marker = {"colorscale": scale["colorscale"], "cmin": scale["cmin"], "cmax": scale["cmax"], "size": size,
              "showscale": True, "colorbar": scale["colorbar"]}
    if kind == "categorical":
        categories = scale["categories"]
        codes = np.asarray(values, dtype=np.int32)
        marker["color"] = typed(codes)
        names = np.asarray(categories + ["NA"], dtype=object)
        custom = names[np.where(codes < 0, len(categories), codes)].astype(str)
        hover = f"%{{text}}<br>{label}: %{{customdata}}<extra></extra>"
        return {"marker": marker, "customdata": custom, "hovertemplate": hover, "order": None,
                "groups": list(zip(categories, scale["colours"]))}
    vals = np.asarray(values, dtype=np.float32)
    order = draw_order(vals, scale["colorscale"] == DIVERGING)
    marker["color"] = typed(vals[order])
    hover = f"%{{text}}<br>{label}: %{{customdata:.3g}}<extra></extra>"
    return {"marker": marker, "customdata": marker["color"], "hovertemplate": hover, "order": order}


def draw_order(values, diverging: bool = False) -> np.ndarray:
    """Cell indices in drawing order: the highest values last, so drawn on top (for a
    diverging scale the largest magnitudes of either sign); missing values first."""
    vals = np.asarray(values, dtype=np.float32)
    key = np.abs(vals) if diverging else vals
    return np.argsort(np.where(np.isfinite(key), key, -np.inf), kind="stable")


def group_labels(xy, codes, categories, max_groups: int = NAMED_GROUPS) -> list[dict]:
    """Annotations naming each group at the median position of its cells (none past ``max_groups``)."""
    codes = np.asarray(codes)
    if len(categories) > max_groups:
        return []
    out = []
    for i, name in enumerate(categories):
        where = codes == i
        if where.any():
            x, y = np.median(xy[where], axis=0)
            out.append({"x": float(x), "y": float(y), "text": str(name), "showarrow": False,
                        "font": {"size": 11, "color": "#111"}, "bgcolor": "rgba(255,255,255,0.6)"})
    return out


def embedding(xy, spec: dict, cell_ids, title: str = "", axis_names=("UMAP1", "UMAP2"),
              selected=None, uirevision: str | None = None, labels: list[dict] | None = None) -> go.Figure:
    """A WebGL scatter of a 2-D embedding coloured by ``spec`` (from :func:`colour_spec`).

    ``cell_ids`` become the hover text; the cells are drawn in the spec's
    ``order``; ``selected`` (indices) are drawn on top as open circles;
    ``labels`` (from :func:`group_labels`) name the groups on the plot.  Lasso
    and box select are the default drag modes.
    """
    xy = np.asarray(xy, dtype=np.float32)
    order = spec.get("order")
    trace = go.Scattergl(**ordered_points(xy, cell_ids, order), mode="markers", name="cells", showlegend=False,
                         **{k: v for k, v in spec.items() if k not in ("groups", "order")})
    fig = go.Figure(trace)
    if selected is not None and len(selected):
        idx = np.asarray(selected, dtype=int)
        fig.add_trace(go.Scattergl(x=typed(xy[idx, 0]), y=typed(xy[idx, 1]), mode="markers",
                                   name="selection", hoverinfo="skip", showlegend=False,
                                   marker={"size": 7, "color": "rgba(0,0,0,0)",
                                           "line": {"width": 1, "color": "black"}}))
    fig.update_layout(template=TEMPLATE, title=title, dragmode="lasso", height=560,
                      margin={"l": 40, "r": 10, "t": 50, "b": 40}, hovermode="closest",
                      uirevision=uirevision or title,
                      xaxis={"title": axis_names[0], "showgrid": False, "zeroline": False},
                      yaxis={"title": axis_names[1], "showgrid": False, "zeroline": False},
                      annotations=labels or [])
    return fig


def raster_layers(image_uri: str, bounds, size, hit_px: int) -> tuple[dict, dict]:
    """(layout image, hit-layer trace settings) of a raster embedding over ``bounds`` (x0, x1, y0, y1).

    The image spans the range in data coordinates; the hit layer is an
    invisible heatmap of ``hit_px``-pixel bins over the same range, so that
    hovering reports a position and a lasso or box emits its outline.
    """
    x0, x1, y0, y1 = bounds
    nx, ny = max(1, size[0] // hit_px), max(1, size[1] // hit_px)
    image = {"source": image_uri, "xref": "x", "yref": "y", "x": x0, "y": y1, "sizex": x1 - x0,
             "sizey": y1 - y0, "sizing": "stretch", "layer": "below", "xanchor": "left", "yanchor": "top"}
    hit = {"z": typed(np.zeros((ny, nx), dtype=np.uint8)), "x0": x0 + (x1 - x0) / nx / 2, "dx": (x1 - x0) / nx,
           "y0": y0 + (y1 - y0) / ny / 2, "dy": (y1 - y0) / ny}
    return image, hit


def raster_embedding(image: dict, hit: dict, scale: dict, extent, title: str = "", axis_names=("UMAP1", "UMAP2"),
                     uirevision: str | None = None, labels: list[dict] | None = None) -> go.Figure:
    """An embedding drawn as a server-rendered image (from :func:`raster_layers`), its colour bar
    ``scale`` (from :func:`colour_scale`) on the invisible hit layer (trace 0, named "cells");
    the axes start at ``extent`` (x0, x1, y0, y1)."""
    trace = go.Heatmap(**hit, name="cells", opacity=0, hoverinfo="none", showscale=True,
                       colorscale=scale["colorscale"], zmin=scale["cmin"], zmax=scale["cmax"],
                       colorbar=scale["colorbar"])
    fig = go.Figure(trace)
    fig.update_layout(template=TEMPLATE, title=title, dragmode="lasso", height=560, images=[image],
                      margin={"l": 40, "r": 10, "t": 50, "b": 40}, hovermode="closest",
                      uirevision=uirevision or title,
                      xaxis={"title": axis_names[0], "showgrid": False, "zeroline": False,
                             "range": list(extent[:2]), "autorange": False},
                      yaxis={"title": axis_names[1], "showgrid": False, "zeroline": False,
                             "range": list(extent[2:]), "autorange": False},
                      annotations=labels or [])
    return fig


def ordered_points(xy, cell_ids, order=None) -> dict:
    """x, y and hover text of the cells in drawing ``order`` (their own order when None)."""
    xy, ids = np.asarray(xy, dtype=np.float32), np.asarray(cell_ids, dtype=str)
    if order is not None:
        xy, ids = xy[order], ids[order]
    return {"x": typed(xy[:, 0]), "y": typed(xy[:, 1]), "text": ids}


def recolour(patch, spec: dict, xy=None, cell_ids=None):
    """Apply a new colour ``spec`` to ``patch`` (a ``dash.Patch`` of an :func:`embedding`).

    Only marker and hover data travel, unless ``xy`` and ``cell_ids`` are given:
    then the points are sent again in the spec's drawing order (a change to or
    from a continuous colour, whose high values are drawn on top).
    """
    if xy is not None:
        for key, value in ordered_points(xy, cell_ids, spec.get("order")).items():
            patch["data"][0][key] = value
    patch["data"][0]["marker"] = spec["marker"]
    patch["data"][0]["customdata"] = spec["customdata"]
    patch["data"][0]["hovertemplate"] = spec["hovertemplate"]
    return patch


def group_opacity(codes, shown: set[int]) -> dict:
    """Per-cell marker opacity: 1 for cells of the ``shown`` group codes, 0 for the hidden ones."""
    codes = np.asarray(codes)
    return typed(np.isin(codes, list(shown)).astype(np.float32))


# ---------------------------------------------------------------- traversal
def traversal_bars(table: pd.DataFrame, title: str = "", n: int = 15) -> go.Figure:
    """Ranked horizontal bars of associated features: top ``n`` positive and top ``n`` negative.

    ``table`` has columns ``feature, rho, log2_fc, direction`` (``Traversal.associated``).
    Bar length is log2 fold change over the occupied range; hover shows ρ and p.
    """
    if table is None or table.empty:
        return empty("no feature passes the threshold", height=460)
    pos = table[table["direction"] == "positive"].head(n)
    neg = table[table["direction"] == "negative"].head(n)
    fig = go.Figure(layout={"template": TEMPLATE, "title": title, "height": max(360, 18 * (len(pos) + len(neg)) + 120),
                            "barmode": "overlay", "xaxis_title": "log2 fold change over the occupied range",
                            "margin": {"l": 120, "r": 20, "t": 50, "b": 50},
                            "legend": {"orientation": "h", "y": 1.06, "x": 1, "xanchor": "right"}})
    for part, name, colour in ((neg[::-1], "negative", NEG_COLOUR), (pos[::-1], "positive", POS_COLOUR)):
        if len(part):
            fig.add_bar(y=part["feature"], x=part["log2_fc"], orientation="h", name=name,
                        marker_color=colour, customdata=np.stack([part["rho"], part.get("pvalue", part["rho"] * np.nan)], axis=1),
                        hovertemplate="%{y}<br>log2 FC %{x:.2f}<br>rho %{customdata[0]:.2f}"
                                      "<br>p %{customdata[1]:.2g}<extra></extra>")
    fig.update_yaxes(type="category", automargin=True)  # long peak names widen the margin, never cut
    return fig


def traversal_profile(profile: pd.DataFrame, z_sigma: float | None = None, title: str = "",
                      log: bool = True, occupied: tuple[float, float] | None = None) -> go.Figure:
    """Decoded mean of each feature along the traversal (``Traversal.profile`` output).

    ``profile`` has a ``z_sigma`` column plus one column per feature; a vertical
    line marks the traversal value ``z_sigma`` chosen on the slider, and a
    shaded band the range the cells occupy (``occupied``, in units of σ).
    """
    if profile is None or profile.empty or profile.shape[1] < 2:
        return empty("no features to show", height=400)
    fig = go.Figure(layout={"template": TEMPLATE, "title": title, "height": 400,
                            "xaxis_title": "z (units of the prior s.d.)",
                            "yaxis_title": "decoded mean", "hovermode": "x unified",
                            "margin": {"l": 60, "r": 20, "t": 50, "b": 50}})
    x = profile["z_sigma"].to_numpy()
    for i, col in enumerate(c for c in profile.columns if c != "z_sigma"):
        fig.add_scatter(x=x, y=profile[col].to_numpy(), mode="lines", name=str(col),
                        line={"color": PALETTE[i % len(PALETTE)]})
    if log:
        fig.update_yaxes(type="log")
    fig.update_layout(shapes=profile_shapes(z_sigma if z_sigma is not None else 0.0, occupied))
    return fig


def profile_shapes(z_sigma: float, occupied: tuple[float, float] | None) -> list[dict]:
    """The profile's shapes: the band the cells occupy (if known), then the traversal marker."""
    band = [] if occupied is None else [{
        "type": "rect", "xref": "x", "yref": "paper", "x0": float(occupied[0]), "x1": float(occupied[1]),
        "y0": 0, "y1": 1, "fillcolor": "rgba(52, 73, 94, 0.12)", "line": {"width": 0}, "layer": "below",
        "name": "cells (1st-99th percentile)"}]
    return band + [traversal_marker(z_sigma)]


def traversal_marker(z_sigma: float) -> dict:
    """The dashed vertical line at the traversal value (a layout shape; patched on slider moves)."""
    return {"type": "line", "x0": float(z_sigma), "x1": float(z_sigma), "xref": "x",
            "y0": 0, "y1": 1, "yref": "y domain", "line": {"color": "#444", "dash": "dash"}}


# --------------------------------------------------------------- generation
def heatmaps(tables: dict[str, pd.DataFrame], titles: dict[str, str] | None = None,
             zmax: float = 2.5, title: str = "") -> go.Figure:
    """Cluster x feature heatmaps side by side (original / reconstruction / generation).

    ``tables`` maps a panel key to a DataFrame (clusters x features, z-scored);
    every panel shares the diverging colour scale (-zmax, zmax) and the
    cluster order of the first table.
    """
    tables = {k: v for k, v in tables.items() if v is not None and not v.empty}
    if not tables:
        return empty("no tables yet: analyse the run first", height=420)
    keys = list(tables)
    first = tables[keys[0]]
    rows = [str(r) for r in first.index]
    n_feat = first.shape[1]
    fig = make_subplots(rows=1, cols=len(keys), shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[(titles or {}).get(k, k) for k in keys])
    for i, key in enumerate(keys, start=1):
        table = tables[key].reindex(first.index)
        fig.add_heatmap(z=table.to_numpy(dtype=float), x=[str(c) for c in table.columns], y=rows,
                        colorscale=DIVERGING, zmin=-zmax, zmax=zmax, showscale=i == len(keys),
                        colorbar={"title": {"text": "z-score"}}, row=1, col=i,
                        hovertemplate="cluster %{y}<br>%{x}<br>z %{z:.2f}<extra>" + key + "</extra>")
    fig.update_layout(template=TEMPLATE, title=title, height=max(380, 22 * len(rows) + 160),
                      margin={"l": 60, "r": 20, "t": 70, "b": 90})
    fig.update_xaxes(tickangle=-60, tickfont={"size": 9 if n_feat > 30 else 11})
    fig.update_yaxes(autorange="reversed", title_text="cluster", col=1)
    return fig


def predicted_vs_observed(observed, predicted, label: str = "", xlabel: str = "observed",
                          ylabel: str = "predicted", text=None) -> go.Figure:
    """Scatter of predicted against observed values with Pearson r in the title and y = x."""
    observed = np.asarray(observed, dtype=np.float32)
    predicted = np.asarray(predicted, dtype=np.float32)
    r = pearson(observed, predicted)
    lo = float(min(observed.min(initial=0), predicted.min(initial=0)))
    hi = float(max(observed.max(initial=1), predicted.max(initial=1)))
    fig = go.Figure(go.Scattergl(x=typed(observed), y=typed(predicted), mode="markers",
                                 text=None if text is None else list(map(str, text)),
                                 marker={"size": 3 if len(observed) > BIG else 5, "opacity": 0.6,
                                         "color": "#34495e"},
                                 hovertemplate="%{text}<br>observed %{x:.3g}<br>predicted %{y:.3g}<extra></extra>"))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash", "color": "#999"},
                    hoverinfo="skip", showlegend=False)
    fig.update_layout(template=TEMPLATE, height=460, showlegend=False,
                      title=f"{label}  Pearson r = {r:.3f}" if label else f"Pearson r = {r:.3f}",
                      xaxis_title=xlabel, yaxis_title=ylabel, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


# ------------------------------------------------------------------- export
def for_export(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` fit for static export: WebGL traces become SVG ones.

    Kaleido rasterises WebGL into vector formats; plain ``Scatter`` keeps SVG
    and PDF exports vector.
    """
    out = go.Figure(fig)
    data = []
    for trace in out.data:
        if trace.type == "scattergl":
            props = trace.to_plotly_json()
            props.pop("type", None)
            props.pop("uid", None)
            data.append(go.Scatter(**props))
        else:
            data.append(trace)
    return go.Figure(data=data, layout=out.layout)


def to_image(fig, fmt: str = "png", scale: float = 2.0, width: int | None = None,
             height: int | None = None, run_id: str | None = None) -> bytes:
    """``fig`` (a Figure or its dict) exported for publication as png / svg / pdf bytes.

    Rendered by the process's warm kaleido with every tick label and vector
    heatmaps (see :func:`app.export.render`); ``width`` / ``height`` default
    to the figure's own size (1000 px wide when it has none).
    """
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"format must be png, svg or pdf, not {fmt!r}")
    from app import export
    return export.render(fig, fmt, width, height, scale, run_id=run_id)
