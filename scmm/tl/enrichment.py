"""Motif enrichment of a peak set against a GC- and accessibility-matched background.

The analogue of Signac's ``FindMotifs`` (Stuart et al. 2021), on a peaks x motifs
0/1 match matrix (any motif scanner's output, sparse or dense):

- :func:`matched_background` (Signac ``MatchRegionStats``): peaks drawn without
  replacement from the peaks *not* in the query, so that their joint
  distribution of GC content and accessibility follows the query's.  Both
  variables are cut into ``bins`` quantile bins (quantiles over all peaks, so a
  bin the query never reaches gives no background).  Sampling a candidate of
  2-D bin *b* with weight ``q_b / c_b`` (the query's share of *b* over the
  candidates' share) expects ``n q_b`` peaks from *b*; here each bin gives
  exactly that many (rounded), drawn uniformly, so the match is exact rather
  than in expectation.  A bin with fewer candidates gives all of them and the
  shortfall is shared among the other bins in proportion to ``q_b``; when ``n``
  is at least the candidates in the query's bins, all of those are returned.
  Signac instead draws with weights equal to the product of the query's 1-D
  kernel densities of each variable, not divided by the candidates' density;
  the ratio used here matches the joint distribution.  Quantile bins do not
  depend on a monotone transform, so counts, means or their logarithm give the
  same background.
- :func:`motif_enrichment` (Signac ``FindMotifs``): per motif, the query peaks
  and background peaks with a match, their percentages, the fold enrichment
  ``(observed / n_query) / (background / n_background)`` and the hypergeometric
  upper tail, exactly as Signac computes it::

      pvalue = phyper(observed - 1, background, n_background - background, n_query,
                      lower.tail = FALSE)

  i.e. ``scipy.stats.hypergeom.sf(observed - 1, n_background, background, n_query)``,
  with Benjamini-Hochberg adjusted p-values; rows sorted by p-value, then by
  decreasing fold enrichment.  As in Signac the query may overlap the
  background (the matched background never does); the test treats the query
  as a draw from the background, so the background must be at least as large.
- :func:`peak_set_enrichment`: both steps for a list of peak names.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import hypergeom

def peak_index(peaks, n_peaks: int, what: str = "query") -> np.ndarray:
    """An index array or boolean mask over ``n_peaks`` peaks -> sorted unique indices (validated)."""
    peaks = np.asarray(peaks)
    if peaks.dtype == bool:
        if peaks.shape != (n_peaks,):
            raise ValueError(f"the {what} mask has shape {peaks.shape}, expected ({n_peaks},)")
        return np.flatnonzero(peaks)
    if peaks.size and not np.issubdtype(peaks.dtype, np.integer):
        raise ValueError(f"the {what} must be peak indices (integers) or a boolean mask, "
                         f"got dtype {peaks.dtype}")
    peaks = peaks.astype(np.int64).ravel()
    bad = peaks[(peaks < 0) | (peaks >= n_peaks)]
    if bad.size:
        raise ValueError(f"{bad.size} {what} indices are out of range for {n_peaks} peaks, "
                         f"e.g. {bad[:3].tolist()}")
    unique = np.unique(peaks)
    if unique.size < peaks.size:
        raise ValueError(f"the {what} lists {peaks.size - unique.size} peaks more than once")
    return unique


def _per_peak(values, n_peaks: int, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.shape != (n_peaks,):
        raise ValueError(f"{name} has {values.size} values for {n_peaks} peaks")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} has non-finite values")
    return values


def _quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each value among ``bins`` quantile bins of all values (ties share a bin)."""
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def matched_background(query, gc, accessibility, n: int = 40_000, seed: int = 0,
                       bins: int = 10) -> np.ndarray:
    """Sorted indices of up to ``n`` non-query peaks whose GC and accessibility match the query's.

    ``query``: peak indices or a boolean mask; ``gc``, ``accessibility``: one
    value per peak (accessibility: total or mean counts).  Fewer than ``n``
    only when fewer non-query peaks share the query's bins (module docstring).
    """
    gc = _per_peak(gc, np.size(gc), "gc")
    accessibility = _per_peak(accessibility, gc.size, "accessibility")
    query = peak_index(query, gc.size)
    if query.size == 0:
        raise ValueError("the query has no peaks")
    if n < 1 or bins < 1:
        raise ValueError("n and bins must be >= 1")
    cell = _quantile_bins(gc, bins) * bins + _quantile_bins(accessibility, bins)
    candidates = np.setdiff1d(np.arange(gc.size), query)
    share = np.bincount(cell[query], minlength=bins * bins) / query.size
    available = np.bincount(cell[candidates], minlength=bins * bins)
    take = _allocate(share, available, n)
    keys = np.random.default_rng(seed).random(candidates.size)
    shuffled = candidates[np.lexsort((keys, cell[candidates]))]   # by bin, random within a bin
    bin_of = cell[shuffled]
    rank = np.arange(shuffled.size) - (np.cumsum(available) - available)[bin_of]
    return np.sort(shuffled[rank < take[bin_of]])


