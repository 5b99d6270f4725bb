"""Clustering at atlas scale (100k-1M cells): kNN, Jaccard graph and Leiden, seconds and memory.

    nice -n 5 python bench/cluster_scale.py [--sizes 100000,300000,1000000] [--exact-check 100000]
                                            [--dims 10] [--components 30] [--k 20]

The latent is a seeded Gaussian mixture (``--components`` components in ``--dims``
dimensions; means N(0, ``--spread``^2), per-component scales 0.5-1.5, Dirichlet
sizes).  Each size runs ``scmm.tl.cluster`` with its defaults (``neighbors`` and
``flavor`` "auto": approximate kNN and igraph's Leiden above 50,000 cells) in a
fresh subprocess and reports, per stage (kNN, Jaccard graph, Leiden, total), wall
seconds and peak RSS (the kernel's high-water mark, reset before each stage
through ``/proc/self/clear_refs``; data in memory included), plus the ARI of the
clusters against the mixture labels.  pynndescent's numba compilation (once per
process) is timed apart, as "warm-up", and left out of the total.

``--exact-check N`` (default 100,000; 0 skips) compares, at N cells, the exact
and approximate kNN (recall: the share of the exact neighbours found) and the
clusters built on each with the same Leiden (ARI).  JSON to
``bench/out/cluster_scale.json``; a markdown table is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scmm.tl import clustering  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "cluster_scale.json"
STAGES = {"kNN": "neighbor_indices", "Jaccard graph": "jaccard_graph", "Leiden": "_communities"}


def mixture(n: int, args) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points (float32) of the seeded Gaussian mixture and their component labels."""
    rng = np.random.default_rng(args.seed)
    means = rng.normal(0, args.spread, (args.components, args.dims))
    scales = rng.uniform(0.5, 1.5, args.components)
    weights = rng.dirichlet(np.full(args.components, 5.0))
    labels = rng.choice(args.components, n, p=weights)
    X = means[labels] + rng.normal(size=(n, args.dims)) * scales[labels, None]
    return X.astype(np.float32), labels


def reset_peak() -> None:
    """Restart the kernel's peak-RSS count (VmHWM) for this process, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_gib() -> float:
    """Peak RSS since the last ``reset_peak`` (GiB); ru_maxrss, the process's, without /proc."""
    try:
        status = Path("/proc/self/status").read_text()
        kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2 ** 20


def measured(fn, record: dict):
    """``fn`` that records its wall seconds and peak RSS into ``record``."""
    def wrapper(*a, **kw):
        reset_peak()
        start = time.perf_counter()
        out = fn(*a, **kw)
        record.update(seconds=time.perf_counter() - start, peak_rss_gib=peak_gib())
        return out
    return wrapper


def warm_up(args) -> dict:
    """pynndescent's import and numba compilation, on 5,000 points."""
    record = {}
    measured(clustering.approximate_knn_indices, record)(mixture(5000, args)[0], args.k, args.seed)
    return record


def worker(n: int, args) -> dict:
    """``cluster()`` at ``n`` cells with each stage measured (run in a fresh subprocess)."""
    result = {"cells": n, "warm-up": warm_up(args), "numba_threads": __import__("numba").get_num_threads()}
    reset_peak()
    X, labels = mixture(n, args)
    adata = ad.AnnData(obs={"component": labels.astype(str)}, obsm={"X_latent": X})
    result["data_rss_gib"] = peak_gib()
    for stage, name in STAGES.items():
        result[stage] = {}
        setattr(clustering, name, measured(getattr(clustering, name), result[stage]))
    result["total"] = {}
    clusters = measured(clustering.cluster, result["total"])(
        adata, use_rep="X_latent", k=args.k, resolution=args.resolution, seed=args.seed)
    result["total"]["peak_rss_gib"] = max(result[s]["peak_rss_gib"] for s in (*STAGES, "total"))
    result.update(ari=adjusted_rand_score(labels, clusters), n_clusters=int(clusters.cat.categories.size),
                  params=dict(adata.uns["scmm_cluster_params"]))
    return result


