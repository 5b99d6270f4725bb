"""Page 4, Traversal: features associated with each latent dimension, without decoding.

Everything comes from the run's cached ``scmm.tl`` traversal (``traversal.npz``,
computed once by ``scmm analyze``): a slider step only slices arrays.  Sliders
pick the dimension and the traversal value; the p-value threshold and the
number of bars are controls; the associated features are a table with a CSV
download, and each feature links to the embedding coloured by it.
"""
from __future__ import annotations

import math
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Input, Output, Patch, State, dcc, html, no_update

from scmm.runfolder import LATENT_KEY, RunFileError
from scmm.tl.traversal import dimension_overview

from app import components, data_access, figures, raster
from app.pages import raster_view
from app.pages.embeddings import no_run, not_shown, run_missing

N_PROFILE = 6
TABLE_ROWS = 20


def _traversal(cfg, run_id):
    view = data_access.get_run(data_access.resolve_run(cfg.runs_dir, run_id))
    return view, (view.traversal() if view is not None else None)


def layout(cfg, run_id, query) -> html.Div:
    """The Traversal page (``dim`` and ``mod`` from the query)."""
    view, trav = _traversal(cfg, run_id)
    if view is None:
        return run_missing(cfg, run_id)
    if trav is None:
        return no_run(f"Run {view.id} has no traversal yet: run `scmm analyze` on it "
                      "(training from this app does it for you).")
    notes = []
    dim, mod = 0, trav.modalities[0]
    if "dim" in query:
        if query["dim"].isdigit() and int(query["dim"]) < trav.n_dims:
            dim = int(query["dim"])
        else:
            notes.append(not_shown(f"dimension {query['dim']!r}", f"dimensions are 0 to {trav.n_dims - 1} "
                                   f"(z1 to z{trav.n_dims}) in this run", "z1"))
    if "mod" in query:
        if query["mod"] in trav.modalities:
            mod = query["mod"]
        else:
            notes.append(not_shown(f"modality {query['mod']!r}", f"this run has {', '.join(trav.modalities)}", mod))
    steps = trav.steps
    default_p = {m: -math.log10(p) for m, p in trav.pvalues.items()}
    overview = view_overview(view, trav)
    status = dict(zip(overview["dim"], overview["status"])) if overview is not None else {}
    controls = dbc.Card(dbc.CardBody([
        dbc.Label("Latent dimension"),
        dcc.Slider(id="trav-dim", min=0, max=trav.n_dims - 1, step=1, value=dim,
                   marks={d: f"z{d + 1}" + {"weak": "·", "inactive": "∅"}.get(status.get(d), "")
                          for d in range(trav.n_dims)}, allow_direct_input=False),
        html.Div("· weak, ∅ inactive (see All dimensions)", className="small text-muted"),
        dbc.Label("Traversal value (prior s.d.)", className="mt-2"),
        dcc.Slider(id="trav-step", min=0, max=len(steps) - 1, step=1, value=len(steps) // 2,
                   marks={i: f"{s:g}" for i, s in enumerate(steps) if float(s).is_integer()},
                   allow_direct_input=False, updatemode="drag"),
        dbc.Label("Modality", className="mt-2"),
        dbc.RadioItems(id="trav-mod", options=[{"label": m, "value": m} for m in trav.modalities],
                       value=mod, inline=True),
        dbc.Row([
            dbc.Col([dbc.Label("-log10 p threshold", className="mt-2"),
                     dbc.Input(id="trav-logp", type="number", min=0, max=300, step="any",
                               value=round(default_p[mod], 2))]),
            dbc.Col([dbc.Label("Bars per direction", className="mt-2"),
                     dbc.Input(id="trav-n", type="number", min=1, max=100, step=1, value=15)]),
        ]),
        dbc.Label("Add features to the profile", className="mt-2"),
        dcc.Dropdown(id="trav-extra", multi=True, options=[], value=[],
                     placeholder="type a gene, protein or peak…"),
        html.Div(id="trav-count", className="small text-muted mt-2"),
        html.Div(id="trav-link", className="mt-2"),
    ]))
    umap_card = [] if "joint" not in view.embeddings() or LATENT_KEY not in view.mdata.obsm else [
        components.figure_card("traversal-umap", None, f"Where the traversal value lies among the cells (the mean "
                               f"UMAP position of the {NEIGHBOURS} nearest cells in the latent space)", loading=False)]
    return html.Div([
        dcc.Store(id="trav-run", data=view.id),
        dcc.Store(id="trav-defaults", data=default_p),
        dcc.Store(id="trav-shown", data={}),
        html.H3(["Latent traversal ", html.Small(view.id, className="text-muted")]),
        *notes,
        dbc.Row([
            dbc.Col(controls, md=3),
            dbc.Col(components.figure_card("traversal-bars", None, "Associated features",
                                           loading=False), md=5),
            dbc.Col(components.figure_card("traversal-profile", None, "Decoded profile along the traversal",
                                           loading=False, extra=[html.Div(id="trav-at")]),
                    md=4),
        ]),
        *umap_card,
        dbc.Card([dbc.CardHeader(["Associated features", components.csv_button("associated")]),
                  dbc.CardBody(html.Div(id="trav-table"))], className="mb-3"),
        dbc.Card([dbc.CardHeader("All dimensions, strongest first"),
                  dbc.CardBody(overview_view(overview, trav.modalities))]),
    ])


