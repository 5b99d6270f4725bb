"""Page 1, Data: pick a dataset (the demo is preloaded) or upload one; see its summary.

The summary (cells, features and counts per cell per modality, the likelihood
each modality would get) and any read error come from ``scmm.read`` run in a
child process (:func:`app.data_access.summarize`), so the message the user sees
is the reader's own.  The browser sends dataset ids (paths relative to the data
folder, as :func:`app.data_access.list_datasets` issues them), never paths;
uploads go through the streaming ``POST /upload`` route (:mod:`app.uploads`).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import pandas as pd
from dash import ALL, Input, Output, State, dcc, html, no_update

from app import components, data_access


def layout(cfg, run_id, query) -> html.Div:
    """The Data page."""
    options = data_access.list_datasets(cfg.data_dir)
    value = query.get("data") if query.get("data") in [o["value"] for o in options] else \
        (options[0]["value"] if options else None)
    return html.Div([
        html.H3("Data"),
        html.P(["Pick a dataset from the data folder ", html.Code(str(cfg.data_dir)),
                " (.h5mu, 10x .h5, .h5ad, or a 10x mtx folder) or upload one."],
               className="text-muted"),
        dbc.Row([
            dbc.Col([
                dbc.Label("Dataset"),
                dcc.Dropdown(id="data-select", options=options, value=value, clearable=False),
                dbc.Label(f"or upload a .h5mu / .h5ad / 10x .h5 file (at most {cfg.max_upload_mb:,} MB; "
                          "larger files: copy them into the data folder)", className="mt-3 small"),
                # assets/upload.js puts a file input here and streams the file to POST /upload
                html.Div(id="data-upload-slot", **{"data-max-bytes": str(cfg.max_upload_mb * 2 ** 20)}),
                dcc.Store(id="upload-result"),
                html.Div(id="upload-status", className="small mt-2"),
                dbc.Button("Train on this dataset", id="data-to-train", color="primary",
                           className="mt-3", href="/train"),
            ], md=4),
            dbc.Col(dcc.Loading(html.Div(id="data-summary"), delay_show=300), md=8),
        ]),
    ])


def summary_frame(result: dict) -> pd.DataFrame:
    """One row per modality: kind, features, counts per cell, sparsity, likelihood."""
    rows = []
    for mod, info in result["summary"]["modalities"].items():
        rows.append({"modality": mod, "kind": result.get("kinds", {}).get(mod, ""),
                     "n_cells": result["summary"]["n_cells"], **info,
                     "likelihood": result.get("likelihoods", {}).get(mod, "")})
    return pd.DataFrame(rows)


def summary_view(result: dict, name: str) -> html.Div:
    """The summary card of dataset ``name`` (its label), or the reader's error as an alert."""
    if not result.get("ok"):
        return dbc.Alert([html.H5(f"Cannot read {name}", className="alert-heading"),
                          html.Pre(result.get("error", "unknown error"), className="mb-0 read-error",
                                   style={"whiteSpace": "pre-wrap"})],
                         color="danger", id="data-error")
    summary = result["summary"]
    rows = []
    for mod, info in summary["modalities"].items():
        rows.append({"modality": mod, "kind": result.get("kinds", {}).get(mod, ""),
                     "features": f"{info['n_features']:,}",
                     "median counts / cell": f"{info['median_counts_per_cell']:,.0f}",
                     "mean counts / cell": f"{info['mean_counts_per_cell']:,.0f}",
                     "sparsity": f"{100 * info['sparsity']:.1f}%",
                     "likelihood": result.get("likelihoods", {}).get(mod, "").upper()})
    cols = result.get("obs_columns") or []
    originals = result.get("original_names") or {}
    return dbc.Card([
        dbc.CardHeader([html.Span(name, className="fw-semibold"), components.csv_button("data-summary")]),
        dbc.CardBody([
            html.H4([f"{summary['n_cells']:,} cells", html.Span(
                f" · {len(summary['modalities'])} modalities", className="text-muted fs-6")],
                id="data-ncells"),
            components.table(pd.DataFrame(rows), id="data-table"),
            html.P(["cell annotations: ", ", ".join(cols) if cols else "none"],
                   className="small text-muted mt-2 mb-0"),
            naming_form(summary["modalities"], result.get("kinds", {}), originals),
        ])], id="data-card")


KINDS = [{"label": "RNA", "value": "rna"}, {"label": "protein", "value": "protein"},
         {"label": "ATAC", "value": "atac"}]


