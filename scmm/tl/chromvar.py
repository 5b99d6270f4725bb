"""chromVAR: per-cell motif accessibility deviations, bias-corrected against background peaks.

A numpy/scipy re-implementation of chromVAR (Schep, Wu, Buenrostro & Greenleaf,
*Nat Methods* 2017; R package ``chromVAR``, functions ``getBackgroundPeaks`` and
``computeDeviations``), vectorised with sparse matrix products.

:func:`background_peaks` (``getBackgroundPeaks``, defaults ``niterations = 50,
w = 0.1, bs = 50``).  Each peak is the point (log10 accessibility, GC); the
points are whitened by the Cholesky factor of their 2 x 2 covariance
(``Z = X L^-T`` with ``cov = L L^T``), a ``bins x bins`` grid spans the
whitened range, and every peak joins its nearest grid point.  For a peak in
bin *b*, each background is drawn with probability proportional to
``dnorm(d(b, b'), 0, w) / n_b'`` for a peak in bin *b'* (``d``: distance
between grid points, ``n_b'``: peaks in *b'*), i.e. a bin by the Gaussian
kernel, then a peak of it uniformly; with replacement, and a peak may be its
own background, as in chromVAR.

:func:`compute_deviations` (``computeDeviations``).  With ``X`` the cells x
peaks counts, ``A`` the peaks x motifs 0/1 annotation, ``N = X 1`` the counts
per cell and ``e`` the expected fraction of counts per peak (by default
``e_p = sum_c X_cp / sum X``, chromVAR's ``computeExpectations``):

- observed ``O = X A``, expected ``E = N (e^T A)``, raw deviation
  ``y = (O - E) / E``;
- for each background iteration *i*, motif *m* is replaced by the multiset
  ``{background[p, i] : A_pm = 1}`` (chromVAR's ``sample_mat``, a peak drawn
  twice counts twice): ``B_i = G_i A`` with ``G_i[q, p] = [background[p, i] = q]``,
  and ``y_i = (X B_i - N (e^T B_i)) / (N (e^T B_i))``;
- ``deviations = y - mean_i(y_i)``, ``z = deviations / sd_i(y_i)`` (``sd`` with
  ``n - 1`` as R's ``sd``).

The iterations are streamed (Welford's running mean and sum of squares), so
memory is the counts twice plus a few cells x motifs arrays; cells are
processed in batches on ``n_jobs`` threads (scipy's products release the
GIL), and each product ``X B_i`` is taken block by block of peaks, the
annotation block dense.  One pass costs about nnz(X) x n_motifs
multiply-adds, so time grows with cells x peaks per cell x motifs x
(n_iterations + 1).  Counts may be
integers or non-negative floats, e.g. a model's accessibility probabilities
or means: the formulas only need non-negative values.  Cells without counts
get NaN (with a warning), as do motifs without peaks.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.linalg import solve_triangular

from .enrichment import match_matrix


class Deviations(NamedTuple):
    """chromVAR output: both cells x motifs float64 arrays."""
    deviations: np.ndarray
    z: np.ndarray


def whiten(gc, accessibility) -> np.ndarray:
    """(log10 accessibility, GC) per peak, whitened by the Cholesky factor of their covariance."""
    gc = np.asarray(gc, dtype=np.float64).ravel()
    accessibility = np.asarray(accessibility, dtype=np.float64).ravel()
    if gc.shape != accessibility.shape or gc.size < 3:
        raise ValueError(f"gc ({gc.size} values) and accessibility ({accessibility.size}) need "
                         "one value per peak, for at least 3 peaks")
    if not (np.isfinite(gc).all() and np.isfinite(accessibility).all()):
        raise ValueError("gc and accessibility must be finite")
    if (accessibility <= 0).any():
        raise ValueError(f"{int((accessibility <= 0).sum())} peaks have no accessibility: "
                         "drop peaks without counts first (as chromVAR requires)")
    points = np.column_stack([np.log10(accessibility), gc])
    if (np.ptp(points, axis=0) == 0).any() or abs(np.corrcoef(points, rowvar=False)[0, 1]) > 1 - 1e-9:
        raise ValueError("GC and log accessibility must both vary and not be collinear")
    lower = np.linalg.cholesky(np.cov(points, rowvar=False))
    return solve_triangular(lower, points.T, lower=True).T


def _grid_bins(points: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point of a bins x bins grid over the points' range: (bin per point, grid coords)."""
    low, high = points.min(axis=0), points.max(axis=0)
    axes = [np.linspace(low[k], high[k], bins) for k in range(2)]
    step = (high - low) / (bins - 1)
    nearest = np.rint((points - low) / step).astype(np.int64).clip(0, bins - 1)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    return nearest[:, 0] * bins + nearest[:, 1], grid


