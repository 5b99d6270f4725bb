"""chromVAR background peaks and deviations, against a literal transcription of the formulas."""
import statistics

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scmm.tl import chromvar
from scmm.tl.chromvar import background_peaks, compute_deviations, deviations_anndata


def literal_chromvar(counts, annotation, background):
    """chromVAR's computeDeviations one cell and one motif at a time, in plain Python."""
    n_cells, n_peaks = counts.shape
    share = counts.sum(axis=0) / counts.sum()
    dev = np.empty((n_cells, annotation.shape[1]))
    z = np.empty_like(dev)
    for c in range(n_cells):
        total = counts[c].sum()
        for m in range(annotation.shape[1]):
            peaks = [p for p in range(n_peaks) if annotation[p, m]]

            def deviation(peak_list):
                observed = sum(counts[c, q] for q in peak_list)
                expected = total * sum(share[q] for q in peak_list)
                return (observed - expected) / expected

            sampled = [deviation([background[p, i] for p in peaks]) for i in range(background.shape[1])]
            dev[c, m] = deviation(peaks) - statistics.mean(sampled)
            z[c, m] = dev[c, m] / statistics.stdev(sampled)
    return dev, z


def tiny(seed=0, cells=7, peaks=30, motifs=4, iterations=5):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.0, (cells, peaks)) * (rng.random((cells, peaks)) < 0.6)
    counts[:, counts.sum(axis=0) == 0] = 1
    annotation = rng.random((peaks, motifs)) < 0.3
    annotation[0, :] = True
    background = rng.integers(0, peaks, (peaks, iterations))
    background[:3, 0] = 5                                  # a background peak drawn more than once
    return counts, annotation, background


def test_matches_the_literal_formulas_sparse_and_dense(monkeypatch):
    counts, annotation, background = tiny()
    dev, z = literal_chromvar(counts.astype(float), annotation, background)
    dense = compute_deviations(counts, annotation, background)
    sparse = compute_deviations(sp.csr_matrix(counts), sp.csr_matrix(annotation), background)
    monkeypatch.setattr(chromvar, "_peak_block", lambda n_motifs: 7)    # 5 blocks of peaks
    blocked = compute_deviations(sp.csr_matrix(counts), sp.csr_matrix(annotation), background,
                                 batch_size=3, n_jobs=2)
    for result in (dense, sparse, blocked):
        np.testing.assert_allclose(result.deviations, dev, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.z, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.z, blocked.z, rtol=1e-6)


def test_float_counts_and_given_expectation():
    counts, annotation, background = tiny(seed=1)
    probabilities = counts / 3.0 + 0.01
    dev, z = literal_chromvar(probabilities, annotation, background)
    result = compute_deviations(probabilities, annotation, background)
    np.testing.assert_allclose(result.z, z, rtol=1e-9)
    assert result.z.dtype == np.float64
    # the default expectation is each peak's share of all counts; any scale of it gives the same
    share = probabilities.sum(axis=0)
    again = compute_deviations(probabilities, annotation, background, expectation=7 * share)
    np.testing.assert_allclose(again.deviations, dev, rtol=1e-9)
    flat = compute_deviations(probabilities, annotation, background, expectation=np.ones(30))
    assert not np.allclose(flat.deviations, dev)


