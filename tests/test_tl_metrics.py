"""Evaluation metrics."""
import numpy as np
import pytest

from scmm.tl import (batch_mixing_entropy, clr, clr_sse, pearson_per_cell, pearson_per_feature,
                     query_metrics)
from scmm.tl.metrics import knn_baseline, neighbourhood_preservation
from _tl_data import trained_model


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 6)), rng.normal(size=(30, 6))
    b[:, 5] = 1.0
    pf = pearson_per_feature(a, b)
    for j in range(5):
        assert pf[j] == pytest.approx(np.corrcoef(a[:, j], b[:, j])[0, 1])
    assert np.isnan(pf[5])
    pc = pearson_per_cell(a, b)
    assert pc[3] == pytest.approx(np.corrcoef(a[3], b[3])[0, 1])
    with pytest.raises(ValueError):
        pearson_per_cell(a, b[:, :3])


def test_clr_and_sse():
    x = np.array([[0.0, 1.0, 10.0], [5.0, 5.0, 5.0]])
    c = clr(x)
    np.testing.assert_allclose(c.sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(c[1], 0, atol=1e-12)
    np.testing.assert_allclose(clr_sse(x, x), 0, atol=1e-12)
    assert clr_sse(x, x[::-1])[0] == pytest.approx(((c[0] - c[1]) ** 2).sum())


def test_batch_mixing_entropy_bounds_and_seed():
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(600, 3))
    batches = np.repeat(["a", "b"], 300)
    ent = batch_mixing_entropy(mixed, batches, n_repeats=10)
    assert ent.shape == (10,)
    assert np.all(ent > 0.9 * 100 * np.log(2)) and np.all(ent <= 100 * np.log(2) + 1e-9)
    separated = mixed + np.where(batches == "a", 0, 100)[:, None]
    assert np.all(batch_mixing_entropy(separated, batches, n_repeats=5) == 0)
    np.testing.assert_array_equal(ent, batch_mixing_entropy(mixed, batches, n_repeats=10))
    assert not np.array_equal(ent, batch_mixing_entropy(mixed, batches, n_repeats=10, seed=1))


def test_neighbourhood_preservation_identical_and_random():
    rng = np.random.default_rng(0)
    high = rng.normal(size=(2000, 5))
    assert neighbourhood_preservation(high, high) == 1.0
    flat = rng.normal(size=(500, 2))
    assert neighbourhood_preservation(flat, 3 * flat[:, ::-1] + 1, k=10) == 1.0  # distances rescaled only
    score = neighbourhood_preservation(high, rng.normal(size=(2000, 2)), k=15, n_cells=2000)
    assert score == pytest.approx(15 / 1999, abs=0.003)


def test_neighbourhood_preservation_by_hand():
    high = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    low = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [4.0, 0.0], [20.0, 0.0]])
    # k=1: nearest in high b a b c d, in low b a d b c -> 2 of 5 kept
    assert neighbourhood_preservation(high, low, k=1) == pytest.approx(2 / 5)
    # k=2: {bc}{ac}{ab}{bc}{cd} vs {bd}{ad}{bd}{ab}{cd} -> 1+1+1+1+2 of 10
    assert neighbourhood_preservation(high, low, k=2) == pytest.approx(6 / 10)
    one = neighbourhood_preservation(high, low, k=1, n_cells=2, seed=3)
    assert one in (0.0, 0.5, 1.0) and one == neighbourhood_preservation(high, low, k=1, n_cells=2, seed=3)
    with pytest.raises(ValueError, match="k must be"):
        neighbourhood_preservation(high, low, k=5)
    with pytest.raises(ValueError, match="cells"):
        neighbourhood_preservation(high, low[:4])


def test_knn_baseline_copies_neighbours():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 50)
    source = rng.poisson(np.where(groups[:, None] == 0, [50, 1, 1, 1], [1, 1, 1, 50]))
    target = np.where(groups[:, None] == 0, [9.0, 1.0], [1.0, 9.0])
    pred = knn_baseline(source[:80], target[:80], source[80:], k=5, n_pcs=2)
    np.testing.assert_allclose(pred, target[80:] / 10)


def test_query_metrics_table():
    model = trained_model()
    table = query_metrics(model, target="prot", source="rna")
    assert table["method"].tolist() == ["scmm", "knn"]
    n_test = int((model.mdata.obs["scmm_split"] == "test").sum())
    assert (table["n_query"] == n_test).all()
    for col in ("pearson_feature_mean", "pearson_cell_mean", "clr_sse_mean"):
        assert np.isfinite(table[col]).all()
    assert (table["pearson_cell_mean"] > 0.3).all()
    rna = query_metrics(model)         # default: source rna, target prot
    assert rna["target"].iloc[0] == "prot"
    back = query_metrics(model, target="rna", source="prot")
    assert "clr_sse_mean" not in back
