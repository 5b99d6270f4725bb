"""Latency of the explorer's interactive callbacks: colour-by changes and traversal steps.

Two measurements per dataset size:

- direct: the callback bodies (figure builders + JSON encoding of what goes to
  the browser), called in-process;
- HTTP: ``POST /_dash-update-component`` to a local server (werkzeug in a
  thread), i.e. what the browser waits for minus rendering;
- browser: headless Chromium, from setting the control's value to the
  graph's next ``plotly_afterplot`` (request, callback and WebGL redraw).

Sizes: the demo (3,000 cells x 2,000 genes), pbmc10k_cite (6,855 x 4,000
genes + 14 proteins), 100,000, 300,000 and 1,000,000 cells, as synthetic analysed runs with those
shapes (``tests/synthetic_run.py``), unless ``--run DIR`` points at a real run folder.
Targets (issue 4): < 300 ms on the demo, < 1 s on pbmc10k_cite; issue 14: colour change, lasso
and hover < 400 ms median at 1,000,000 cells.

The embedding's interactions in the browser (``--interact``): colour change (categorical and a
gene), a lasso drawn with mouse events until the selection count is shown, and a hover until the
cell is named, for the design the size gets (Scattergl below ``app.raster.RASTER_ABOVE``, a server
image above) and, with ``--design both``, the other one too; the server process's memory beside.

    python bench/app_latency.py [--sizes demo,pbmc10k,100k] [--repeats 5] [--run RUN_DIR [--target-ms 1000]]
    python bench/app_latency.py --sizes 100k,300k,1M --interact --design both --out bench/out/raster_latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import data_access, raster  # noqa: E402
from tests import synthetic_run as synthetic  # noqa: E402
from app.pages import embeddings, traversal  # noqa: E402

SIZES = {"demo": (3000, 2000, 18), "pbmc10k": (6855, 4000, 14), "50k": (50_000, 4000, 14),
         "100k": (100_000, 4000, 14), "300k": (300_000, 4000, 14), "1M": (1_000_000, 4000, 14)}
TARGET_MS = {"demo": 300, "pbmc10k": 1000, "50k": 400, "100k": None, "300k": 400, "1M": 400}


def encode(obj) -> int:
    """Bytes of the JSON Dash would send for ``obj`` (figures, Patches, components)."""
    from plotly.io.json import to_json_plotly
    if hasattr(obj, "to_plotly_json"):
        obj = obj.to_plotly_json()
    return len(to_json_plotly(obj))


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median and max wall time of ``fn()`` in ms (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return float(np.median(times)), float(np.max(times))


def direct(view, repeats: int) -> dict:
    """In-process timings of the interactive paths."""
    genes = [f"feat:{view.modalities[0]}:{g}" for g in list(view._feature_index[view.modalities[0]])[:repeats + 1]]
    it = iter(genes * 10)
    out = {}
    if raster.rasterised(view.n_cells):
        size = raster.DEFAULT_SIZE
        out["colour change (raster Patch)"] = timed(lambda: encode(embeddings.raster_colour_patch(view, "joint", next(it), None, size)[0]), repeats)
        out["colour by cluster (raster Patch)"] = timed(lambda: encode(embeddings.raster_colour_patch(view, "joint", "obs:scmm_cluster", None, size)[0]), repeats)
        return out
    # gene -> gene: the drawing order changes, so the points are sent again; cluster -> cluster: colours only
    out["colour change (Patch)"] = timed(lambda: encode(embeddings.colour_patch(view, "joint", *embeddings.coloured(view, next(it)), True)), repeats)
    out["colour by cluster (Patch)"] = timed(lambda: encode(embeddings.colour_patch(view, "joint", *embeddings.coloured(view, "obs:scmm_cluster"), False)), repeats)
    out["embedding switch (full figure)"] = timed(lambda: encode(embeddings.colour_figure(view, "rna", genes[0])), max(2, repeats // 2))
    trav = view.traversal()
    if trav is not None:
        steps = iter(range(1000))
        mod = trav.modalities[0]

        def step():
            k = next(steps)
            bars, prof, table, _ = traversal.traversal_figures(trav, k % trav.n_dims, k % len(trav.steps), mod, None, 15)
            from app import components
            encode(bars), encode(prof), encode(components.table(table, 40))
        out["traversal step"] = timed(step, repeats)
    return out


class Server:
    """The Dash app served by werkzeug in a background thread."""

    def __init__(self, app):
        import logging
        from werkzeug.serving import make_server
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _deps(url: str) -> list[dict]:
    import urllib.request
    with urllib.request.urlopen(url + "/_dash-dependencies") as r:
        return json.load(r)


def _outputs(spec: str) -> list[dict]:
    parts = spec[2:-2].split("...") if spec.startswith("..") else [spec]
    out = []
    for part in parts:
        cid, prop = part.rsplit(".", 1)
        out.append({"id": json.loads(cid) if cid.startswith("{") else cid, "property": prop})
    return out


def post(url: str, dep: dict, values: dict, changed: str) -> tuple[int, float]:
    """POST one callback request; returns (bytes, ms)."""
    import urllib.request

    def entry(d):
        cid = json.loads(d["id"]) if d["id"].startswith("{") else d["id"]
        key = d["id"] + "." + d["property"]
        return {"id": cid, "property": d["property"], "value": values.get(key)}

    body = {"output": dep["output"], "outputs": _outputs(dep["output"]),
            "inputs": [entry(d) for d in dep["inputs"]], "state": [entry(d) for d in dep["state"]],
            "changedPropIds": [changed]}
    if len(body["outputs"]) == 1:
        body["outputs"] = body["outputs"][0]
    req = urllib.request.Request(url + "/_dash-update-component", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        n = len(r.read())
    return n, 1000 * (time.perf_counter() - t)


def http(runs_dir: Path, run_id: str, view, repeats: int) -> dict:
    """Timings through the Dash HTTP endpoint."""
    from app.main import create_app
    app = create_app(runs_dir.parent / "data", runs_dir, runs_dir.parent / "cache", write_demo=False)
    server = Server(app)
    try:
        deps = _deps(server.url)
        find = lambda needle: next(d for d in deps if needle in d["output"])  # noqa: E731
        draw = find('"g":"embedding"')
        mod = view.modalities[0]
        genes = list(view._feature_index[mod])
        out = {}
        times = []
        for i in range(repeats + 1):
            values = {"emb-key.value": "joint", "emb-colour.value": f"feat:{mod}:{genes[i]}", "emb-run.data": run_id}
            _, ms = post(server.url, draw, values, "emb-colour.value")
            times.append(ms)
        out["colour change (HTTP)"] = (float(np.median(times[1:])), float(np.max(times[1:])))
        trav = view.traversal()
        if trav is not None:
            dep = find('"g":"traversal-bars"')
            times = []
            for i in range(repeats + 1):
                values = {"trav-dim.value": i % trav.n_dims, "trav-step.value": i % len(trav.steps),
                          "trav-mod.value": trav.modalities[0], "trav-logp.value": None,
                          "trav-n.value": 15, "trav-run.data": run_id}
                _, ms = post(server.url, dep, values, "trav-dim.value")
                times.append(ms)
            out["traversal step (HTTP)"] = (float(np.median(times[1:])), float(np.max(times[1:])))
        return out
    finally:
        server.close()


def chromium():
    """Headless Chromium (Debian's) driven by selenium, software WebGL, 1400 x 1000."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                "--disable-background-networking", "--window-size=1400,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts)


def browser(runs_dir: Path, run_id: str, view, repeats: int) -> dict:
    """Click-to-drawn times in headless Chromium: the value is set through ``dash_clientside.set_props``
    and the clock stops at the graph's next ``plotly_afterplot`` (request + callback + WebGL redraw)."""
    import shutil
    from app.main import create_app
    if not shutil.which("chromedriver"):
        return {}
    app = create_app(runs_dir.parent / "data", runs_dir, runs_dir.parent / "cache", write_demo=False)
    server = Server(app)
    driver = chromium()
    measure = """
        const [id, value, graphIndex, done] = arguments;
        const gd = document.querySelectorAll('.js-plotly-plot')[graphIndex];
        const t0 = performance.now();
        gd.once('plotly_afterplot', () => done(performance.now() - t0));
        window.dash_clientside.set_props(id, {value: value});
    """
    out = {}
    try:
        driver.set_script_timeout(30)
        mod = view.modalities[0]
        genes = list(view._feature_index[mod])
        start = time.perf_counter()
        driver.get(f"{server.url}/embeddings?run={run_id}")
        _wait_plot(driver, timeout=300)
        first = (time.perf_counter() - start) * 1000 - 1000  # _wait_plot sleeps 1 s once the plot is there
        out["first page render (browser, run loaded)"] = (first, first)
        times = [driver.execute_async_script(measure, "emb-colour", f"feat:{mod}:{genes[i]}", 0)
                 for i in range(repeats + 1)]
        out["colour change (browser)"] = (float(np.median(times[1:])), float(np.max(times[1:])))
        if view.traversal() is not None:
            driver.get(f"{server.url}/traversal?run={run_id}")
            _wait_plot(driver, timeout=300)
            n = view.traversal().n_dims
            times = [driver.execute_async_script(measure, "trav-dim", (i + 1) % n, 0) for i in range(repeats + 1)]
            out["traversal step (browser)"] = (float(np.median(times[1:])), float(np.max(times[1:])))
            k = len(view.traversal().steps)
            times = [driver.execute_async_script(measure, "trav-step", (i * 3) % k, 1) for i in range(1, repeats + 2)]
            out["traversal value step (browser)"] = (float(np.median(times[1:])), float(np.max(times[1:])))
    finally:
        driver.quit()
        server.close()
    return out


#: browser side: run ``action`` (a JS snippet using ``gd``, the embedding's plot) and resolve with
#: the ms until ``done()`` (a JS expression) is true, polled on every animation frame
_UNTIL = """
    const [action, done, finish] = arguments;
    const gd = document.querySelector('.js-plotly-plot');
    const t0 = performance.now();
    new Function('gd', action)(gd);
    const check = new Function('gd', 'return ' + done);
    const poll = () => check(gd) ? finish(performance.now() - t0) :
        (performance.now() - t0 > 60000 ? finish(-1) : requestAnimationFrame(poll));
    poll();
"""

_LASSO = """
    const el = gd.querySelector('.nsewdrag'), b = el.getBoundingClientRect();
    const cx = b.left + b.width / 2, cy = b.top + b.height / 2, r = %d;
    const ev = (type, x, y, target) => target.dispatchEvent(new MouseEvent(type,
        {clientX: x, clientY: y, bubbles: true, buttons: 1, button: 0, view: window}));
    window.__selBefore = document.getElementById('sel-info').innerText;
    ev('mousedown', cx - r, cy - r, el);
    for (const [x, y] of [[cx - r, cy + r], [cx + r, cy + r], [cx + r, cy - r], [cx - r, cy - r]]) ev('mousemove', x, y, document);
    ev('mouseup', cx - r, cy - r, document);
"""

_HOVER = """
    const el = gd.querySelector('.nsewdrag'), b = el.getBoundingClientRect();
    const h = document.getElementById('emb-hover'); window.__hoverBefore = h ? h.innerText : '';
    Plotly.Fx.unhover(gd);
    el.dispatchEvent(new MouseEvent('mousemove', {clientX: b.left + gd._fullLayout.xaxis.d2p(%r),
                                                  clientY: b.top + gd._fullLayout.yaxis.d2p(%r), bubbles: true, view: window}));
"""


def interact(runs_dir: Path, run_id: str, view, repeats: int, design: str) -> dict:
    """Median / max ms in headless Chromium of the embedding's interactions with ``design``
    ("raster" or "scatter", forced through ``app.raster.RASTER_ABOVE``), and the server's RSS."""
    import psutil
    from app.main import create_app
    saved = raster.RASTER_ABOVE
    raster.RASTER_ABOVE = 0 if design == "raster" else 10**9
    app = create_app(runs_dir.parent / "data", runs_dir, runs_dir.parent / "cache", write_demo=False)
    server = Server(app)
    driver = chromium()
    redraw = """
        const [id, value, done] = arguments;
        const gd = document.querySelector('.js-plotly-plot');
        const t0 = performance.now();
        gd.once('plotly_afterplot', () => done(performance.now() - t0));
        window.dash_clientside.set_props(id, {value: value});
    """
    stat = lambda xs: (float(np.median(xs[1:])), float(np.max(xs[1:])))  # noqa: E731  (first: warm-up)
    out = {}
    try:
        driver.set_script_timeout(90)
        mod = view.modalities[0]
        genes = list(view._feature_index[mod])
        driver.get(f"{server.url}/embeddings?run={run_id}")
        _wait_plot(driver, timeout=300)
        cats = ["obs:cell_type", "obs:scmm_cluster"]
        out[f"{design}: colour change, categorical"] = stat(
            [driver.execute_async_script(redraw, "emb-colour", cats[i % 2]) for i in range(repeats + 1)])
        out[f"{design}: colour change, gene"] = stat(
            [driver.execute_async_script(redraw, "emb-colour", f"feat:{mod}:{genes[i]}") for i in range(repeats + 1)])
        done = ("document.getElementById('sel-info').innerText.includes('selected') && "
                "document.getElementById('sel-info').innerText !== window.__selBefore")
        out[f"{design}: lasso + count"] = stat(
            [driver.execute_async_script(_UNTIL, _LASSO % (60 + 15 * i), done) for i in range(repeats + 1)])
        xy = view.coords(view.embeddings()["joint"][0])
        pick = np.random.default_rng(1).choice(len(xy), repeats + 1, replace=False)
        done = ("(document.getElementById('emb-hover').innerText !== window.__hoverBefore && "
                "document.getElementById('emb-hover').innerText.length > 0)" if design == "raster" else
                "!!gd.querySelector('.hoverlayer .hovertext')")
        out[f"{design}: hover"] = stat(
            [driver.execute_async_script(_UNTIL, _HOVER % (float(xy[i, 0]), float(xy[i, 1])), done) for i in pick])
        out[f"{design}: server RSS (MB)"] = (psutil.Process().memory_info().rss / 2**20,) * 2
    finally:
        driver.quit()
        server.close()
        raster.RASTER_ABOVE = saved
    return out


def _wait_plot(driver, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.execute_script("const g = document.querySelector('.js-plotly-plot'); "
                                 "return !!(g && g._fullData && g._fullData.length);"):
            time.sleep(1.0)
            return
        time.sleep(0.2)
    raise TimeoutError("the plot did not appear")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo,pbmc10k,100k")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--run", default=None, help="a real run folder instead of synthetic ones")
    parser.add_argument("--target-ms", type=float, default=1000, help="target for --run (default 1 s)")
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium timings")
    parser.add_argument("--interact", action="store_true",
                        help="only the embedding's interactions in the browser (colour, lasso, hover) and memory")
    parser.add_argument("--design", choices=("auto", "both"), default="auto",
                        help="auto: the design the size gets; both: Scattergl and raster (where feasible)")
    parser.add_argument("--scatter-max", type=int, default=100_000, help="largest size to time Scattergl at")
    parser.add_argument("--out", default=None, help="append the results as JSON lines to this file")
    args = parser.parse_args(argv)
    jobs = []
    tmp = Path(tempfile.mkdtemp(prefix="scmm-bench-"))
    if args.run:
        run = Path(args.run).resolve()
        jobs.append(("run " + run.name, run, args.target_ms))
    else:
        for size in args.sizes.split(","):
            n, g, p = SIZES[size]
            t = time.perf_counter()
            run = synthetic.make_run(tmp / size / "runs" / f"syn-{size}", n_cells=n, n_genes=g, n_prots=p)
            print(f"# built synthetic {size} run ({n} cells, {g} genes, {p} proteins) "
                  f"in {time.perf_counter() - t:.1f} s", flush=True)
            jobs.append((size, run, TARGET_MS[size]))
    print(f"{'dataset':<14}{'path':<34}{'median ms':>10}{'max ms':>10}  target")
    for name, run, target in jobs:
        view = data_access.get_run(run)
        if args.interact:
            designs = ["raster" if raster.rasterised(view.n_cells) else "scatter"]
            if args.design == "both":
                designs = ["scatter", "raster"] if view.n_cells <= args.scatter_max else ["raster"]
            load = os.getloadavg()
            results = {}
            for design in designs:
                results.update(interact(run.parent, run.name, view, args.repeats, design))
            for path, (med, worst) in results.items():
                verdict = "" if target is None or "RSS" in path else (f"< {target} ms " + ("ok" if med < target else "MISSED"))
                print(f"{name:<14}{path:<40}{med:>10.1f}{worst:>10.1f}  {verdict}  load {load[0]:.2f}", flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as fh:
                    fh.write(json.dumps({"size": name, "n_cells": view.n_cells, "load_avg": load,
                                         "raster_above": raster.RASTER_ABOVE, "repeats": args.repeats,
                                         "results": {k: {"median_ms": v[0], "max_ms": v[1]} for k, v in results.items()}}) + "\n")
            continue
        results = direct(view, args.repeats)
        if not args.no_http:
            results.update(http(run.parent, run.name, view, args.repeats))
        if not args.no_browser:
            results.update(browser(run.parent, run.name, view, args.repeats))
        for path, (med, worst) in results.items():
            verdict = "" if target is None else (f"< {target} ms " + ("ok" if worst < target else "MISSED"))
            print(f"{name:<14}{path:<34}{med:>10.1f}{worst:>10.1f}  {verdict}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
