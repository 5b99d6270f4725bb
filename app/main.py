"""scMM Explorer: ``create_app()`` and the ``scmm-app`` console script.

    scmm-app --data-dir data --runs-dir runs --port 8050

Pages: Data, Train, Embeddings, Traversal, Generation, Chromatin (``app/pages/*``).  The
URL carries the page, the run and the page's state (``/embeddings?run=ID&
color=feat:rna:CD3E``), so any view is a link.  Routing is a plain
``dcc.Location`` callback rather than ``use_pages`` so that the app is a
factory: each ``create_app`` (every test) gets its own folders and callbacks.

The server process never imports torch (tests/test_app_jobs.py checks it): what needs the
model runs in child processes (:mod:`app.worker`).  ``scmm-app``
serves the app with waitress (a production WSGI server, threads in one
process), a job queue (:mod:`app.jobs`) and bounded child work
(:mod:`app.processes`); uploads stream through ``POST /upload``
(:mod:`app.uploads`).

With ``--redis-url`` (or ``SCMM_REDIS_URL``) trainings and background
callbacks go to Celery workers instead (``scmm-worker``, possibly on another
machine; :mod:`app.celery_queue`); without it nothing needs a server and
neither Redis nor Celery is imported.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import dash
import dash_bootstrap_components as dbc
import diskcache
from dash import Dash, DiskcacheManager, Input, Output, State, dcc, html, no_update

from app import data_access, jobs, processes, uploads
from app.pages import chromatin as chromatin_page
from app.pages import data as data_page
from app.pages import embeddings as embeddings_page
from app.pages import generation as generation_page
from app.pages import train as train_page
from app.pages import traversal as traversal_page
from app.pages.embeddings import not_shown

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
DEMO_NAME = "demo.h5mu"
PAGES = [  # (path, nav label, module)
    ("/data", "Data", data_page),
    ("/train", "Train", train_page),
    ("/embeddings", "Embeddings", embeddings_page),
    ("/traversal", "Traversal", traversal_page),
    ("/generation", "Generation", generation_page),
    ("/chromatin", "Chromatin", chromatin_page),
]
#: query keys each page keeps in the URL besides ``run``
PAGE_QUERY = {"/embeddings": ("color", "emb"), "/traversal": ("dim", "mod"),
              "/generation": ("target",), "/chromatin": ("dim",)}


DEFAULT_MAX_UPLOAD_MB = 2048


def default_work_slots() -> int:
    """Concurrent child tasks (summaries, predictions, exports): one fewer than the cores, 1 to 4."""
    return min(4, max(1, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class AppConfig:
    """Folders the app reads and writes, its limits, and its job queue."""
    data_dir: Path
    runs_dir: Path
    cache_dir: Path
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    work_slots: int = field(default_factory=default_work_slots)
    queue: jobs.JobQueue | None = None    # or app.celery_queue.CeleryJobQueue (same methods)
    genome_fasta: Path | None = None     # for `scmm chromatin` from the Chromatin page (server-side only)
    genes: Path | None = None

    @property
    def slots_dir(self) -> Path:
        """Lock files of the bounded pool of child work."""
        return self.cache_dir / "slots"


def ensure_demo(data_dir: Path) -> Path:
    """Write the built-in demo into ``data_dir`` if missing (``python -m scmm demo``, a child process)."""
    path = Path(data_dir) / DEMO_NAME
    if not path.exists():
        proc = processes.run_child(processes.python_command("scmm", "demo", "--out", path), timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"could not write the demo data: {proc.stderr.strip()[-500:]}")
    return path


def parse_query(search: str | None) -> dict[str, str]:
    """``?a=1&b=2`` -> ``{"a": "1", "b": "2"}`` (last value wins)."""
    return {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items() if v}


def viewable_runs(cfg: AppConfig) -> list[dict]:
    """Runs with a saved, readable model, newest first (read once per callback)."""
    return [r for r in jobs.list_runs(cfg.runs_dir, cfg.queue)
            if r["has_model"] and r["status"] not in ("failed", "unreadable")]


def run_options(runs: list[dict]) -> list[dict]:
    """The run picker's options for :func:`viewable_runs`."""
    return [{"label": f"{r['run']}" + ("" if r["analysed"] else " (not analysed)"), "value": r["run"]}
            for r in runs]


