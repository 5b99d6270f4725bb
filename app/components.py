"""Reusable layout pieces: a figure card with PNG/SVG/PDF export, a CSV button, tables.

Every figure is shown through :func:`figure_card`; one pattern-matching
callback (:func:`register`) renders the figure the browser holds with kaleido
and sends it as a download, so every figure exports the same way.
"""
from __future__ import annotations

import re

import dash_bootstrap_components as dbc
import pandas as pd
from dash import MATCH, Input, Output, State, ctx, dcc, html, no_update

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


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "figure"


def register(app) -> None:
    """Register the figure-export callback (one for every figure card)."""

    @app.callback(Output({"role": "download", "g": MATCH}, "data"),
                  Input({"role": "export-png", "g": MATCH}, "n_clicks"),
                  Input({"role": "export-svg", "g": MATCH}, "n_clicks"),
                  Input({"role": "export-pdf", "g": MATCH}, "n_clicks"),
                  State({"role": "graph", "g": MATCH}, "figure"),
                  prevent_initial_call=True)
    def export_figure(_png, _svg, _pdf, figure):
        """Render the figure as the browser holds it (with kaleido) and download it."""
        from app import figures
        trig = ctx.triggered_id
        if not trig or not figure:
            return no_update
        fmt = trig["role"].split("-", 1)[1]
        # kaleido starts a headless Chromium per call (~3 s); its persistent server
        # (kaleido.start_sync_server) would make this ~0.3 s but hangs interpreter exit
        data = figures.to_image(figure, fmt)
        return dcc.send_bytes(data, f"scmm_{safe_name(trig['g'])}.{fmt}")
