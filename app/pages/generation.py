"""Page 5, Generation: cluster x feature heatmaps (original / reconstruction / cross-modal),
predicted versus observed with Pearson r, and prediction for a one-modality query dataset.

Heatmap tables are the ones ``scmm analyze`` saved; per-cell predictions and
query predictions run ``python -m scmm predict`` in a child process (from a
background callback), cached in the run folder under ``predictions/``.
"""
from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from scmm import runfolder
from scmm.normalise import lognorm
from scmm.tl.metrics import pearson

from app import components, data_access, figures, processes
from app.pages.embeddings import not_shown, run_missing


def _view(cfg, run_id):
    return data_access.get_run(data_access.resolve_run(cfg.runs_dir, run_id))


def row_tables(view, groupby) -> dict | None:
    """The tables for the chosen rows: clusters (named by the annotation), or an obs column's groups
    (None while they are not computed)."""
    if not groupby:
        return named(view.heatmap_tables(), view)
    return view.grouped_tables(groupby)


def named(tables: dict, view) -> dict:
    """The cluster x feature tables with rows named by the user's annotation and ordered by name."""
    if not view.annotation:
        return tables
    out = {}
    for key, table in tables.items():
        if key == "similarity":
            out[key] = table
            continue
        labels = [view.cluster_label(c) for c in table.index]
        out[key] = table.set_axis(labels, axis=0).sort_index(key=lambda idx: idx.str.lower())
    return out


def panels(tables: dict, target: str, modalities: list[str]) -> tuple[dict, dict]:
    """The heatmap panels of ``target``: original, reconstruction, then each cross-modal generation."""
    chosen, titles = {}, {}
    key = f"{target}|original"
    if key in tables:
        chosen[key], titles[key] = tables[key], f"{target}: original"
    for source in [target] + [m for m in modalities if m != target]:
        key = f"{target}|from_{source}"
        if key in tables:
            chosen[key] = tables[key]
            titles[key] = (f"{target}: reconstruction" if source == target
                           else f"{target} generated from {source}")
    return chosen, titles


def layout(cfg, run_id, query) -> html.Div:
    """The Generation page (``target`` from the query)."""
    view = _view(cfg, run_id)
    if view is None:
        return run_missing(cfg, run_id)
    mods = view.modalities
    target = query.get("target") if query.get("target") in mods else (mods[-1] if mods else None)
    notes = [] if "target" not in query or query["target"] in mods else \
        [not_shown(f"modality {query['target']!r}", f"this run has {', '.join(mods)}", target)]
    datasets = data_access.list_datasets(cfg.data_dir)
    query_card = dbc.Card([dbc.CardHeader("Predict for a query dataset with one modality"), dbc.CardBody([
        dbc.Row([
            dbc.Col([dbc.Label("Query dataset"), dcc.Dropdown(id="gen-query", options=datasets)], md=5),
            dbc.Col([dbc.Label("It has"), dcc.Dropdown(id="gen-query-source", options=mods,
                                                       value=mods[0], clearable=False)], md=2),
            dbc.Col([dbc.Label("Predict"), dcc.Dropdown(id="gen-query-target", options=mods,
                                                        value=mods[-1], clearable=False)], md=2),
            dbc.Col(dbc.Button("Predict and download CSV", id="gen-query-run", color="primary",
                               className="mt-4"), md=3),
        ]),
        dcc.Loading(html.Div(id="gen-query-status", className="small mt-2")),
        dcc.Download(id="gen-query-download"),
    ])], className="mb-3")
    return html.Div([
        dcc.Store(id="gen-run", data=view.id),
        html.H3(["Cross-modal generation ", html.Small(view.id, className="text-muted"),
                 components.bundle_link(view.id)]),
        *notes,
        dbc.Row([
            dbc.Col([dbc.Label("Modality shown"),
                     dbc.RadioItems(id="gen-target", options=[{"label": m, "value": m} for m in mods],
                                    value=target, inline=True)], md=3),
            dbc.Col([dbc.Label("Rows: groups of cells"),
                     dcc.Dropdown(id="gen-groupby", clearable=False, value="",
                                  options=[{"label": "clusters", "value": ""}] +
                                  [{"label": c, "value": c} for c in view.group_columns()]),
                     html.Div(id="gen-group-msg", className="small")], md=3),
            dbc.Col(html.Div(id="gen-similarity"), md=6),
        ], className="mb-2"),
        dcc.Store(id="gen-grouped", data=0),
        components.figure_card("heatmaps", None, "Cluster x feature (z-scored), all cells: training and test"),
        dbc.Row([
            dbc.Col(components.figure_card("pred-obs", None, "Generated vs original (cluster x feature, all cells)"), md=6),
            dbc.Col(components.figure_card("pred-cells", None, "Predicted vs observed per cell (held-out test cells)", extra=[
                dbc.Row([
                    dbc.Col(dcc.Dropdown(id="gen-cell-feature", placeholder="feature"), md=6),
                    dbc.Col(dbc.Button("Predict per cell", id="gen-cells-run", size="sm",
                                       color="secondary"), md=6),
                ], className="mt-2")]), md=6),
        ]),
        query_card,
    ])