def background_peaks(gc, accessibility, n_iterations: int = 50, bins: int = 50,
                     bandwidth: float = 0.1, seed: int = 0) -> np.ndarray:
    """chromVAR's background peaks: (n_peaks, n_iterations) indices of peaks alike in GC and accessibility.

    ``gc``: GC content per peak (fraction or percent); ``accessibility``: total
    (or mean) counts per peak, all > 0; ``bandwidth``: chromVAR's ``w``, in
    whitened units.  See the module docstring.
    """
    if n_iterations < 1 or bins < 2 or bandwidth <= 0:
        raise ValueError("n_iterations must be >= 1, bins >= 2 and bandwidth > 0")
    member, grid = _grid_bins(whiten(gc, accessibility), bins)
    order = np.argsort(member, kind="stable")
    occupied, start, size = np.unique(member[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    out = np.empty((member.size, n_iterations), dtype=np.int64)
    for b, first, n in zip(occupied, start, size):
        peaks = order[first:first + n]
        distance = np.linalg.norm(grid[occupied] - grid[b], axis=1)
        weight = np.exp(-0.5 * (distance / bandwidth) ** 2)
        drawn = rng.choice(occupied.size, size=(peaks.size, n_iterations), p=weight / weight.sum())
        within = (rng.random(drawn.shape) * size[drawn]).astype(np.int64)
        out[peaks] = order[start[drawn] + within]
    return out


def _counts_matrix(counts):
    """Cells x peaks counts as float CSR (sparse input) or a float ndarray, checked non-negative."""
    if sp.issparse(counts):
        counts = sp.csr_matrix(counts)
        values = counts.data
    else:
        counts = np.asarray(counts)
        values = counts
    if counts.ndim != 2 or 0 in counts.shape:
        raise ValueError(f"counts must be a cells x peaks matrix, got shape {counts.shape}")
    dtype = np.float64 if counts.dtype == np.float64 else np.float32
    counts = counts.astype(dtype, copy=False)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0):
        raise ValueError("counts must be finite and non-negative")
    return counts


def _expectation(counts, expectation, n_peaks: int) -> np.ndarray:
    if expectation is None:
        expectation = np.asarray(counts.sum(axis=0, dtype=np.float64)).ravel()
    expectation = np.asarray(expectation, dtype=np.float64).ravel()
    if expectation.shape != (n_peaks,):
        raise ValueError(f"expectation has {expectation.size} values for {n_peaks} peaks")
    if not np.isfinite(expectation).all() or expectation.min() < 0 or expectation.sum() <= 0:
        raise ValueError("expectation must be finite, non-negative and not all zero "
                         "(do the counts have any nonzero value?)")
    return expectation / expectation.sum()


def _background_index(background, n_peaks: int) -> np.ndarray:
    background = np.asarray(background)
    if background.ndim != 2 or background.shape[0] != n_peaks or background.shape[1] < 2:
        raise ValueError(f"background must be (n_peaks={n_peaks}, n_iterations >= 2), "
                         f"got shape {background.shape}")
    if not np.issubdtype(background.dtype, np.integer):
        raise ValueError(f"background must hold peak indices (integers), got {background.dtype}")
    if background.min() < 0 or background.max() >= n_peaks:
        raise ValueError(f"background indices must lie in [0, {n_peaks})")
    return background


def _batches(n_cells: int, batch_size: int) -> list[slice]:
    return [slice(a, min(a + batch_size, n_cells)) for a in range(0, n_cells, batch_size)]


def _workers(n_jobs: int | None) -> int:
    """Threads: ``n_jobs``, else the cores this process may use."""
    if not n_jobs:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n_jobs or 1)


