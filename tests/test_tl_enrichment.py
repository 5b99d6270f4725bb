"""Motif enrichment (Signac FindMotifs) and the GC/accessibility-matched background."""
from math import comb

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scmm.tl.enrichment import (_allocate, benjamini_hochberg, matched_background,
                                motif_enrichment, peak_set_enrichment)

# 12 peaks x 3 motifs; query = peaks 0-3, background = peaks 4-11
MATCHES = np.zeros((12, 3), dtype=bool)
MATCHES[[0, 1, 2], 0] = True          # motif A: 3/4 query peaks, 1/8 background
MATCHES[[9], 0] = True
MATCHES[[0], 1] = True                # motif B: 1/4 query, 4/8 background
MATCHES[[4, 5, 6, 7], 1] = True
MATCHES[[1, 2], 2] = True             # motif C: 2/4 query, 2/8 background
MATCHES[[10, 11], 2] = True
QUERY, BACKGROUND = np.arange(4), np.arange(4, 12)


def upper_tail(observed, successes, population, draws):
    """P(X >= observed) for a hypergeometric draw, from binomial coefficients."""
    total = comb(population, draws)
    return sum(comb(successes, k) * comb(population - successes, draws - k)
               for k in range(observed, min(successes, draws) + 1)) / total


def test_counts_percentages_fold_and_pvalues_by_hand():
    table = motif_enrichment(MATCHES, QUERY, BACKGROUND, ["A", "B", "C"], ["ma", "mb", "mc"])
    assert table.loc["A", "observed"] == 3 and table.loc["A", "background"] == 1
    assert table.loc["B", "observed"] == 1 and table.loc["B", "background"] == 4
    assert table.loc["A", "percent_observed"] == pytest.approx(75.0)
    assert table.loc["A", "percent_background"] == pytest.approx(12.5)
    assert table.loc["A", "fold_enrichment"] == pytest.approx(0.75 / 0.125)
    assert table.loc["B", "fold_enrichment"] == pytest.approx(0.25 / 0.5)
    for motif, (obs, bg) in {"A": (3, 1), "B": (1, 4), "C": (2, 2)}.items():
        assert table.loc[motif, "pvalue"] == pytest.approx(upper_tail(obs, bg, 8, 4), rel=1e-12)
    assert table.loc["A", "motif_name"] == "ma"
    assert list(table.index) == ["A", "C", "B"]        # sorted by p-value
    assert np.allclose(table["p_adjust"], benjamini_hochberg(table["pvalue"]))


def test_sparse_masks_and_overlapping_background_are_accepted():
    dense = motif_enrichment(MATCHES, QUERY, BACKGROUND, ["A", "B", "C"])
    mask = np.zeros(12, bool)
    mask[QUERY] = True
    sparse = motif_enrichment(sp.csr_matrix(MATCHES), mask, ~mask, ["A", "B", "C"])
    pd.testing.assert_frame_equal(dense, sparse)
    assert list(dense["motif_name"]) == list(dense.index)
    overlapping = motif_enrichment(MATCHES, QUERY, np.arange(12), ["A", "B", "C"])
    assert overlapping.loc["A", "background"] == 4
    assert overlapping.loc["A", "pvalue"] == pytest.approx(upper_tail(3, 4, 12, 4))


def test_ties_in_pvalue_are_ordered_by_fold():
    matches = np.zeros((10, 2), bool)
    matches[[0, 1, 2], 0] = True              # "y": 2/2 query peaks, 1/8 background: p = 0
    matches[[0, 1], 1] = True                 # "x": 2/2 query peaks, never in the background
    table = motif_enrichment(matches, [0, 1], np.arange(2, 10), ["y", "x"])
    assert list(table["pvalue"]) == [0.0, 0.0]    # as R's phyper: 2 of 2 draws is impossible
    assert np.isinf(table.loc["x", "fold_enrichment"])
    assert table.loc["y", "fold_enrichment"] == pytest.approx(8.0)
    assert list(table.index) == ["x", "y"]


def test_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01, 0.03, 0.04, 0.2 -> x4/1, x4/2, x4/3, x4/4 = 0.04, 0.06, 0.0533, 0.2 -> cummin from the top
    assert np.allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert benjamini_hochberg([0.9, 0.8])[0] == pytest.approx(0.9)


