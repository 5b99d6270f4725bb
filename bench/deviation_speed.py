"""chromVAR speed: background_peaks and compute_deviations on random sparse counts.

Counts: ``--cells`` x ``--peaks``, about ``--density`` nonzero (values 1-4);
annotations: each peak has about ``--motif-density`` of the ``--motifs``
motifs; ``--iterations`` background iterations.  Prints the wall time of each
step, the peak resident memory and the machine.

    python bench/deviation_speed.py [--cells 10000] [--peaks 50000] [--motifs 800]
                                    [--iterations 50] [--density 0.03] [--jobs N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores usable, {platform.system()} {platform.machine()}"


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 ** 2 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, kB on Linux


def random_csr(rng, n_rows: int, n_cols: int, per_row: int, values) -> sp.csr_matrix:
    """``per_row`` uniform column draws per row (repeats summed), in O(nnz) memory."""
    cols = rng.integers(0, n_cols, n_rows * per_row)
    matrix = sp.csr_matrix((values(cols.size), cols, np.arange(0, cols.size + 1, per_row)),
                           shape=(n_rows, n_cols))
    matrix.sum_duplicates()
    return matrix


def make_data(args):
    rng = np.random.default_rng(0)
    counts = random_csr(rng, args.cells, args.peaks, max(1, round(args.density * args.peaks)),
                        lambda k: rng.integers(1, 5, k).astype(np.float32))
    annotations = random_csr(rng, args.peaks, args.motifs,
                             max(1, round(args.motif_density * args.motifs)),
                             lambda k: np.ones(k, bool))
    gc = rng.beta(5, 5, args.peaks)
    return counts, annotations, gc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--peaks", type=int, default=50_000)
    parser.add_argument("--motifs", type=int, default=800)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--density", type=float, default=0.03)
    parser.add_argument("--motif-density", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=None, help="threads (default: all usable cores)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from scmm.tl.chromvar import background_peaks, compute_deviations

    t0 = time.perf_counter()
    counts, annotations, gc = make_data(args)
    accessibility = np.asarray(counts.sum(axis=0)).ravel() + 1   # +1: no peak without counts
    t_data = time.perf_counter() - t0
    rss_data = peak_rss_mb()
    t0 = time.perf_counter()
    background = background_peaks(gc, accessibility, n_iterations=args.iterations)
    t_background = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = compute_deviations(counts, annotations, background, batch_size=args.batch_size,
                                n_jobs=args.jobs)
    t_deviations = time.perf_counter() - t0
    row = {"cells": args.cells, "peaks": args.peaks, "motifs": args.motifs,
           "iterations": args.iterations, "density": args.density,
           "motif_density": args.motif_density, "counts_nnz": int(counts.nnz),
           "annotation_nnz": int(annotations.nnz), "data_s": round(t_data, 2),
           "background_peaks_s": round(t_background, 2),
           "compute_deviations_s": round(t_deviations, 2),
           "peak_rss_mb": round(peak_rss_mb(), 1), "rss_after_data_mb": round(rss_data, 1),
           "machine": machine(), "load_average": os.getloadavg(),
           "z_mean": float(np.nanmean(result.z)), "z_sd": float(np.nanstd(result.z))}
    print(f"{args.cells} cells x {args.peaks} peaks ({counts.nnz:,} nonzero), {args.motifs} motifs "
          f"({annotations.nnz:,} matches), {args.iterations} iterations")
    print(f"background_peaks    {t_background:8.2f} s")
    print(f"compute_deviations  {t_deviations:8.2f} s")
    print(f"peak memory (maxrss) {row['peak_rss_mb']:7.0f} MB   (after making the data: "
          f"{rss_data:.0f} MB, in {t_data:.1f} s)")
    print(f"z: mean {row['z_mean']:+.3f}, sd {row['z_sd']:.3f} (random motifs: ~0 and ~1)")
    print(f"machine: {row['machine']}; load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
