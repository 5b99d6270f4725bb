"""``chromatin_analysis(run_dir, fasta)``: the paper's chromatin analyses of a trained RNA + ATAC run.

Computed once and saved into ``RUN/analysis/chromatin/`` (what the app and
``scmm export`` read):

- ``motif_enrichment.csv``: for every latent dimension and direction, the
  motifs enriched in the peaks associated with it (the traversal's positive /
  negative peaks) against GC- and accessibility-matched background peaks
  (hypergeometric test, as Signac's ``FindMotifs``; paper Fig. 4f);
- ``motif_activity_original.csv``, ``motif_activity_from_<m>.csv``: cluster x
  motif mean chromVAR deviation z-scores of the observed counts and of the
  accessibility generated from each modality (paper Fig. 6c), for the most
  variable motifs; ``motif_activity_similarity.csv``: Pearson r of each
  generated table with the original;
- ``cluster_accessibility.npz``: per cluster, every peak's total counts /
  total depth (x 1e4), observed and generated (region tracks, Fig. 6d);
- ``peak_genes.csv``, ``gene_models.csv``: the nearest gene and TSS distance of
  every peak, and the genes' exons for the tracks (with a GTF);
- ``chromatin.json``: what was used (FASTA, motif set, thresholds), counts, timings.

Motif matches are cached in ``RUN/cache`` per genome and motif set.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..runfolder import CLUSTER_KEY, LIBRARY_KEY, check_writable, labels_digest, replace_atomic, write_json_atomic
from .chromatin_io import SUMMARY, chromatin_folder, exons_text
from .chromvar import background_peaks, compute_deviations
from .enrichment import matched_background, motif_enrichment
from .heatmap import _group_order, _indicator, zscore
from .metrics import pearson
from .motifs import jaspar_motifs, match_motifs, read_motifs
from .regions import nearest_genes, read_gene_models
from .sequences import gc_content, peak_sequences

MIN_QUERY_PEAKS = 10
N_ACTIVITY_MOTIFS = 40
PER_DEPTH = 1e4


def atac_modality(model) -> str:
    """The model's chromatin modality (ValueError when it has none)."""
    names = [m for m in model.names if model.kinds.get(m) == "atac"]
    if not names:
        raise ValueError(f"this run has no chromatin (ATAC) modality (it has {model.names})")
    return names[0]


def load_motif_set(motifs=None, collection: str = "CORE", tax_group: str = "vertebrates",
                   release: str | None = None):
    """A MotifSet: ``motifs`` as a MotifSet or a motif file path, else JASPAR (collection, taxon, release)."""
    if motifs is None:
        return jaspar_motifs(collection=collection, tax_group=tax_group, release=release)
    if isinstance(motifs, (str, Path)):
        return read_motifs(motifs)
    return motifs


def background_size(n_query: int, n_background: int | None = None) -> int:
    """Background peaks drawn for a query: ``n_background``, else 20 per query peak, 1,000 to 40,000.

    Signac draws 40,000 from genomes of 10^5+ peaks; with 10^3-10^4 peaks a
    background that large would be nearly every other peak, matched to the
    query's GC and accessibility no better than at random.
    """
    return int(n_background) if n_background else int(min(40_000, max(1_000, 20 * n_query)))


def dimension_enrichment(trav, modality: str, matches, motif_ids, motif_names, gc, accessibility,
                         pvalue: float | None = None, n_background: int | None = None,
                         seed: int = 0) -> pd.DataFrame:
    """Motif enrichment of every dimension's positive and negative peaks (long table).

    Columns: ``dim`` (0-based), ``direction``, ``n_query``, ``n_background`` and
    the columns of :func:`scmm.tl.enrichment.motif_enrichment` (``motif`` id,
    ``name``, ...).  Peak sets smaller than ``MIN_QUERY_PEAKS`` are skipped
    (listed in ``attrs['skipped']``); see :func:`background_size`.
    """
    index = {str(f): i for i, f in enumerate(trav.features[modality])}
    tables, skipped = [], []
    for dim in range(trav.n_dims):
        assoc = trav.associated(dim, modality, pvalue=pvalue)
        for direction in ("positive", "negative"):
            query = np.array([index[f] for f in assoc.loc[assoc["direction"] == direction, "feature"]],
                             dtype=int)
            if len(query) < MIN_QUERY_PEAKS:
                skipped.append({"dim": dim, "direction": direction, "n_query": int(len(query))})
                continue
            background = matched_background(query, gc, accessibility, seed=seed,
                                            n=background_size(len(query), n_background))
            table = motif_enrichment(matches, query, background, motif_ids, motif_names)
            table = table.reset_index().rename(columns={"motif_name": "name"})
            table.insert(0, "n_background", len(background))
            table.insert(0, "n_query", len(query))
            table.insert(0, "direction", direction)
            table.insert(0, "dim", dim)
            tables.append(table)
    out = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["dim", "direction", "n_query", "motif", "name"])
    out.attrs["skipped"] = skipped
    return out