def default_run(runs: list[dict]) -> str | None:
    """The newest analysed run of :func:`viewable_runs`, else the newest trained one."""
    analysed = [r for r in runs if r["analysed"]]
    pick = analysed or runs
    return pick[0]["run"] if pick else None


def navbar() -> dbc.Navbar:
    """Brand, page links (their hrefs carry the run) and the run picker."""
    links = [dbc.NavItem(dbc.NavLink(label, id=f"nav-{path.strip('/')}", href=path, active="exact"))
             for path, label, _ in PAGES]
    picker = html.Div([html.Span("run", className="text-light small me-2"),
                       dcc.Dropdown(id="run-select", clearable=False, placeholder="no run yet",
                                    style={"minWidth": "300px"}, className="run-select")],
                      className="d-flex align-items-center")
    return dbc.Navbar(dbc.Container([
        dbc.NavbarBrand("scMM Explorer", href="/data"),
        dbc.Nav(links, navbar=True, className="me-auto"), picker], fluid=True),
        color="dark", dark=True, className="mb-3")


def build_layout() -> html.Div:
    """The shell: URL, navbar, page container and the cross-page stores."""
    return html.Div([
        dcc.Location(id="url", refresh="callback-nav"),
        navbar(),
        dcc.Store(id="selections", storage_type="session", data={}),
        dcc.Store(id="page-state", data={}),
        dcc.Store(id="rendered", data={}),
        dcc.Interval(id="runs-refresh", interval=5000),
        dbc.Container(html.Div(id="page"), fluid=True, className="pb-5"),
    ])


