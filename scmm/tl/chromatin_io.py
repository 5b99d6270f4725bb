"""Reading the saved chromatin analyses of a run (``RUN/analysis/chromatin``), validated; torch-free.

Every file is treated as untrusted (see :mod:`scmm.runfolder`): sizes are
capped, columns and types checked, arrays loaded without pickles; a bad file
raises :class:`scmm.runfolder.RunFileError` naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..runfolder import ANALYSIS_DIR, RunFileError, labels_digest, read_json

CHROMATIN_DIR = "chromatin"
SUMMARY = "chromatin.json"
MAX_CSV_BYTES = 512 * 2 ** 20
ENRICHMENT_COLUMNS = ["dim", "direction", "n_query", "n_background", "motif", "name", "observed", "background",
                      "percent_observed", "percent_background", "fold_enrichment", "pvalue", "p_adjust"]
GENE_MODEL_COLUMNS = ["gene", "chrom", "start", "end", "strand", "exons"]


def chromatin_folder(run_dir) -> Path:
    """``RUN/analysis/chromatin``."""
    return Path(run_dir) / ANALYSIS_DIR / CHROMATIN_DIR


def exons_text(exons) -> str:
    """[(s, e), ...] -> ``"s-e;s-e"`` (how gene_models.csv keeps them)."""
    return ";".join(f"{int(s)}-{int(e)}" for s, e in exons)


def parse_exons(text) -> list[tuple[int, int]]:
    """``"s-e;s-e"`` -> [(s, e), ...] (ValueError when malformed)."""
    out = []
    for part in str(text).split(";"):
        start, end = part.split("-")
        out.append((int(start), int(end)))
    return out


@dataclass
class ChromatinResults:
    """What ``scmm chromatin`` saved for a run."""
    summary: dict
    enrichment: pd.DataFrame
    activity: dict[str, pd.DataFrame]
    similarity: pd.DataFrame
    groups: list[str]
    peaks: np.ndarray
    accessibility: dict[str, np.ndarray]
    peak_genes: pd.DataFrame | None = None
    gene_models: pd.DataFrame | None = None
    stale: bool = field(default=False)
    _gene_labels: dict | None = field(default=None, repr=False)

    def gene_labels(self) -> dict[str, str]:
        """``{peak: "Gene (+1.2 kb)"}`` (empty without a gene annotation)."""
        if self._gene_labels is None:
            from .regions import gene_label
            table = self.peak_genes
            self._gene_labels = {} if table is None else {
                p: gene_label(g, d) for p, g, d in zip(table.index, table["gene"], table["tss_distance"]) if g}
        return self._gene_labels

    @property
    def sources(self) -> list[str]:
        """Generated activity tables: ``from_<modality>`` keys."""
        return [k for k in self.activity if k != "original"]


def _csv(path: Path, columns, **kwargs) -> pd.DataFrame:
    try:
        if path.stat().st_size > MAX_CSV_BYTES:
            raise RunFileError(path, f"larger than {MAX_CSV_BYTES:,} bytes")
        table = pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise RunFileError(path, "missing (the analysis is incomplete: run `scmm chromatin` again)") from None
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise RunFileError(path, f"not a readable CSV ({str(err)[:120]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise RunFileError(path, f"lacks columns {missing}")
    return table


def _numeric(table: pd.DataFrame, path: Path, columns) -> pd.DataFrame:
    for col in columns:
        values = pd.to_numeric(table[col], errors="coerce")
        if (values.isna() & table[col].notna()).any():          # text where a number belongs
            raise RunFileError(path, f"column {col!r} has non-numeric values")
        table[col] = values
    return table


def read_chromatin(run_dir, labels=None) -> ChromatinResults | None:
    """The chromatin analyses of ``run_dir`` (None when never computed).

    ``stale`` is True when ``labels`` (the current clusters) differ from those
    the activity tables and tracks were computed for.
    """
    folder = chromatin_folder(run_dir)
    summary = read_json(folder / SUMMARY)
    if summary is None:
        return None
    if not isinstance(summary, dict):
        raise RunFileError(folder / SUMMARY, "must be a JSON object")
    path = folder / "motif_enrichment.csv"
    enrichment = _numeric(_csv(path, ENRICHMENT_COLUMNS), path,
                          ["dim", "n_query", "n_background", "observed", "background", "percent_observed",
                           "percent_background", "fold_enrichment", "pvalue", "p_adjust"])
    enrichment["motif"] = enrichment["motif"].astype(str)
    enrichment["name"] = enrichment["name"].astype(str)
    activity = {}
    for key in ["original"] + [str(s) for s in summary.get("sources", []) if isinstance(s, str)]:
        if not key.replace("_", "").isalnum():
            raise RunFileError(folder / SUMMARY, f"bad source name {key[:40]!r}")
        path = folder / f"motif_activity_{key}.csv"
        table = _csv(path, ["cluster"], index_col=None)
        table = table.set_index("cluster")
        table.index = table.index.astype(str)
        activity[key] = _numeric(table, path, table.columns)
    similarity = _csv(folder / "motif_activity_similarity.csv", ["source", "pearson_r"])
    groups, peaks, accessibility = _read_tracks(folder / "cluster_accessibility.npz", activity)
    peak_genes = gene_models = None
    if (folder / "peak_genes.csv").exists():
        peak_genes = _csv(folder / "peak_genes.csv", ["peak", "gene", "tss_distance"],
                          dtype={"peak": str, "gene": str}, keep_default_na=False, na_values={"tss_distance": [""]})
        peak_genes = _numeric(peak_genes, folder / "peak_genes.csv", ["tss_distance"]).set_index("peak")
    if (folder / "gene_models.csv").exists():
        path = folder / "gene_models.csv"
        gene_models = _numeric(_csv(path, GENE_MODEL_COLUMNS, dtype={"gene": str, "chrom": str}),
                               path, ["start", "end"])
        try:
            gene_models["exons"] = gene_models["exons"].map(parse_exons)
        except ValueError:
            raise RunFileError(path, "column 'exons' must hold start-end;start-end") from None
    stale = labels is not None and summary.get("cluster_digest") != labels_digest(labels)
    return ChromatinResults(summary, enrichment, activity, similarity, groups, peaks, accessibility,
                            peak_genes, gene_models, stale)


def _read_tracks(path: Path, activity: dict):
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise RunFileError(path, "missing (run `scmm chromatin` again)") from None
    except (ValueError, OSError, EOFError) as err:
        raise RunFileError(path, f"not a readable .npz ({str(err)[:120]})") from None
    groups = [str(g) for g in arrays.pop("groups", [])]
    peaks = np.asarray(arrays.pop("peaks", []), dtype=str)
    for key, values in arrays.items():
        if key not in activity or values.shape != (len(groups), len(peaks)):
            raise RunFileError(path, f"array {key!r} has shape {values.shape}, expected "
                                     f"{(len(groups), len(peaks))}")
    return groups, peaks, arrays