def test_planted_signal():
    rng = np.random.default_rng(3)
    n_cells, n_peaks = 200, 600
    gc = rng.uniform(0.3, 0.7, n_peaks)
    rate = rng.lognormal(0.5, 0.5, n_peaks)                          # ~ 1,900 counts per cell
    annotation = np.zeros((n_peaks, 3), bool)
    annotation[rng.choice(n_peaks, 60, replace=False), 0] = True    # motif 0: no signal
    annotation[rng.choice(n_peaks, 60, replace=False), 1] = True    # motif 1: group 1 opens it
    group = np.arange(n_cells) % 2
    lam = np.tile(rate, (n_cells, 1))
    lam[np.ix_(group == 1, annotation[:, 1])] *= 2.5
    counts = sp.csr_matrix(rng.poisson(lam))
    background = background_peaks(gc, np.asarray(counts.sum(axis=0)).ravel(), n_iterations=30)
    with pytest.warns(UserWarning, match="1 motifs match no peak"):
        z = compute_deviations(counts, annotation, background).z
    assert z[group == 1, 1].mean() > 2 and z[group == 0, 1].mean() < -2
    assert (z[group == 1, 1] > z[group == 0, 1].max()).mean() > 0.9
    assert abs(z[:, 0].mean()) < 0.5 and abs(z[group == 1, 0].mean() - z[group == 0, 0].mean()) < 0.5
    assert np.isnan(z[:, 2]).all()                                   # no peak: NaN


def test_zero_count_cell_is_nan_with_a_warning():
    counts, annotation, background = tiny()
    counts[2] = 0
    with pytest.warns(UserWarning, match="1 cells have no counts"):
        result = compute_deviations(sp.csr_matrix(counts), annotation, background)
    assert np.isnan(result.z[2]).all() and np.isnan(result.deviations[2]).all()
    assert np.isfinite(np.delete(result.z, 2, axis=0)).all()


@pytest.mark.parametrize("change, message", [
    (lambda c, a, b: (-c, a, b), "non-negative"),
    (lambda c, a, b: (c, a[:-1], b), "29 peaks x 4 motifs; the counts have 30"),
    (lambda c, a, b: (c, a[:, :0], b), "x 0 motifs"),
    (lambda c, a, b: (c, a, b[:, :1]), "n_iterations >= 2"),
    (lambda c, a, b: (c, a, b + 30), r"\[0, 30\)"),
    (lambda c, a, b: (c, a, b.astype(float)), "integers"),
    (lambda c, a, b: (np.zeros_like(c), a, b), "not all zero"),
])
def test_deviation_errors(change, message):
    with pytest.raises(ValueError, match=message):
        compute_deviations(*change(*tiny()))


def test_background_peaks_are_alike():
    rng = np.random.default_rng(0)
    gc = rng.beta(5, 5, 3000)
    accessibility = rng.lognormal(3, 1, 3000)
    background = background_peaks(gc, accessibility, n_iterations=20, seed=4)
    assert background.shape == (3000, 20) and background.dtype == np.int64
    assert background.min() >= 0 and background.max() < 3000
    gap = np.abs(gc[background] - gc[:, None]).mean()
    gap_random = np.abs(gc[rng.integers(0, 3000, background.shape)] - gc[:, None]).mean()
    assert gap < 0.2 * gap_random
    log_acc = np.log10(accessibility)
    assert np.abs(log_acc[background] - log_acc[:, None]).mean() < 0.2 * log_acc.std()
    assert np.array_equal(background, background_peaks(gc, accessibility, n_iterations=20, seed=4))
    with pytest.raises(ValueError, match="no accessibility"):
        background_peaks(gc, np.where(np.arange(3000) == 5, 0, accessibility))
    with pytest.raises(ValueError, match="collinear"):
        background_peaks(np.full(3000, 0.4), accessibility)


def test_deviations_anndata():
    counts, annotation, background = tiny()
    atac = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)))
    out = deviations_anndata(atac, annotation, ["MA1", "MA2", "MA3", "MA4"], background,
                             motif_names=["A", "B", "C", "D"])
    expected = compute_deviations(counts, annotation, background)
    assert out.shape == (7, 4) and list(out.var_names) == ["MA1", "MA2", "MA3", "MA4"]
    assert list(out.var["motif_name"]) == ["A", "B", "C", "D"]
    np.testing.assert_allclose(out.X, expected.z, rtol=1e-6)
    np.testing.assert_allclose(out.layers["deviations"], expected.deviations, rtol=1e-6)
    gc = np.random.default_rng(0).uniform(0.3, 0.7, 30)
    assert deviations_anndata(atac, annotation, list("abcd"), gc=gc).shape == (7, 4)
