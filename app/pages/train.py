"""Page 2, Train: options, submit a job to the queue, live progress and loss curve, cancel, runs list.

Training runs in a detached child process started by the server's job queue
(:class:`app.jobs.JobQueue`), or by a Celery worker of the lab when the app
has a Redis URL (:class:`app.celery_queue.CeleryJobQueue`, same methods: this
page does not know which); a running job then shows its worker's name.  The
browser holds only the job id the server
issued (``train-active``); an interval polls the job's state (queue place,
epoch, losses), so closing the browser does not stop the job and a reopened
page follows it again.  Form values are checked on the server with the
library's own bounds (:mod:`scmm.options`) before anything is queued.
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from scmm.options import MODEL_BOUNDS, TRAIN_BOUNDS
from scmm.presets import PRESETS
from scmm.settings import Settings, describe_schedule, small_data_warning

from app import components, data_access, figures, jobs

POLL_MS = 1000


def preset_options() -> list[dict]:
    """The preset dropdown, from the library's registry."""
    return [{"label": "auto (from the modalities)", "value": ""}] + \
        [{"label": name, "value": name} for name in PRESETS]


#: the Train form's fields: settings field -> label on the page
FORM_LABELS = {"preset": "Preset", "latent_dim": "Latent size", "epochs": "Epochs", "lr": "Learning rate"}


def form_settings(preset, latent, epochs, lr) -> Settings:
    """The Train form's values as :class:`~scmm.settings.Settings` (validated there; a bad
    value's ValueError names the field as the page labels it)."""
    values = {"preset": preset, "latent_dim": latent, "epochs": epochs, "lr": lr}
    try:
        return Settings.build(**{k: (None if v == "" else v) for k, v in values.items()})
    except (ValueError, TypeError) as err:
        field, _, rest = str(err).partition(" ")
        if field in FORM_LABELS:
            raise ValueError(f"{FORM_LABELS[field]} {rest}") from None
        raise ValueError(str(err)) from None


