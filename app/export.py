"""Publication-ready figure export: size checks, all tick labels, vector heatmaps, a warm renderer, bundles.

Every export goes through :func:`render`:

1. :func:`check_size` bounds the user's width / height / scale (the on-screen
   size is the default) and says clearly what is wrong;
2. :func:`publication` turns the figure the page shows into one fit for print:
   WebGL traces become SVG ones, heatmap cells become vector rectangles
   (plotly draws a ``Heatmap`` as one embedded raster ``<image>`` in SVG and
   PDF), every category axis labels every category (never thinned; long lists
   are rotated and their font shrinks to fit), margins grow to fit the labels,
   and the title names the run;
3. :class:`Renderer` renders it with one Chromium (kaleido) kept warm in a
   background thread, so only the first export pays the browser's start
   (bench/export_speed.py measures it against a cold kaleido and matplotlib).

:func:`bundle` writes every figure and table of a run into one zip with a
``manifest.json``; :func:`register_bundle_route` serves it at
``/export/bundle/<run_id>.zip``.
"""
from __future__ import annotations

import asyncio
import atexit
import base64
import datetime as _dt
import io
import json
import math
import os
import threading
import time
import zipfile

import numpy as np

#: bounds of an export's width and height (layout pixels) and of its scale (PNG pixels per layout pixel)
MIN_PX, MAX_PX = 200, 6000
MIN_SCALE, MAX_SCALE = 1.0, 4.0
#: width when neither the user nor the browser gave one
DEFAULT_WIDTH = 1000
DEFAULT_HEIGHT = 500
FORMATS = ("png", "svg", "pdf")
#: colour of a heatmap cell without a value
NAN_COLOUR = "rgb(235,235,235)"


class ExportError(ValueError):
    """A request the export refuses (the message is shown to the user as is)."""


# ------------------------------------------------------------------- size
def _number(value, what: str):
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ExportError(f"{what} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExportError(f"{what} must be a number, not {str(value)[:30]!r}") from None
    if not math.isfinite(number):
        raise ExportError(f"{what} must be a finite number")
    return number


def check_size(width=None, height=None, scale=None, default_width=None, default_height=None) -> tuple[int, int, float]:
    """(width, height, scale) of an export, checked; empty values take the defaults (the on-screen size).

    Width and height are layout pixels in [MIN_PX, MAX_PX]; scale in
    [MIN_SCALE, MAX_SCALE] multiplies PNG pixels (PNG width = width x scale;
    SVG and PDF are vector, so scale does not change them).  Raises
    :class:`ExportError` with a message for the user.
    """
    out = []
    for value, default, what in ((width, default_width, "width"), (height, default_height, "height")):
        number = _number(value, what)
        if number is None:
            fallback = _number(default, what)
            number = fallback if fallback is not None else (DEFAULT_WIDTH if what == "width" else DEFAULT_HEIGHT)
            number = min(MAX_PX, max(MIN_PX, number))  # an on-screen size out of bounds is clipped, not refused
        if not MIN_PX <= number <= MAX_PX:
            raise ExportError(f"{what} must be between {MIN_PX} and {MAX_PX} px, not {number:g}")
        out.append(int(round(number)))
    number = _number(scale, "scale")
    number = 2.0 if number is None else number
    if not MIN_SCALE <= number <= MAX_SCALE:
        raise ExportError(f"scale must be between {MIN_SCALE:g} and {MAX_SCALE:g}, not {number:g}")
    return out[0], out[1], number


# ------------------------------------------------------ publication figure
def _values(spec):
    """A trace array (list, numpy array or plotly's base64 typed array) as a numpy array."""
    if isinstance(spec, dict) and "bdata" in spec:
        arr = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]))
        shape = spec.get("shape")
        if shape:
            dims = [int(s) for s in str(shape).split(",")] if isinstance(shape, str) else list(shape)
            arr = arr.reshape(dims)
        return arr
    return np.asarray(spec)


def _as_dict(fig) -> dict:
    import plotly.graph_objects as go
    if isinstance(fig, go.Figure):
        return fig.to_dict()
    if isinstance(fig, dict):
        return json.loads(json.dumps(fig, default=_json_default))
    raise TypeError(f"not a figure: {type(fig).__name__}")


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON: {type(obj).__name__}")


def _axis_name(ref: str, letter: str) -> str:
    """``x2`` -> ``xaxis2``; ``x`` or None -> ``xaxis``."""
    ref = ref or letter
    return f"{letter}axis{ref[1:]}"


