"""Page 3, Embeddings: UMAPs of the joint and per-modality latents, colour-by, lasso selections.

Colour by cluster, by any obs column, by any latent dimension or by any feature
of any modality (search in the dropdown).  A colour change sends only the new
marker colours (``dash.Patch``); x/y and cell ids stay in the browser, except
when a continuous colour reorders the points so that high values are drawn on
top (``emb-ordered`` says whether the browser holds such an order).  A lasso
(or box) selection is tested against the polygon on the server, can be named
and kept, exported as CSV, and ranked against the other cells
(``scmm.tl.rank_features`` in a background job).  Above
:data:`app.raster.RASTER_ABOVE` cells the cells are drawn as an image rendered on the server
(:mod:`app.pages.raster_view`), the page says so, and hovering names the nearest cell below the plot.
"""
from __future__ import annotations

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import ALL, Input, Output, Patch, State, ctx, dcc, html, no_update

from scmm import runfolder
from scmm.runfolder import CLUSTER_KEY
from scmm.tl.heatmap import rank_features

from app import components, data_access, figures, processes, raster
from app.pages import raster_view

TOP_N = 25


def _run(cfg, run_id):
    return data_access.get_run(data_access.resolve_run(cfg.runs_dir, run_id))


def no_run(message: str = "No trained run yet: train one on the Train page.") -> html.Div:
    """The placeholder shown by result pages without a run."""
    return dbc.Alert(message, color="info", id="no-run")


def not_shown(asked: str, why: str, instead: str) -> dbc.Alert:
    """The visible note of a request that cannot be honoured: what was asked, why, what is shown."""
    return dbc.Alert([html.Strong(f"Cannot show {asked}: "), f"{why}. Showing {instead} instead."],
                     color="warning", className="py-2 not-shown")


def run_missing(cfg, run_id) -> html.Div:
    """Why run ``run_id`` cannot be shown: unreadable files (with the reason) or no run at all."""
    problem = data_access.run_problem(data_access.resolve_run(cfg.runs_dir, run_id))
    if problem:
        return dbc.Alert([html.Strong(f"Run {run_id} is unreadable: "), problem], color="warning",
                         id="run-unreadable")
    return no_run()