def measured_step_seconds(cfg) -> tuple[float, str] | None:
    """Seconds per optimiser step of the newest finished run on this server (and its name).

    From the run's own history (seconds per epoch) and settings (batch size,
    training cells); None before any run has finished here.
    """
    for run in jobs.list_runs(cfg.runs_dir, cfg.queue):
        history = [h for h in run["history"] if isinstance(h.get("seconds"), (int, float))]
        batch, n_train = run["options"].get("batch_size"), run.get("n_train")
        if run["status"] == "done" and history and all(isinstance(v, int) and v > 0 for v in (batch, n_train)):
            steps = max(1, n_train // batch)
            return sum(h["seconds"] for h in history) / (len(history) * steps), run["run"]
    return None


def plan_text(cfg, dataset_id, settings: Settings) -> list:
    """Planned epochs and steps for the dataset (from its cached summary), and an estimated duration."""
    path = data_access.resolve_dataset(cfg.data_dir, dataset_id)
    if path is None:
        return []
    summary = data_access.summarize(path, cfg.cache_dir, slots=cfg.work_slots,
                                    naming=data_access.dataset_naming(cfg.runs_dir, dataset_id))
    if not summary.get("ok"):
        return [html.Span("cannot plan: the dataset does not read (see the Data page)", className="text-danger")]
    n_cells = int(summary["summary"]["n_cells"])
    resolved = settings.resolve(summary.get("kinds") or {})
    n_train = int(round(n_cells * (1 - resolved.test_fraction)))
    plan = resolved.schedule(n_train)
    text = (f"Plan: {n_cells:,} cells ({n_train:,} for training) · preset {resolved.preset} · "
            f"{describe_schedule(plan, resolved.batch_size)} (early stopping may end it sooner)")
    measured = measured_step_seconds(cfg)
    if measured:
        seconds, run = measured
        text += f" · about {plan['max_steps'] * seconds / 60:,.1f} min at most, at the speed measured on {run}"
    else:
        text += " · no training measured on this server yet, so no time estimate"
    out = [html.Span(text, id="train-plan-text")]
    warning = small_data_warning(n_cells, n_cells - n_train)
    if warning:
        out.append(dbc.Alert(warning, color="warning", className="py-1 mt-1 mb-0", id="train-small-data"))
    return out


def active_job(cfg) -> str | None:
    """The id of the newest job still queued or running (to follow it when the page opens)."""
    for record in reversed(cfg.queue.records()):
        if record["state"] in ("queued", "running"):
            return record["job_id"]
    return None


def layout(cfg, run_id, query) -> html.Div:
    """The Train page."""
    datasets = data_access.list_datasets(cfg.data_dir)
    values = [d["value"] for d in datasets]
    active = active_job(cfg)
    data = query.get("data") if query.get("data") in values else (values[0] if values else None)
    form = dbc.Card(dbc.CardBody([
        dbc.Label("Dataset"), dcc.Dropdown(id="train-data", options=datasets, value=data, clearable=False),
        dbc.Label("Preset", className="mt-2"),
        dcc.Dropdown(id="train-preset", options=preset_options(), value="", clearable=False),
        dbc.Row([
            dbc.Col([dbc.Label("Latent size", className="mt-2"),
                     dbc.Input(id="train-latent", type="number", min=1, max=MODEL_BOUNDS["latent_dim"][1],
                               step=1, value=Settings().latent_dim)]),
            dbc.Col([dbc.Label("Epochs", className="mt-2"),
                     dbc.Input(id="train-epochs", type="number", min=1, max=TRAIN_BOUNDS["epochs"][1],
                               step=1, placeholder="preset")]),
            dbc.Col([dbc.Label("Learning rate", className="mt-2"),
                     dbc.Input(id="train-lr", type="number", min=0, max=TRAIN_BOUNDS["lr"][1], step="any",
                               placeholder="preset")]),
        ]),
        html.Div([dbc.Button("Train", id="train-start", color="primary", className="me-2"),
                  dbc.Button("Cancel", id="train-cancel", color="danger", outline=True, disabled=not active)],
                 className="mt-3"),
        html.Div(id="train-cancel-msg", className="small text-muted mt-2"),
        html.Div(id="train-plan", className="small mt-2"),
    ]))
    monitor = dbc.Card(dbc.CardBody([
        html.Div(id="train-stage", className="mb-1 fw-semibold", children="no job running"),
        dbc.Progress(id="train-progress", value=0, label="", striped=True, animated=True,
                     style={"height": "22px"}),
        html.Div(id="train-status", className="small mt-2"),
    ]), className="mb-3")
    return html.Div([
        dcc.Store(id="train-active", data=active),
        dcc.Interval(id="train-poll", interval=POLL_MS, disabled=not active),
        dcc.Interval(id="train-runs-refresh", interval=2000),
        html.H3("Train"),
        html.P(["Training runs in a separate process: closing the browser does not stop it, and this "
                "page follows it again when reopened. Runs trained with ", html.Code("scmm train"),
                " into ", html.Code(str(cfg.runs_dir)), " appear below too. Jobs wait in a queue: ",
                f"{cfg.queue.describe()}."], className="text-muted", id="train-queue-note"),
        dbc.Row([
            dbc.Col(form, md=4),
            dbc.Col([monitor, components.figure_card("loss", figures.loss_curve([]), "Loss curve")], md=8),
        ]),
        html.H4(["Runs", components.csv_button("runs")], className="mt-3"),
        html.Div(id="train-runs"),
    ])


def status_text(run: dict) -> str:
    """A run's status in words, with its place in the queue, or the worker that runs it."""
    if run["status"] == "queued" and run.get("position"):
        return f"queued (#{run['position']})"
    if run.get("worker") and run["status"] not in (*jobs.TERMINAL, "queued", "unreadable"):
        return f"{run['status']} on {run['worker']}"
    return run["status"]


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
        badge = {"done": "success", "failed": "danger", "cancelled": "secondary",
                 "unreadable": "warning"}.get(r["status"], "info")
        link = "/embeddings?" + urlencode({"run": r["run"]})
        status = [dbc.Badge(status_text(r), color=badge, className="run-status")]
        if r["status"] in ("unreadable", "failed") and r.get("message"):
            status.append(html.Div(r["message"][:300], className="small text-muted run-reason"))
        started = time.strftime("%d %b %H:%M", time.localtime(r["created"])) if r["created"] else ""
        rows.append(html.Tr([
            html.Td(r["run"]), html.Td(r["dataset"] or "(CLI)"),
            html.Td(status, title=r.get("message", "")),
            html.Td(f"{r['epoch']}/{r['epochs']}" if r["epochs"] else ""), html.Td(loss),
            html.Td(started),
            html.Td(dcc.Link("explore", href=link) if r["has_model"] and r["status"] != "unreadable" else ""),
        ], id={"role": "run-row", "run": r["run"]}))
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, striped=True, id="runs-table")


def progress_view(state: dict):
    """(bar value, bar label, stage text) for a :func:`jobs.progress` state."""
    epochs = max(int(state.get("epochs") or 0), 1)
    value = 100 * min(int(state.get("epoch") or 0), epochs) / epochs
    status = status_text(state)
    if state["status"] in ("analysing", "done") and state.get("has_model"):
        value = 100
    label = f"{state.get('epoch', 0)}/{state.get('epochs') or '?'} epochs"
    stage = f"{state['run']}: {status}" + (f" ({state['message']})" if state.get("message")
                                              and state["message"] != state["status"] else "")
    return value, label, stage


def job_state(cfg, job_id) -> dict | None:
    """The progress of job ``job_id`` (None for an id this server did not issue)."""
    record = cfg.queue.get(job_id)
    if record is None:
        return None
    state = jobs.progress(cfg.runs_dir / record["run"], record)
    state["position"] = cfg.queue.position(job_id)
    return state


def result_alert(state: dict):
    """The final word on a finished job."""
    colour = {"done": "success", "cancelled": "secondary"}.get(state["status"], "danger")
    text = {"done": "finished", "cancelled": "was cancelled", "failed": "failed"}.get(state["status"],
                                                                                     state["status"])
    body = [html.Span(f"{state['run']} {text}: "), html.Span(state.get("message") or "")]
    if state["status"] == "done" and state.get("has_model"):
        body.append(dcc.Link(" Explore the embeddings →", href="/embeddings?" + urlencode({"run": state["run"]}),
                             id="train-explore"))
    return dbc.Alert(body, color=colour, className="py-2 mb-0", id="train-result")