def similarity_view(tables: dict, target: str) -> html.Div:
    """Pearson r of each generated table against the original, as badges, plus a CSV button."""
    sim = tables.get("similarity")
    if sim is None or sim.empty:
        return html.Div()
    rows = sim[sim["target"] == target]
    badges = [dbc.Badge(f"{r.kind} from {r.source}: r = {r.pearson_r:.3f}", color="light",
                        text_color="dark", className="me-2 border") for r in rows.itertuples()]
    return html.Div(badges + [components.csv_button("heatmap", "heatmap CSV")])


def cluster_scatter(tables: dict, target: str, modalities: list[str]):
    """Generated against original z-scores (every cluster x feature) with Pearson r."""
    original = tables.get(f"{target}|original")
    others = [m for m in modalities if m != target]
    source = others[0] if others else target
    generated = tables.get(f"{target}|from_{source}")
    if original is None or generated is None:
        return figures.empty("no tables: analyse the run first", height=460)
    generated = generated.reindex(index=original.index, columns=original.columns)
    labels = [f"cluster {c} · {f}" for c in original.index for f in original.columns]
    return figures.predicted_vs_observed(original.to_numpy().ravel(), generated.to_numpy().ravel(),
                                         label=f"{target} from {source}", xlabel="original (z)",
                                         ylabel="generated (z)", text=labels)


def prediction_path(run_dir: Path, target: str, source: str) -> Path:
    """Where the per-cell prediction of ``target`` from ``source`` is cached (both modalities of the run)."""
    return Path(run_dir) / runfolder.PREDICTIONS_DIR / f"{target}_from_{source}.h5ad"


def check_direction(view, target, source) -> str | None:
    """Why (``target`` from ``source``) is not a prediction this run can make (None when it can)."""
    if target not in view.modalities or source not in view.modalities:
        return f"modalities must be among {view.modalities}"
    if target == source:
        return "pick two different modalities"
    return None