@pytest.mark.parametrize("query, background, ids, message", [
    ([], BACKGROUND, "ABC", "at least one"),
    ([0, 12], BACKGROUND, "ABC", "out of range"),
    ([0, 0, 1], BACKGROUND, "ABC", "more than once"),
    (np.ones(5, bool), BACKGROUND, "ABC", "mask has shape"),
    (QUERY, BACKGROUND, "AB", "motif ids"),
    (np.arange(10), [10, 11], "ABC", "smaller than the query"),
    ([0.5], BACKGROUND, "ABC", "integers"),
])
def test_errors(query, background, ids, message):
    with pytest.raises(ValueError, match=message):
        motif_enrichment(MATCHES, query, background, list(ids))


def synthetic_peaks(n=6000, n_query=300, seed=1):
    """GC and accessibility per peak; the query is drawn favouring GC-rich, accessible peaks."""
    rng = np.random.default_rng(seed)
    gc = rng.beta(5, 5, n)
    accessibility = rng.lognormal(3, 1, n)
    score = (gc - gc.mean()) / gc.std() + np.log(accessibility) - np.log(accessibility).mean()
    query = rng.choice(n, n_query, replace=False, p=np.exp(score) / np.exp(score).sum())
    return gc, accessibility, query


def test_matched_background_follows_the_query():
    gc, accessibility, query = synthetic_peaks()
    background = matched_background(query, gc, accessibility, n=300, seed=0)
    assert background.size == 300 and np.unique(background).size == 300
    assert not np.isin(background, query).any()
    uniform = np.random.default_rng(0).choice(np.setdiff1d(np.arange(gc.size), query), 300,
                                              replace=False)
    for values in (gc, np.log(accessibility)):
        gap = abs(values[background].mean() - values[query].mean())
        gap_uniform = abs(values[uniform].mean() - values[query].mean())
        assert gap < 0.2 * gap_uniform
    again = matched_background(query, gc, accessibility, n=300, seed=0)
    assert np.array_equal(background, again)
    assert not np.array_equal(background, matched_background(query, gc, accessibility, n=300, seed=1))


def test_allocation_per_bin():
    # exact shares when every bin has enough candidates; a short bin gives all, the rest goes on
    assert list(_allocate(np.array([0.5, 0.5, 0.0]), np.array([400, 900, 50]), 300)) == [150, 150, 0]
    assert list(_allocate(np.array([0.5, 0.5, 0.0]), np.array([100, 900, 50]), 300)) == [100, 200, 0]
    assert list(_allocate(np.array([0.7, 0.3, 0.0]), np.array([100, 900, 50]), 5000)) == [100, 900, 0]
    assert _allocate(np.array([1 / 3, 1 / 3, 1 / 3]), np.array([9, 9, 9]), 10).sum() == 10


def test_matched_background_takes_every_candidate_when_n_exceeds_them():
    rng = np.random.default_rng(0)
    gc, accessibility = rng.uniform(size=50), rng.uniform(size=50)
    mask = np.zeros(50, bool)
    mask[::2] = True                      # the query spans the whole range: every bin is occupied
    background = matched_background(mask, gc, accessibility, n=1000, bins=2)
    assert np.array_equal(background, np.arange(1, 50, 2))


def test_matched_background_errors():
    with pytest.raises(ValueError, match="no peaks"):
        matched_background([], np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="3 values for 4 peaks"):
        matched_background([0], np.ones(4), np.ones(3))


def test_peak_set_enrichment_finds_the_planted_motif():
    gc, accessibility, query = synthetic_peaks()
    rng = np.random.default_rng(2)
    matches = rng.random((gc.size, 4)) < 0.1
    matches[query, 2] = rng.random(query.size) < 0.5              # motif 2 planted in the query
    names = [f"chr1_{i * 1000}_{i * 1000 + 500}" for i in range(gc.size)]
    table = peak_set_enrichment([names[i] for i in query], names, sp.csr_matrix(matches), gc,
                                accessibility, ["m0", "m1", "m2", "m3"], n_background=1500)
    assert table.index[0] == "m2" and table.loc["m2", "p_adjust"] < 1e-20
    assert (table.drop(index="m2")["p_adjust"] > 1e-3).all()
    assert table.attrs == {"n_query": query.size, "n_background": 1500}
    with pytest.raises(ValueError, match="not among the peaks"):
        peak_set_enrichment(["chrX_1_2"], names, matches, gc, accessibility, ["a", "b", "c", "d"])
