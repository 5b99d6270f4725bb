"""UMAP at atlas scale: time, peak memory and faithfulness of ``scmm.tl.umaps.run_umap``.

    python bench/umap_scale.py [--sizes 100000,300000,1000000] [--compare 200000]
                               [--latent FILE.npy] [--seed 0]

The latent is synthetic unless ``--latent`` gives a real one (cells x dims,
sizes above its cell count are skipped, smaller ones a seeded subsample):
a seeded Gaussian mixture in 10 dims: 6 separate groups of 5 overlapping
components, each a rank-3 Gaussian sheet plus small isotropic noise.

Each size runs the strategy ``--fit-cells`` (default ``auto``) in a fresh
subprocess; numba compilation is done there once before timing (reported
apart), and the peak RSS is that of the UMAP alone (the process's high-water
mark reset just before it, so it includes the latent and the libraries).  Faithfulness: neighbourhood preservation
(k = 15, 5,000 sampled cells; :func:`scmm.tl.metrics.neighbourhood_preservation`).
At ``--compare`` cells the full fit (``fit_cells=None``) runs beside it, and
both pictures are drawn side by side, coloured by mixture component (k-means
clusters of a real latent).  Writes ``bench/out/umap_scale.json`` and
``bench/out/umap_compare.png``; prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scmm.tl import umaps  # noqa: E402
from scmm.tl.metrics import neighbourhood_preservation  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def mixture(n: int, seed: int = 0, dims: int = 10, groups: int = 6, per_group: int = 5,
            rank: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian mixture latent (float32) and each cell's component."""
    rng = np.random.default_rng(seed)
    k = groups * per_group
    centres = np.repeat(rng.normal(scale=4.0, size=(groups, dims)), per_group, axis=0)
    centres += rng.normal(scale=0.8, size=(k, dims))
    loadings = rng.normal(scale=0.6, size=(k, rank, dims))
    labels = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 2.0)))
    x = rng.normal(scale=0.15, size=(n, dims)).astype(np.float32)
    for c in range(k):
        cells = np.flatnonzero(labels == c)
        x[cells] += centres[c] + rng.normal(size=(len(cells), rank)) @ loadings[c]
    return x, labels


def load_latent(n: int, path: str | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cells of the latent (synthetic, or a seeded subsample of ``path``) and their colours."""
    if path is None:
        return mixture(n, seed)
    full = np.load(path, mmap_mode="r")
    cells = np.sort(np.random.default_rng(seed).choice(len(full), n, replace=False))
    x = np.asarray(full[cells], dtype=np.float32)
    from sklearn.cluster import MiniBatchKMeans
    return x, MiniBatchKMeans(n_clusters=30, random_state=seed, n_init=3).fit_predict(x)


def strategy_name(n: int, fit_cells) -> str:
    fit = umaps.fit_count(n, fit_cells)
    if fit is None:
        return "full fit"
    return f"fit {fit:,} + place the rest"


def memory_gb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in GiB (Linux)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 2 ** 20


def reset_peak() -> None:
    """Restart ``VmHWM`` from the current RSS, so that it measures what follows."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def child(n: int, fit_cells, path: str | None, seed: int, save: str | None) -> dict:
    """One UMAP in this process: timings, peak RSS and preservation score."""
    start = time.perf_counter()
    warm = mixture(6000, seed=seed + 1)[0]
    umaps.run_umap(warm, seed=seed, fit_cells=5000)  # compiles both the fit and the transform
    jit_s = time.perf_counter() - start
    x, labels = load_latent(n, path, seed)
    reset_peak()
    base = memory_gb("VmRSS")
    start = time.perf_counter()
    coords = umaps.run_umap(x, seed=seed, fit_cells=fit_cells)
    seconds = time.perf_counter() - start
    peak = memory_gb("VmHWM")
    if save:
        np.savez(save, coords=coords, labels=labels)
    return {"cells": n, "strategy": strategy_name(n, fit_cells), "fit_cells": str(fit_cells),
            "seconds": seconds, "peak_rss_gb": peak, "rss_before_gb": base, "jit_s": jit_s,
            "preservation": neighbourhood_preservation(x, coords, k=15, n_cells=5000, seed=seed)}


def run_child(n: int, fit_cells, args, save: str | None = None) -> dict:
    """:func:`child` in a fresh subprocess (niced by the caller if wanted)."""
    cmd = [sys.executable, __file__, "--child", str(n), "--fit-cells", str(fit_cells), "--seed", str(args.seed)]
    if args.latent:
        cmd += ["--latent", args.latent]
    if save:
        cmd += ["--save", save]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {n:>9,} cells, {result['strategy']}: {result['seconds']:.1f} s, "
          f"{result['peak_rss_gb']:.2f} GiB, preservation {result['preservation']:.3f}", flush=True)
    return result