def create_app(data_dir: str | Path = "data", runs_dir: str | Path = "runs",
               cache_dir: str | Path | None = None, write_demo: bool = True,
               max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, work_slots: int | None = None,
               max_jobs: int | None = None, schedule: bool = True,
               genome_fasta: str | Path | None = None, genes: str | Path | None = None,
               redis_url: str | None = None, heartbeat_timeout: float | None = None) -> Dash:
    """Build the Dash app over ``data_dir`` (datasets) and ``runs_dir`` (run folders).

    ``cache_dir`` holds the background-callback cache and dataset summaries
    (default: a fresh temporary folder).  With ``write_demo``, the built-in demo
    is written into ``data_dir`` when missing and its summary prepared.
    ``max_upload_mb`` bounds an upload, ``work_slots`` the concurrent child
    tasks, ``max_jobs`` the concurrent trainings (default: one per GPU, one on
    a CPU-only machine); with ``schedule`` a thread starts queued jobs.
    ``genome_fasta`` (and ``genes``, a GTF) let the Chromatin page compute the
    chromatin analyses of a run (``scmm chromatin``); the browser never names a path.

    With ``redis_url`` jobs go to Celery workers (:class:`app.celery_queue.CeleryJobQueue`;
    ``max_jobs`` is then each worker's ``--concurrency``) and background callbacks
    to Dash's ``CeleryManager`` on the same Celery app; a running job whose
    worker has sent no heartbeat for ``heartbeat_timeout`` seconds is failed.
    Raises :class:`app.celery_queue.QueueUnavailable` when Redis does not answer.
    """
    data_dir, runs_dir = Path(data_dir).resolve(), Path(runs_dir).resolve()
    cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="scmm-app-")).resolve()
    for folder in (data_dir, runs_dir, cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if redis_url:
        from app import celery_queue  # imports Celery only when a Redis URL is configured
        celery_queue.check_redis(redis_url)
        queue = celery_queue.CeleryJobQueue(runs_dir, redis_url, heartbeat_timeout=heartbeat_timeout)
    else:
        queue = jobs.JobQueue(runs_dir, max_running=max_jobs)
    cfg = AppConfig(data_dir, runs_dir, cache_dir, max_upload_mb=int(max_upload_mb),
                    work_slots=work_slots or default_work_slots(),
                    queue=queue,
                    genome_fasta=_existing_file(genome_fasta, "--genome-fasta"),
                    genes=_existing_file(genes, "--genes"))
    if write_demo:
        demo = ensure_demo(cfg.data_dir)
        threading.Thread(target=data_access.summarize, args=(demo, cfg.cache_dir),
                         kwargs={"slots": cfg.work_slots}, daemon=True).start()
    if schedule:
        threading.Thread(target=cfg.queue.run_forever, name="scmm-job-queue", daemon=True).start()
    if redis_url:
        from dash import CeleryManager
        manager = CeleryManager(queue.celery)
    else:
        manager = DiskcacheManager(diskcache.Cache(str(cfg.cache_dir / "background")))
    app = Dash(__name__, title="scMM Explorer", assets_folder=str(ASSETS), use_pages=False,
               serve_locally=True, background_callback_manager=manager,
               suppress_callback_exceptions=True, update_title=None)
    app.layout = build_layout()
    app.scmm_config = cfg
    uploads.register(app.server, cfg.data_dir / data_access.UPLOADS, cfg.max_upload_mb * 2 ** 20)
    _register_shell(app, cfg)
    for _, _, module in PAGES:
        module.register(app, cfg)
    return app


def _existing_file(path, option: str) -> Path | None:
    """``path`` resolved, or None; a missing file is refused at start-up, naming the option."""
    if path is None:
        return None
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{option}: {path} is not a file")
    return path


def _register_shell(app: Dash, cfg: AppConfig) -> None:
    page_modules = {path: module for path, _, module in PAGES}

    @app.callback(Output("run-select", "options"), Output("run-select", "value", allow_duplicate=True),
                  Input("runs-refresh", "n_intervals"), Input("url", "pathname"), State("run-select", "value"),
                  prevent_initial_call=True)
    def refresh_runs(_n, _path, picked):
        """Keep the run picker in step with the runs folder (jobs finish, CLI runs appear); an empty
        picker takes the newest run as soon as there is one."""
        runs = viewable_runs(cfg)
        options = run_options(runs)
        if not picked and options:
            return options, default_run(runs)
        return options, no_update

    @app.callback(Output("page", "children"), Output("run-select", "value"), Output("rendered", "data"),
                  Output("run-select", "options", allow_duplicate=True),
                  Input("url", "pathname"), Input("run-select", "value"), State("url", "search"),
                  State("rendered", "data"), prevent_initial_call="initial_duplicate")
    def route(pathname, picked, search, rendered):
        """Render the page of ``pathname`` for the run in the URL (or the picked / newest one)."""
        query = parse_query(search)
        path = pathname if pathname in page_modules else "/data"
        notes = []
        if pathname not in page_modules and pathname not in (None, "", "/"):
            notes.append(not_shown(f"page {str(pathname)[:80]}", "there is no such page", "the Data page"))
        trig = dash.ctx.triggered_id
        if trig == "run-select":  # nothing to read when the run did not change
            if not picked or (rendered or {}) == {"path": path, "run": picked}:
                return no_update, no_update, no_update, no_update
            if path not in PAGE_QUERY and (rendered or {}).get("path") == path:
                # Data and Train do not show a run: keep the page (a job's monitor) once it is drawn;
                # before that, render it (this call supersedes the first one, whose page Dash drops)
                return no_update, no_update, {"path": path, "run": picked}, no_update
            if picked != query.get("run"):  # another run: a result page's settings belonged to the old one
                query = {"run": picked} if path in PAGE_QUERY else {**query, "run": picked}
        runs = viewable_runs(cfg)
        run = picked if trig == "run-select" else (query.get("run") or picked or default_run(runs))
        if data_access.resolve_run(cfg.runs_dir, run) is None:
            asked, run = run, default_run(runs)
            if asked and path in PAGE_QUERY:
                notes.append(not_shown(f"run {str(asked)[:80]!r}", "there is no such run on this server",
                                       f"the newest run, {run}" if run else "no run"))
        page = page_modules[path].layout(cfg, run, query)
        if notes:
            page = html.Div([*notes, page])
        return (page, (run if run != picked else no_update), {"path": path, "run": run},
                run_options(runs))

    @app.callback(Output("url", "search"), Input("run-select", "value"), Input("page-state", "data"),
                  State("url", "pathname"), State("url", "search"), prevent_initial_call=True)
    def sync_url(run, state, pathname, search):
        """Write the run and the page's state into the query string (deep links)."""
        query = {k: v for k, v in parse_query(search).items()
                 if k in PAGE_QUERY.get(pathname, ()) or k == "data"}
        if dash.ctx.triggered_id == "run-select" and run != query.get("run"):
            query = {k: v for k, v in query.items() if k == "data"}
        if run:
            query["run"] = run
        for key, value in (state or {}).items():
            if key in PAGE_QUERY.get(pathname, ()):
                if value in (None, ""):
                    query.pop(key, None)
                else:
                    query[key] = str(value)
        new = "?" + urlencode(query) if query else ""
        return new if new != (search or "") else no_update

    outputs = [Output(f"nav-{path.strip('/')}", "href") for path, _, _ in PAGES]

    @app.callback(*outputs, Input("run-select", "value"))
    def nav_links(run):
        """Page links keep the current run."""
        suffix = "?" + urlencode({"run": run}) if run else ""
        return [path + suffix for path, _, _ in PAGES]

    @app.server.route("/healthz")
    def healthz():
        return "ok"


def main(argv: list[str] | None = None) -> int:
    """``scmm-app [--host H] [--port N] [--data-dir DIR] [--runs-dir DIR] [limits] [--redis-url URL] [--debug]``."""
    parser = argparse.ArgumentParser(prog="scmm-app", description="scMM Explorer (Dash)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--data-dir", default="data", help="datasets (the demo is written here)")
    parser.add_argument("--runs-dir", default="runs", help="run folders (trained models)")
    parser.add_argument("--cache-dir", default=None, help="background-job cache (default: temporary)")
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload accepted (default {DEFAULT_MAX_UPLOAD_MB} MB)")
    parser.add_argument("--work-slots", type=int, default=None,
                        help="concurrent summaries / predictions / exports (default: cores - 1, at most 4)")
    parser.add_argument("--max-jobs", type=int, default=None,
                        help="concurrent trainings (default: one per GPU, one without a GPU)")
    parser.add_argument("--threads", type=int, default=16, help="server threads (concurrent requests)")
    parser.add_argument("--genome-fasta", default=None,
                        help="genome FASTA for the chromatin analyses of RNA + ATAC runs (Chromatin page)")
    parser.add_argument("--genes", default=None, help="GTF for the nearest gene of every peak and gene models")
    parser.add_argument("--redis-url", default=os.environ.get("SCMM_REDIS_URL") or None,
                        help="run trainings and background work on Celery workers (scmm-worker) through "
                        "this Redis, e.g. redis://localhost:6379/0 (default: $SCMM_REDIS_URL; without it, "
                        "on this machine)")
    parser.add_argument("--heartbeat-timeout", type=float, default=None,
                        help="with --redis-url: fail a running job whose worker has sent no heartbeat for "
                        "this many seconds (default 120)")
    parser.add_argument("--debug", action="store_true", help="Werkzeug's development server with Dash dev tools")
    args = parser.parse_args(argv)
    for name in ("max_upload_mb", "work_slots", "max_jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.heartbeat_timeout is not None and not args.heartbeat_timeout > 0:
        parser.error(f"--heartbeat-timeout must be positive, got {args.heartbeat_timeout}")
    if args.redis_url and args.max_jobs is not None:
        parser.error("--max-jobs is for the embedded queue; with --redis-url each scmm-worker's "
                     "--concurrency sets how many trainings it runs at a time")
    if args.redis_url:
        from app import celery_queue
        try:
            celery_queue.check_redis(args.redis_url)
        except celery_queue.QueueUnavailable as err:
            print(f"scmm-app: --redis-url: {err} (start Redis there, or leave --redis-url out to run the "
                  "jobs on this machine)", file=sys.stderr, flush=True)
            return 2
    try:
        app = create_app(args.data_dir, args.runs_dir, args.cache_dir, max_upload_mb=args.max_upload_mb,
                         work_slots=args.work_slots, max_jobs=args.max_jobs,
                         genome_fasta=args.genome_fasta, genes=args.genes,
                         redis_url=args.redis_url, heartbeat_timeout=args.heartbeat_timeout)
    except FileNotFoundError as err:
        parser.error(str(err))
    cfg = app.scmm_config
    print(f"scMM Explorer on http://{args.host}:{args.port}  (data: {cfg.data_dir}, runs: {cfg.runs_dir}; "
          f"{cfg.queue.describe()}, {cfg.work_slots} work slot(s), "
          f"uploads up to {cfg.max_upload_mb:,} MB)", flush=True)
    if args.debug:
        app.run(host=args.host, port=args.port, debug=True, dev_tools_disable_version_check=True)
        return 0
    import waitress
    from app import export
    export.warm_up()  # start the figure renderer now, so even the first export is quick
    waitress.serve(app.server, host=args.host, port=args.port, threads=args.threads,
                   max_request_body_size=cfg.max_upload_mb * 2 ** 20 + 2 ** 20,
                   ident="scmm-app", clear_untrusted_proxy_headers=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