def _colours(z: np.ndarray, colorscale, zmin: float, zmax: float) -> list[str]:
    """One ``rgb()`` colour per value of ``z`` on ``colorscale`` (NaN: :data:`NAN_COLOUR`)."""
    from plotly.colors import get_colorscale, sample_colorscale
    scale = get_colorscale(colorscale) if isinstance(colorscale, str) else [list(s) for s in colorscale]
    span = (zmax - zmin) or 1.0
    flat = z.ravel().astype(float)
    ok = np.isfinite(flat)
    frac = np.clip((np.where(ok, flat, zmin) - zmin) / span, 0, 1)
    # sample 256 levels once, then index: exact to 1/255 and fast for thousands of cells
    levels = sample_colorscale(scale, list(np.linspace(0, 1, 256)), colortype="rgb")
    idx = np.rint(frac * 255).astype(int)
    return [levels[i] if good else NAN_COLOUR for i, good in zip(idx, ok)]


def vector_heatmaps(fig: dict) -> dict:
    """Replace every ``heatmap`` trace of ``fig`` (a dict) by vector cells: one bar per cell.

    Plotly draws a heatmap as one raster ``<image>`` in SVG and PDF; a bar
    trace of unit-wide, unit-high bars coloured like the cells is a set of
    vector paths that looks the same (it was faster to render and half the
    size of one layout shape per cell).  The axes become numeric with one
    tick per row / column carrying its label; a transparent marker trace
    keeps the colour bar.  Returns ``fig``.
    """
    data, layout = [], fig.setdefault("layout", {})
    other_bars = any(t.get("type") == "bar" for t in fig.get("data", []))
    converted = False
    for trace in fig.get("data", []):
        if trace.get("type") != "heatmap":
            data.append(trace)
            continue
        if trace.get("opacity") == 0:  # the invisible hover/lasso layer of a raster embedding
            if trace.get("showscale", True) and trace.get("zmin") is not None and trace.get("zmax") is not None:
                data.append(_colour_bar(trace, float(trace["zmin"]), float(trace["zmax"]),
                                        trace.get("colorscale") or "Viridis"))
            continue
        z = np.asarray(_values(trace.get("z", [])), dtype=float)
        if z.ndim != 2 or not z.size:
            continue
        n_rows, n_cols = z.shape
        xs = [str(v) for v in (_values(trace["x"]).tolist() if trace.get("x") is not None else range(n_cols))]
        ys = [str(v) for v in (_values(trace["y"]).tolist() if trace.get("y") is not None else range(n_rows))]
        finite = z[np.isfinite(z)]
        zmin = float(trace["zmin"]) if trace.get("zmin") is not None else float(finite.min() if finite.size else 0)
        zmax = float(trace["zmax"]) if trace.get("zmax") is not None else float(finite.max() if finite.size else 1)
        colorscale = trace.get("colorscale") or "Viridis"
        xref, yref = trace.get("xaxis", "x"), trace.get("yaxis", "y")
        cols, rows = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
        data.append({"type": "bar", "xaxis": xref, "yaxis": yref, "name": trace.get("name", "cells"),
                     "x": cols.ravel().tolist(), "y": [1.0] * z.size, "base": (rows.ravel() - 0.5).tolist(),
                     "width": 1.0, "orientation": "v", "showlegend": False, "hoverinfo": "skip",
                     "marker": {"color": _colours(z, colorscale, zmin, zmax), "line": {"width": 0}}})
        converted = True
        for ref, letter, labels in ((xref, "x", xs), (yref, "y", ys)):
            axis = layout.setdefault(_axis_name(ref, letter), {})
            reverse = axis.get("autorange") == "reversed"
            lo, hi = -0.5, len(labels) - 0.5
            axis.update({"type": "linear", "tickmode": "array", "tickvals": list(range(len(labels))),
                         "ticktext": labels, "range": [hi, lo] if reverse else [lo, hi],
                         "autorange": False, "showgrid": False, "zeroline": False})
        if trace.get("showscale", True):
            data.append(_colour_bar(trace, zmin, zmax, colorscale))
    fig["data"] = data
    if converted and not other_bars:
        layout["barmode"] = "overlay"
    return fig


