"""Command-line subcommands of the analyses in :mod:`scmm.tl`:
``scmm analyze | cluster | umap | traverse | heatmap | export | gene-activity | chromatin``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model import SCMM
from ..runfolder import ANALYSIS_DIR, CLUSTER_KEY
from .activity import gene_activity
from .analysis import DEFAULT_CLUSTER_ON, analyze, cluster_cells, ensure_latents, write_results
from .export import associated_table, export_all, export_heatmap
from .heatmap import heatmap_tables
from .traversal import traverse
from .umaps import umap


def _load(run, device=None):
    model = SCMM.load(run, device=device)
    if model.mdata is None:
        raise FileNotFoundError(f"{run} has no results.h5mu: train and save the run first")
    ensure_latents(model)
    return model


def cmd_analyze(args) -> int:
    def report(step, message):
        if not args.quiet:
            print(f"[{step}] {message}", file=sys.stderr)

    summary = analyze(args.run, resolution=args.resolution, k=args.k, method=args.method,
                      seed=args.seed, n_markers=args.n_markers, umap=not args.no_umap,
                      progress=report, device=args.device, cluster_on=args.cluster_on,
                      neighbors=args.neighbors, umap_fit_cells=args.umap_fit_cells)
    print(f"{summary['n_clusters']} clusters on {summary['n_cells']} cells; "
          f"analysis saved in {args.run}")
    for row in summary["similarity"]:
        print(f"  heatmap {row['target']} from {row['source']} ({row['kind']}): "
              f"r = {row['pearson_r']:.3f}")
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))
    return 0


def cmd_cluster(args) -> int:
    model = _load(args.run, args.device)
    labels = cluster_cells(model.mdata, list(model.names), args.cluster_on, k=args.k,
                           resolution=args.resolution, method=args.method, seed=args.seed)
    write_results(model.mdata, args.run)
    sizes = labels.value_counts(sort=False)
    print(f"{len(sizes)} clusters: " + ", ".join(f"{c}: {n}" for c, n in sizes.items()))
    if args.csv:
        labels.rename_axis("cell").to_csv(args.csv)
        print(f"labels written to {args.csv}")
    return 0


def cmd_umap(args) -> int:
    model = _load(args.run, args.device)
    out = umap(model.mdata, keys=args.key, seed=args.seed, n_neighbors=args.n_neighbors,
               min_dist=args.min_dist, run_dir=args.run)
    write_results(model.mdata, args.run)
    print("UMAP: " + ", ".join(f"{k} {v.shape}" for k, v in out.items()))
    return 0


def cmd_traverse(args) -> int:
    import pandas as pd

    model = SCMM.load(args.run, device=args.device)
    trav = traverse(model, run_dir=args.run, library=args.library)
    modalities = [args.modality] if args.modality else trav.modalities
    for m in modalities:
        if m not in trav.modalities:
            raise KeyError(f"unknown modality {m!r}; the run has {trav.modalities}")
    dims = [args.dim] if args.dim is not None else list(range(trav.n_dims))
    for d in dims:
        if not 0 <= d < trav.n_dims:
            raise ValueError(f"--dim must be in 0..{trav.n_dims - 1}")
    frames = []
    for m in modalities:
        for d in dims:
            table = trav.associated(d, m, pvalue=args.pvalue, n=args.n)
            table.insert(0, "modality", m)
            table.insert(0, "dim", d)
            frames.append(table)
    table = pd.concat(frames, ignore_index=True) if frames else associated_table(trav).iloc[:0]
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"{len(table)} associated features written to {args.csv}")
    else:
        shown = table.groupby(["dim", "modality"], sort=False).head(args.show)
        with pd.option_context("display.width", 120, "display.max_rows", 500):
            print(shown[["dim", "modality", "feature", "rho", "pvalue", "log2_fc", "direction"]]
                  .to_string(index=False))
    return 0


def cmd_heatmap(args) -> int:
    model = _load(args.run, args.device)
    if args.groupby not in model.mdata.obs:
        raise KeyError(f"obs[{args.groupby!r}] not found: run `scmm cluster {args.run}` first")
    tables = heatmap_tables(model, groupby=args.groupby, n_markers=args.n_markers)
    out = Path(args.out) if args.out else Path(args.run) / ANALYSIS_DIR
    paths = export_heatmap(tables, out)
    print(tables["similarity"].to_string(index=False))
    print(f"{len(paths)} tables written to {out}")
    return 0


def cmd_export(args) -> int:
    written = export_all(args.run, args.out, format=args.format, pvalue=args.pvalue,
                         figures=not args.no_figures)
    print(f"{len(written['tables'])} tables and {len(written['figures'])} figures written to {args.out}")
    return 0


def cmd_gene_activity(args) -> int:
    path = Path(args.data)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    if path.suffix == ".h5ad":
        import anndata
        data = anndata.read_h5ad(path)
    else:
        import mudata
        data = mudata.read_h5mu(path)
    if hasattr(data, "mod") and args.modality:
        if args.modality not in data.mod:
            raise KeyError(f"modality {args.modality!r} not in {list(data.mod)}")
        data = data.mod[args.modality]
    out = gene_activity(data, args.genes, upstream=args.upstream, drop_empty=args.drop_empty)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".csv":
        import pandas as pd
        pd.DataFrame(out.X.toarray(), index=out.obs_names, columns=out.var_names).to_csv(target)
    else:
        out.write_h5ad(target)
    print(f"gene activity of {out.n_vars} genes ({int((out.var['n_peaks'] > 0).sum())} with peaks) "
          f"for {out.n_obs} cells -> {target}")
    return 0


def cmd_chromatin(args) -> int:
    from .chromatin import chromatin_analysis

    def report(step, message):
        if not args.quiet:
            print(f"[{step}] {message}", file=sys.stderr)

    summary = chromatin_analysis(args.run, args.fasta, genes=args.genes, motifs=args.motifs,
                                 collection=args.collection, tax_group=args.tax_group,
                                 release=args.release, p_value=args.p_value,
                                 traversal_pvalue=args.pvalue, seed=args.seed, progress=report,
                                 device=args.device)
    print(f"{summary['n_motifs']} motifs ({summary['motif_source']}) on {summary['n_peaks']:,} peaks, "
          f"{summary['matches_per_peak']:.1f} matches per peak; saved in {args.run}/analysis/chromatin")
    for row in summary["similarity"]:
        print(f"  motif activity {row['source']} vs original: r = {row['pearson_r']:.3f}")
    if summary["skipped_peak_sets"]:
        print(f"  {len(summary['skipped_peak_sets'])} dimension/direction peak sets had fewer than "
              f"10 peaks: no enrichment for them", file=sys.stderr)
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items()))
    return 0


def _fit_cells(text: str):
    """``--umap-fit-cells``: 'auto', 'all' (None) or a whole number of cells >= 4."""
    if text in ("auto", "all"):
        return None if text == "all" else text
    if text.isdigit() and int(text) >= 4:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'auto', 'all' or a number of cells >= 4, not {text!r}")


def _cluster_on_option(parser) -> None:
    parser.add_argument("--cluster-on", default=DEFAULT_CLUSTER_ON, metavar="REP",
                        help="'joint' (default: the mean of the modality latents, as the paper), 'concat' "
                             "(the modality latents side by side) or a modality name")


def add_subcommands(sub) -> None:
    """Register the analysis subcommands on the ``scmm`` parser's subparsers."""
    p = sub.add_parser("analyze", help="cluster, UMAP, traversal and heatmap tables of a run, saved in it")
    p.add_argument("run", help="run folder (from scmm train)")
    p.add_argument("--resolution", type=float, default=1.0, help="clustering resolution (default 1)")
    p.add_argument("--k", type=int, default=None, help="neighbours (default 20; 15 with ATAC)")
    p.add_argument("--method", choices=["leiden", "louvain"], default="leiden")
    _cluster_on_option(p)
    p.add_argument("--neighbors", choices=["auto", "exact", "approximate"], default="auto",
                   help="kNN search for clustering: 'auto' (default) is exact up to 50,000 cells and "
                        "approximate (pynndescent) above")
    p.add_argument("--umap-fit-cells", type=_fit_cells, default="auto", metavar="auto|all|N",
                   help="cells the UMAPs are fitted on: 'auto' (default: all up to 100,000 cells, a "
                        "random 50,000 above, the others placed by the fit), 'all', or a number")
    p.add_argument("--n-markers", type=int, default=5, help="marker features per cluster in the heatmaps")
    p.add_argument("--no-umap", action="store_true", help="skip the UMAPs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="no step messages")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("cluster", help="PhenoGraph clusters of a run's latents -> obs['scmm_cluster']")
    p.add_argument("run")
    _cluster_on_option(p)
    p.add_argument("--k", type=int, default=None, help="neighbours (default 20; 15 with ATAC)")
    p.add_argument("--resolution", type=float, default=1.0)
    p.add_argument("--method", choices=["leiden", "louvain"], default="leiden")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=None, help="also write the labels to this CSV")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("umap", help="UMAP of each latent of a run (cached in RUN/umap.npz)")
    p.add_argument("run")
    p.add_argument("--key", action="append", default=None,
                   help="latent key, e.g. X_scmm (repeatable; default all X_scmm*)")
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_umap)

    p = sub.add_parser("traverse", help="features associated with each latent dimension "
                                        "(latent traversal, cached in RUN/traversal.npz)")
    p.add_argument("run")
    p.add_argument("--dim", type=int, default=None, help="dimension, 0-based (default all)")
    p.add_argument("--modality", default=None, help="modality (default all)")
    p.add_argument("--pvalue", type=float, default=None,
                   help="Spearman p-value threshold (default by kind: RNA 1e-12, protein 1e-3, ATAC 1e-21)")
    p.add_argument("--n", type=int, default=None, help="keep the top N per dimension and modality")
    p.add_argument("--library", type=float, default=None,
                   help="library size of the pseudocells (default: training median per modality)")
    p.add_argument("--show", type=int, default=10, help="rows printed per dimension (without --csv)")
    p.add_argument("--csv", default=None, help="write the full table to this CSV instead of printing")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_traverse)

    p = sub.add_parser("heatmap", help="cluster x feature tables: original, reconstructed, cross-modal")
    p.add_argument("run")
    p.add_argument("--groupby", default=CLUSTER_KEY, help="obs column of the groups")
    p.add_argument("--n-markers", type=int, default=5, help="marker features per cluster")
    p.add_argument("--out", default=None, help="folder for the CSVs (default RUN/analysis)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("export", help="every table (CSV) and figure of a run into a folder")
    p.add_argument("run")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--format", choices=["png", "svg", "pdf"], default="png", help="figure format")
    p.add_argument("--pvalue", type=float, default=None, help="traversal p-value threshold")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("gene-activity",
                       help="ATAC peak counts within 2 kb upstream of each gene's TSS (cells x genes)")
    p.add_argument("data", help="ATAC counts: .h5mu (its ATAC modality) or .h5ad; peaks named "
                                "chr_start_end or chr:start-end")
    p.add_argument("--genes", required=True,
                   help="GTF (gene records, gene_name) or TSV with columns gene, chrom, start, end, strand")
    p.add_argument("--out", required=True, help=".h5ad or .csv")
    p.add_argument("--modality", default=None, help="modality of a .h5mu (default: the ATAC one)")
    p.add_argument("--upstream", type=int, default=2000, help="bp upstream of the TSS (default 2000)")
    p.add_argument("--drop-empty", action="store_true", help="drop genes without any peak")
    p.set_defaults(func=cmd_gene_activity)

    p = sub.add_parser("chromatin", help="motifs behind each latent dimension, motif activity (chromVAR) of "
                                         "observed and generated accessibility, region tracks, nearest genes")
    p.add_argument("run", help="an analysed run folder with an ATAC modality")
    p.add_argument("--fasta", required=True,
                   help="genome FASTA (indexed with pyfaidx) or one record per peak named by the peak")
    p.add_argument("--genes", default=None, help="GTF or gene table, for the nearest gene of every peak")
    p.add_argument("--motifs", default=None, help="motif file (JASPAR / MEME / TRANSFAC) instead of JASPAR")
    p.add_argument("--collection", default="CORE", help="JASPAR collection (default CORE)")
    p.add_argument("--tax-group", default="vertebrates", help="JASPAR taxon (default vertebrates)")
    p.add_argument("--release", default=None, help="JASPAR release (default: pyjaspar's newest)")
    p.add_argument("--p-value", type=float, default=5e-5, help="motif match p-value (default 5e-5)")
    p.add_argument("--pvalue", type=float, default=None,
                   help="traversal p-value threshold of a dimension's peaks (default ATAC 1e-21)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="no step messages")
    p.set_defaults(func=cmd_chromatin)