def _peak_block(n_motifs: int) -> int:
    """Peaks per dense annotation block: about 4 MB of float32, small enough to stay in cache."""
    return max(128, 2 ** 20 // n_motifs)


def _split(counts, batches: list[slice], block: int) -> list:
    """Per cell batch: sparse counts cut into CSR pieces of ``block`` peaks; dense counts: its rows."""
    if not sp.issparse(counts):
        return [counts[rows] for rows in batches]
    pieces = []
    for rows in batches:
        by_peak = counts[rows].tocsc()
        pieces.append([by_peak[:, a:a + block].tocsr() for a in range(0, counts.shape[1], block)])
    return pieces


def _add_product(target: np.ndarray, left, right) -> None:
    target += np.asarray(left @ right)


def _observed(parts: list, annot: sp.csr_matrix, out: np.ndarray, batches: list[slice],
              block: int, pool: ThreadPoolExecutor) -> np.ndarray:
    """``out = X A``, a thread per cell batch.

    Sparse counts meet the annotation one block of peaks at a time, densified:
    a sparse x dense product with a cache-sized right side is about three
    times faster than scipy's sparse x sparse product with its dense result.
    """
    out[:] = 0
    views = [out[rows] for rows in batches]
    if isinstance(parts[0], np.ndarray):
        list(pool.map(_add_product, views, parts, repeat(annot)))
        return out
    for j, first in enumerate(range(0, annot.shape[0], block)):
        dense = annot[first:first + block].toarray()
        list(pool.map(_add_product, views, [pieces[j] for pieces in parts], repeat(dense)))
    return out


class _Running:
    """The raw deviation (pass 0), then Welford's running mean and sum of squares of the backgrounds."""

    def __init__(self, per_cell: np.ndarray, n_motifs: int):
        self.per_cell = per_cell
        self.raw = np.empty((per_cell.size, n_motifs))
        self.mean = np.zeros_like(self.raw)
        self.sum_sq = np.zeros_like(self.raw)

    def add(self, k: int, rows: slice, observed: np.ndarray, motif_expected: np.ndarray) -> None:
        """Pass ``k`` for the cells ``rows``: y = (O - E) / E with E = N (e^T A)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            y = observed[rows] / np.outer(self.per_cell[rows], motif_expected) - 1.0
        if k == 0:
            self.raw[rows] = y
            return
        delta = y - self.mean[rows]
        self.mean[rows] += delta / k
        self.sum_sq[rows] += delta * (y - self.mean[rows])

    def result(self, n_iterations: int) -> Deviations:
        deviations = self.raw - self.mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = deviations / np.sqrt(self.sum_sq / (n_iterations - 1))
        return Deviations(deviations, z)


def compute_deviations(counts, annotations, background, expectation=None,
                       batch_size: int = 2000, n_jobs: int | None = None) -> Deviations:
    """chromVAR deviations and z-scores (cells x motifs) of ``counts`` for motif ``annotations``.

    ``counts``: cells x peaks, scipy.sparse or dense, integer or non-negative
    float; ``annotations``: peaks x motifs (nonzero = the peak has the motif);
    ``background``: (n_peaks, n_iterations) from :func:`background_peaks`;
    ``expectation``: expected share of counts per peak (normalised to sum 1),
    by default each peak's share of all counts.  ``n_jobs`` threads (default:
    the available cores) share batches of at most ``batch_size`` cells.
    Products are taken in float32 (exact for integer sums below 2**24) unless
    the counts are float64.
    """
    counts = _counts_matrix(counts)
    n_cells, n_peaks = counts.shape
    annotation = match_matrix(annotations, dtype=counts.dtype)
    if annotation.shape[0] != n_peaks or annotation.shape[1] == 0:
        raise ValueError(f"annotations are {annotation.shape[0]} peaks x {annotation.shape[1]} "
                         f"motifs; the counts have {n_peaks} peaks")
    background = _background_index(background, n_peaks)
    expected = _expectation(counts, expectation, n_peaks)
    per_cell = np.asarray(counts.sum(axis=1, dtype=np.float64)).ravel()
    _warn_empty(per_cell, annotation)

    workers = _workers(n_jobs)
    batches = _batches(n_cells, max(1, min(int(batch_size), -(-n_cells // workers))))
    block = _peak_block(annotation.shape[1])
    parts = _split(counts, batches, block)
    observed = np.empty((n_cells, annotation.shape[1]), dtype=counts.dtype)
    running = _Running(per_cell, annotation.shape[1])
    with ThreadPoolExecutor(min(workers, len(batches))) as pool:
        for k in range(background.shape[1] + 1):
            annot = annotation if k == 0 else _background_annotation(background[:, k - 1], annotation)
            motif_expected = annot.T @ expected
            _observed(parts, annot, observed, batches, block, pool)
            list(pool.map(running.add, repeat(k), batches, repeat(observed), repeat(motif_expected)))
    return running.result(background.shape[1])


def _background_annotation(column: np.ndarray, annotation: sp.csr_matrix) -> sp.csr_matrix:
    """``B = G A`` with ``G[q, p] = [column[p] = q]``: motif m -> its peaks' backgrounds (multiset)."""
    n_peaks = column.size
    gather = sp.csr_matrix((np.ones(n_peaks, annotation.dtype), (column, np.arange(n_peaks))),
                           shape=(n_peaks, n_peaks))
    return (gather @ annotation).tocsr()


