"""Peaks in their genomic context: the nearest gene of every peak, gene models, region tracks.

- :func:`nearest_genes`: for each peak, the gene whose TSS is nearest and the
  signed distance to it in the gene's orientation (0 when the peak contains
  the TSS; negative upstream, positive downstream), as Signac's
  ``ClosestFeature`` reports a gene per peak, but measured to the TSS;
- :func:`peak_labels`: ``chr1:3,094,708-3,095,552 · Lef1 (+1.2 kb)`` for tables;
- :func:`read_gene_models`: gene bodies and exons of a GTF (for the track's gene row);
- :func:`region_track`: per group (cluster), the accessibility of every peak
  in a window, for observed counts or for any generated matrix.

Gene coordinates come from the same sources as :func:`scmm.tl.gene_activity`
(a GTF, or a table ``gene, chrom, start, end, strand``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .activity import _harmonise_chroms, parse_peaks, read_genes

MODEL_COLUMNS = ["gene", "chrom", "start", "end", "strand", "exons"]


def gene_tss(genes) -> pd.DataFrame:
    """``gene, chrom, tss, strand`` of a gene table / GTF (first record of a duplicated name)."""
    table = read_genes(genes).drop_duplicates("gene", keep="first").reset_index(drop=True)
    plus = table["strand"].to_numpy() == "+"
    tss = np.where(plus, table["start"].to_numpy(), table["end"].to_numpy())
    return pd.DataFrame({"gene": table["gene"].to_numpy(), "chrom": table["chrom"].to_numpy(),
                         "tss": tss.astype(np.int64), "strand": table["strand"].to_numpy()})


def nearest_genes(peaks, genes) -> pd.DataFrame:
    """Nearest TSS of every peak: DataFrame indexed by peak with ``gene, tss_distance``.

    ``peaks``: peak names (``chr_start_end`` / ``chr:start-end``); ``genes``: GTF
    path, gene table path or DataFrame.  ``tss_distance`` is in bp, signed in
    the gene's orientation (upstream < 0 < downstream), 0 when the peak
    contains the TSS.  Peaks on a chromosome without genes get an empty gene
    and a missing distance.  At equal distance the TSS after the peak (in
    genome coordinates) wins.
    """
    coords = parse_peaks(peaks)
    tss = gene_tss(genes)
    tss["chrom"] = _harmonise_chroms(set(coords["chrom"]), tss["chrom"])
    gene = np.full(len(coords), "", dtype=object)
    distance = np.full(len(coords), np.nan)
    starts, ends = coords["start"].to_numpy(), coords["end"].to_numpy()
    for chrom, on_chrom in tss.groupby("chrom", sort=False):
        rows = np.flatnonzero(coords["chrom"].to_numpy() == chrom)
        if not len(rows):
            continue
        on_chrom = on_chrom.sort_values("tss", kind="stable")
        positions = on_chrom["tss"].to_numpy()
        first = np.searchsorted(positions, starts[rows], side="left")   # first TSS >= start
        before = np.clip(first - 1, 0, len(positions) - 1)
        after = np.clip(first, 0, len(positions) - 1)
        gap_before = np.where(first > 0, starts[rows] - positions[before], np.inf)
        inside = (first < len(positions)) & (positions[after] <= ends[rows])
        gap_after = np.where(first < len(positions), positions[after] - ends[rows], np.inf)
        gap_after = np.where(inside, 0, gap_after)
        pick = np.where(gap_after <= gap_before, after, before)
        chosen = on_chrom.iloc[pick]
        tss_at = chosen["tss"].to_numpy()
        plus = chosen["strand"].to_numpy() == "+"
        # signed offset of the peak from the TSS along the genome, 0 when it contains it
        offset = np.where(tss_at < starts[rows], starts[rows] - tss_at,
                          np.where(tss_at > ends[rows], ends[rows] - tss_at, 0))
        gene[rows] = chosen["gene"].to_numpy()
        distance[rows] = np.where(plus, offset, -offset)
    return pd.DataFrame({"gene": gene, "tss_distance": distance}, index=coords.index)


def _kb(distance: float) -> str:
    if distance == 0:
        return "at TSS"
    sign = "+" if distance > 0 else "−"
    value = abs(distance)
    return f"{sign}{value / 1000:.1f} kb" if value >= 1000 else f"{sign}{int(value)} bp"


def gene_label(gene: str, distance: float) -> str:
    """``Lef1 (+1.2 kb)`` (``Lef1`` when the distance is unknown)."""
    return f"{gene} ({_kb(distance)})" if np.isfinite(distance) else str(gene)


def peak_labels(peaks, nearest: pd.DataFrame | None = None) -> list[str]:
    """Readable peak names ``chr1:3,094,708-3,095,552``, with `` · Gene (+1.2 kb)`` when known."""
    coords = parse_peaks(peaks)
    labels = []
    for name, row in coords.iterrows():
        text = f"{row['chrom']}:{row['start']:,}-{row['end']:,}"
        if nearest is not None and name in nearest.index:
            hit = nearest.loc[name]
            if hit["gene"] and np.isfinite(hit["tss_distance"]):
                text += f" · {gene_label(hit['gene'], hit['tss_distance'])}"
        labels.append(text)
    return labels


def read_gene_models(path: str | Path) -> pd.DataFrame:
    """Gene bodies with their exons from a GTF: ``gene, chrom, start, end, strand, exons``.

    ``exons`` is a list of (start, end) pairs merged over the gene's
    transcripts.  A gene table without exons (TSV / DataFrame) gives each gene
    its body as one block.
    """
    genes = read_genes(path).drop_duplicates("gene", keep="first").reset_index(drop=True)
    exons = {}
    lower = str(path).lower() if not isinstance(path, pd.DataFrame) else ""
    if lower.endswith((".gtf", ".gtf.gz", ".gff", ".gff.gz")):
        table = pd.read_csv(path, sep="\t", comment="#", header=None, dtype=str, usecols=range(9),
                            names=["chrom", "source", "feature", "start", "end", "score",
                                   "strand", "frame", "attributes"])
        table = table[table["feature"] == "exon"]
        name = table["attributes"].str.extract(r'gene_name "([^"]+)"', expand=False)
        name = name.fillna(table["attributes"].str.extract(r'gene_id "([^"]+)"', expand=False))
        for gene, group in pd.DataFrame({"gene": name, "start": table["start"].astype(np.int64),
                                         "end": table["end"].astype(np.int64)}).groupby("gene"):
            exons[gene] = _merge_intervals(group[["start", "end"]].to_numpy())
    genes["exons"] = [exons.get(g, [(int(s), int(e))])
                      for g, s, e in zip(genes["gene"], genes["start"], genes["end"])]
    return genes[MODEL_COLUMNS]


def _merge_intervals(intervals: np.ndarray) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(map(tuple, intervals)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([int(start), int(end)])
    return [tuple(m) for m in merged]


def locate(region: str, models: pd.DataFrame | None = None, flank: int = 50_000) -> tuple[str, int, int]:
    """``chr1:1000-5000`` / ``chr1_1000_5000`` or a gene name (± ``flank`` bp) -> (chrom, start, end)."""
    text = str(region).strip().replace(",", "")
    try:
        coords = parse_peaks([text])
        row = coords.iloc[0]
        return str(row["chrom"]), int(row["start"]), int(row["end"])
    except ValueError:
        pass
    if models is not None:
        hit = models[models["gene"].str.lower() == text.lower()]
        if len(hit):
            row = hit.iloc[0]
            return str(row["chrom"]), max(0, int(row["start"]) - flank), int(row["end"]) + flank
    raise ValueError(f"{region!r} is neither a region (chr1:1000-5000) nor a gene of the annotation")


def overlapping(table: pd.DataFrame, chrom: str, start: int, end: int) -> np.ndarray:
    """Rows of ``table`` (``chrom, start, end``) overlapping [start, end] on ``chrom`` (``chr`` prefix tolerant)."""
    names = {chrom, chrom.removeprefix("chr"), "chr" + chrom.removeprefix("chr")}
    hit = (table["chrom"].isin(names) & (table["end"].to_numpy() >= start)
           & (table["start"].to_numpy() <= end))
    return np.flatnonzero(hit.to_numpy())


def peaks_in_region(peaks, chrom: str, start: int, end: int) -> np.ndarray:
    """Indices of the peaks overlapping [start, end] on ``chrom`` (``chr`` prefix tolerant)."""
    return overlapping(parse_peaks(peaks), chrom, start, end)


def region_track(values, peaks, labels, chrom: str, start: int, end: int,
                 groups: list[str] | None = None) -> pd.DataFrame:
    """Mean accessibility of each peak in a window, per group of cells (long table).

    ``values``: cells x peaks (counts, binary, or generated probabilities /
    means; sparse or dense); ``peaks``: its column names; ``labels``: the group
    of each cell.  Returns ``group, peak, chrom, start, end, value`` with
    value = the group's mean of the column (cells without a group are left
    out).  Raises ValueError when no peak lies in the window.
    """
    idx = peaks_in_region(peaks, chrom, start, end)
    if not len(idx):
        raise ValueError(f"no peak in {chrom}:{start:,}-{end:,}")
    labels = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    groups = list(groups) if groups is not None else sorted(labels.unique(), key=_natural)
    codes = pd.Categorical(labels, categories=groups).codes
    keep = codes >= 0
    G = sp.csr_matrix((np.ones(keep.sum()), (codes[keep], np.flatnonzero(keep))),
                      shape=(len(groups), len(labels)))
    block = values[:, idx]
    sums = np.asarray((G @ block).todense() if sp.issparse(block) else G @ block, dtype=np.float64)
    sizes = np.asarray(G.sum(axis=1)).ravel()
    means = np.divide(sums, sizes[:, None], out=np.zeros_like(sums), where=sizes[:, None] > 0)
    coords = parse_peaks(np.asarray(peaks, dtype=object)[idx])
    rows = pd.DataFrame({"group": np.repeat(groups, len(idx)),
                         "peak": np.tile(coords.index.to_numpy(), len(groups)),
                         "chrom": np.tile(coords["chrom"].to_numpy(), len(groups)),
                         "start": np.tile(coords["start"].to_numpy(), len(groups)),
                         "end": np.tile(coords["end"].to_numpy(), len(groups)),
                         "value": means.ravel()})
    return rows


def _natural(group: str):
    return (0, int(group)) if str(group).isdigit() else (1, str(group))