def _colour_bar(trace: dict, zmin: float, zmax: float, colorscale) -> dict:
    """A transparent marker trace that carries ``trace``'s colour bar."""
    return {"type": "scatter", "x": [None], "y": [None], "xaxis": trace.get("xaxis", "x"),
            "yaxis": trace.get("yaxis", "y"), "mode": "markers", "showlegend": False, "hoverinfo": "skip",
            "marker": {"color": [zmin, zmax], "cmin": zmin, "cmax": zmax, "colorscale": colorscale,
                       "showscale": True, "colorbar": trace.get("colorbar", {})}}


def _category_counts(fig: dict) -> dict[str, int]:
    """``{axis name: number of distinct categories}`` of axes showing strings (bars, categorical scatter)."""
    counts: dict[str, set] = {}
    for trace in fig.get("data", []):
        for letter in ("x", "y"):
            values = trace.get(letter)
            if values is None or isinstance(values, dict):
                continue
            values = list(values) if not isinstance(values, str) else [values]
            if values and all(isinstance(v, str) for v in values):
                counts.setdefault(_axis_name(trace.get(f"{letter}axis"), letter), set()).update(values)
    return {k: len(v) for k, v in counts.items()}


def _tick_font(axis: dict, n: int, length_px: float, default: float = 12) -> None:
    """Shrink the tick font of an axis with ``n`` labels so that they fit in ``length_px`` (6-12 pt)."""
    if n <= 0:
        return
    size = float((axis.get("tickfont") or {}).get("size") or default)
    fit = max(6.0, min(size, 0.8 * length_px / n))
    axis.setdefault("tickfont", {})["size"] = round(fit, 1)


def all_ticks(fig: dict, width: int, height: int) -> dict:
    """Every category labelled on every axis of ``fig`` (a dict): no thinning, rotation for long lists.

    Axes with ``tickvals`` (see :func:`vector_heatmaps`) keep them; string
    axes get one tick per category (``dtick=1``).  Fonts shrink to fit the
    export's size, x labels rotate when they would overlap, margins grow to
    fit them (``automargin``).  Returns ``fig``.
    """
    layout = fig.setdefault("layout", {})
    counts = _category_counts(fig)
    names = {k for k in layout if k.startswith(("xaxis", "yaxis"))} | set(counts)
    n_x = max(1, sum(1 for k in names if k.startswith("xaxis") and
                     (layout.get(k, {}).get("tickvals") is not None or k in counts)))
    for name in names:
        axis = layout.setdefault(name, {})
        axis["automargin"] = True
        if axis.get("tickvals") is not None:
            n = len(axis["tickvals"])
        elif name in counts:
            n = counts[name]
            axis.update({"type": "category", "tickmode": "linear", "tick0": 0, "dtick": 1})
        else:
            continue
        if name.startswith("x"):
            span = width * 0.8 / n_x
            _tick_font(axis, n, span * 2.5)  # rotated labels may sit closer than their width
            longest = max((len(str(t)) for t in axis.get("ticktext") or [""]), default=0)
            if n * max(longest, 2) * 0.6 * axis["tickfont"]["size"] > span and axis.get("tickangle") in (None, 0):
                axis["tickangle"] = -90 if n > 30 else -60
        else:
            _tick_font(axis, n, height * 0.75)
    margin = layout.setdefault("margin", {})
    margin["b"] = max(margin.get("b", 0) or 0, 60)
    margin["l"] = max(margin.get("l", 0) or 0, 60)
    return fig


def _title_text(layout: dict) -> str:
    title = layout.get("title")
    if isinstance(title, dict):
        return str(title.get("text") or "")
    return str(title or "")


def publication(fig, width: int, height: int, run_id: str | None = None, title: str | None = None) -> dict:
    """The figure dict to export: vector traces, vector heatmaps, every tick label, sized, titled.

    ``title`` replaces the figure's title; ``run_id`` is added to the title
    when it does not name the run yet.
    """
    from app.figures import for_export
    import plotly.graph_objects as go
    if isinstance(fig, go.Figure):
        fig = for_export(fig)
    fig = _as_dict(fig)
    for trace in fig.get("data", []):
        if trace.get("type") == "scattergl":
            trace["type"] = "scatter"
    fig = vector_heatmaps(fig)
    layout = fig["layout"]
    text = title if title is not None else _title_text(layout)
    if run_id and str(run_id) not in text:
        text = f"{text} · run {run_id}" if text else f"run {run_id}"
    if text:
        old = layout.get("title") if isinstance(layout.get("title"), dict) else {}
        layout["title"] = {**old, "text": text}
        margin = layout.setdefault("margin", {})
        margin["t"] = max(margin.get("t", 0) or 0, 60)
    layout.update(width=width, height=height)
    layout.pop("uirevision", None)
    layout["dragmode"] = False
    return all_ticks(fig, width, height)