def run_predict(cfg, run_dir: Path, target: str, source: str, out: Path, query: Path | None = None,
                timeout: float = 900, on_wait=None) -> tuple[str | None, list[str]]:
    """``python -m scmm predict`` in a child process and a work slot: (error message or None, warnings).

    The warnings are those the library raised (missing features filled with
    zeros, dropped cells...), for the page to show beside the result.  The
    prediction is written to a temporary name and renamed into ``out`` only
    when complete.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    cmd = processes.python_command("scmm", "predict", run_dir, "--target", target, "--from", source,
                                   "--out", tmp)
    if query is not None:
        cmd += ["--query", str(query)]
    try:
        with processes.work_slot(cfg.slots_dir, cfg.work_slots, wait=300, on_wait=on_wait):
            proc = processes.run_child(cmd, timeout)
    except processes.Busy as err:
        return str(err), []
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        return f"the prediction took longer than {timeout:.0f} s", []
    warned = processes.library_warnings(proc.stderr)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return (lines[-1][:500] if lines else f"exit code {proc.returncode}"), warned
    tmp.replace(out)
    return None, warned


def measured_quality(query: Path, target: str, predicted_csv: Path) -> str | None:
    """When the query file also measured ``target`` (an .h5mu holding it): how well the
    prediction matches, as words (median per-feature Pearson r of log-normalised values over the
    cells and features both have); None when the query has no measured ``target``."""
    if query.suffix != ".h5mu":
        return None
    import mudata as md
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measured = md.read_h5mu(query).mod.get(target)
    except (OSError, ValueError, KeyError):
        return None
    if measured is None:
        return None
    predicted = pd.read_csv(predicted_csv, index_col=0)
    cells = predicted.index.intersection(measured.obs_names.astype(str))
    features = predicted.columns.intersection(measured.var_names.astype(str))
    if len(cells) < 3 or not len(features):
        return f"the query measured {target}, but shares too few cells or features with the prediction to compare"
    observed = measured[cells, features].X
    observed = observed.toarray() if hasattr(observed, "toarray") else np.asarray(observed)
    pred = predicted.loc[cells, features].to_numpy(dtype=np.float64)
    r = [pearson(a, b) for a, b in zip(lognorm(observed).T, lognorm(pred).T)]
    finite = [v for v in r if np.isfinite(v)]
    if not finite:
        return f"the query measured {target}, but every feature is constant: no Pearson r"
    return (f"Against the {target} the query measured: median per-feature Pearson r = {np.median(finite):.3f} "
            f"over {len(finite)} features and the query's {len(cells):,} cells (log-normalised)")


def warnings_alert(warned: list[str], id: str):
    """The library's warnings as one alert (nothing when there were none)."""
    if not warned:
        return None
    return dbc.Alert([html.Strong("The library warned: "), html.Ul([html.Li(w) for w in warned], className="mb-0")],
                     color="warning", className="py-1 mt-2", id=id)


def cell_scatter(view, pred_file: Path, target: str, source: str, feature: str):
    """Observed vs predicted log-normalised values of ``feature`` per cell, with Pearson r."""
    import anndata as ad
    pred = ad.read_h5ad(pred_file)
    if feature not in pred.var_names:
        return figures.empty(f"{feature} not predicted")
    X = pred.X.toarray() if hasattr(pred.X, "toarray") else np.asarray(pred.X)
    j = int(np.flatnonzero(pred.var_names == feature)[0])
    predicted = lognorm(X)[:, j]
    observed = view.feature_values(target, feature)
    cells, which = view.held_out()
    return figures.predicted_vs_observed(observed[cells], predicted[cells],
                                         label=f"{target}:{feature} from {source}, {which}",
                                         xlabel="observed log-normalised", ylabel="predicted log-normalised",
                                         text=view.cell_ids[cells])


