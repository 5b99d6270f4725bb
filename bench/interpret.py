"""Interpretation on real data: latent traversal on pbmc10k_cite, clusters and programs on snare_cortex.

    python bench/interpret.py [--data ../shared/data] [--pbmc-epochs N] [--snare-preset atac]
                              [--snare-epochs N] [--snare-lr X] [--skip-pbmc] [--skip-snare] [--out DIR]

pbmc10k_cite (CITE-seq, 6,855 cells): the paper's "cite" preset; for every
latent dimension, the proteins associated at the paper's threshold (p < 1e-3)
ranked by decoded fold change over the cells' range, the top genes
(p < 1e-12), and cross-modal protein prediction (scMM vs a kNN regressor on
the test cells).

snare_cortex (SNARE-seq, 10,309 cells, RNA + ATAC): the "atac" preset (or
``--snare-preset atac-large-batch``, faster on CPU; epochs and learning rate
are printed); adjusted Rand index of
the PhenoGraph clusters (k = 15) against the published cell types, and the top
genes and peaks (p < 1e-21) of the two dimensions with the most associated
features.  Runs are saved into ``--out`` (default a temporary folder).
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import scmm
from scmm.tl import cluster, query_metrics, traverse

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _progress(every: int = 5):
    start = time.perf_counter()

    def callback(record: dict) -> None:
        if record.get("epoch", 0) % every == 0:
            print(f"    epoch {record['epoch']}: {time.perf_counter() - start:.0f} s", flush=True)
    return callback


def _fmt(table, n=5) -> str:
    if table.empty:
        return "-"
    return ", ".join(f"{f} ({fc:+.2f})" for f, fc in zip(table["feature"][:n], table["log2_fc"][:n]))


def pbmc(data_dir: Path, epochs: int, out: Path) -> None:
    path = data_dir / "pbmc10k_cite" / "pbmc10k_cite.h5mu"
    mdata = scmm.read(path)
    scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, preset="cite")
    start = time.perf_counter()
    result = model.train(epochs=epochs, progress=False, callback=_progress())
    print(f"pbmc10k_cite: {mdata.n_obs} cells, {dict((m, a.n_vars) for m, a in mdata.mod.items())}; "
          f"trained {len(result['history'])} epochs ({result['status']}, best {result['best_epoch']}) "
          f"in {time.perf_counter() - start:.0f} s")
    model.get_latent()
    model.save(out / "pbmc")
    labels = cluster(mdata)
    print(f"  {labels.cat.categories.size} clusters (Leiden, k=20)")
    trav = traverse(model, run_dir=out / "pbmc")
    prot = [m for m in model.names if m != "rna"][0]
    print(f"  latent traversal; sigma per dim: {np.round(trav.sigma, 2).tolist()}")
    for d in range(trav.n_dims):
        pos = trav.associated(d, prot, direction="positive")
        neg = trav.associated(d, prot, direction="negative")
        genes = trav.associated(d, "rna", n=5)
        print(f"  dim {d}: proteins + {_fmt(pos, 4)} | - {_fmt(neg, 4)}")
        print(f"         genes {_fmt(genes, 5)}  ({len(trav.associated(d, 'rna'))} genes at p<1e-12)")
    metrics = query_metrics(model, target=prot, source="rna")
    cols = ["method", "pearson_feature_mean", "pearson_cell_mean", "clr_sse_mean"]
    print("  protein from RNA on the test cells:\n" + metrics[cols].to_string(index=False))


def snare(data_dir: Path, preset: str, epochs: int | None, lr: float | None, out: Path) -> None:
    from sklearn.metrics import adjusted_rand_score
    path = data_dir / "snare_cortex" / "snare_cortex.h5mu"
    mdata = scmm.read(path)
    scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, preset=preset)
    warmup = model.settings.warmup if epochs is None else max(1, min(model.settings.warmup, epochs // 2))
    start = time.perf_counter()
    result = model.train(epochs=epochs, warmup=warmup, lr=lr, progress=False, callback=_progress())
    print(f"\nsnare_cortex: {mdata.n_obs} cells, {dict((m, a.n_vars) for m, a in mdata.mod.items())}; "
          f"preset {preset}, {len(result['history'])} epochs, warm-up {warmup}, "
          f"lr {lr or model.settings.lr} ({result['status']}) in {time.perf_counter() - start:.0f} s")
    model.get_latent()
    model.save(out / "snare")
    truth = mdata.obs["cell_type"].astype(str)
    for key in ("X_scmm", "X_scmm_rna", "X_scmm_atac"):
        labels = cluster(mdata, use_rep=key, key_added=f"cluster_{key}")
        print(f"  clusters on {key}: {labels.cat.categories.size}, "
              f"ARI vs cell_type {adjusted_rand_score(truth, labels):.3f}")
    trav = traverse(model, run_dir=out / "snare")
    counts = trav.summary()
    atac = [m for m in model.names if m != "rna"][0]
    per_dim = counts.groupby("dim")[["n_positive", "n_negative"]].sum().sum(axis=1)
    print("  associated features per dim (genes p<1e-12 + peaks p<1e-21): "
          + ", ".join(f"{d}: {int(v)}" for d, v in per_dim.items()))
    for d in per_dim.sort_values(ascending=False).index[:2]:
        print(f"  dim {d}: genes {_fmt(trav.associated(d, 'rna', n=6), 6)}")
        print(f"         peaks {_fmt(trav.associated(d, atac, n=4), 4)}")
        occupied = trav.occupied[d]
        print(f"         cells occupy z in [{occupied[0]:.2f}, {occupied[1]:.2f}] "
              f"(sigma {trav.sigma[d]:.2f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pbmc-epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--snare-preset", default="atac")
    parser.add_argument("--snare-epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--snare-lr", type=float, default=None, help="default: the preset's")
    parser.add_argument("--skip-pbmc", action="store_true")
    parser.add_argument("--skip-snare", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    out = args.out or Path(tempfile.mkdtemp(prefix="scmm-interpret-"))
    if not args.skip_pbmc:
        pbmc(args.data, args.pbmc_epochs, out)
    if not args.skip_snare:
        snare(args.data, args.snare_preset, args.snare_epochs, args.snare_lr, out)
    print(f"\nruns in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
