"""Page 6, Chromatin: the motifs behind each latent dimension, motif activity of observed and
generated accessibility (chromVAR), and accessibility tracks of a region per cluster.

Everything comes from ``scmm chromatin RUN --fasta ... --genes ...`` (saved in
``RUN/analysis/chromatin``, read through :mod:`scmm.tl.chromatin_io`); the page
only slices those tables.  Peak names are shown with their nearest gene when
a gene annotation was given.
"""
from __future__ import annotations

import contextlib
import fcntl
import subprocess
from pathlib import Path

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html, no_update

from scmm.runfolder import RunFileError
from scmm.tl.regions import locate, overlapping, peaks_in_region

from app import chromatin_figures, components, data_access, figures, processes
from app.pages.embeddings import not_shown, run_missing

TABLE_ROWS = 20
MAX_REGION_BP = 2_000_000
MAX_REGION_PEAKS = 400


def _view(cfg, run_id):
    return data_access.get_run(data_access.resolve_run(cfg.runs_dir, run_id))


def results_of(cfg, run_id):
    """(view, chromatin results or None, problem text or None)."""
    view = _view(cfg, run_id)
    if view is None:
        return None, None, None
    try:
        return view, view.chromatin(), None
    except RunFileError as err:
        return view, None, str(err)


COMPUTE_TIMEOUT = 4 * 3600


def command_hint(cfg, run_id: str) -> html.Div:
    """Why there is nothing yet and how to compute it (the browser never names a genome path)."""
    if cfg.genome_fasta is not None:
        return dbc.Alert([html.Strong("No chromatin analyses for this run yet. "),
                          "Compute them below with the server's genome."], color="info", id="chromatin-missing")
    return dbc.Alert([
        html.Strong("No chromatin analyses for this run yet. "),
        "They need the genome sequence (and a GTF for gene names), which the server does not take "
        "from the browser: start the app with `scmm-app --genome-fasta genome.fa --genes genes.gtf` "
        "to compute them here, or run on the server:",
        html.Pre(f"scmm chromatin runs/{run_id} --fasta genome.fa --genes genes.gtf", className="mb-0 mt-2"),
    ], color="info", id="chromatin-missing")


