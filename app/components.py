"""Reusable layout pieces: a figure card with PNG/SVG/PDF export, a CSV button, tables.

Every figure is shown through :func:`figure_card`, and each page registers
its cards' export with :func:`register_export`: the server rebuilds the
figure from its own data and the page's controls (never from figure JSON the
browser sends), renders it with kaleido in one of the server's work slots
(:func:`app.processes.work_slot`) and sends it with a sanitised file name.
"""
from __future__ import annotations

import re

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, ctx, dcc, html, no_update

from app import processes

#: dcc.Graph config: modebar PNG export at 2x, no plotly.com links
GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2},
                "modeBarButtonsToRemove": ["sendDataToCloud"]}


def graph_id(name: str) -> dict:
    """The id of the ``dcc.Graph`` in figure card ``name``."""
    return {"role": "graph", "g": name}


def figure_card(name: str, figure=None, title: str | None = None, height: int | None = None,
                extra=None, loading: bool = True, **graph_kwargs) -> dbc.Card:
    """A card with a graph (id :func:`graph_id`) and PNG / SVG / PDF export buttons.

    ``loading``: wrap the graph in a ``dcc.Loading`` spinner (off for graphs that
    update on every slider step, where it only costs render time).
    """
    buttons = dbc.ButtonGroup([
        dbc.Button(fmt.upper(), id={"role": f"export-{fmt}", "g": name}, size="sm",
                   color="secondary", outline=True, className="export-btn")
        for fmt in ("png", "svg", "pdf")], size="sm")
    style = {"height": f"{height}px"} if height else None
    graph = dcc.Graph(id=graph_id(name), figure=figure if figure is not None else {},
                      config=GRAPH_CONFIG, style=style, **graph_kwargs)
    header = dbc.CardHeader(dbc.Row([
        dbc.Col(html.Span(title or "", className="fw-semibold"), className="d-flex align-items-center"),
        dbc.Col([html.Span("export ", className="text-muted small me-1"), buttons],
                width="auto")], className="g-2"))
    body = dcc.Loading(graph, delay_show=400) if loading else graph
    return dbc.Card([header, dbc.CardBody([body, *(extra or [])]),
                     html.Div(id={"role": "export-msg", "g": name}, className="small"),
                     dcc.Download(id={"role": "download", "g": name})], className="mb-3")


def csv_button(table_id: str, label: str = "CSV") -> html.Span:
    """A download button ``{"role": "csv", "t": table_id}`` plus its ``dcc.Download``."""
    return html.Span([
        dbc.Button(label, id={"role": "csv", "t": table_id}, size="sm", color="secondary",
                   outline=True, className="ms-2"),
        dcc.Download(id={"role": "csv-download", "t": table_id})])


def table(frame: pd.DataFrame, max_rows: int = 30, link=None, id=None) -> dbc.Table:
    """An HTML table of the first ``max_rows`` rows, numbers to 3 significant digits.

    ``link(row)`` may return an href for the first column's cell (a ``dcc.Link``).
    """
    kwargs = {"id": id} if id else {}
    if frame is None or frame.empty:
        return html.Div("nothing to show", className="text-muted small", **kwargs)
    head = html.Thead(html.Tr([html.Th(str(c)) for c in frame.columns]))
    rows = []
    for _, row in frame.head(max_rows).iterrows():
        cells = []
        for j, (col, value) in enumerate(row.items()):
            text = f"{value:.3g}" if isinstance(value, float) else str(value)
            if j == 0 and link is not None:
                cells.append(html.Td(dcc.Link(text, href=link(row))))
            else:
                cells.append(html.Td(text))
        rows.append(html.Tr(cells))
    return dbc.Table([head, html.Tbody(rows)], size="sm", striped=True, hover=True,
                     responsive=True, className="small mb-0", **kwargs)


def safe_name(text: str, max_len: int = 100) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``_.-``; no leading dot; bounded length)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_.")[:max_len]
    return name or "figure"


EXPORT_FORMATS = ("png", "svg", "pdf")


def register_export(app, cfg, name: str, states: list, build, filename) -> None:
    """Export figure card ``name`` as PNG / SVG / PDF, rebuilt on the server.

    ``build(*state_values)`` returns the figure (or None when there is nothing to
    export) from the server's own data, the values of ``states`` being only
    the page's control settings (checked by ``build`` like any client input);
    ``filename(*state_values)`` gives the file's stem (sanitised here).
    """
    inputs = [Input({"role": f"export-{fmt}", "g": name}, "n_clicks") for fmt in EXPORT_FORMATS]

    @app.callback(Output({"role": "download", "g": name}, "data"),
                  Output({"role": "export-msg", "g": name}, "children"),
                  *inputs, *states, prevent_initial_call=True)
    def export_figure(*args):
        from app import figures
        trig = ctx.triggered_id
        if not trig:
            return no_update, no_update
        values = args[len(EXPORT_FORMATS):]
        fmt = trig["role"].split("-", 1)[1]
        figure = build(*values)
        if figure is None:
            return no_update, "nothing to export yet"
        try:
            with processes.work_slot(cfg.slots_dir, cfg.work_slots, wait=60):
                data = figures.to_image(figure, fmt)
        except processes.Busy as err:
            return no_update, dbc.Alert(str(err), color="warning", className="py-1 mt-2")
        return dcc.send_bytes(data, f"{safe_name(filename(*values))}.{fmt}"), ""
