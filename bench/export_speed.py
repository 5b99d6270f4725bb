"""Figure export speed: cold kaleido (one Chromium per call, the old path) vs the warm renderer vs matplotlib.

Figures: the embedding (``--cells`` cells, coloured by cluster) and the
protein heatmaps (14 proteins x 23 clusters, three panels), as the app
builds them.  For each method and format: the first export (includes
starting the browser for the warm renderer) and the median of the next
``--repeat``.  Also counts raster images against vector cells in the SVG /
PDF heatmap of each method.

    python bench/export_speed.py [--cells 5000] [--repeat 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

FORMATS = ("png", "svg", "pdf")


def make_figures(n_cells: int):
    from app import figures
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 23, n_cells)
    xy = rng.normal(0, 6, (23, 2))[clusters] + rng.normal(0, 1, (n_cells, 2))
    cats = [str(c) for c in range(23)]
    spec = figures.colour_spec(clusters, "categorical", "cluster", cats)
    spec.pop("groups", None)
    emb = figures.embedding(xy, spec, [f"c{i}" for i in range(n_cells)], title="joint latent: cluster")
    table = pd.DataFrame(rng.normal(size=(23, 14)), index=pd.Index(cats, name="cluster"),
                         columns=[f"CD{i}-TotalSeqB" for i in range(14)])
    tables = {"prot|original": table, "prot|from_prot": table + 0.1, "prot|from_rna": table - 0.1}
    heat = figures.heatmaps(tables, {k: k for k in tables}, title="prot: marker features per cluster")
    return {"embedding": (emb, (xy, clusters)), "heatmap": (heat, tables)}


def cold_kaleido(fig, fmt):
    from app.figures import for_export
    return for_export(fig).to_image(format=fmt, width=1000, height=fig.layout.height or 500,
                                    scale=2 if fmt == "png" else 1)


def warm_kaleido(fig, fmt):
    from app import export
    return export.render(fig, fmt, 1000, None, 2, run_id="bench")


def matplotlib_figure(name, data):
    from scmm import pl
    from matplotlib.figure import Figure
    if name == "heatmap":
        return pl.heatmap(data["prot|original"], title="prot: original")
    xy, clusters = data
    fig = Figure(figsize=(6.2, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=3, c=clusters, cmap="tab20", linewidths=0)
    ax.set_title("joint latent: cluster")
    return fig


def with_matplotlib(name, data, fmt):
    fig = matplotlib_figure(name, data)  # one panel only: a lower bound for the three-panel heatmap
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=200, bbox_inches="tight")
    return buf.getvalue()


def time_calls(fn, repeat):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times) if times else float("nan"), out


def counts(data: bytes, fmt: str) -> str:
    if fmt == "svg":
        text = data.decode(errors="replace")
        return f"<image {text.count('<image')}, <path {text.count('<path')}"
    if fmt == "pdf":
        return f"PDF image XObjects {data.count(b'/Subtype /Image')}"
    return f"{len(data) / 1024:.0f} kB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cold-repeat", type=int, default=2, help="repeats of the slow cold-kaleido path")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    figs = make_figures(args.cells)
    rows = []
    methods = [("kaleido, cold (per call)", lambda n, f, fmt: cold_kaleido(f, fmt), args.cold_repeat),
               ("kaleido, warm renderer (app.export)", lambda n, f, fmt: warm_kaleido(f, fmt), args.repeat),
               ("matplotlib (scmm.pl)", lambda n, f, fmt, d=None: None, args.repeat)]
    for method, fn, repeat in methods:
        for name, (fig, data) in figs.items():
            for fmt in FORMATS:
                if method.startswith("matplotlib"):
                    call = lambda name=name, data=data, fmt=fmt: with_matplotlib(name, data, fmt)
                else:
                    call = lambda name=name, fig=fig, fmt=fmt, fn=fn: fn(name, fig, fmt)
                first, median, out = time_calls(call, repeat)
                rows.append({"method": method, "figure": name, "format": fmt, "first_s": round(first, 3),
                             "median_next_s": round(median, 3), "n_next": repeat, "output": counts(out, fmt)})
                print(f"{method:38s} {name:9s} {fmt:4s} first {first:6.2f} s  median of next {repeat}: "
                      f"{median:6.3f} s   {rows[-1]['output']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
