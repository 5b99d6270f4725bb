"""Gene activity from chromatin accessibility: peak counts within 2 kb upstream of each gene's TSS.

This is the paper's baseline for chromatin -> RNA prediction.  What you supply:

- an AnnData of ATAC peak counts (cells x peaks) whose peak names are
  ``chr_start_end`` or ``chr:start-end`` (e.g. ``chr1_3094708_3095552``);
- gene coordinates in the same genome assembly as the peaks, either a GTF
  (records of feature type ``gene``; the name comes from the ``gene_name``
  attribute, else ``gene_id``; Ensembl/GENCODE/UCSC GTFs work, plain or .gz),
  or a table (TSV/CSV, or a DataFrame) with columns ``gene, chrom, start, end,
  strand``.

The TSS is ``start`` on the + strand and ``end`` on the - strand; the promoter
window is [TSS - upstream, TSS] (+) or [TSS, TSS + upstream] (-), both ends
inclusive, and a peak counts for a gene when it overlaps the window.
Chromosome names ``chr1`` and ``1`` are matched to each other when the two
sources differ in the ``chr`` prefix.
"""
from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

PEAK_PATTERN = re.compile(r"^(?P<chrom>[^:_]+(?:_[^:_]+)*?)[:_](?P<start>\d+)[-_](?P<end>\d+)$")
GENE_COLUMNS = ["gene", "chrom", "start", "end", "strand"]


def parse_peaks(names) -> pd.DataFrame:
    """Peak names ``chr_start_end`` / ``chr:start-end`` -> DataFrame ``chrom, start, end``.

    Raises ValueError naming unparseable peaks.
    """
    names = [str(n) for n in names]
    rows, bad = [], []
    for name in names:
        match = PEAK_PATTERN.match(name)
        if match is None:
            bad.append(name)
            rows.append(("", -1, -1))
        else:
            rows.append((match["chrom"], int(match["start"]), int(match["end"])))
    if bad:
        raise ValueError(f"{len(bad)} of {len(names)} peak names are not 'chr_start_end' or "
                         f"'chr:start-end', e.g. {bad[:3]}")
    table = pd.DataFrame(rows, columns=["chrom", "start", "end"], index=names)
    flipped = table["end"] < table["start"]
    if flipped.any():
        raise ValueError(f"{int(flipped.sum())} peaks end before they start, e.g. "
                         f"{list(table.index[flipped][:3])}")
    return table


def read_gtf(path: str | Path) -> pd.DataFrame:
    """Gene records of a GTF (plain or .gz) as ``gene, chrom, start, end, strand``."""
    table = pd.read_csv(path, sep="\t", comment="#", header=None, dtype=str,
                        usecols=range(9), names=["chrom", "source", "feature", "start", "end",
                                                 "score", "strand", "frame", "attributes"])
    genes = table[table["feature"] == "gene"]
    if genes.empty:
        raise ValueError(f"{path}: no records of feature type 'gene' (is it a GTF?)")
    name = genes["attributes"].str.extract(r'gene_name "([^"]+)"', expand=False)
    gene_id = genes["attributes"].str.extract(r'gene_id "([^"]+)"', expand=False)
    out = pd.DataFrame({"gene": name.fillna(gene_id), "chrom": genes["chrom"],
                        "start": genes["start"], "end": genes["end"], "strand": genes["strand"]})
    return out.dropna(subset=["gene"]).reset_index(drop=True)


def read_genes(genes) -> pd.DataFrame:
    """Gene coordinates from a GTF path, a TSV/CSV path or a DataFrame (validated)."""
    if isinstance(genes, pd.DataFrame):
        table = genes.copy()
    else:
        path = Path(genes)
        if not path.exists():
            raise FileNotFoundError(f"gene annotation {path} not found")
        lower = path.name.lower()
        if lower.endswith((".gtf", ".gtf.gz", ".gff", ".gff.gz")):
            table = read_gtf(path)
        else:
            sep = "," if lower.endswith((".csv", ".csv.gz")) else "\t"
            table = pd.read_csv(path, sep=sep, dtype={"chrom": str})
    missing = [c for c in GENE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"gene table lacks columns {missing}; it needs {GENE_COLUMNS} "
                         f"(has {list(table.columns)[:8]}), or pass a GTF file")
    table = table[GENE_COLUMNS].copy()
    table["gene"] = table["gene"].astype(str)
    table["chrom"] = table["chrom"].astype(str)
    for col in ("start", "end"):
        values = pd.to_numeric(table[col], errors="coerce")
        if values.isna().any():
            raise ValueError(f"gene table column {col!r} has non-numeric values, e.g. "
                             f"{list(table.loc[values.isna(), col][:3])}")
        table[col] = values.astype(np.int64)
    bad = ~table["strand"].isin(["+", "-"])
    if bad.any():
        raise ValueError(f"strand must be '+' or '-'; {int(bad.sum())} genes have e.g. "
                         f"{list(table.loc[bad, 'strand'].astype(str).unique()[:3])}")
    if table.empty:
        raise ValueError("the gene table is empty")
    return table.reset_index(drop=True)