def _allocate(share: np.ndarray, available: np.ndarray, n: int) -> np.ndarray:
    """Peaks per bin: ``n * share`` rounded, capped by ``available``, shortfall shared by ``share``."""
    total = min(n, int(available[share > 0].sum()))
    capped = np.zeros(share.size, bool)
    while True:
        free = (share > 0) & ~capped
        target = np.where(capped, available, 0.0)
        target[free] = (total - available[capped].sum()) * share[free] / share[free].sum()
        over = free & (target > available)
        if not over.any():
            break
        capped |= over
    take = np.floor(target).astype(np.int64)
    extra = np.argsort(take - target, kind="stable")[:total - take.sum()]  # largest remainders
    take[extra] += 1
    return take


def match_matrix(matches, dtype=np.int64) -> sp.csr_matrix:
    """A peaks x motifs match matrix (sparse or dense; nonzero = match) as a 0/1 CSR matrix."""
    matches = sp.csr_matrix(matches) if sp.issparse(matches) else np.asarray(matches)
    if matches.ndim != 2:
        raise ValueError(f"matches must be a peaks x motifs matrix, got shape {matches.shape}")
    return sp.csr_matrix(matches != 0, dtype=dtype)


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (R's ``p.adjust(p, "BH")``)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def motif_enrichment(matches, query, background, motif_ids, motif_names=None) -> pd.DataFrame:
    """Per-motif enrichment of the ``query`` peaks against the ``background`` peaks (Signac).

    ``matches``: peaks x motifs, nonzero = match; ``query`` and ``background``:
    peak indices or boolean masks; ``motif_ids`` (index of the table) and
    optional ``motif_names`` (column ``motif_name``; the ids when omitted).
    Columns ``motif_name, observed, background, percent_observed,
    percent_background, fold_enrichment, pvalue, p_adjust`` (module docstring).
    """
    matches = match_matrix(matches)
    n_peaks, n_motifs = matches.shape
    motif_ids = [str(m) for m in motif_ids]
    motif_names = motif_ids if motif_names is None else [str(m) for m in motif_names]
    if len(motif_ids) != n_motifs or len(motif_names) != n_motifs:
        raise ValueError(f"{len(motif_ids)} motif ids and {len(motif_names)} names for a match "
                         f"matrix of {n_motifs} motifs")
    query = peak_index(query, n_peaks, "query")
    background = peak_index(background, n_peaks, "background")
    if query.size == 0 or background.size == 0:
        raise ValueError(f"the query has {query.size} peaks and the background {background.size}; "
                         "both need at least one")
    if background.size < query.size:
        raise ValueError(f"the background ({background.size} peaks) is smaller than the query "
                         f"({query.size}): the hypergeometric test draws the query from it")
    observed = np.asarray(matches[query].sum(axis=0)).ravel()
    in_background = np.asarray(matches[background].sum(axis=0)).ravel()
    pvalue = hypergeom.sf(observed - 1, background.size, in_background, query.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        fold = (observed / query.size) / (in_background / background.size)
    table = pd.DataFrame({
        "motif_name": motif_names, "observed": observed, "background": in_background,
        "percent_observed": 100 * observed / query.size,
        "percent_background": 100 * in_background / background.size,
        "fold_enrichment": fold, "pvalue": pvalue, "p_adjust": benjamini_hochberg(pvalue),
    }, index=pd.Index(motif_ids, name="motif"))
    return table.sort_values(["pvalue", "fold_enrichment"], ascending=[True, False], kind="stable")


def peak_set_enrichment(query_peaks, peak_names, matches, gc, accessibility, motif_ids,
                        motif_names=None, n_background: int = 40_000, bins: int = 10,
                        seed: int = 0) -> pd.DataFrame:
    """:func:`motif_enrichment` of the peaks named ``query_peaks`` against a matched background.

    ``peak_names`` name the rows of ``matches`` (and ``gc``, ``accessibility``).
    ``df.attrs`` holds ``n_query`` and ``n_background``.
    """
    names = pd.Index([str(p) for p in peak_names])
    if names.has_duplicates:
        raise ValueError(f"peak names are not unique, e.g. {list(names[names.duplicated()][:3])}")
    wanted = [str(p) for p in query_peaks]
    query = names.get_indexer(wanted)
    if (query < 0).any():
        missing = [w for w, i in zip(wanted, query) if i < 0]
        raise ValueError(f"{len(missing)} query peaks are not among the peaks, e.g. {missing[:3]}")
    if len(gc) != names.size or np.shape(matches)[0] != names.size:
        raise ValueError(f"{names.size} peak names, {len(gc)} GC values and "
                         f"{np.shape(matches)[0]} match-matrix rows: they must agree")
    background = matched_background(query, gc, accessibility, n=n_background, seed=seed, bins=bins)
    table = motif_enrichment(matches, query, background, motif_ids, motif_names)
    table.attrs.update(n_query=int(query.size), n_background=int(background.size))
    return table