def colours(k: int) -> np.ndarray:
    """``k`` distinct RGBA colours (tab20, then tab20b)."""
    import matplotlib
    palette = np.vstack([matplotlib.colormaps[name].colors for name in ("tab20", "tab20b")])
    return np.hstack([palette[np.arange(k) % len(palette)], np.ones((k, 1))])


def draw(panels: list[tuple[dict, str]], path: Path) -> None:
    """Side-by-side scatter plots of saved coordinates, coloured by component."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 7))
    for ax, (result, saved) in zip(np.atleast_1d(axes), panels):
        with np.load(saved) as data:
            xy, labels = data["coords"], data["labels"]
        ax.scatter(xy[:, 0], xy[:, 1], c=colours(labels.max() + 1)[labels], s=0.2, linewidths=0,
                   rasterized=True)
        ax.set_title(f"{result['strategy']}\n{result['cells']:,} cells, {result['seconds']:.0f} s, "
                     f"preservation {result['preservation']:.3f}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    lines = ["| cells | strategy | seconds | peak RSS (GiB) | preservation (k=15) |",
             "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['cells']:,} | {r['strategy']} | {r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | "
              f"{r['preservation']:.3f} |" for r in rows]
    return "\n".join(lines)


def parse_fit_cells(text: str):
    return None if text == "None" else text if text == "auto" else int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--compare", type=int, default=200_000, help="0: no comparison")
    parser.add_argument("--latent", help="a real latent, cells x dims (.npy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fit-cells", default="auto",
                        help="strategy measured: auto (default), None (full fit) or a number of cells")
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, parse_fit_cells(args.fit_cells), args.latent, args.seed, args.save)))
        return 0
    available = len(np.load(args.latent, mmap_mode="r")) if args.latent else None
    sizes = [int(s) for s in args.sizes.split(",") if s]
    skipped = [n for n in sizes + [args.compare] if available is not None and n > available]
    if skipped:
        print(f"skipped (the latent has {available:,} cells): {skipped}")
    print(f"CPUs: {len(os.sched_getaffinity(0))}; FIT_CELLS_ABOVE={umaps.FIT_CELLS_ABOVE:,}, "
          f"FIT_CELLS={umaps.FIT_CELLS:,}, TRANSFORM_CHUNK={umaps.TRANSFORM_CHUNK:,}", flush=True)
    fit_cells = parse_fit_cells(args.fit_cells)
    rows = [run_child(n, fit_cells, args) for n in sizes if n not in skipped]
    report = {"latent": args.latent or "synthetic mixture", "seed": args.seed, "scale": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    if args.compare and args.compare not in skipped:
        with tempfile.TemporaryDirectory() as tmp:
            panels = [(run_child(args.compare, fit, args, save=f"{tmp}/{name}.npz"), f"{tmp}/{name}.npz")
                      for name, fit in (("full", None), ("approx", fit_cells))]
            draw(panels, OUT / "umap_compare.png")
        report["compare"] = [result for result, _ in panels]
    (OUT / "umap_scale.json").write_text(json.dumps(report, indent=2))
    print("\n" + table(rows + report.get("compare", [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
