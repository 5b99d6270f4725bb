"""Reusable layout pieces: a figure card with PNG/SVG/PDF export, a CSV button, tables.

Every figure is shown through :func:`figure_card`, and each page registers
its cards' export with :func:`register_export`: the server rebuilds the
figure from its own data and the page's controls (never from figure JSON the
browser sends), makes it publication-ready (:mod:`app.export`: every tick
label, vector heatmaps, the user's width / height / scale, the run in the
title), renders it with a warm kaleido in one of the server's work slots
(:func:`app.processes.work_slot`) and sends it with a sanitised file name.
"""
from __future__ import annotations

import json
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
    """A card with a graph (id :func:`graph_id`), PNG / SVG / PDF export buttons and the export's size.

    The size inputs (width, height in px, PNG scale) start empty: the export
    then has the graph's on-screen size (measured in the browser, see
    :func:`register_export`) and scale 2.  ``loading``: wrap the graph in a
    ``dcc.Loading`` spinner (off for graphs that update on every slider step,
    where it only costs render time).
    """
    from app.export import MAX_PX, MAX_SCALE, MIN_PX, MIN_SCALE
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
    size = dbc.InputGroup([
        dbc.InputGroupText("export size"),
        dbc.Input(id={"role": "export-width", "g": name}, type="number", min=MIN_PX, max=MAX_PX, step=1,
                  placeholder="width px (on screen)", debounce=True, style={"maxWidth": "11em"}),
        dbc.InputGroupText("×"),
        dbc.Input(id={"role": "export-height", "g": name}, type="number", min=MIN_PX, max=MAX_PX, step=1,
                  placeholder="height px (on screen)", debounce=True, style={"maxWidth": "11em"}),
        dbc.InputGroupText("PNG scale"),
        dbc.Input(id={"role": "export-scale", "g": name}, type="number", min=MIN_SCALE, max=MAX_SCALE,
                  step=0.5, placeholder="2", debounce=True, style={"maxWidth": "5em"}),
    ], size="sm", className="export-size mt-2")
    body = dcc.Loading(graph, delay_show=400) if loading else graph
    return dbc.Card([header, dbc.CardBody([body, *(extra or []), size]),
                     html.Div(id={"role": "export-msg", "g": name}, className="small"),
                     dcc.Store(id={"role": "export-screen", "g": name}),
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

#: browser side: the graph's on-screen size (px) into the card's export-screen store, after layout settles
_MEASURE_JS = """
function(figure, relayout) {
    return new Promise(resolve => setTimeout(() => {
        const el = document.getElementById(%s);
        if (!el || !el.clientWidth) { resolve(window.dash_clientside.no_update); return; }
        resolve({width: el.clientWidth, height: el.clientHeight});
    }, 250));
}
"""


def screen_size(screen) -> tuple[int | None, int | None]:
    """(width, height) from the browser's measurement: plain positive numbers or None (never trusted further)."""
    if not isinstance(screen, dict):
        return None, None
    out = []
    for key in ("width", "height"):
        value = screen.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 100_000
        out.append(int(value) if ok else None)
    return out[0], out[1]


def _run_of(cfg, values) -> str | None:
    """The run an export shows: the first control value when it names a run of the runs folder."""
    from app import data_access
    first = values[0] if values else None
    if isinstance(first, str) and data_access.resolve_run(cfg.runs_dir, first) is not None:
        return first
    return None


def register_export(app, cfg, name: str, states: list, build, filename, title=None, run_id=None) -> None:
    """Export figure card ``name`` as PNG / SVG / PDF, rebuilt on the server.

    ``build(*state_values)`` returns the figure (or None when there is nothing to
    export) from the server's own data, the values of ``states`` being only
    the page's control settings (checked by ``build`` like any client input);
    ``filename(*state_values)`` gives the file's stem (sanitised here).
    Optional: ``title(*state_values)`` replaces the figure's title and
    ``run_id(*state_values)`` names the run added to the title when missing
    (default: the first state's value when it is a run of the runs folder).
    The card's width / height / scale inputs are checked here
    (:func:`app.export.check_size`); empty ones take the on-screen size.
    """
    from dash import State
    inputs = [Input({"role": f"export-{fmt}", "g": name}, "n_clicks") for fmt in EXPORT_FORMATS]
    size_states = [State({"role": f"export-{key}", "g": name}, "value") for key in ("width", "height", "scale")]
    size_states.append(State({"role": "export-screen", "g": name}, "data"))

    from app import export
    export.register_bundle_route(app.server, cfg)  # once per server: GET /export/bundle/<run>.zip
    element = json.dumps(json.dumps(graph_id(name), sort_keys=True, separators=(",", ":")))
    app.clientside_callback(_MEASURE_JS % element, Output({"role": "export-screen", "g": name}, "data"),
                            Input(graph_id(name), "figure"), Input(graph_id(name), "relayoutData"))

    @app.callback(Output({"role": "download", "g": name}, "data"),
                  Output({"role": "export-msg", "g": name}, "children"),
                  *inputs, *states, *size_states, prevent_initial_call=True)
    def export_figure(*args):
        trig = ctx.triggered_id
        if not trig:
            return no_update, no_update
        values = args[len(EXPORT_FORMATS):len(args) - len(size_states)]
        width, height, scale, screen = args[len(args) - len(size_states):]
        fmt = trig["role"].split("-", 1)[1]
        if fmt not in EXPORT_FORMATS:
            return no_update, no_update
        screen_w, screen_h = screen_size(screen)
        figure = build(*values)
        if figure is None:
            return no_update, "nothing to export yet"
        layout_h = export._layout_size(figure, "height")
        try:
            w, h, s = export.check_size(width, height, scale, default_width=screen_w,
                                        default_height=layout_h or screen_h)
        except export.ExportError as err:
            return no_update, dbc.Alert(f"Not exported: {err}", color="warning", className="py-1 mt-2")
        run = run_id(*values) if run_id is not None else _run_of(cfg, values)
        text = title(*values) if title is not None else None
        try:
            with processes.work_slot(cfg.slots_dir, cfg.work_slots, wait=60):
                data = export.render(figure, fmt, w, h, s, run_id=run, title=text)
        except processes.Busy as err:
            return no_update, dbc.Alert(str(err), color="warning", className="py-1 mt-2")
        except Exception as err:  # the renderer (headless Chromium) failed: say so in the page
            return no_update, dbc.Alert(f"Export failed: {type(err).__name__}: {str(err)[:300]}", color="danger",
                                        className="py-1 mt-2", id={"role": "export-error", "g": name})
        size = f"{w * s:.0f} × {h * s:.0f} px" if fmt == "png" else f"{w} × {h} px, vector"
        return dcc.send_bytes(data, f"{safe_name(filename(*values))}.{fmt}"), \
            html.Span(f"exported {fmt.upper()}, {size}", className="text-muted ms-2")


def bundle_link(run_id: str, label: str = "Figure bundle (zip)"):
    """A download link to every figure and table of run ``run_id`` in one zip (see :func:`app.export.bundle`)."""
    from app.export import bundle_link as link
    return link(run_id, label)