def view_overview(view, trav):
    """:func:`scmm.tl.traversal.dimension_overview` for the run (None without a joint latent)."""
    if LATENT_KEY not in view.mdata.obsm:
        return None
    latent = view.mdata.obsm[LATENT_KEY]
    if latent.shape[1] != trav.n_dims:
        return None
    return dimension_overview(trav, latent)


def overview_view(overview, modalities) -> html.Div:
    """The dimensions table: prior and cells' spread, strength, status, associated features per modality."""
    if overview is None:
        return html.Div("no joint latent in this run's results", className="text-muted small")
    shown = pd.DataFrame({
        "dimension": [f"z{d + 1}" for d in overview["dim"]], "status": overview["status"],
        "cells' s.d. / prior s.d.": overview["strength"].map(lambda v: f"{v:.2f}"),
        "cells occupy": [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(overview["low"], overview["high"])],
        **{f"{m}: associated (max |log2 FC|)": [f"{n} ({fc:.2f})" for n, fc in
                                               zip(overview[f"n_{m}"], overview[f"max_fc_{m}"])]
           for m in modalities}})
    return html.Div([html.P("Weak: the cells spread over less than half the prior s.d.; inactive: less than "
                            "a tenth (the model does not use the dimension). Features associated with a weak "
                            "dimension change little over the range the cells occupy.",
                            className="small text-muted"),
                     components.table(shown, max_rows=256, id="trav-overview")])