def layout(cfg, run_id, query) -> html.Div:
    """The Embeddings page for run ``run_id`` (``color`` and ``emb`` from the query)."""
    view = _run(cfg, run_id)
    if view is None:
        return run_missing(cfg, run_id)
    embeddings = view.embeddings()
    emb = query.get("emb") if query.get("emb") in embeddings else next(iter(embeddings), None)
    default = f"obs:{view.obs_columns()[0]}" if view.obs_columns() else "z:0"
    colour = query.get("color") or default
    note = [] if view.analysed else [dbc.Alert(
        "This run is not analysed yet (no UMAPs or clusters): showing latent dimensions 1 and 2. "
        "Run `scmm analyze RUN` or train from this app.", color="warning", className="py-2")]
    note += [dbc.Alert(text, color="info", className="py-1 small") for text in view.approximation_notes()]
    if raster.rasterised(view.n_cells):
        note.append(dbc.Alert(raster_view.note(view.n_cells), color="info", className="py-1 small",
                              id="emb-raster-note"))
    problem = view.colour_problem(colour)
    if problem:
        note.append(not_shown(f"colour {colour}", problem, f"coloured by {view.colour(default)['label']}"))
        colour = default
    asked = query.get("emb")
    if asked and asked not in embeddings:
        note.append(not_shown(f"embedding {asked}", f"this run has {', '.join(embeddings)}", f"the {emb} embedding"))
    options = view.colour_options()
    if colour not in [o["value"] for o in options]:
        options.append({"label": view.colour(colour)["label"], "value": colour})
    controls = dbc.Card(dbc.CardBody([
        dbc.Label("Embedding"),
        dbc.RadioItems(id="emb-key", options=[{"label": k, "value": k} for k in embeddings],
                       value=emb, inline=True),
        dbc.Label("Colour by", className="mt-2"),
        dcc.Dropdown(id="emb-colour", options=options, value=colour, clearable=False,
                     placeholder="type a gene, protein, peak, obs column or z…"),
        html.Div([dbc.Label("Groups (untick to hide)", className="mt-2 small"),
                  dcc.Checklist(id="emb-groups", options=[], value=[], labelClassName="d-block small")],
                 id="emb-groups-box", style={"display": "none"}),
        html.Hr(),
        html.Div(id="sel-info", className="small", children="Lasso cells on the plot to select them."),
        dbc.InputGroup([dbc.Input(id="sel-name", placeholder="selection name"),
                        dbc.Button("Save", id="sel-save", color="secondary")], size="sm", className="mt-2"),
        dbc.Label("Saved selections", className="mt-2 small"),
        dcc.Dropdown(id="sel-pick", placeholder="current lasso"),
        dbc.Label("Top features of the selection vs the rest in", className="mt-2 small"),
        dbc.RadioItems(id="sel-mod", options=[{"label": m, "value": m} for m in view.modalities],
                       value=view.modalities[0], inline=True),
        html.Div([dbc.Button("Top features", id="sel-rank", color="primary", size="sm"),
                  components.csv_button("selection-cells", "cells CSV"),
                  components.csv_button("selection-features", "features CSV")], className="mt-2"),
    ]))
    return html.Div([
        dcc.Store(id="emb-run", data=view.id),
        dcc.Store(id="sel-current", data=[]),
        dcc.Store(id="emb-ordered", data=False),
        dcc.Store(id="emb-range", data=None),
        dcc.Store(id="emb-drawn", data=None),
        html.H3(["Embeddings ", html.Small(view.id, className="text-muted")]),
        *note,
        dbc.Row([
            dbc.Col(controls, md=3),
            dbc.Col(components.figure_card("embedding", None, "UMAP", extra=[
                html.Div(id="emb-hover", className="small", style={"minHeight": "1.5em"})]), md=9),
        ]),
        dbc.Card([dbc.CardHeader("Top features of the selection"),
                  dbc.CardBody(dcc.Loading(html.Div(id="sel-table"), delay_show=300))], className="mb-3"),
        naming_card(view),
    ])


