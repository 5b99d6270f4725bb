"""Page 2, Train: options, start a background job, live progress and loss curve, cancel, runs list.

Training runs in a detached child process (:mod:`app.jobs`); a Dash background
callback (``DiskcacheManager``) follows its ``progress.json`` and streams the
progress bar and the loss curve with ``set_progress``.  The page finds a job
that is still running when it is reopened (or one started from the CLI) and
follows it again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from app import components, data_access, figures, jobs

PRESETS = [{"label": "auto (from the modalities)", "value": ""},
           {"label": "cite (paper, CITE-seq)", "value": "cite"},
           {"label": "atac (paper, RNA + ATAC)", "value": "atac"},
           {"label": "cite-large-batch (GPU)", "value": "cite-large-batch"}]
POLL_S = 0.7


def running_run(runs_dir: Path) -> str | None:
    """Path of the newest run still in progress (to follow it when the page opens)."""
    for run in jobs.list_runs(runs_dir):
        if run["status"] not in jobs.TERMINAL:
            return run["path"]
    return None


def last_loss_curve(runs_dir: Path):
    """The loss curve of the newest run with epochs (shown while no job is followed)."""
    for run in jobs.list_runs(runs_dir):
        if run["history"]:
            return figures.loss_curve(run["history"], title=f"Loss: {run['run']} ({run['status']})")
    return figures.loss_curve([])


def layout(cfg, run_id, query) -> html.Div:
    """The Train page."""
    datasets = data_access.list_datasets(cfg.data_dir)
    values = [d["value"] for d in datasets]
    data = query.get("data") if query.get("data") in values else (values[0] if values else None)
    form = dbc.Card(dbc.CardBody([
        dbc.Label("Dataset"), dcc.Dropdown(id="train-data", options=datasets, value=data, clearable=False),
        dbc.Label("Preset", className="mt-2"),
        dcc.Dropdown(id="train-preset", options=PRESETS, value="", clearable=False),
        dbc.Row([
            dbc.Col([dbc.Label("Latent size", className="mt-2"),
                     dbc.Input(id="train-latent", type="number", min=2, max=64, step=1, value=10)]),
            dbc.Col([dbc.Label("Epochs", className="mt-2"),
                     dbc.Input(id="train-epochs", type="number", min=1, max=1000, step=1,
                               placeholder="preset")]),
            dbc.Col([dbc.Label("Learning rate", className="mt-2"),
                     dbc.Input(id="train-lr", type="number", min=1e-6, max=1, step="any",
                               placeholder="preset")]),
        ]),
        html.Div([dbc.Button("Train", id="train-start", color="primary", className="me-2"),
                  dbc.Button("Cancel", id="train-cancel", color="danger", outline=True, disabled=True)],
                 className="mt-3"),
        html.Div(id="train-cancel-msg", className="small text-muted mt-2"),
    ]))
    monitor = dbc.Card(dbc.CardBody([
        html.Div(id="train-stage", className="mb-1 fw-semibold", children="no job running"),
        dbc.Progress(id="train-progress", value=0, label="", striped=True, animated=True,
                     style={"height": "22px"}),
        html.Div(id="train-status", className="small mt-2"),
    ]), className="mb-3")
    return html.Div([
        dcc.Store(id="train-active", data=running_run(cfg.runs_dir)),
        dcc.Interval(id="train-runs-refresh", interval=2000),
        html.H3("Train"),
        html.P(["Training runs in a separate process: closing the browser does not stop it, and this "
                "page follows it again when reopened. Runs trained with ", html.Code("scmm train"),
                " into ", html.Code(str(cfg.runs_dir)), " appear below too."], className="text-muted"),
        dbc.Row([
            dbc.Col(form, md=4),
            dbc.Col([monitor, components.figure_card("loss", last_loss_curve(cfg.runs_dir), "Loss curve")], md=8),
        ]),
        html.H4(["Runs", components.csv_button("runs")], className="mt-3"),
        html.Div(id="train-runs"),
    ])


def runs_table(runs: list[dict]) -> html.Div:
    """The runs list: name, data, status, epochs, final losses, links to the result pages."""
    if not runs:
        return html.Div("no runs yet", className="text-muted")
    head = html.Thead(html.Tr([html.Th(h) for h in
                               ("run", "dataset", "status", "epoch", "train / test loss", "started", "open")]))
    rows = []
    for r in runs:
        last = r["history"][-1] if r["history"] else {}
        loss = " / ".join(f"{last[k]:.1f}" for k in ("train_loss", "test_loss")
                          if isinstance(last.get(k), (int, float)))
        badge = {"done": "success", "failed": "danger", "cancelled": "secondary"}.get(r["status"], "info")
        link = "/embeddings?" + urlencode({"run": r["run"]})
        rows.append(html.Tr([
            html.Td(r["run"]), html.Td(Path(r["data"]).name if r["data"] else "(CLI)"),
            html.Td(dbc.Badge(r["status"], color=badge, className="run-status"),
                    title=r.get("message", "")),
            html.Td(f"{r['epoch']}/{r['epochs']}" if r["epochs"] else ""), html.Td(loss),
            html.Td(time.strftime("%d %b %H:%M", time.localtime(r["created"]))),
            html.Td(dcc.Link("explore", href=link) if r["has_model"] else ""),
        ], id={"role": "run-row", "run": r["run"]}))
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, striped=True, id="runs-table")


def progress_view(state: dict):
    """(bar value, bar label, loss figure, stage text) for a :func:`jobs.progress` state."""
    epochs = max(int(state.get("epochs") or 0), 1)
    value = 100 * min(int(state.get("epoch") or 0), epochs) / epochs
    status = state["status"]
    if status in ("analysing", "done") and state.get("has_model"):
        value = 100
    label = f"{state.get('epoch', 0)}/{state.get('epochs') or '?'} epochs"
    stage = f"{state['run']}: {status}" + (f" ({state['message']})" if state.get("message")
                                              and state["message"] != status else "")
    fig = figures.loss_curve(state.get("history") or [], title=f"Loss: {state['run']}")
    return value, label, fig, stage


def register(app, cfg) -> None:
    """Train page callbacks."""

    @app.callback(Output("train-active", "data"), Output("train-cancel-msg", "children"),
                  Input("train-start", "n_clicks"),
                  State("train-data", "value"), State("train-preset", "value"),
                  State("train-latent", "value"), State("train-epochs", "value"),
                  State("train-lr", "value"), prevent_initial_call=True)
    def start(_n, data, preset, latent, epochs, lr):
        """Start a training job in a child process; the monitor follows it."""
        if data not in [d["value"] for d in data_access.list_datasets(cfg.data_dir)]:
            return no_update, "pick a dataset of the data folder first"
        options = {"preset": preset or None, "latent_dim": latent, "epochs": epochs, "lr": lr}
        run_dir = jobs.start(data, cfg.runs_dir, options)
        return run_dir, f"started {Path(run_dir).name}"

    @app.callback(Output("train-status", "children"), Input("train-active", "data"),
                  background=True, interval=700,
                  progress=[Output("train-progress", "value"), Output("train-progress", "label"),
                            Output(components.graph_id("loss"), "figure"),
                            Output("train-stage", "children")],
                  running=[(Output("train-start", "disabled"), True, False),
                           (Output("train-cancel", "disabled"), False, True)])
    def monitor(set_progress, run_dir):
        """Follow the job's progress.json until it finishes (training, then analysis)."""
        if not run_dir or not Path(run_dir).exists():
            return ""
        seen = None
        while True:
            state = jobs.progress(run_dir)
            key = (state["status"], state["epoch"], len(state["history"]), state.get("message"))
            if key != seen:
                set_progress(progress_view(state))
                seen = key
            if state["status"] in jobs.TERMINAL:
                break
            time.sleep(POLL_S)
        colour = {"done": "success", "cancelled": "secondary"}.get(state["status"], "danger")
        text = {"done": "finished", "cancelled": "cancelled", "failed": "failed"}[state["status"]]
        body = [html.Span(f"{state['run']} {text}. "), html.Span(state.get("message") or "")]
        if state["status"] == "done":
            body.append(dcc.Link(" Explore the embeddings →", href="/embeddings?" + urlencode({"run": state["run"]}),
                                 id="train-explore"))
        time.sleep(POLL_S)  # let the last progress reach the browser first
        return dbc.Alert(body, color=colour, className="py-2 mb-0", id="train-result")

    @app.callback(Output("train-cancel-msg", "children", allow_duplicate=True),
                  Input("train-cancel", "n_clicks"), State("train-active", "data"),
                  prevent_initial_call=True)
    def cancel(_n, run_dir):
        """Ask the job to stop (CANCEL file + SIGTERM); nothing is saved."""
        if not run_dir:
            return "no job to cancel"
        asked = jobs.cancel(run_dir)
        return f"cancelling {Path(run_dir).name}…" if asked else "the job had already finished"

    @app.callback(Output({"role": "csv-download", "t": "runs"}, "data"),
                  Input({"role": "csv", "t": "runs"}, "n_clicks"), prevent_initial_call=True)
    def runs_csv(_n):
        """The runs list as CSV (one row per run, with its final losses and options)."""
        rows = []
        for r in jobs.list_runs(cfg.runs_dir):
            last = r["history"][-1] if r["history"] else {}
            rows.append({"run": r["run"], "data": r["data"], "status": r["status"], "epoch": r["epoch"],
                         "epochs": r["epochs"], "train_loss": last.get("train_loss"),
                         "test_loss": last.get("test_loss"), "analysed": r["analysed"],
                         "options": json.dumps(r["options"]), "message": r["message"]})
        return dict(content=pd.DataFrame(rows).to_csv(index=False), filename="scmm_runs.csv")

    @app.callback(Output("train-runs", "children"), Input("train-runs-refresh", "n_intervals"))
    def refresh_runs(_n):
        """The runs list, refreshed every 2 s."""
        return runs_table(jobs.list_runs(cfg.runs_dir))
