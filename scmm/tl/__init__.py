"""Analyses of a trained model (scanpy style: take data or model, write named keys, return tables).

- :func:`cluster`: PhenoGraph clusters of the joint latent -> ``obs['scmm_cluster']``;
- :func:`umap`: UMAP of each latent -> ``obsm['X_umap_scmm*']`` (cached in a run folder);
- :func:`traverse` / :class:`Traversal`: latent traversal and associated features;
- :func:`heatmap_tables`, :func:`markers`, :func:`rank_features`: cluster x feature tables,
  Wilcoxon markers, ranking of a cell selection;
- :mod:`scmm.tl.metrics`: Pearson r, CLR error, batch-mixing entropy, :func:`query_metrics`;
- :func:`gene_activity`: promoter accessibility per gene (chromatin -> RNA baseline);
- :func:`analyze`: all of the above for a run folder; :func:`export_all` and the
  ``export_*`` functions: CSV tables and PNG/SVG/PDF figures.
"""
from .analyze import analyze, load_heatmap_tables
from .cluster import cluster
from .embed import umap
from .export import (export_all, export_associated, export_figures, export_heatmap,
                     export_latents, export_markers, export_metrics)
from .gene_activity import gene_activity
from .heatmap import heatmap_tables, markers, rank_features
from .metrics import (batch_mixing_entropy, clr, clr_sse, pearson_per_cell, pearson_per_feature,
                      query_metrics)
from .traversal import DEFAULT_PVALUES, Traversal, spearman_rows, traverse

__all__ = [
    "DEFAULT_PVALUES", "Traversal", "analyze", "batch_mixing_entropy", "clr", "clr_sse", "cluster",
    "export_all", "export_associated", "export_figures", "export_heatmap", "export_latents",
    "export_markers", "export_metrics", "gene_activity", "heatmap_tables", "load_heatmap_tables",
    "markers", "pearson_per_cell", "pearson_per_feature", "query_metrics", "rank_features",
    "spearman_rows", "traverse", "umap",
]