def with_nearest_gene(view, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the nearest gene and TSS distance of its peaks, when the run's chromatin analyses
    name them (``scmm chromatin --genes``); unchanged otherwise or when unreadable."""
    try:
        res = view.chromatin() if view is not None else None
    except RunFileError:
        return table
    if res is None or res.peak_genes is None or table.empty:
        return table
    hits = res.peak_genes.reindex(table["feature"].astype(str))
    if hits["gene"].isna().all():
        return table
    out = table.copy()
    out.insert(1, "nearest gene", hits["gene"].fillna("").to_numpy())
    out.insert(2, "TSS distance (bp)", hits["tss_distance"].to_numpy())
    return out


def associated(trav, dim: int, mod: str, logp: float | None):
    """``Traversal.associated`` at threshold 10**-logp (the modality's default when None)."""
    pvalue = 10 ** (-min(300.0, max(0.0, float(logp)))) if logp not in (None, "") else None
    return trav.associated(int(dim), mod, pvalue=pvalue)


def profile_features(trav, table, mod: str, extra=None) -> list[str]:
    """The profile's features: the top 3 of each direction, then the user's additions (known ones only)."""
    top = list(table[table.direction == "positive"].feature[:N_PROFILE // 2]) + \
        list(table[table.direction == "negative"].feature[:N_PROFILE // 2])
    known = set(trav.features[mod])
    added = [f for f in (extra if isinstance(extra, list) else []) if isinstance(f, str) and f in known]
    return list(dict.fromkeys(top + added[:20]))


def decoded_at(trav, dim: int, step: int, mod: str, features: list[str]):
    """What the decoder gives at the traversal value: a line per feature (decoded mean, library-scaled)."""
    if not features:
        return ""
    z = float(trav.steps[step])
    values = trav.profile(dim, mod, features).iloc[step]
    return html.Div([html.Span(f"At z{dim + 1} = {z:g} σ the decoder gives ({mod}, mean per cell): ",
                               className="fw-semibold"),
                     ", ".join(f"{f} {values[f]:.3g}" for f in features)], className="small", id="trav-at-text")


def traversal_figures(trav, dim: int, step: int, mod: str, logp, n: int, extra=None):
    """(bars, profile, table, features) for one slider position; array slicing only, no decoding."""
    table = associated(trav, dim, mod, logp)
    n = min(100, max(1, int(n or 15)))
    bars = figures.traversal_bars(table, n=n, title=f"z{dim + 1} · {mod}: {len(table)} associated "
                                  f"(the top {n} of each direction drawn)")
    occupied = tuple(trav.occupied[int(dim)] / trav.sigma[int(dim)])
    top = profile_features(trav, table, mod, extra)
    profile = trav.profile(int(dim), mod, top) if top else None
    z = float(trav.steps[int(step)])
    prof = figures.traversal_profile(profile, z_sigma=z, occupied=occupied,
                                     title=f"z{dim + 1} = {z:g} σ (shaded: where the cells lie)")
    return bars, prof, table, top


def fits(trav, dim, step, mod) -> bool:
    """True when the client's dimension, traversal step and modality exist in ``trav``."""
    return trav is not None and mod in trav.modalities and isinstance(dim, int) and 0 <= dim < trav.n_dims \
        and isinstance(step, int) and 0 <= step < len(trav.steps)


def export_figures(cfg, run_id, dim, step, mod, logp, n, extra=None):
    """(bars, profile) as shown, rebuilt on the server (None when the settings do not fit the run)."""
    _, trav = _traversal(cfg, run_id)
    if not fits(trav, dim, step, mod):
        return None
    try:
        bars, prof, *_ = traversal_figures(trav, dim, step, mod, logp, n, extra)
    except (TypeError, ValueError):
        return None
    return bars, prof


NEIGHBOURS = 15


def traversal_point(view, trav, dim: int, step: int, k: int = NEIGHBOURS) -> tuple[float, float] | None:
    """Where the latent point of the traversal (z_dim at the step, the other dimensions 0) lies on
    the joint UMAP: the mean UMAP position of its ``k`` nearest cells in the latent space
    (an approximation: UMAP has no inverse here).  None without a joint latent and UMAP."""
    embeddings = view.embeddings()
    if LATENT_KEY not in view.mdata.obsm or "joint" not in embeddings:
        return None
    latent = np.asarray(view.mdata.obsm[LATENT_KEY], dtype=np.float64)
    point = np.zeros(latent.shape[1])
    point[dim] = trav.grid[dim, step]
    distance = ((latent - point) ** 2).sum(axis=1)
    nearest = np.argpartition(distance, min(k, len(distance) - 1))[:k]
    xy = view.coords(embeddings["joint"][0])[nearest]
    return float(xy[:, 0].mean()), float(xy[:, 1].mean())


def traversal_umap(view, trav, dim: int, step: int):
    """The joint UMAP coloured by the cells' z_dim, with the traversal point marked (a star)."""
    key, axes = view.embeddings()["joint"]
    c = view.colour(f"z:{dim}")
    title = f"joint UMAP coloured by z{dim + 1}; ★ the traversal value"
    if raster.rasterised(view.n_cells):  # an image of the cells, said in the title (app.raster)
        fig = raster_view.figure(view, key, c, raster_view.scale(c), raster.DEFAULT_SIZE,
                                 f"{title} (rasterised image of {view.n_cells:,} cells)", axes, f"{view.id}:trav")
    else:
        fig = figures.embedding(view.coords(key), figures.colour_spec(c["values"], c["kind"], c["label"]),
                                view.cell_ids, title=title, axis_names=axes, uirevision=f"{view.id}:trav")
    x, y = traversal_point(view, trav, dim, step) or (None, None)
    fig.add_scatter(x=[x], y=[y], mode="markers", name="traversal", hoverinfo="skip", showlegend=False,
                    marker={"symbol": "star", "size": 18, "color": "black", "line": {"width": 1, "color": "white"}})
    fig.update_layout(height=420, dragmode="pan")
    return fig


def marker_patch(trav, dim: int, step: int) -> Patch:
    """Move the profile's traversal marker to grid point ``step`` (nothing else is sent)."""
    z = float(trav.steps[int(step)])
    patch = Patch()
    patch["layout"]["shapes"] = figures.profile_shapes(z, tuple(trav.occupied[int(dim)] / trav.sigma[int(dim)]))
    patch["layout"]["title"]["text"] = f"z{int(dim) + 1} = {z:g} σ (shaded: where the cells lie)"
    return patch


def register(app, cfg) -> None:
    """Traversal page callbacks."""

    @app.callback(Output("trav-logp", "value"), Input("trav-mod", "value"), State("trav-defaults", "data"),
                  prevent_initial_call=True)
    def default_threshold(mod, defaults):
        """Each modality starts at the paper's threshold (RNA 1e-12, protein 1e-3, ATAC 1e-21)."""
        return round((defaults or {}).get(mod, 3.0), 2)

    @app.callback(Output(components.graph_id("traversal-bars"), "figure"),
                  Output(components.graph_id("traversal-profile"), "figure"),
                  Output("trav-table", "children"), Output("trav-count", "children"),
                  Output("page-state", "data", allow_duplicate=True), Output("trav-shown", "data"),
                  Output("trav-at", "children"),
                  Input("trav-dim", "value"), Input("trav-mod", "value"),
                  Input("trav-logp", "value"), Input("trav-n", "value"), Input("trav-extra", "value"),
                  State("trav-step", "value"), State("trav-run", "data"), prevent_initial_call="initial_duplicate")
    def update(dim, mod, logp, n, extra, step, run_id):
        """Re-slice the cached traversal for the sliders and thresholds."""
        view, trav = _traversal(cfg, run_id)
        if not fits(trav, dim, step, mod):
            return (no_update,) * 7
        try:
            bars, prof, table, shown = traversal_figures(trav, dim, step, mod, logp, n, extra)
        except (TypeError, ValueError):
            return (no_update,) * 3 + ("the threshold and bars must be numbers",) + (no_update,) * 3
        n_pos = int((table.direction == "positive").sum())
        link = lambda row: "/embeddings?" + urlencode({"run": run_id, "color": f"feat:{mod}:{row['feature']}"})
        listed = with_nearest_gene(view, table.drop(columns=["mean_low", "mean_high"], errors="ignore"))
        return (bars, prof, components.table(listed, TABLE_ROWS, link=link, id="trav-features"),
                f"{n_pos} positive, {len(table) - n_pos} negative at p < 10^-{logp}; the table lists the "
                f"first {min(TABLE_ROWS, len(table))} of {len(table)} (CSV: all)",
                {"dim": dim, "mod": mod}, {"mod": mod, "features": shown},
                decoded_at(trav, dim, step, mod, shown))

    @app.callback(Output(components.graph_id("traversal-profile"), "figure", allow_duplicate=True),
                  Output("trav-at", "children", allow_duplicate=True),
                  Input("trav-step", "value"), State("trav-dim", "value"), State("trav-shown", "data"),
                  State("trav-run", "data"), prevent_initial_call=True)
    def move_marker(step, dim, shown, run_id):
        """A traversal-value step moves the profile's marker (a Patch) and says what the decoder gives there."""
        _, trav = _traversal(cfg, run_id)
        if trav is None or not fits(trav, dim, step, trav.modalities[0]):
            return no_update, no_update
        shown = shown if isinstance(shown, dict) else {}
        mod = shown.get("mod") if shown.get("mod") in trav.modalities else trav.modalities[0]
        features = [f for f in shown.get("features") or [] if isinstance(f, str) and f in trav.features[mod]]
        return marker_patch(trav, dim, step), decoded_at(trav, dim, step, mod, features)

    def umap_export(run_id, dim, step):
        view, trav = _traversal(cfg, run_id)
        if view is None or not fits(trav, dim, step, trav.modalities[0] if trav else None) \
                or traversal_point(view, trav, dim, step) is None:
            return None
        return traversal_umap(view, trav, dim, step)

    components.register_export(
        app, cfg, "traversal-umap", [State("trav-run", "data"), State("trav-dim", "value"), State("trav-step", "value")],
        umap_export, lambda run_id, dim, step: f"{run_id}_z{dim + 1 if isinstance(dim, int) else ''}_umap_point")

    @app.callback(Output(components.graph_id("traversal-umap"), "figure"), Input("trav-dim", "value"),
                  State("trav-step", "value"), State("trav-run", "data"))
    def draw_umap(dim, step, run_id):
        """The joint UMAP coloured by the chosen dimension, the traversal point marked."""
        fig = umap_export(run_id, dim, step)
        return fig if fig is not None else no_update

    @app.callback(Output(components.graph_id("traversal-umap"), "figure", allow_duplicate=True),
                  Input("trav-step", "value"), State("trav-dim", "value"), State("trav-run", "data"),
                  prevent_initial_call=True)
    def move_star(step, dim, run_id):
        """A traversal-value step moves only the star (a Patch of two numbers)."""
        view, trav = _traversal(cfg, run_id)
        if view is None or not fits(trav, dim, step, trav.modalities[0] if trav else None):
            return no_update
        point = traversal_point(view, trav, dim, step)
        if point is None:
            return no_update
        patch = Patch()
        patch["data"][1]["x"] = [point[0]]
        patch["data"][1]["y"] = [point[1]]
        return patch

    @app.callback(Output("trav-extra", "options"), Input("trav-extra", "search_value"),
                  State("trav-extra", "value"), State("trav-mod", "value"), State("trav-run", "data"),
                  prevent_initial_call=True)
    def search_features(text, chosen, mod, run_id):
        """Features of the shown modality matching the typed text (any case), to add to the profile."""
        _, trav = _traversal(cfg, run_id)
        if trav is None or mod not in trav.modalities:
            return no_update
        chosen = [c for c in (chosen if isinstance(chosen, list) else []) if isinstance(c, str)]
        needle = (text or "").strip().lower()
        hits = [f for f in trav.features[mod] if needle and needle in f.lower()]
        hits.sort(key=lambda f: (f.lower() != needle, not f.lower().startswith(needle), len(f)))
        return [{"label": f, "value": f} for f in dict.fromkeys(chosen + hits[:50])]

    states = [State("trav-run", "data"), State("trav-dim", "value"), State("trav-step", "value"),
              State("trav-mod", "value"), State("trav-logp", "value"), State("trav-n", "value"),
              State("trav-extra", "value")]
    for index, name in enumerate(("traversal-bars", "traversal-profile")):
        components.register_export(
            app, cfg, name, states,
            lambda *values, i=index: (export_figures(cfg, *values) or (None, None))[i],
            lambda run_id, dim, step, mod, *_, kind=name.split("-")[1]: f"{run_id}_z{dim + 1 if isinstance(dim, int) else ''}_{mod}_{kind}")

    @app.callback(Output("trav-link", "children"),
                  Input(components.graph_id("traversal-bars"), "clickData"),
                  State("trav-mod", "value"), State("trav-run", "data"), prevent_initial_call=True)
    def click_feature(click, mod, run_id):
        """A clicked bar offers the embedding coloured by that feature."""
        if not click or not click.get("points"):
            return no_update
        feature = click["points"][0]["y"]
        href = "/embeddings?" + urlencode({"run": run_id, "color": f"feat:{mod}:{feature}"})
        return dcc.Link(f"Colour the embedding by {feature} →", href=href, id="trav-colour-link")

    @app.callback(Output({"role": "csv-download", "t": "associated"}, "data"),
                  Input({"role": "csv", "t": "associated"}, "n_clicks"),
                  State("trav-dim", "value"), State("trav-mod", "value"), State("trav-logp", "value"),
                  State("trav-run", "data"), prevent_initial_call=True)
    def download(_n, dim, mod, logp, run_id):
        """The associated features of this dimension and modality as CSV."""
        view, trav = _traversal(cfg, run_id)
        if not fits(trav, dim, 0, mod):
            return no_update
        try:
            table = with_nearest_gene(view, associated(trav, dim, mod, logp))
        except (TypeError, ValueError):
            return no_update
        table.insert(0, "dim", int(dim) + 1)
        return dict(content=table.to_csv(index=False), filename=components.safe_name(f"{run_id}_z{dim + 1}_{mod}") + "_associated.csv")


