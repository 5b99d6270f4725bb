"""Page 1, Data: pick a dataset (the demo is preloaded) or upload a small one; see its summary.

The summary (cells, features and counts per cell per modality, the likelihood
each modality would get) and any read error come from ``scmm.read`` run in a
child process (:func:`app.data_access.summarize`), so the message the user sees
is the reader's own.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from app import components, data_access

MAX_UPLOAD_MB = 50


def layout(cfg, run_id, query) -> html.Div:
    """The Data page."""
    options = data_access.list_datasets(cfg.data_dir)
    value = query.get("data") if query.get("data") in [o["value"] for o in options] else \
        (options[0]["value"] if options else None)
    return html.Div([
        html.H3("Data"),
        html.P(["Pick a dataset from the data folder ", html.Code(str(cfg.data_dir)),
                " (.h5mu, 10x .h5, .h5ad, or a 10x mtx folder) or upload a small file."],
               className="text-muted"),
        dbc.Row([
            dbc.Col([
                dbc.Label("Dataset"),
                dcc.Dropdown(id="data-select", options=options, value=value, clearable=False),
                dcc.Upload(id="data-upload", max_size=MAX_UPLOAD_MB * 2 ** 20, multiple=False,
                           className="upload-box mt-3",
                           children=html.Div([f"Drop a file here or click to upload (at most {MAX_UPLOAD_MB} MB; "
                                              "larger files: copy them into the data folder)"])),
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


def summary_view(result: dict, path: str) -> html.Div:
    """The summary card, or the reader's error as an alert."""
    name = Path(path).name
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
    return dbc.Card([
        dbc.CardHeader([html.Span(name, className="fw-semibold"), components.csv_button("data-summary")]),
        dbc.CardBody([
            html.H4([f"{summary['n_cells']:,} cells", html.Span(
                f" · {len(summary['modalities'])} modalities", className="text-muted fs-6")],
                id="data-ncells"),
            components.table(pd.DataFrame(rows), id="data-table"),
            html.P(["cell annotations: ", ", ".join(cols) if cols else "none"],
                   className="small text-muted mt-2 mb-0"),
        ])], id="data-card")


def _save_upload(contents: str, filename: str, folder: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", filename or "upload") or "upload"
    _, data = contents.split(",", 1)
    target = folder / "uploads" / safe
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(data))
    return target


def register(app, cfg) -> None:
    """Data page callbacks."""

    @app.callback(Output("data-summary", "children"), Output("data-to-train", "href"),
                  Input("data-select", "value"))
    def show_summary(path):
        """Summarise the chosen dataset (child process; cached by path and mtime)."""
        if not path:
            return html.Div("no dataset", className="text-muted"), "/train"
        result = data_access.summarize(path, cfg.cache_dir)
        return summary_view(result, path), "/train?" + urlencode({"data": path})

    @app.callback(Output({"role": "csv-download", "t": "data-summary"}, "data"),
                  Input({"role": "csv", "t": "data-summary"}, "n_clicks"), State("data-select", "value"),
                  prevent_initial_call=True)
    def summary_csv(_n, path):
        """The summary table as CSV."""
        result = data_access.summarize(path, cfg.cache_dir) if path else {}
        if not result.get("ok"):
            return no_update
        return dict(content=summary_frame(result).to_csv(index=False),
                    filename=f"{Path(path).stem}_summary.csv")

    @app.callback(Output("data-select", "options"), Output("data-select", "value"),
                  Output("upload-status", "children"),
                  Input("data-upload", "contents"), State("data-upload", "filename"),
                  prevent_initial_call=True)
    def upload(contents, filename):
        """Store an uploaded file under data/uploads/ and select it."""
        if not contents:
            return no_update, no_update, no_update
        target = _save_upload(contents, filename, cfg.data_dir)
        options = data_access.list_datasets(cfg.data_dir)
        return options, str(target.resolve()), f"saved as {target}"