def exact_check(n: int, args) -> dict:
    """Exact vs approximate kNN at ``n`` cells: recall, and the ARI of the clusters built on each."""
    result = {"cells": n, "warm-up": warm_up(args)}
    X, truth = mixture(n, args)
    result["flavor"] = flavor = clustering.resolve_flavor("auto", "leiden", n)
    found = {}
    for search in ("exact", "approximate"):
        start = time.perf_counter()
        found[search] = clustering.neighbor_indices(X, args.k, search, args.seed)[0]
        graph = clustering.jaccard_graph(found[search])
        membership = clustering._communities(graph, "leiden", args.resolution, args.seed, 2, flavor)
        result[f"{search}_seconds"] = time.perf_counter() - start
        result[f"{search}_ari_vs_mixture"] = adjusted_rand_score(truth, membership)
        found[f"{search}_labels"] = membership
    exact, approx = np.sort(found["exact"], axis=1), np.sort(found["approximate"], axis=1)
    result["knn_recall"] = float(np.mean([np.intersect1d(a, e, assume_unique=True).size
                                          for a, e in zip(approx, exact)]) / args.k)
    result["ari_approximate_vs_exact"] = adjusted_rand_score(found["exact_labels"], found["approximate_labels"])
    return result


def markdown(results: list[dict], check: dict | None) -> str:
    """The results as a markdown table (plus the exact check's line)."""
    lines = ["| cells | stage | seconds | peak RSS (GiB) | notes |", "|---:|---|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['cells']:,} | warm-up (numba, once per process) | {r['warm-up']['seconds']:.1f} "
                     f"| {r['warm-up']['peak_rss_gib']:.2f} | not in total |")
        for stage in (*STAGES, "total"):
            note = {"kNN": r["params"]["neighbors"], "Leiden": r["params"]["flavor"],
                    "total": f"ARI {r['ari']:.3f}, {r['n_clusters']} clusters"}.get(stage, "")
            lines.append(f"| {r['cells']:,} | {stage} | {r[stage]['seconds']:.1f} "
                         f"| {r[stage]['peak_rss_gib']:.2f} | {note} |")
    if check:
        lines.append(f"\nExact check at {check['cells']:,} cells ({check['flavor']} Leiden): kNN recall "
                     f"{check['knn_recall']:.4f}; ARI approximate vs exact clusters "
                     f"{check['ari_approximate_vs_exact']:.4f}; vs mixture: exact "
                     f"{check['exact_ari_vs_mixture']:.3f}, approximate {check['approximate_ari_vs_mixture']:.3f}; "
                     f"seconds (kNN + graph + Leiden): exact {check['exact_seconds']:.0f}, "
                     f"approximate {check['approximate_seconds']:.0f}")
    return "\n".join(lines)


def run_fresh(args, *worker_args: str) -> dict:
    """One worker call in a fresh subprocess (so its peak memory is its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        passed = ["--dims", str(args.dims), "--components", str(args.components), "--spread", str(args.spread),
                  "--k", str(args.k), "--resolution", str(args.resolution), "--seed", str(args.seed)]
        subprocess.run([sys.executable, __file__, *worker_args, str(out), *passed], check=True)
        return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--exact-check", type=int, default=100_000, metavar="N")
    parser.add_argument("--dims", type=int, default=10)
    parser.add_argument("--components", type=int, default=30)
    parser.add_argument("--spread", type=float, default=3.0, help="standard deviation of the component means")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", nargs=2, metavar=("CELLS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--check-worker", nargs=2, metavar=("CELLS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    for flag, fn in ((args.worker, worker), (args.check_worker, exact_check)):
        if flag:
            Path(flag[1]).write_text(json.dumps(fn(int(flag[0]), args)))
            return 0
    print(f"CPUs visible: {len(os.sched_getaffinity(0))}", flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        results.append(run_fresh(args, "--worker", str(n)))
        print(markdown(results[-1:], None), flush=True)
    check = run_fresh(args, "--check-worker", str(args.exact_check)) if args.exact_check else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("out", "worker",
                                             "check_worker")}, "results": results, "exact_check": check}, indent=1))
    print("\n" + markdown(results, check) + f"\n\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