def register(app, cfg) -> None:
    """Train page callbacks."""

    @app.callback(Output("train-active", "data"), Output("train-cancel-msg", "children"),
                  Input("train-start", "n_clicks"),
                  State("train-data", "value"), State("train-preset", "value"),
                  State("train-latent", "value"), State("train-epochs", "value"),
                  State("train-lr", "value"), prevent_initial_call=True)
    def start(_n, dataset_id, preset, latent, epochs, lr):
        """Queue a training job (checked on the server); the monitor follows it by its id."""
        path = data_access.resolve_dataset(cfg.data_dir, dataset_id)
        if path is None:
            return no_update, dbc.Alert("Pick a dataset of the data folder first.", color="warning",
                                        className="py-1", id="train-error")
        try:
            settings = form_settings(preset, latent, epochs, lr)
            naming = data_access.dataset_naming(cfg.runs_dir, dataset_id)
            settings = settings.replace(modality_names=naming.get("names") or None, kinds=naming.get("kinds") or None)
        except ValueError as err:
            return no_update, dbc.Alert(str(err), color="danger", className="py-1", id="train-error")
        try:
            record = cfg.queue.submit(path, dataset_id, settings)
        except OSError as err:
            return no_update, dbc.Alert(f"Cannot start: {err}", color="danger", className="py-1",
                                        id="train-error")
        if record.get("duplicate"):
            return record["job_id"], f"already submitted as {record['run']}"
        return record["job_id"], f"submitted {record['run']}"

    @app.callback(Output("train-progress", "value"), Output("train-progress", "label"),
                  Output("train-stage", "children"), Output(components.graph_id("loss"), "figure"),
                  Output("train-status", "children"), Output("train-poll", "disabled"),
                  Output("train-cancel", "disabled"),
                  Input("train-poll", "n_intervals"), Input("train-active", "data"))
    def monitor(_n, job_id):
        """The followed job's queue place, epoch, losses and final word; polling (and Cancel) while it runs."""
        state = job_state(cfg, job_id)
        if state is None:
            return 0, "", "no job running", figures.loss_curve([]), "", True, True
        value, label, stage = progress_view(state)
        curve = figures.loss_curve(state["history"], title=f"Loss: {state['run']}")
        if state["status"] in jobs.TERMINAL or state["status"] == "unreadable":
            return value, label, stage, curve, result_alert(state), True, True
        return value, label, stage, curve, "", False, False

    @app.callback(Output("train-cancel-msg", "children", allow_duplicate=True),
                  Input("train-cancel", "n_clicks"), State("train-active", "data"),
                  prevent_initial_call=True)
    def cancel(_n, job_id):
        """Cancel the followed job: the queue checks the id and ends the job's process group."""
        if not job_id:
            return "no job to cancel"
        return cfg.queue.cancel(job_id)

    @app.callback(Output("train-plan", "children"), Input("train-data", "value"), Input("train-preset", "value"),
                  Input("train-latent", "value"), Input("train-epochs", "value"), Input("train-lr", "value"))
    def plan(dataset_id, preset, latent, epochs, lr):
        """Planned epochs / steps and the estimated duration, before the user starts."""
        try:
            settings = form_settings(preset, latent, epochs, lr)
        except ValueError as err:
            return html.Span(str(err), className="text-danger")
        return plan_text(cfg, dataset_id, settings)

    def loss_figure(job_id):
        state = job_state(cfg, job_id)
        return figures.loss_curve(state["history"], title=f"Loss: {state['run']}") if state else None

    def loss_name(job_id):
        state = job_state(cfg, job_id)
        return f"{state['run']}_loss" if state else "loss"

    components.register_export(app, cfg, "loss", [State("train-active", "data")], loss_figure, loss_name)

    @app.callback(Output({"role": "csv-download", "t": "runs"}, "data"),
                  Input({"role": "csv", "t": "runs"}, "n_clicks"), prevent_initial_call=True)
    def runs_csv(_n):
        """The runs list as CSV (one row per run, with its final losses and options)."""
        rows = []
        for r in jobs.list_runs(cfg.runs_dir, cfg.queue):
            last = r["history"][-1] if r["history"] else {}
            rows.append({"run": r["run"], "dataset": r["dataset"], "status": r["status"], "epoch": r["epoch"],
                         "epochs": r["epochs"], "train_loss": last.get("train_loss"),
                         "test_loss": last.get("test_loss"), "analysed": r["analysed"],
                         "options": json.dumps(r["options"]), "message": r["message"]})
        return dict(content=pd.DataFrame(rows).to_csv(index=False), filename="scmm_runs.csv")

    @app.callback(Output("train-runs", "children"), Input("train-runs-refresh", "n_intervals"))
    def refresh_runs(_n):
        """The runs list, refreshed every 2 s."""
        return runs_table(jobs.list_runs(cfg.runs_dir, cfg.queue))
