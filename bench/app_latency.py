"""Latency of the explorer's interactive callbacks: colour-by changes and traversal steps.

Two measurements per dataset size:

- direct: the callback bodies (figure builders + JSON encoding of what goes to
  the browser), called in-process;
- HTTP: ``POST /_dash-update-component`` to a local server (werkzeug in a
  thread), i.e. what the browser waits for minus rendering;
- browser: headless Chromium, from setting the control's value to the
  graph's next ``plotly_afterplot`` (request, callback and WebGL redraw).

Sizes: the demo (3,000 cells x 2,000 genes), pbmc10k_cite (6,855 x 4,000
genes + 14 proteins) and 100,000 cells, as synthetic analysed runs with those
shapes (``app.synthetic``), unless ``--run DIR`` points at a real run folder.
Targets (issue 4): < 300 ms on the demo, < 1 s on pbmc10k_cite.

    python bench/app_latency.py [--sizes demo,pbmc10k,100k] [--repeats 5] [--run RUN_DIR [--target-ms 1000]]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import data_access  # noqa: E402
from tests import synthetic_run as synthetic  # noqa: E402
from app.pages import embeddings, traversal  # noqa: E402

SIZES = {"demo": (3000, 2000, 18), "pbmc10k": (6855, 4000, 14), "100k": (100_000, 4000, 14)}
TARGET_MS = {"demo": 300, "pbmc10k": 1000, "100k": None}


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


def browser(runs_dir: Path, run_id: str, view, repeats: int) -> dict:
    """Click-to-drawn times in headless Chromium: the value is set through ``dash_clientside.set_props``
    and the clock stops at the graph's next ``plotly_afterplot`` (request + callback + WebGL redraw)."""
    import shutil
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from app.main import create_app
    if not shutil.which("chromedriver"):
        return {}
    app = create_app(runs_dir.parent / "data", runs_dir, runs_dir.parent / "cache", write_demo=False)
    server = Server(app)
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                "--disable-background-networking", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts)
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
        driver.get(f"{server.url}/embeddings?run={run_id}")
        _wait_plot(driver)
        times = [driver.execute_async_script(measure, "emb-colour", f"feat:{mod}:{genes[i]}", 0)
                 for i in range(repeats + 1)]
        out["colour change (browser)"] = (float(np.median(times[1:])), float(np.max(times[1:])))
        if view.traversal() is not None:
            driver.get(f"{server.url}/traversal?run={run_id}")
            _wait_plot(driver)
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