def naming_form(modalities: dict, kinds: dict, originals: dict) -> html.Div:
    """Name and type each modality before training (kept per dataset on the server)."""
    rows = []
    for mod in modalities:
        original = originals.get(mod, mod)
        rows.append(dbc.Row([
            dbc.Col(html.Span(original + ("" if original == mod else f" → {mod}"), className="small"), md=4),
            dbc.Col(dbc.Input(id={"role": "mod-name", "m": original}, value=mod, size="sm",
                              maxLength=64), md=4),
            dbc.Col(dcc.Dropdown(id={"role": "mod-kind", "m": original}, options=KINDS, value=kinds.get(mod),
                                 clearable=False), md=4),
        ], className="g-2 mb-1 align-items-center"))
    return html.Div([
        html.H6("Modalities: name and type them for training", className="mt-3"),
        dbc.Row([dbc.Col(html.Span("in the file", className="small text-muted"), md=4),
                 dbc.Col(html.Span("name", className="small text-muted"), md=4),
                 dbc.Col(html.Span("type", className="small text-muted"), md=4)]),
        *rows,
        dbc.Button("Save names and types", id="data-naming-save", size="sm", color="secondary", className="mt-1"),
        html.Div(id="data-naming-msg", className="small mt-1"),
    ], id="data-naming")


def register(app, cfg) -> None:
    """Data page callbacks."""

    @app.callback(Output("data-summary", "children"), Output("data-to-train", "href"),
                  Input("data-select", "value"))
    def show_summary(dataset_id):
        """Summarise the chosen dataset (child process in a work slot; cached by file and mtime)."""
        path = data_access.resolve_dataset(cfg.data_dir, dataset_id)
        if path is None:
            message = "no dataset" if not dataset_id else f"{str(dataset_id)[:100]!r} is not a dataset of this server"
            return html.Div(message, className="text-muted", id="data-none"), "/train"
        result = data_access.summarize(path, cfg.cache_dir, slots=cfg.work_slots,
                                       naming=data_access.dataset_naming(cfg.runs_dir, dataset_id))
        label = data_access.dataset_label(cfg.data_dir, dataset_id)
        return summary_view(result, label), "/train?" + urlencode({"data": dataset_id})

    @app.callback(Output("data-summary", "children", allow_duplicate=True),
                  Input("data-naming-save", "n_clicks"), State({"role": "mod-name", "m": ALL}, "value"),
                  State({"role": "mod-name", "m": ALL}, "id"), State({"role": "mod-kind", "m": ALL}, "value"),
                  State("data-select", "value"), prevent_initial_call=True)
    def save_naming(_n, names, ids, kinds, dataset_id):
        """Check and keep the user's modality names and types; the summary shows them."""
        path = data_access.resolve_dataset(cfg.data_dir, dataset_id)
        if path is None or not isinstance(names, list) or not isinstance(ids, list) \
                or not isinstance(kinds, list) or not len(names) == len(ids) == len(kinds):
            return no_update
        originals = [i.get("m") if isinstance(i, dict) else None for i in ids]
        chosen = {str(o): (n.strip() if isinstance(n, str) else n) for o, n in zip(originals, names)}
        try:
            data_access.save_dataset_naming(cfg.runs_dir, dataset_id, chosen,
                                            {n: k for n, k in zip(chosen.values(), kinds) if k})
        except (ValueError, TypeError, OSError) as err:
            body = show_summary(dataset_id)[0]
            return html.Div([dbc.Alert(f"Not saved: {err}", color="danger", className="py-1", id="naming-error"),
                             body])
        return html.Div([dbc.Alert("Saved: training on this dataset uses these names and types.",
                                   color="success", className="py-1", id="naming-ok"),
                         show_summary(dataset_id)[0]])

    @app.callback(Output({"role": "csv-download", "t": "data-summary"}, "data"),
                  Input({"role": "csv", "t": "data-summary"}, "n_clicks"), State("data-select", "value"),
                  prevent_initial_call=True)
    def summary_csv(_n, dataset_id):
        """The summary table as CSV."""
        path = data_access.resolve_dataset(cfg.data_dir, dataset_id)
        result = data_access.summarize(path, cfg.cache_dir, slots=cfg.work_slots) if path else {}
        if not result.get("ok"):
            return no_update
        return dict(content=summary_frame(result).to_csv(index=False),
                    filename=f"{components.safe_name(Path(dataset_id).stem)}_summary.csv")

    @app.callback(Output("data-select", "options"), Output("data-select", "value"),
                  Output("upload-status", "children"),
                  Input("upload-result", "data"), prevent_initial_call=True)
    def uploaded(result):
        """Select a finished upload (the id is checked against the listing) or show why it failed."""
        result = result if isinstance(result, dict) else {}
        if result.get("busy"):
            return no_update, no_update, dbc.Alert(str(result["busy"])[:300], color="info", className="py-1")
        if result.get("error") or not result.get("ok"):
            message = str(result.get("error") or "the upload failed")[:500]
            return no_update, no_update, dbc.Alert(message, color="danger", className="py-1",
                                                   id="upload-error")
        options = data_access.list_datasets(cfg.data_dir)
        if data_access.resolve_dataset(cfg.data_dir, result.get("id")) is None:
            return options, no_update, dbc.Alert("the upload is not in the data folder", color="danger",
                                                 className="py-1", id="upload-error")
        return options, result["id"], dbc.Alert(f"uploaded {str(result.get('name'))[:200]}", color="success",
                                                className="py-1", id="upload-ok")
