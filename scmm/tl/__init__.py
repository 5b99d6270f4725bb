"""Analyses of a trained model (scanpy style: take data or model, write named keys, return tables).

- :func:`cluster`: PhenoGraph clusters of the joint latent -> ``obs['scmm_cluster']``;
- :func:`umap`: UMAP of each latent -> ``obsm['X_umap_scmm*']`` (cached in a run folder);
- :func:`traverse` / :class:`Traversal`: latent traversal and associated features;
- :func:`heatmap_tables`, :func:`markers`, :func:`rank_features`: cluster x feature tables,
  Wilcoxon markers, ranking of a cell selection;
- :mod:`scmm.tl.metrics`: Pearson r, CLR error, batch-mixing entropy, :func:`query_metrics`;
- :func:`gene_activity`: promoter accessibility per gene (chromatin -> RNA baseline);
- :func:`peak_sequences`, :func:`jaspar_motifs`, :func:`read_motifs`, :func:`match_motifs`: peak
  sequences from a FASTA, JASPAR (offline) or file motifs, motifmatchr-style peak x motif matches;
- :func:`motif_enrichment`, :func:`peak_set_enrichment`, :func:`matched_background`: motif
  enrichment of a peak set against a GC/accessibility-matched background (Signac FindMotifs);
- :func:`compute_deviations`, :func:`background_peaks`, :func:`deviations_anndata`: chromVAR;
- :func:`nearest_genes`, :func:`region_track`, :func:`read_gene_models`: peaks in their genomic
  context; :func:`chromatin_analysis`: all chromatin analyses of a run (``scmm chromatin``),
  read back with :func:`read_chromatin`;
- :func:`analyze`: all of the above for a run folder; :func:`export_all` and the
  ``export_*`` functions: CSV tables and PNG/SVG/PDF figures.
"""
import importlib

#: public name -> the module of scmm.tl that defines it (imported on first use, so that
#: torch-free modules such as scmm.tl.traversal can be imported without the model)
_HOME = {
    "analyze": "analysis", "write_results": "analysis",
    "cluster": "clustering", "umap": "umaps",
    "export_all": "export", "export_associated": "export", "export_figures": "export",
    "export_heatmap": "export", "export_latents": "export", "export_markers": "export",
    "export_metrics": "export", "gene_activity": "activity",
    "heatmap_tables": "heatmap", "markers": "heatmap", "rank_features": "heatmap",
    "batch_mixing_entropy": "metrics", "clr": "metrics", "clr_sse": "metrics",
    "neighbourhood_preservation": "metrics", "pearson_per_cell": "metrics", "pearson_per_feature": "metrics", "query_metrics": "metrics",
    "DEFAULT_PVALUES": "traversal", "Traversal": "traversal", "spearman_rows": "traversal",
    "traverse": "traversal", "dimension_overview": "traversal",
    "GenomeError": "sequences", "gc_content": "sequences", "peak_sequences": "sequences",
    "MotifMatches": "motifs", "MotifSet": "motifs", "jaspar_motifs": "motifs",
    "match_motifs": "motifs", "read_motifs": "motifs",
    "matched_background": "enrichment", "motif_enrichment": "enrichment",
    "peak_set_enrichment": "enrichment", "background_peaks": "chromvar",
    "compute_deviations": "chromvar", "deviations_anndata": "chromvar",
    "nearest_genes": "regions", "region_track": "regions", "read_gene_models": "regions",
    "chromatin_analysis": "chromatin", "read_chromatin": "chromatin_io",
}
__all__ = sorted(_HOME) + ["load_heatmap_tables"]


def __getattr__(name: str):
    if name == "load_heatmap_tables":
        from ..runfolder import read_heatmap_tables
        return read_heatmap_tables
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scmm.tl' has no attribute {name!r}")