def _generated_chunks(model, z, target, library, batch_size=2048):
    """(start, stop, decoded target means) for the latent codes ``z``, in cell chunks."""
    for start in range(0, len(z), batch_size):
        stop = min(start + batch_size, len(z))
        yield start, stop, model.decode(z[start:stop], target, library=library[start:stop])


def _cluster_means(z: np.ndarray, labels: np.ndarray, groups: list[str]) -> np.ndarray:
    G = _indicator(labels, groups)
    finite = np.where(np.isfinite(z), z, 0.0)
    counts = G @ np.isfinite(z).astype(np.float64)
    return np.divide(G @ finite, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def activity_tables(z_by_source: dict, labels, motif_names, n_motifs: int = N_ACTIVITY_MOTIFS):
    """Cluster x motif mean z tables (same motifs, the most variable across clusters in the original)."""
    groups = _group_order(np.unique(labels))
    means = {k: _cluster_means(v, labels, groups) for k, v in z_by_source.items()}
    original = means["original"]
    spread = np.full(original.shape[1], -1.0)        # motifs without any match (all NaN) come last
    defined = np.isfinite(original).sum(axis=0) >= 2
    spread[defined] = np.nanstd(original[:, defined], axis=0)
    top = np.argsort(-spread, kind="stable")[:n_motifs]
    names = [str(motif_names[i]) for i in top]
    tables = {k: pd.DataFrame(v[:, top], index=pd.Index(groups, name="cluster"), columns=names)
              for k, v in means.items()}
    similarity = [{"source": k, "pearson_r": pearson(zscore(tables["original"]).to_numpy().ravel(),
                                                      zscore(t).to_numpy().ravel())}
                  for k, t in tables.items() if k != "original"]
    return tables, pd.DataFrame(similarity)


def chromatin_analysis(run_dir, fasta, genes=None, motifs=None, collection: str = "CORE",
                       tax_group: str = "vertebrates", release: str | None = None,
                       p_value: float = 5e-5, traversal_pvalue: float | None = None,
                       n_iterations: int = 50, seed: int = 0, progress=None, device: str | None = None) -> dict:
    """Motif enrichment per latent dimension, motif activity (chromVAR) of observed and generated
    accessibility, cluster accessibility for region tracks and nearest genes; saved in the run.

    ``fasta``: the genome (or one record per peak); ``genes``: GTF / gene table
    for the nearest genes (optional); ``motifs``: a motif file or MotifSet
    (default JASPAR ``collection`` / ``tax_group``, latest versions).  The run
    must be analysed (``scmm analyze``: clusters and traversal).
    ``progress(step, message)`` is called before each step.  Returns the summary.
    """
    from ..model import SCMM
    from .traversal import traverse

    run_dir = Path(run_dir)
    report = progress or (lambda step, message: None)
    timings, started = {}, time.perf_counter()

    def lap(name):
        nonlocal started
        timings[name] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()

    report("load", "loading the run")
    model = SCMM.load(run_dir, device=device)
    mdata = model.mdata
    if mdata is None or CLUSTER_KEY not in mdata.obs:
        raise ValueError(f"{run_dir} is not analysed (no clusters): run `scmm analyze {run_dir}` first")
    atac = atac_modality(model)
    peaks = list(model.feature_names[atac])
    folder = chromatin_folder(run_dir)
    check_writable(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lap("load")

    report("sequences", f"reading {len(peaks):,} peak sequences")
    sequences = peak_sequences(peaks, fasta)
    gc = gc_content(sequences)
    counts = sp.csr_matrix(mdata.mod[atac].X, dtype=np.float32)
    accessibility = np.asarray(counts.sum(axis=0)).ravel()
    lap("sequences")

    report("motifs", "scanning peaks for motifs")
    motif_set = load_motif_set(motifs, collection, tax_group, release)
    matches = match_motifs(sequences, motif_set, p_value=p_value, peak_names=peaks,
                           cache_dir=run_dir / "cache")
    annotation = matches.matrix
    lap("motifs")

    report("enrichment", "motif enrichment of each dimension's peaks")
    trav = traverse(model, run_dir=run_dir)
    enrichment = dimension_enrichment(trav, atac, annotation, matches.motif_ids, matches.motif_names,
                                      gc, accessibility, pvalue=traversal_pvalue, seed=seed)
    lap("enrichment")

    report("activity", "motif activity (chromVAR) of observed and generated accessibility")
    labels = mdata.obs[CLUSTER_KEY].astype(str).to_numpy()
    groups = _group_order(np.unique(labels))
    G = _indicator(labels, groups)
    library = (mdata.mod[atac].obs[LIBRARY_KEY].to_numpy(np.float32) if LIBRARY_KEY in mdata.mod[atac].obs
               else np.asarray(counts.sum(axis=1)).ravel().astype(np.float32))
    depth = np.asarray(G @ library).ravel()[:, None]
    background = background_peaks(gc, accessibility, n_iterations=n_iterations, seed=seed)
    z = {"original": compute_deviations(counts, annotation, background).z}
    profiles = {"original": np.asarray((G @ counts).todense()) / depth * PER_DEPTH}
    for source in model.names:
        z_cells = model.encode(source, mdata)     # once; decoded twice (expectation, then deviations)
        totals = np.zeros(len(peaks))
        group_totals = np.zeros((len(groups), len(peaks)))
        for start, stop, block in _generated_chunks(model, z_cells, atac, library):
            totals += block.sum(axis=0)
            group_totals += G[:, start:stop] @ block
        expectation = totals / totals.sum()
        z_source = np.zeros((len(labels), len(matches.motif_ids)))
        for start, stop, block in _generated_chunks(model, z_cells, atac, library):
            z_source[start:stop] = compute_deviations(block, annotation, background,
                                                      expectation=expectation).z
        z[f"from_{source}"] = z_source
        profiles[f"from_{source}"] = group_totals / depth * PER_DEPTH
    tables, similarity = activity_tables(z, labels, matches.motif_names)
    lap("activity")

    report("save", "saving the chromatin analyses")
    (folder / SUMMARY).unlink(missing_ok=True)      # the files change now: no summary vouches for a mix
    written = []
    write_csv = lambda frame, name, index=False: written.append(
        replace_atomic(lambda tmp: frame.to_csv(tmp, index=index), folder / name).name)
    write_csv(enrichment, "motif_enrichment.csv")
    for key, table in tables.items():
        write_csv(table, f"motif_activity_{key}.csv", index=True)
    write_csv(similarity, "motif_activity_similarity.csv")
    arrays = {k: v.astype(np.float32) for k, v in profiles.items()}
    written.append(replace_atomic(
        lambda tmp: np.savez_compressed(tmp, groups=np.array(groups), peaks=np.array(peaks), **arrays),
        folder / "cluster_accessibility.npz").name)
    if genes is not None:
        write_csv(nearest_genes(peaks, genes).rename_axis("peak").reset_index(), "peak_genes.csv")
        write_csv(read_gene_models(genes).assign(exons=lambda t: t["exons"].map(exons_text)),
                  "gene_models.csv")
    lap("save")
    summary = {
        "fasta": str(fasta), "genes": None if genes is None else str(genes),
        "motif_source": motif_set.source, "n_motifs": len(matches.motif_ids),
        "n_peaks": len(peaks), "p_value": p_value, "sources": [k for k in tables if k != "original"],
        "cluster_digest": labels_digest(mdata.obs[CLUSTER_KEY]), "groups": groups, "n_iterations": n_iterations,
        "matches_per_peak": float(annotation.sum() / max(1, len(peaks))),
        "skipped_peak_sets": enrichment.attrs.get("skipped", []),
        "similarity": similarity.to_dict(orient="records"),
        "files": written, "seconds": timings,
    }
    write_json_atomic(folder / SUMMARY, summary)
    report("done", "chromatin analyses saved")
    return summary