def register(app, cfg) -> None:
    """Generation page callbacks."""

    @app.callback(Output(components.graph_id("heatmaps"), "figure"),
                  Output(components.graph_id("pred-obs"), "figure"),
                  Output("gen-similarity", "children"), Output("gen-cell-feature", "options"),
                  Output("gen-cell-feature", "value"),
                  Output("page-state", "data", allow_duplicate=True),
                  Input("gen-target", "value"), Input("gen-groupby", "value"), Input("gen-grouped", "data"),
                  State("gen-run", "data"), prevent_initial_call="initial_duplicate")
    def show(target, groupby, _ready, run_id):
        """Heatmaps side by side and the group-level scatter for the chosen modality and grouping."""
        view = _view(cfg, run_id)
        if view is None:
            return (no_update,) * 6
        tables = row_tables(view, groupby)
        if tables is None:
            waiting = figures.empty(f"tables grouped by {str(groupby)[:60]} are being computed…", height=300)
            return waiting, waiting, "", [], None, {"target": target}
        chosen, titles = panels(tables, target, view.modalities)
        heat = figures.heatmaps(chosen, titles, title=f"{target}: marker features per {groupby or 'cluster'}")
        feats = list(tables[f"{target}|original"].columns) if f"{target}|original" in tables else []
        return (heat, cluster_scatter(tables, target, view.modalities), similarity_view(tables, target),
                feats, feats[0] if feats else None, {"target": target})

    def export_panels(run_id, target, groupby):
        view = _view(cfg, run_id)
        tables = row_tables(view, groupby) if view is not None and target in view.modalities else None
        if tables is None:
            return None
        chosen, titles = panels(tables, target, view.modalities)
        return figures.heatmaps(chosen, titles, title=f"{target}: marker features per {groupby or 'cluster'}"), \
            cluster_scatter(tables, target, view.modalities)

    for index, name in enumerate(("heatmaps", "pred-obs")):
        components.register_export(
            app, cfg, name, [State("gen-run", "data"), State("gen-target", "value"), State("gen-groupby", "value")],
            lambda run_id, target, groupby, i=index: (export_panels(run_id, target, groupby) or (None, None))[i],
            lambda run_id, target, groupby, kind=name: f"{run_id}_{target}_{kind}" + (f"_by_{groupby}" if groupby else ""))

    def export_cells_figure(run_id, target, feature):
        view = _view(cfg, run_id)
        if view is None or target not in view.modalities:
            return None
        others = [m for m in view.modalities if m != target]
        source = others[0] if others else target
        path = prediction_path(view.path, target, source)
        if not path.exists() or not isinstance(feature, str) or feature not in view._feature_index[target]:
            return None
        return cell_scatter(view, path, target, source, feature)

    components.register_export(
        app, cfg, "pred-cells", [State("gen-run", "data"), State("gen-target", "value"),
                                 State("gen-cell-feature", "value")],
        export_cells_figure, lambda run_id, target, feature: f"{run_id}_{target}_{feature}_predicted_vs_observed")

    @app.callback(Output("gen-grouped", "data"), Output("gen-group-msg", "children"),
                  Input("gen-groupby", "value"), State("gen-run", "data"), State("gen-grouped", "data"),
                  background=True, prevent_initial_call=True)
    def compute_grouped(groupby, run_id, ready):
        """Compute the tables grouped by an obs column once (a child process in a work slot)."""
        processes.exit_with_parent()
        view = _view(cfg, run_id)
        if view is None or not groupby:
            return no_update, ""
        if groupby not in view.group_columns():
            return no_update, dbc.Alert(f"{str(groupby)[:60]!r} is not a grouping of this run", color="warning",
                                        className="py-1")
        if view.grouped_tables(groupby) is not None:
            return (ready or 0) + 1, ""
        try:
            with processes.work_slot(cfg.slots_dir, cfg.work_slots, wait=300):
                proc = processes.run_child(processes.python_command("app.worker", "group", view.path,
                                                                    "--groupby", groupby), timeout=900)
        except (processes.Busy, subprocess.TimeoutExpired) as err:
            return no_update, dbc.Alert(str(err) or "timed out", color="warning", className="py-1")
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            return no_update, dbc.Alert(f"grouping failed: {(lines or ['?'])[-1][:300]}", color="danger",
                                        className="py-1")
        return (ready or 0) + 1, f"rows: the groups of {groupby}"

    @app.callback(Output(components.graph_id("pred-cells"), "figure"),
                  Input("gen-cells-run", "n_clicks"), Input("gen-cell-feature", "value"),
                  State("gen-target", "value"), State("gen-run", "data"),
                  background=True, prevent_initial_call=True,
                  running=[(Output("gen-cells-run", "disabled"), True, False)])
    def per_cell(n, feature, target, run_id):
        """Per-cell prediction of the shown modality from the other one (cached in the run)."""
        processes.exit_with_parent()
        view = _view(cfg, run_id)
        if view is None or not feature or target not in view.modalities:
            return no_update
        others = [m for m in view.modalities if m != target]
        source = others[0] if others else target
        if feature not in view._feature_index[target]:
            return figures.empty(f"{str(feature)[:60]} is not a feature of {target}", height=460)
        path = prediction_path(view.path, target, source)
        if not path.exists():
            if not n:
                return figures.empty("press 'Predict per cell'", height=460)
            error, _ = run_predict(cfg, view.path, target, source, path)
            if error:
                return figures.empty(f"prediction failed: {error}", height=460)
        return cell_scatter(view, path, target, source, feature)

    @app.callback(Output({"role": "csv-download", "t": "heatmap"}, "data"),
                  Input({"role": "csv", "t": "heatmap"}, "n_clicks"),
                  State("gen-target", "value"), State("gen-groupby", "value"), State("gen-run", "data"),
                  prevent_initial_call=True)
    def heatmap_csv(_n, target, groupby, run_id):
        """The shown heatmap tables in one long CSV (panel, cluster, feature, z)."""
        view = _view(cfg, run_id)
        tables = row_tables(view, groupby) if view is not None else None
        if tables is None:
            return no_update
        chosen, titles = panels(tables, target, view.modalities)
        frames = []
        for key, frame in chosen.items():
            long = frame.rename_axis(index=groupby or "cluster", columns="feature").stack().rename("z").reset_index()
            long.insert(0, "panel", titles[key])
            frames.append(long)
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return dict(content=table.to_csv(index=False), filename=components.safe_name(f"{view.id}_{target}_heatmaps" + (f"_by_{groupby}" if groupby else "")) + ".csv")

    @app.callback(Output("gen-query-download", "data"), Output("gen-query-status", "children"),
                  Input("gen-query-run", "n_clicks"), State("gen-query", "value"),
                  State("gen-query-source", "value"), State("gen-query-target", "value"),
                  State("gen-run", "data"), background=True, prevent_initial_call=True,
                  running=[(Output("gen-query-run", "disabled"), True, False)])
    def query_predict(_n, query, source, target, run_id):
        """Predict ``target`` for a one-modality query and download it as CSV."""
        processes.exit_with_parent()
        view = _view(cfg, run_id)
        query_path = data_access.resolve_dataset(cfg.data_dir, query)
        if view is None or query_path is None:
            return no_update, dbc.Alert("Pick a query dataset of the data folder.", color="warning",
                                        className="py-1", id="gen-query-error")
        problem = check_direction(view, target, source)
        if problem:
            return no_update, dbc.Alert(problem, color="warning", className="py-1", id="gen-query-error")
        name = f"query_{components.safe_name(Path(query).stem, 60)}_{target}_from_{source}.csv"
        out = view.path / runfolder.PREDICTIONS_DIR / name
        error, warned = run_predict(cfg, view.path, target, source, out, query=query_path)
        if error:
            return no_update, [dbc.Alert(error, color="danger", className="py-1", id="gen-query-error"),
                               warnings_alert(warned, "gen-query-warnings")]
        done = f"predicted {target} from {source} for {data_access.dataset_label(cfg.data_dir, query)}"
        if warned:
            done += " — on partly missing input, see the warnings"
        quality = measured_quality(query_path, target, out)
        return dcc.send_file(str(out), filename=f"{view.id}_{name}"), \
            [html.Span(done, id="gen-query-done"), warnings_alert(warned, "gen-query-warnings"),
             html.Div(quality, className="mt-1", id="gen-query-quality") if quality else None]