def promoter_windows(genes: pd.DataFrame, upstream: int = 2000) -> pd.DataFrame:
    """Strand-aware windows [TSS - upstream, TSS] (+) / [TSS, TSS + upstream] (-)."""
    plus = genes["strand"].to_numpy() == "+"
    tss = np.where(plus, genes["start"].to_numpy(), genes["end"].to_numpy())
    return pd.DataFrame({"gene": genes["gene"].to_numpy(), "chrom": genes["chrom"].to_numpy(),
                         "start": np.where(plus, tss - upstream, tss),
                         "end": np.where(plus, tss, tss + upstream)})


def _harmonise_chroms(peak_chroms: set, gene_chroms: pd.Series) -> pd.Series:
    if peak_chroms & set(gene_chroms):
        return gene_chroms
    added = "chr" + gene_chroms
    if peak_chroms & set(added):
        return added
    stripped = gene_chroms.str.replace(r"^chr", "", regex=True)
    if peak_chroms & set(stripped):
        return stripped
    raise ValueError(f"no chromosome in common between peaks ({sorted(peak_chroms)[:4]}) and "
                     f"genes ({sorted(set(gene_chroms))[:4]}): same genome assembly?")


def overlap_matrix(peaks: pd.DataFrame, windows: pd.DataFrame) -> sp.csr_matrix:
    """Peaks x windows 0/1 matrix: 1 where a peak overlaps a window (inclusive ends)."""
    rows, cols = [], []
    windows = windows.assign(chrom=_harmonise_chroms(set(peaks["chrom"]), windows["chrom"]))
    for chrom, wins in windows.groupby("chrom", sort=False):
        on = np.flatnonzero(peaks["chrom"].to_numpy() == chrom)
        if not len(on):
            continue
        order = on[np.argsort(peaks["start"].to_numpy()[on], kind="stable")]
        starts = peaks["start"].to_numpy()[order]
        ends = peaks["end"].to_numpy()[order]
        longest = int((ends - starts).max())
        lo = np.searchsorted(starts, wins["start"].to_numpy() - longest, side="left")
        hi = np.searchsorted(starts, wins["end"].to_numpy(), side="right")
        for w, a, b, wstart in zip(wins.index.to_numpy(), lo, hi, wins["start"].to_numpy()):
            hit = order[a:b][ends[a:b] >= wstart]
            rows.extend(hit.tolist())
            cols.extend([w] * len(hit))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                         shape=(len(peaks), len(windows)))


def gene_activity(atac: ad.AnnData, genes, upstream: int = 2000, drop_empty: bool = False) -> ad.AnnData:
    """Cells x genes matrix of ATAC counts in the peaks within ``upstream`` bp upstream of each TSS.

    ``atac``: AnnData of peak counts (or a MuData, whose ``atac`` modality is
    used); ``genes``: GTF path, gene table path or DataFrame (see the module
    docstring).  Genes with a duplicated name keep the first record.
    ``var['n_peaks']`` counts each gene's peaks; ``drop_empty`` removes genes
    without any peak.
    """
    if hasattr(atac, "mod"):
        from ..preprocess import modality_kind
        names = [m for m in atac.mod if modality_kind(m, atac.mod[m]) == "atac"]
        if not names:
            raise ValueError(f"the MuData has no ATAC modality (has {list(atac.mod)})")
        atac = atac.mod[names[0]]
    if upstream < 0:
        raise ValueError("upstream must be >= 0")
    table = read_genes(genes).drop_duplicates("gene", keep="first").reset_index(drop=True)
    peaks = parse_peaks(atac.var_names)
    overlap = overlap_matrix(peaks, promoter_windows(table, upstream))
    counts = sp.csr_matrix(atac.X, dtype=np.float32)
    activity = (counts @ overlap).tocsr()
    n_peaks = np.asarray(overlap.sum(axis=0)).ravel().astype(int)
    var = pd.DataFrame({"chrom": table["chrom"].to_numpy(), "start": table["start"].to_numpy(),
                        "end": table["end"].to_numpy(), "strand": table["strand"].to_numpy(),
                        "n_peaks": n_peaks}, index=pd.Index(table["gene"].to_numpy(), name=None))
    out = ad.AnnData(activity, obs=pd.DataFrame(index=[str(o) for o in atac.obs_names]), var=var)
    if drop_empty:
        out = out[:, n_peaks > 0].copy()
    if out.n_vars == 0 or n_peaks.sum() == 0:
        raise ValueError("no peak lies within the promoter window of any gene")
    out.uns["gene_activity"] = {"upstream": int(upstream)}
    return out