def naming_card(view) -> dbc.Card:
    """Name the clusters (one name on several clusters merges them); saved in the run as 'annotation'."""
    if CLUSTER_KEY not in view.mdata.obs:
        return html.Div()
    clusters = view.mdata.obs[CLUSTER_KEY].astype(str)
    counts = clusters.value_counts()
    order = sorted(counts.index, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    listed = set(sorted(order, key=lambda c: -counts[c])[:LISTED_GROUPS])
    omitted = "" if len(listed) == len(order) else (
        f" — the {len(listed)} largest of {len(order):,} clusters are listed; the others keep their names")
    order = [c for c in order if c in listed]
    rows = [html.Tr([html.Td(c), html.Td(f"{counts[c]:,}"),
                     html.Td(dbc.Input(id={"role": "cl-name", "c": c}, value=view.annotation.get(c, ""),
                                       size="sm", maxLength=100, placeholder="name"))]) for c in order]
    return dbc.Card([
        dbc.CardHeader("Name the clusters (the same name on several clusters merges them)" + omitted),
        dbc.CardBody([
            dbc.Table([html.Thead(html.Tr([html.Th("cluster"), html.Th("cells"), html.Th("name")])),
                       html.Tbody(rows)], size="sm", className="small", style={"maxWidth": "520px"}),
            dbc.Button("Save names", id="cl-save", size="sm", color="secondary"),
            html.Div(id="cl-msg", className="small mt-2"),
        ])])


def colour_figure(view, emb_label: str, colour: str, selected=None, shown=None, size=None) -> object:
    """The full embedding figure of ``view`` (see :func:`app.figures.embedding`; above
    :data:`app.raster.RASTER_ABOVE` cells an image of ``size`` pixels, :func:`raster_view.figure`);
    ``shown``: the group codes left visible (all when None)."""
    key, axes = view.embeddings()[emb_label]
    c = view.colour(colour)
    if raster.rasterised(view.n_cells):
        return raster_figure(view, emb_label, c, raster_view.scale(c), size or raster.DEFAULT_SIZE, shown)
    spec = figures.colour_spec(c["values"], c["kind"], c["label"], c["categories"])
    labels = view.group_labels(key, c) if c["kind"] == "categorical" else []
    if shown is not None and c["kind"] == "categorical":
        spec["marker"]["opacity"] = figures.group_opacity(c["values"], set(shown))
    return figures.embedding(view.coords(key), spec, view.cell_ids,
                             title=f"{emb_label} latent: {c['label']}", axis_names=axes,
                             selected=selected, uirevision=f"{view.id}:{emb_label}", labels=labels)


def raster_figure(view, emb_label: str, c: dict, scale: dict, size, shown=None):
    """The whole image figure of embedding ``emb_label`` coloured by ``c`` on ``scale``."""
    key, axes = view.embeddings()[emb_label]
    labels = view.group_labels(key, c) if c["kind"] == "categorical" else []
    return raster_view.figure(view, key, c, scale, size, f"{emb_label} latent: {c['label']}", axes,
                              f"{view.id}:{emb_label}", labels, shown if c["kind"] == "categorical" else None)


def coloured(view, colour: str) -> tuple[dict, dict]:
    """(values of :meth:`RunView.colour`, their :func:`app.figures.colour_spec`), computed once per change."""
    c = view.colour(colour)
    return c, figures.colour_spec(c["values"], c["kind"], c["label"], c["categories"])


def colour_patch(view, emb_label: str, c: dict, spec: dict, was_ordered: bool) -> Patch:
    """The new marker colours, hover values and group labels (the fast path of a colour change);
    the points too when the drawing order changes (to, from or between continuous colours)."""
    key, _ = view.embeddings()[emb_label]
    reorder = was_ordered or spec["order"] is not None
    patch = figures.recolour(Patch(), spec, *((view.coords(key), view.cell_ids) if reorder else ()))
    patch["layout"]["title"]["text"] = f"{emb_label} latent: {c['label']}"
    patch["layout"]["annotations"] = view.group_labels(key, c) if c["kind"] == "categorical" else []
    return patch


def raster_colour_patch(view, emb_label: str, colour: str, bounds, size) -> tuple[Patch, dict, dict]:
    """A colour change of a rasterised embedding: (the image, colour bar, title and group labels
    as a Patch, the colour values, their :func:`app.figures.colour_scale`); ``bounds`` as kept by
    the page (untrusted)."""
    key, _ = view.embeddings()[emb_label]
    c = view.colour(colour)
    scale = raster_view.scale(c)
    bounds = raster.parse_bounds(bounds, view.points(key).extent)
    patch = raster_view.colour_patch(Patch(), view, key, c, scale, bounds, size)
    patch["layout"]["title"]["text"] = f"{emb_label} latent: {c['label']}"
    patch["layout"]["annotations"] = view.group_labels(key, c) if c["kind"] == "categorical" else []
    return patch, c, scale


#: groups listed in the checklist (each can be hidden); above, the list says how many there are
LISTED_GROUPS = 200


def group_legend(c: dict, spec: dict) -> tuple[list, list, dict]:
    """(options, value, style) of the group checklist: one coloured entry per group, with its cell count."""
    if c["kind"] != "categorical":
        return [], [], {"display": "none"}
    style = {"maxHeight": "260px", "overflowY": "auto"}
    if len(spec["groups"]) > LISTED_GROUPS:  # every group stays shown; the list would cost seconds a draw
        note = f"{len(spec['groups']):,} groups: too many to list for hiding"
        return [{"label": note, "value": -1, "disabled": True}], list(range(len(spec["groups"]))), style
    counts = np.bincount(np.asarray(c["values"])[np.asarray(c["values"]) >= 0], minlength=len(c["categories"]))
    options = [{"label": html.Span([html.Span(className="legend-swatch", style={"backgroundColor": colr}),
                                    f" {name} ({counts[i]:,})"]), "value": i}
               for i, (name, colr) in enumerate(spec["groups"])]
    return options, list(range(len(options))), style


def export_figure(cfg, run_id, emb_label, colour, shown=None):
    """The embedding as shown (hidden groups included), rebuilt on the server for export."""
    view = _run(cfg, run_id)
    if view is None or emb_label not in view.embeddings():
        return None
    shown = [i for i in shown if isinstance(i, int)] if isinstance(shown, list) else None
    return colour_figure(view, emb_label, colour if isinstance(colour, str) else "", shown=shown)


def selection_from_event(view, emb_label: str, selected: dict | None, order=None) -> list[int]:
    """Cell indices inside a lasso (``lassoPoints``) or box (``range``) selection event; clicked
    points are mapped back through the drawing ``order``."""
    if not selected:
        return []
    key, _ = view.embeddings()[emb_label]
    lasso, box = selected.get("lassoPoints"), selected.get("range")
    for outline in (lasso, box):
        if outline and not isinstance(outline, dict):
            raise ValueError("a selection outline must be an object with x and y")
    if lasso:
        return view.cells_in_polygon(key, lasso.get("x"), lasso.get("y")).tolist()
    if box:
        return view.cells_in_box(key, box.get("x"), box.get("y")).tolist()
    points = selected.get("points")
    points = [p for p in points if isinstance(p, dict)] if isinstance(points, list) else []
    pts = [p.get("pointIndex") for p in points if p.get("curveNumber") == 0]
    pts = [i for i in pts if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < view.n_cells]
    return sorted({int(order[i]) if order is not None else i for i in pts})


def register(app, cfg) -> None:
    """Embeddings page callbacks."""
    graph = components.graph_id("embedding")

    screen = State({"role": "export-screen", "g": "embedding"}, "data")

    @app.callback(Output(graph, "figure"), Output("page-state", "data", allow_duplicate=True),
                  Output("emb-groups", "options"), Output("emb-groups", "value"), Output("emb-groups-box", "style"),
                  Output("emb-ordered", "data"), Output("emb-range", "data"), Output("emb-drawn", "data"),
                  Input("emb-key", "value"), Input("emb-colour", "value"), State("emb-run", "data"),
                  State("emb-ordered", "data"), State("emb-range", "data"), screen,
                  prevent_initial_call="initial_duplicate")
    def draw(emb_label, colour, run_id, was_ordered, bounds, screen_px):
        """Full figure when the embedding changes; a Patch of the colours otherwise; the group legend.
        Rasterised: the image of the range in view (``emb-range``), drawn with every group."""
        view = _run(cfg, run_id)
        if view is None or emb_label not in (view.embeddings() if view else {}):
            return figures.empty("no run"), no_update, [], [], {"display": "none"}, False, None, None
        state = {"color": colour, "emb": emb_label}
        recolour = ctx.triggered_id == "emb-colour"
        if raster.rasterised(view.n_cells):
            size = raster_view.pixels(screen_px)
            if recolour:
                fig, c, scale = raster_colour_patch(view, emb_label, colour, bounds, size)
            else:
                c = view.colour(colour)
                scale = raster_view.scale(c)
                fig = raster_figure(view, emb_label, c, scale, size)
            legend = group_legend(c, {"groups": list(zip(scale.get("categories") or [], scale["colours"] or []))})
            return fig, state, *legend, False, no_update if recolour else None, legend[1]
        c, spec = coloured(view, colour)
        legend = group_legend(c, spec)
        ordered = spec["order"] is not None
        if recolour:
            return (colour_patch(view, emb_label, c, spec, was_ordered is not False), state, *legend, ordered,
                    no_update, no_update)
        return (colour_figure(view, emb_label, colour), state, *legend, ordered, None, None)

    @app.callback(Output(graph, "figure", allow_duplicate=True), Output("emb-drawn", "data", allow_duplicate=True),
                  Input("emb-groups", "value"), State("emb-key", "value"), State("emb-colour", "value"),
                  State("emb-run", "data"), State("emb-range", "data"), State("emb-drawn", "data"), screen,
                  prevent_initial_call=True)
    def toggle_groups(shown, emb_label, colour, run_id, bounds, drawn, screen_px):
        """Hide or show groups (a Patch of the markers' opacity only; rasterised: the image re-drawn
        without the hidden groups, unless it already shows these groups)."""
        view = _run(cfg, run_id)
        if view is None or not isinstance(shown, list) or emb_label not in view.embeddings():
            return no_update, no_update
        c = view.colour(colour)
        if c["kind"] != "categorical":
            return no_update, no_update
        shown = sorted({i for i in shown if isinstance(i, int) and not isinstance(i, bool)})
        if not raster.rasterised(view.n_cells):
            patch = Patch()
            patch["data"][0]["marker"]["opacity"] = figures.group_opacity(c["values"], set(shown))
            return patch, no_update
        if shown == drawn:
            return no_update, no_update
        key, _ = view.embeddings()[emb_label]
        scale = raster_view.scale(c)
        bounds = raster.parse_bounds(bounds, view.points(key).extent)
        return raster_view.image_patch(Patch(), view, key, c, scale, bounds, raster_view.pixels(screen_px),
                                       shown), shown

    @app.callback(Output(graph, "figure", allow_duplicate=True), Output("emb-range", "data", allow_duplicate=True),
                  Input(graph, "relayoutData"), State("emb-key", "value"), State("emb-colour", "value"),
                  State("emb-groups", "value"), State("emb-run", "data"), State("emb-range", "data"), screen,
                  prevent_initial_call=True)
    def zoom(relayout, emb_label, colour, shown, run_id, bounds, screen_px):
        """Rasterised: a zoom or pan re-draws the image of the range in view (checked: it comes from
        the browser); a reset goes back to every cell."""
        view = _run(cfg, run_id)
        if view is None or not raster.rasterised(view.n_cells) or emb_label not in view.embeddings():
            return no_update, no_update
        key, _ = view.embeddings()[emb_label]
        extent = view.points(key).extent
        try:
            new = raster.bounds_from_relayout(relayout, raster.parse_bounds(bounds, extent), extent)
        except ValueError:
            return no_update, no_update
        if new is None:
            return no_update, no_update
        c = view.colour(colour)
        scale = raster_view.scale(c)
        groups = [i for i in shown if isinstance(i, int)] if isinstance(shown, list) and c["kind"] == "categorical" \
            else None
        patch = raster_view.image_patch(Patch(), view, key, c, scale, new, raster_view.pixels(screen_px), groups)
        if new == extent:  # a reset: the axes back to every cell (autorange would fit the hit layer)
            patch["layout"]["xaxis"]["range"], patch["layout"]["yaxis"]["range"] = list(extent[:2]), list(extent[2:])
        return patch, list(new)

    @app.callback(Output("emb-hover", "children"), Input(graph, "hoverData"), State("emb-key", "value"),
                  State("emb-colour", "value"), State("emb-run", "data"), State("emb-range", "data"), screen,
                  prevent_initial_call=True)
    def hover(hovered, emb_label, colour, run_id, bounds, screen_px):
        """Rasterised: the cell nearest to the pointer, with its colour value (found on the server)."""
        view = _run(cfg, run_id)
        if view is None or not raster.rasterised(view.n_cells) or emb_label not in view.embeddings():
            return no_update
        key, _ = view.embeddings()[emb_label]
        bounds = raster.parse_bounds(bounds, view.points(key).extent)
        text = raster_view.hovered_cell(view, key, view.colour(colour), hovered, bounds,
                                        raster_view.pixels(screen_px))
        return no_update if text is None else text

    components.register_export(
        app, cfg, "embedding", [State("emb-run", "data"), State("emb-key", "value"), State("emb-colour", "value"),
                                State("emb-groups", "value")],
        lambda run_id, emb, colour, shown: export_figure(cfg, run_id, emb, colour, shown),
        lambda run_id, emb, colour, _shown: f"{run_id}_umap_{emb}_{str(colour).split(':')[-1]}")

    @app.callback(Output("cl-msg", "children"), Output("emb-colour", "options", allow_duplicate=True),
                  Output("emb-colour", "value"), Input("cl-save", "n_clicks"),
                  State({"role": "cl-name", "c": ALL}, "value"), State({"role": "cl-name", "c": ALL}, "id"),
                  State("emb-run", "data"), prevent_initial_call=True)
    def save_names(_n, names, ids, run_id):
        """Keep the cluster names in the run; the embedding is then coloured by them."""
        view = _run(cfg, run_id)
        if view is None or not isinstance(names, list) or not isinstance(ids, list) or len(names) != len(ids):
            return no_update, no_update, no_update
        known = set(view.mdata.obs[CLUSTER_KEY].astype(str)) if CLUSTER_KEY in view.mdata.obs else set()
        chosen = {i.get("c"): n for i, n in zip(ids, names) if isinstance(i, dict) and i.get("c") in known
                  and isinstance(n, str)}
        chosen = {**{c: n for c, n in view.annotation.items() if c in known}, **chosen}  # unlisted keep theirs
        try:
            runfolder.write_annotation(view.path, chosen)
        except (ValueError, OSError) as err:
            return dbc.Alert(f"Not saved: {err}", color="danger", className="py-1"), no_update, no_update
        view = _run(cfg, run_id)
        groups = sorted({n.strip() for n in chosen.values() if n.strip()})
        return (dbc.Alert(f"Saved {len(groups)} names for {len(known)} clusters; coloured by annotation.",
                          color="success", className="py-1", id="cl-saved"),
                view.colour_options(), f"obs:{runfolder.ANNOTATION_COLUMN}")

    @app.callback(Output("emb-colour", "options"), Input("emb-colour", "search_value"),
                  State("emb-colour", "value"), State("emb-run", "data"), prevent_initial_call=True)
    def search(text, current, run_id):
        """Features (and obs columns, latent dims) matching the typed text."""
        view = _run(cfg, run_id)
        if view is None or not text:
            return no_update
        opts = view.colour_options(text)
        if current and current not in [o["value"] for o in opts]:
            opts.insert(0, {"label": view.colour(current)["label"], "value": current})
        return opts

    @app.callback(Output("sel-current", "data"), Output("sel-info", "children"),
                  Input(graph, "selectedData"), State("emb-key", "value"), State("emb-colour", "value"),
                  State("emb-run", "data"), prevent_initial_call=True)
    def lasso(selected, emb_label, colour, run_id):
        """Cells inside the lasso, tested on the server against the polygon."""
        view = _run(cfg, run_id)
        if view is None or emb_label not in view.embeddings() or not isinstance(selected, dict):
            return no_update, no_update
        clicked = not (selected.get("lassoPoints") or selected.get("range"))
        order = coloured(view, colour if isinstance(colour, str) else "")[1]["order"] \
            if clicked and not raster.rasterised(view.n_cells) else None
        try:
            idx = selection_from_event(view, emb_label, selected, order)
        except ValueError as err:
            return [], f"Selection refused: {err}"
        return idx, f"{len(idx):,} of {view.n_cells:,} cells selected"

    @app.callback(Output("selections", "data"), Output("sel-pick", "options"), Output("sel-pick", "value"),
                  Input("sel-save", "n_clicks"), State("sel-name", "value"), State("sel-current", "data"),
                  State("selections", "data"), State("emb-run", "data"))
    def save_selection(n, name, current, stored, run_id):
        """Keep the lasso as a named cell set (per run, in session storage)."""
        stored = dict(stored or {})
        sets = dict(stored.get(run_id, {}))
        if n and current:
            name = (name or "").strip() or f"selection {len(sets) + 1}"
            sets[name] = current
            stored[run_id] = sets
            return stored, list(sets), name
        return no_update, list(sets), no_update

    def chosen_cells(pick, current, stored, run_id) -> list:
        sets = (stored or {}).get(run_id) if isinstance(stored, dict) else None
        if isinstance(pick, str) and isinstance(sets, dict) and pick in sets:
            return sets[pick]
        return current or []

    @app.callback(Output("sel-table", "children"), Input("sel-rank", "n_clicks"),
                  State("sel-pick", "value"), State("sel-current", "data"), State("selections", "data"),
                  State("sel-mod", "value"), State("emb-run", "data"),
                  background=True, prevent_initial_call=True,
                  running=[(Output("sel-rank", "disabled"), True, False)])
    def rank(_n, pick, current, stored, modality, run_id):
        """Wilcoxon ranking of the selection vs the rest (scmm.tl, in a background job)."""
        processes.exit_with_parent()
        cells = chosen_cells(pick, current, stored, run_id)
        view = _run(cfg, run_id)
        if view is None or len(cells) < 2:
            return dbc.Alert("Select at least 2 cells with the lasso first.", color="warning")
        try:
            table = rank_table(view, cells, modality)
        except Exception as err:  # show the library's message instead of a silent failure
            return dbc.Alert(f"Ranking failed: {err}", color="danger")
        if table is None:
            return dbc.Alert("Need at least 2 selected and 2 other cells.", color="warning")
        return html.Div([sampled_note(table, len(cells), view.n_cells),
                         components.table(table.head(TOP_N), id="sel-features")])

    @app.callback(Output({"role": "csv-download", "t": "selection-cells"}, "data"),
                  Input({"role": "csv", "t": "selection-cells"}, "n_clicks"),
                  State("sel-pick", "value"), State("sel-current", "data"), State("selections", "data"),
                  State("emb-run", "data"), prevent_initial_call=True)
    def export_cells(_n, pick, current, stored, run_id):
        """The selected cells (ids and annotations) as CSV."""
        view = _run(cfg, run_id)
        cells = chosen_cells(pick, current, stored, run_id)
        if view is None or not cells:
            return no_update
        try:
            frame = view.mdata.obs.iloc[cell_indices(view, cells)]
        except ValueError:
            return no_update
        frame = frame[[c for c in view.obs_columns()]]
        frame.index.name = "cell"
        name = components.safe_name(pick or "selection")
        return dict(content=frame.to_csv(), filename=f"{view.id}_{name}_cells.csv")

    @app.callback(Output({"role": "csv-download", "t": "selection-features"}, "data"),
                  Input({"role": "csv", "t": "selection-features"}, "n_clicks"),
                  State("sel-pick", "value"), State("sel-current", "data"), State("selections", "data"),
                  State("sel-mod", "value"), State("emb-run", "data"),
                  background=True, prevent_initial_call=True)
    def export_features(_n, pick, current, stored, modality, run_id):
        """The whole ranking of the selection vs the rest as CSV (background job)."""
        processes.exit_with_parent()
        view = _run(cfg, run_id)
        cells = chosen_cells(pick, current, stored, run_id)
        try:
            table = rank_table(view, cells, modality) if view is not None and len(cells) >= 2 else None
        except ValueError:
            table = None
        if table is None:
            return no_update
        name = components.safe_name(pick or "selection")
        return dict(content=table.to_csv(index=False), filename=f"{view.id}_{name}_{modality}_features.csv")


def cell_indices(view, cells) -> np.ndarray:
    """The client's cell indices as integers of this run (anything else is refused with ValueError)."""
    if not isinstance(cells, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in cells):
        raise ValueError("a selection must be a list of cell indices")
    idx = np.asarray(cells, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= view.n_cells):
        raise ValueError(f"cell indices must lie in [0, {view.n_cells - 1}]")
    return idx


def sampled_note(table: pd.DataFrame, n_selected: int, n_cells: int):
    """Words for a ranking that tested random subsets of the cells (``attrs`` of rank_features), or None."""
    tested = table.attrs.get("cells_tested", {})
    if not table.attrs.get("subsampled"):
        return None
    return dbc.Alert(f"Ranked on random subsets: {tested.get('selection', 0):,} of the {n_selected:,} selected "
                     f"cells against {tested.get('rest', 0):,} of the other {n_cells - n_selected:,} "
                     "(scmm.tl.rank_features caps each side; seeded, so the same selection gives the same table).",
                     color="info", className="small py-1")


def rank_table(view, cells, modality: str) -> pd.DataFrame | None:
    """``scmm.tl.rank_features`` of ``cells`` vs the rest (None when either side has < 2 cells)."""
    if modality not in view.modalities:
        raise ValueError(f"unknown modality {str(modality)[:40]!r}; this run has {view.modalities}")
    mask = np.zeros(view.n_cells, dtype=bool)
    mask[cell_indices(view, cells)] = True
    if mask.sum() < 2 or (~mask).sum() < 2:
        return None
    return rank_features(view.mdata, modality, mask)