def compute_card(cfg, exists: bool) -> list:
    """The Compute button when the server has a genome (``scmm-app --genome-fasta``)."""
    if cfg.genome_fasta is None:
        return []
    genes = f" and genes from {cfg.genes.name}" if cfg.genes is not None else " (no GTF: no gene names)"
    return [dbc.Card(dbc.CardBody([
        html.Div(f"Genome: {cfg.genome_fasta.name}{genes}; motifs: JASPAR CORE vertebrates.", className="small"),
        dbc.Button("Recompute the chromatin analyses" if exists else "Compute the chromatin analyses",
                   id="chrom-compute", color="secondary" if exists else "primary", size="sm", className="mt-2"),
        dcc.Loading(html.Div(id="chrom-compute-status", className="small mt-2")),
    ]), className="mb-3")]


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold the run's chromatin lock (raises BlockingIOError when another computation holds it)."""
    folder = Path(run_dir) / "analysis"
    folder.mkdir(exist_ok=True)
    with open(folder / ".chromatin.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


def compute(cfg, run_dir: Path) -> tuple[str | None, list[str]]:
    """``python -m scmm chromatin`` for the run in a child and a work slot: (error or None, warnings)."""
    cmd = processes.python_command("scmm", "chromatin", run_dir, "--fasta", cfg.genome_fasta, "--quiet")
    if cfg.genes is not None:
        cmd += ["--genes", str(cfg.genes)]
    try:
        with run_lock(run_dir), processes.work_slot(cfg.slots_dir, cfg.work_slots, wait=300):
            proc = processes.run_child(cmd, COMPUTE_TIMEOUT)
    except BlockingIOError:
        return "the chromatin analyses of this run are being computed already (another request)", []
    except processes.Busy as err:
        return str(err), []
    except subprocess.TimeoutExpired:
        return f"the computation took longer than {COMPUTE_TIMEOUT // 3600} h and was stopped", []
    warned = processes.library_warnings(proc.stderr)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return (lines[-1][:500] if lines else f"exit code {proc.returncode}"), warned
    return None, warned


def enrichment_of(res, dim: int, direction: str) -> pd.DataFrame:
    """The enrichment rows of one dimension and direction, best first."""
    table = res.enrichment
    part = table[(table["dim"] == dim) & (table["direction"] == direction)]
    return part.sort_values(["pvalue", "fold_enrichment"], ascending=[True, False])


def layout(cfg, run_id, query) -> html.Div:
    """The Chromatin page (``dim`` from the query)."""
    view, res, problem = results_of(cfg, run_id)
    if view is None:
        return run_missing(cfg, run_id)
    head = html.H3(["Chromatin ", html.Small(view.id, className="text-muted")])
    if problem:
        return html.Div([head, dbc.Alert([html.Strong("The chromatin analyses are unreadable: "), problem],
                                         color="warning", id="chromatin-unreadable")])
    if res is None:
        return html.Div([dcc.Store(id="chrom-run", data=view.id), head, command_hint(cfg, view.id),
                         *compute_card(cfg, exists=False)])
    n_dims = view.latent_dim or int(res.enrichment["dim"].max() + 1 if len(res.enrichment) else 1)
    notes = []
    dim = 0
    if "dim" in query:
        if query["dim"].isdigit() and int(query["dim"]) < n_dims:
            dim = int(query["dim"])
        else:
            notes.append(not_shown(f"dimension {query['dim']!r}", f"dimensions are z1 to z{n_dims}", "z1"))
    if res.stale:
        notes.append(dbc.Alert("The clusters changed since the chromatin analyses were computed: the motif "
                               "activity and the tracks below are for the clusters of that time. Run "
                               "`scmm chromatin` again to update them.", color="warning", id="chromatin-stale"))
    summary = res.summary
    about = html.Div(f"{summary.get('n_motifs', '?')} motifs ({summary.get('motif_source', '?')}), match p < "
                     f"{summary.get('p_value', '?')}, {summary.get('matches_per_peak', 0):.1f} matches per peak on "
                     f"{summary.get('n_peaks', 0):,} peaks", className="small text-muted mb-2")
    sources = res.sources
    motifs_card = dbc.Card([
        dbc.CardHeader(["Motifs enriched in a dimension's peaks", components.csv_button("motif-enrichment")]),
        dbc.CardBody([
            dbc.Row([
                dbc.Col([dbc.Label("Latent dimension"),
                         dcc.Dropdown(id="chrom-dim", clearable=False, value=dim,
                                      options=[{"label": f"z{d + 1}", "value": d} for d in range(n_dims)])], md=3),
                dbc.Col([dbc.Label("Peaks"),
                         dbc.RadioItems(id="chrom-direction", inline=True, value="positive",
                                        options=[{"label": "rising with z", "value": "positive"},
                                                 {"label": "falling with z", "value": "negative"}])], md=5),
            ]),
            html.Div(id="chrom-enrich-msg", className="small mt-2"),
            html.Div(id="chrom-enrich-table", className="mt-2"),
        ])], className="mb-3")
    source_options = [{"label": f"generated from {s.removeprefix('from_')}", "value": s} for s in sources]
    activity_controls = [components.csv_button("motif-activity", "CSV of both tables"), dbc.Row([
        dbc.Col([dbc.Label("Compare with"),
                 dbc.RadioItems(id="chrom-source", inline=True, options=source_options,
                                value=_default_source(sources, view))], md=8),
        dbc.Col(html.Div(id="chrom-activity-r", className="small mt-4"), md=4)])]
    region_controls = [dbc.Row([
        dbc.Col([dbc.Label("Gene or region"),
                 dbc.Input(id="chrom-region", type="text", debounce=True, value=_default_region(res),
                           placeholder="Lef1 or chr1:1,000,000-1,100,000")], md=6),
        dbc.Col(html.Div(id="chrom-region-msg", className="small mt-4"), md=4),
        dbc.Col(components.csv_button("region-track", "CSV of the tracks"), md=2, className="mt-4")])]
    return html.Div([
        dcc.Store(id="chrom-run", data=view.id),
        head, *notes, about,
        dbc.Row([dbc.Col(motifs_card, md=6),
                 dbc.Col(components.figure_card("motif-bars", None, "Top motifs (-log10 p)"), md=6)]),
        components.figure_card("motif-activity", None,
                               "Motif activity: cluster x motif mean chromVAR z, original vs generated",
                               extra=activity_controls),
        components.figure_card("region-tracks", None, "Accessibility per cluster (per 10k counts of the "
                               "cluster), original vs generated", extra=region_controls),
        *compute_card(cfg, exists=True),
    ])


def _default_source(sources: list[str], view) -> str | None:
    """Cross-modal generation first (from RNA), else the reconstruction."""
    cross = [s for s in sources if s.removeprefix("from_") in view.modalities
             and s != "from_atac" and "atac" not in s]
    return (cross or sources or [None])[0]


def _default_region(res) -> str:
    """The gene whose TSS is nearest a peak with the largest accessibility spread, else that peak."""
    spread = res.accessibility["original"].std(axis=0)
    peak = str(res.peaks[int(np.argmax(spread))]) if len(spread) else ""
    if res.peak_genes is not None and peak in res.peak_genes.index and res.peak_genes.loc[peak, "gene"]:
        return str(res.peak_genes.loc[peak, "gene"])
    return peak


def labelled(table: pd.DataFrame, column: str = "motif") -> pd.DataFrame:
    """An enrichment table for display: motif name first, rounded percentages."""
    out = table[["name", column, "n_query", "observed", "background", "percent_observed",
                 "percent_background", "fold_enrichment", "pvalue", "p_adjust"]]
    return out.rename(columns={"name": "motif", column: "id", "n_query": "peaks"})


def activity_figure(res, source: str, annotation=None):
    """Original and generated cluster x motif tables side by side on one colour scale."""
    if source not in res.activity:
        return None
    original, generated = res.activity["original"], res.activity[source]
    values = np.abs(np.concatenate([original.to_numpy().ravel(), generated.to_numpy().ravel()]))
    zmax = float(np.nanpercentile(values, 98)) if np.isfinite(values).any() else 1.0
    rename = (lambda t: t.set_axis([annotation(c) for c in t.index], axis=0)) if annotation else (lambda t: t)
    return figures.heatmaps({"original": rename(original), source: rename(generated)},
                            {"original": "observed accessibility",
                             source: f"generated from {source.removeprefix('from_')}"}, zmax=max(zmax, 0.5))


def region_figure(res, region: str, source: str, table: bool = False):
    """(figure, message) for a gene name or coordinates; figure None when nothing can be drawn.

    With ``table``, the long table of the tracks (column ``source``) instead of the figure.
    """
    from scmm.tl.regions import region_track
    if not isinstance(region, str) or not region.strip() or len(region) > 200:
        return None, "type a gene name or a region such as chr1:1,000,000-1,100,000"
    try:
        chrom, start, end = locate(region, res.gene_models)
    except ValueError as err:
        known = "" if res.gene_models is not None else " (no gene annotation was given to `scmm chromatin`)"
        return None, f"{err}{known}"
    if end - start > MAX_REGION_BP:
        return None, f"the region is {end - start:,} bp; at most {MAX_REGION_BP:,} bp are drawn"
    idx = peaks_in_region(res.peaks, chrom, start, end)
    if not len(idx):
        return None, f"no peak of this run lies in {chrom}:{start:,}-{end:,}"
    if len(idx) > MAX_REGION_PEAKS:
        return None, f"{len(idx)} peaks in this region; at most {MAX_REGION_PEAKS} are drawn: narrow it"
    tracks = {}
    for key in ("original", source):
        if key in res.accessibility:
            # the saved values are already per cluster: each row is one "cell" of its own group
            tracks[key] = region_track(res.accessibility[key], res.peaks, res.groups, chrom, start, end,
                                       groups=res.groups)
    if table:
        return pd.concat([t.assign(source=k) for k, t in tracks.items()], ignore_index=True), ""
    models = None
    if res.gene_models is not None:
        models = res.gene_models.iloc[overlapping(res.gene_models, chrom, start, end)].head(30)
    fig = chromatin_figures.region_tracks(
        tracks, chrom, start, end, models,
        {"original": "observed", source: f"generated from {str(source).removeprefix('from_')}"},
        title=f"{chrom}:{start:,}-{end:,}")
    return fig, f"{len(idx)} peaks in {chrom}:{start:,}-{end:,}"


def register(app, cfg) -> None:
    """Chromatin page callbacks."""

    def enrichment_rows(run_id, dim, direction):
        _, res, _ = results_of(cfg, run_id)
        if res is None or not isinstance(dim, int) or direction not in ("positive", "negative"):
            return None
        return enrichment_of(res, dim, direction)

    @app.callback(Output("chrom-enrich-table", "children"), Output("chrom-enrich-msg", "children"),
                  Output(components.graph_id("motif-bars"), "figure"),
                  Output("page-state", "data", allow_duplicate=True),
                  Input("chrom-dim", "value"), Input("chrom-direction", "value"), State("chrom-run", "data"),
                  prevent_initial_call="initial_duplicate")
    def show_enrichment(dim, direction, run_id):
        """The motif table and bars of the chosen dimension's peaks."""
        rows = enrichment_rows(run_id, dim, direction)
        if rows is None:
            return no_update, no_update, no_update, no_update
        _, res, _ = results_of(cfg, run_id)
        skipped = [s for s in res.summary.get("skipped_peak_sets", [])
                   if isinstance(s, dict) and s.get("dim") == dim and s.get("direction") == direction]
        if rows.empty:
            n = skipped[0].get("n_query", 0) if skipped else 0
            msg = (f"z{dim + 1} has {n} peaks {('rising' if direction == 'positive' else 'falling')} with it at "
                   "the traversal threshold: too few (< 10) for an enrichment test")
            return components.table(None), msg, figures.empty(msg, height=360), {"dim": dim}
        n_sig = int((rows["p_adjust"] < 0.05).sum())
        msg = (f"{int(rows['n_query'].iloc[0])} peaks; {n_sig} of {len(rows)} motifs enriched at BH-adjusted "
               f"p < 0.05; the table lists the first {min(TABLE_ROWS, len(rows))} (CSV: all)")
        title = f"z{dim + 1}, peaks {'rising' if direction == 'positive' else 'falling'} with z"
        return (components.table(labelled(rows), TABLE_ROWS, id="chrom-enrich-rows"), msg,
                chromatin_figures.motif_bars(rows, title), {"dim": dim})

    @app.callback(Output({"role": "csv-download", "t": "motif-enrichment"}, "data"),
                  Input({"role": "csv", "t": "motif-enrichment"}, "n_clicks"),
                  State("chrom-dim", "value"), State("chrom-direction", "value"), State("chrom-run", "data"),
                  prevent_initial_call=True)
    def download(_n, dim, direction, run_id):
        rows = enrichment_rows(run_id, dim, direction)
        if rows is None:
            return no_update
        name = components.safe_name(f"{run_id}_z{dim + 1}_{direction}_motifs")
        return dict(content=rows.to_csv(index=False), filename=f"{name}.csv")

    def bars_export(run_id, dim, direction):
        rows = enrichment_rows(run_id, dim, direction)
        if rows is None or rows.empty:
            return None
        return chromatin_figures.motif_bars(rows, f"z{dim + 1}, {direction} peaks")

    components.register_export(app, cfg, "motif-bars", [State("chrom-run", "data"), State("chrom-dim", "value"),
                                                        State("chrom-direction", "value")],
                               bars_export, lambda run, dim, d: f"{run}_z{dim + 1 if isinstance(dim, int) else ''}_{d}_motifs")

    def activity_export(run_id, source):
        view, res, _ = results_of(cfg, run_id)
        if res is None or not isinstance(source, str):
            return None
        return activity_figure(res, source, view.cluster_label if view.annotation else None)

    @app.callback(Output(components.graph_id("motif-activity"), "figure"), Output("chrom-activity-r", "children"),
                  Input("chrom-source", "value"), State("chrom-run", "data"))
    def show_activity(source, run_id):
        """Cluster x motif activity, original vs the chosen generation, and their similarity."""
        fig = activity_export(run_id, source)
        if fig is None:
            return figures.empty("no motif activity tables", height=300), ""
        _, res, _ = results_of(cfg, run_id)
        row = res.similarity[res.similarity["source"] == source]
        r = f"Pearson r with the original (z-scored tables): {float(row['pearson_r'].iloc[0]):.3f}" if len(row) else ""
        return fig, r

    components.register_export(app, cfg, "motif-activity", [State("chrom-run", "data"), State("chrom-source", "value")],
                               activity_export, lambda run, source: f"{run}_motif_activity_{source}")

    def region_export(run_id, region, source):
        _, res, _ = results_of(cfg, run_id)
        if res is None:
            return None
        return region_figure(res, region, source)[0]

    @app.callback(Output(components.graph_id("region-tracks"), "figure"), Output("chrom-region-msg", "children"),
                  Input("chrom-region", "value"), Input("chrom-source", "value"), State("chrom-run", "data"))
    def show_region(region, source, run_id):
        """Tracks of the typed gene or region (what cannot be drawn is said, not guessed)."""
        _, res, _ = results_of(cfg, run_id)
        if res is None:
            return no_update, no_update
        fig, msg = region_figure(res, region, source)
        if fig is None:
            return figures.empty(msg, height=300), dbc.Alert(msg, color="warning", className="py-1 mb-0",
                                                             id="chrom-region-problem")
        return fig, msg

    components.register_export(app, cfg, "region-tracks",
                               [State("chrom-run", "data"), State("chrom-region", "value"), State("chrom-source", "value")],
                               region_export, lambda run, region, source: f"{run}_{region}_tracks")

    @app.callback(Output({"role": "csv-download", "t": "motif-activity"}, "data"),
                  Input({"role": "csv", "t": "motif-activity"}, "n_clicks"),
                  State("chrom-source", "value"), State("chrom-run", "data"), prevent_initial_call=True)
    def download_activity(_n, source, run_id):
        _, res, _ = results_of(cfg, run_id)
        if res is None or source not in res.activity:
            return no_update
        both = pd.concat({"original": res.activity["original"], source: res.activity[source]}, names=["table"])
        return dict(content=both.to_csv(), filename=components.safe_name(f"{run_id}_motif_activity_{source}") + ".csv")

    @app.callback(Output({"role": "csv-download", "t": "region-track"}, "data"),
                  Input({"role": "csv", "t": "region-track"}, "n_clicks"),
                  State("chrom-region", "value"), State("chrom-source", "value"), State("chrom-run", "data"),
                  prevent_initial_call=True)
    def download_region(_n, region, source, run_id):
        _, res, _ = results_of(cfg, run_id)
        if res is None:
            return no_update
        rows, _ = region_figure(res, region, source, table=True)
        if rows is None:
            return no_update
        return dict(content=rows.to_csv(index=False), filename=components.safe_name(f"{run_id}_{region}_tracks") + ".csv")

    @app.callback(Output("chrom-compute-status", "children"), Input("chrom-compute", "n_clicks"),
                  State("chrom-run", "data"), background=True, prevent_initial_call=True,
                  running=[(Output("chrom-compute", "disabled"), True, False)])
    def compute_now(n, run_id):
        """Compute the run's chromatin analyses with the server's genome (a child process)."""
        processes.exit_with_parent()
        run_dir = data_access.resolve_run(cfg.runs_dir, run_id)
        if not n or cfg.genome_fasta is None or run_dir is None:
            return no_update
        error, warned = compute(cfg, run_dir)
        notes = [dbc.Alert(f"warning: {w}", color="warning", className="py-1 mb-1") for w in warned]
        if error:
            return [dbc.Alert(f"Not computed: {error}", color="danger", className="py-1 mb-1",
                              id="chrom-compute-error"), *notes]
        return [html.Span("Computed. ", className="fw-semibold"),
                dcc.Link("Show them", href=f"/chromatin?run={run_id}", refresh=True, id="chrom-compute-done"),
                *notes]