# ----------------------------------------------------------------- renderer
class Renderer:
    """One kaleido (headless Chromium) kept open in a daemon thread with its own event loop.

    Thread-safe: concurrent :meth:`render` calls queue for the browser's
    tabs.  The first call starts the browser (~2-3 s); later ones reuse it.
    :meth:`close` ends the browser (registered with ``atexit``, so the
    interpreter exits cleanly); a forked child starts its own.
    """

    def __init__(self, tabs: int = 1, timeout: float = 60.0, start_timeout: float = 60.0):
        self.tabs, self.timeout, self.start_timeout = tabs, timeout, start_timeout
        self._lock = threading.Lock()
        self._loop = self._thread = self._kaleido = None
        self._pid = None
        self._atexit = False

    @property
    def running(self) -> bool:
        return self._kaleido is not None and self._pid == os.getpid()

    def _start(self) -> None:
        import kaleido

        async def make():
            k = kaleido.Kaleido(n=self.tabs, timeout=self.timeout, mathjax=False)
            await k.open()
            return k

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kaleido-renderer", daemon=True)
        thread.start()
        try:
            k = asyncio.run_coroutine_threadsafe(make(), loop).result(self.start_timeout)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            raise
        self._loop, self._thread, self._kaleido, self._pid = loop, thread, k, os.getpid()
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True

    def render(self, fig: dict, fmt: str, width: int, height: int, scale: float = 1.0) -> bytes:
        """``fig`` (a figure dict) as png / svg / pdf bytes of ``width`` x ``height`` layout px."""
        if fmt not in FORMATS:
            raise ValueError(f"format must be png, svg or pdf, not {fmt!r}")
        with self._lock:
            if not self.running:
                if self._pid is not None and self._pid != os.getpid():  # forked: the parent's browser is not ours
                    self._loop = self._thread = self._kaleido = None
                self._start()
            k, loop = self._kaleido, self._loop
        opts = {"format": fmt, "width": int(width), "height": int(height),
                "scale": float(scale) if fmt == "png" else 1}
        future = asyncio.run_coroutine_threadsafe(k.calc_fig(fig, opts=opts), loop)
        try:
            return future.result(self.timeout + 10)
        except Exception:
            future.cancel()
            if not self._alive():
                self.close()  # the browser died: the next call starts a new one
            raise

    def _alive(self) -> bool:
        proc = getattr(self._kaleido, "subprocess", None)
        return proc is None or getattr(proc, "poll", lambda: None)() is None

    def close(self, timeout: float = 10.0) -> None:
        """Close the browser and stop the thread (idempotent; kills the browser if it does not close)."""
        with self._lock:
            k, loop, thread = self._kaleido, self._loop, self._thread
            mine = self._pid == os.getpid()
            self._kaleido = self._loop = self._thread = None
        if k is None or not mine:
            return
        try:
            asyncio.run_coroutine_threadsafe(k.close(), loop).result(timeout)
        except Exception:
            proc = getattr(k, "subprocess", None)
            if proc is not None and hasattr(proc, "kill"):
                try:
                    proc.kill()
                except OSError:
                    pass
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)


_RENDERER = Renderer()


def renderer() -> Renderer:
    """The process's shared warm :class:`Renderer`."""
    return _RENDERER


def warm_up(background: bool = True) -> None:
    """Start the shared renderer now (in a thread by default), so that even the first export is fast."""
    def start():
        try:
            _RENDERER.render({"data": [], "layout": {}}, "svg", 200, 200)
        except Exception:  # the first real export retries and reports
            pass
    if background:
        threading.Thread(target=start, name="kaleido-warm-up", daemon=True).start()
    else:
        start()