def _warn_empty(per_cell: np.ndarray, annotation: sp.csr_matrix) -> None:
    empty_cells = int((per_cell == 0).sum())
    if empty_cells:
        warnings.warn(f"{empty_cells} cells have no counts: their deviations and z-scores are NaN",
                      stacklevel=3)
    empty_motifs = int((annotation.getnnz(axis=0) == 0).sum())
    if empty_motifs:
        warnings.warn(f"{empty_motifs} motifs match no peak: their deviations and z-scores are NaN",
                      stacklevel=3)


def deviations_anndata(atac, annotations, motif_ids, background=None, gc=None,
                       motif_names=None, **kwargs):
    """chromVAR of an AnnData of peak counts -> AnnData (cells x motifs): X = z, layers['deviations'].

    ``background``: from :func:`background_peaks`; when omitted it is computed
    from ``gc`` (one value per peak) and the counts per peak.  Other keywords
    go to :func:`compute_deviations`.
    """
    import anndata as ad
    import pandas as pd

    if background is None:
        if gc is None:
            raise ValueError("pass background peaks, or gc to compute them")
        background = background_peaks(gc, np.asarray(atac.X.sum(axis=0)).ravel())
    result = compute_deviations(atac.X, annotations, background, **kwargs)
    motif_ids = [str(m) for m in motif_ids]
    var = pd.DataFrame({"motif_name": motif_ids if motif_names is None else
                        [str(m) for m in motif_names]}, index=motif_ids)
    out = ad.AnnData(result.z, obs=pd.DataFrame(index=[str(o) for o in atac.obs_names]), var=var)
    out.layers["deviations"] = result.deviations
    return out