def render(fig, fmt: str = "png", width=None, height=None, scale=None, run_id: str | None = None,
           title: str | None = None, default_width=None) -> bytes:
    """``fig`` exported for publication (see the module doc) as png / svg / pdf bytes.

    ``width`` / ``height`` / ``scale`` are the user's (None: the on-screen
    size, ``default_width`` from the browser and the figure's layout height).
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be png, svg or pdf, not {str(fmt)[:10]!r}")
    layout_height = _layout_size(fig, "height")
    w, h, s = check_size(width, height, scale, default_width=default_width or _layout_size(fig, "width"),
                         default_height=layout_height)
    return _RENDERER.render(publication(fig, w, h, run_id=run_id, title=title), fmt, w, h, s)


def _layout_size(fig, which: str):
    layout = fig.layout if hasattr(fig, "layout") else (fig or {}).get("layout", {})
    return layout[which] if hasattr(layout, "to_plotly_json") else layout.get(which)


# ------------------------------------------------------------------- bundle
def _versions() -> dict:
    import importlib.metadata as md
    import scmm
    out = {"scmm": scmm.__version__}
    for pkg in ("plotly", "kaleido", "matplotlib", "numpy", "pandas", "dash"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _run_and_history(cfg, run_id: str):
    """(the run's view, its training history) — (None, []) for an id that is not a readable run."""
    from app import data_access
    view = data_access.get_run(data_access.resolve_run(cfg.runs_dir, run_id))
    return view, (view.config.get("history") or []) if view is not None else []


def run_figures(cfg, run_id: str) -> list[tuple[str, str, object]]:
    """``[(file stem, what it shows, figure)]``: every figure of run ``run_id``, from the pages' own builders."""
    from app import figures
    from app.pages import embeddings, generation, traversal
    view, history = _run_and_history(cfg, run_id)
    if view is None:
        return []
    out = []
    if history:
        out.append((f"{view.id}_loss", "training and test loss by epoch",
                    figures.loss_curve(history, title=f"Loss: {view.id}")))
    for label in view.embeddings():
        out.append((f"{view.id}_umap_{label}_cluster", f"{label} embedding coloured by cluster",
                    embeddings.colour_figure(view, label, "obs:scmm_cluster")))
    trav = view.traversal()
    if trav is not None:
        step = len(trav.steps) // 2
        for mod in trav.modalities:
            for dim in range(trav.n_dims):
                try:
                    bars, prof, *_ = traversal.traversal_figures(trav, dim, step, mod, None, 15)
                except (TypeError, ValueError):
                    continue
                out.append((f"{view.id}_z{dim + 1}_{mod}_bars",
                            f"features associated with latent z{dim + 1} ({mod}), top 15 of each direction", bars))
                out.append((f"{view.id}_z{dim + 1}_{mod}_profile",
                            f"decoded {mod} profile of the top features along z{dim + 1}", prof))
    tables = generation.named(view.heatmap_tables(), view)
    for target in view.modalities:
        chosen, titles = generation.panels(tables, target, view.modalities)
        if not chosen:
            continue
        out.append((f"{view.id}_{target}_heatmaps", f"{target}: cluster x feature z-scores "
                    f"({', '.join(titles.values())})",
                    figures.heatmaps(chosen, titles, title=f"{target}: marker features per cluster")))
        out.append((f"{view.id}_{target}_pred-obs", f"{target}: generated against original cluster x feature z-scores",
                    generation.cluster_scatter(tables, target, view.modalities)))
    return out


def run_tables(cfg, run_id: str) -> list[tuple[str, str, bytes]]:
    """``[(file name, what it holds, CSV bytes)]``: every table of run ``run_id``."""
    import pandas as pd
    from app.pages import traversal
    from scmm import runfolder
    view, history = _run_and_history(cfg, run_id)
    if view is None:
        return []
    out = []
    if history:
        out.append((f"{view.id}_loss.csv", "loss by epoch", pd.DataFrame(history).to_csv(index=False).encode()))
    cells = view.mdata.obs[view.obs_columns()].copy()
    for label, (key, axes) in view.embeddings().items():
        xy = view.coords(key)
        cells[f"{label}_{axes[0]}"], cells[f"{label}_{axes[1]}"] = xy[:, 0], xy[:, 1]
    out.append((f"{view.id}_cells.csv", "per cell: annotations and embedding coordinates",
                cells.rename_axis("cell").to_csv().encode()))
    for key, table in view.heatmap_tables().items():
        name = runfolder.heatmap_file("", key).name
        what = "Pearson r of generated against original tables" if key == runfolder.SIMILARITY_TABLE else \
            f"cluster x feature z-scores, {key.replace('|', ' ')}"
        out.append((f"{view.id}_{name}", what,
                    table.to_csv(index=key != runfolder.SIMILARITY_TABLE).encode()))
    trav = view.traversal()
    if trav is not None:
        for mod in trav.modalities:
            frames = []
            for dim in range(trav.n_dims):
                table = traversal.associated(trav, dim, mod, None)
                table.insert(0, "dim", dim + 1)
                frames.append(table)
            if frames:
                out.append((f"{view.id}_{mod}_associated.csv",
                            f"{mod} features associated with each latent dimension (default threshold)",
                            pd.concat(frames, ignore_index=True).to_csv(index=False).encode()))
    out += chromatin_tables(view)
    return out


def chromatin_tables(view) -> list[tuple[str, str, bytes]]:
    """The chromatin analyses' tables of a run (none when not computed or unreadable)."""
    from scmm.runfolder import RunFileError
    try:
        res = view.chromatin()
    except RunFileError:
        return []
    if res is None:
        return []
    out = [(f"{view.id}_motif_enrichment.csv", "motifs enriched in each dimension's peaks (vs matched background)",
            res.enrichment.to_csv(index=False).encode())]
    for key, table in res.activity.items():
        out.append((f"{view.id}_motif_activity_{key}.csv", f"cluster x motif mean chromVAR z, {key}",
                    table.to_csv().encode()))
    if res.peak_genes is not None:
        out.append((f"{view.id}_peak_genes.csv", "nearest gene and TSS distance of every peak",
                    res.peak_genes.to_csv().encode()))
    return out



def bundle(cfg, run_id: str, formats=("png", "pdf"), width=None, height=None, scale=2) -> bytes:
    """Every figure (in ``formats``) and table of run ``run_id`` in one zip, with ``manifest.json``.

    Only the server's data are read (the run folder); the manifest records the
    run, its settings (config.json ``settings``), the versions of scmm,
    plotly, kaleido and matplotlib, each file and what it shows, and the
    export time.  Raises :class:`ExportError` for an unknown run or format.
    """
    from app import data_access
    from app.components import safe_name
    formats = tuple(formats)
    if not formats or any(f not in FORMATS for f in formats):
        raise ExportError(f"formats must be among {', '.join(FORMATS)}")
    view = data_access.get_run(data_access.resolve_run(cfg.runs_dir, run_id))
    if view is None:
        raise ExportError(f"there is no run {str(run_id)[:80]!r} with results on this server")
    started = time.monotonic()
    files = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for stem, what, fig in run_figures(cfg, view.id):
            for fmt in formats:
                name = f"figures/{safe_name(stem)}.{fmt}"
                w, h, s = check_size(width, height, scale, default_width=_layout_size(fig, "width"),
                                     default_height=_layout_size(fig, "height"))
                zf.writestr(name, render(fig, fmt, w, h, s, run_id=view.id))
                files.append({"file": name, "shows": what, "format": fmt, "width": w, "height": h,
                              "scale": s if fmt == "png" else None})
        for fname, what, data in run_tables(cfg, view.id):
            name = f"tables/{safe_name(fname)}"
            zf.writestr(name, data)
            files.append({"file": name, "shows": what, "format": "csv"})
        manifest = {"run": view.id, "settings": view.config.get("settings"),
                    "modalities": view.modalities, "n_cells": view.n_cells,
                    "versions": _versions(),
                    "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "export_seconds": round(time.monotonic() - started, 2), "files": files}
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
    return buf.getvalue()


def register_bundle_route(server, cfg) -> None:
    """Serve :func:`bundle` at ``GET /export/bundle/<run_id>.zip?formats=png,pdf`` (once per server).

    The run id is checked against the runs folder; the work runs in one of
    the server's work slots.
    """
    if "scmm_export_bundle" in server.view_functions:
        return
    from flask import Response, request
    from app import processes
    from app.components import safe_name

    def export_bundle(run_id):
        formats = tuple(f for f in request.args.get("formats", "png,pdf").split(",") if f)
        try:
            with processes.work_slot(cfg.slots_dir, cfg.work_slots, wait=120):
                data = bundle(cfg, run_id, formats=formats)
        except ExportError as err:
            return Response(str(err), status=400, mimetype="text/plain")
        except processes.Busy as err:
            return Response(str(err), status=503, mimetype="text/plain")
        return Response(data, mimetype="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{safe_name(run_id)}_figures.zip"'})

    server.add_url_rule("/export/bundle/<run_id>.zip", "scmm_export_bundle", export_bundle)


def bundle_link(run_id: str, label: str = "Figure bundle (zip)"):
    """A download link to the run's figure bundle (for a page's header)."""
    from urllib.parse import quote
    from dash import html
    return html.A(label, href=f"/export/bundle/{quote(str(run_id), safe='')}.zip", download="",
                  className="btn btn-sm btn-outline-secondary ms-2", id="figure-bundle")
