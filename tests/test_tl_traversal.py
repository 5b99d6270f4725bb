"""Latent traversal: Spearman statistics, grid, ranking, cache."""
import numpy as np
import pytest
from scipy import stats

from scmm.tl import DEFAULT_PVALUES, Traversal, spearman_rows, traverse
from _tl_data import trained_model, workdir


def test_spearman_matches_scipy_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    x = rng.normal(size=21)
    Y = rng.normal(size=(21, 40))
    Y[:, :5] = np.round(Y[:, :5])                       # ties
    Y[:, 5] = 2.0 * x + 1                               # perfectly monotonic
    Y[:, 6] = -x ** 3                                   # perfectly anti-monotonic
    Y[:, 7] = 3.0                                       # constant
    rho, p = spearman_rows(x, Y)
    for j in range(Y.shape[1]):
        if j == 7:
            assert rho[j] == 0 and p[j] == 1
            continue
        ref = stats.spearmanr(x, Y[:, j])
        assert rho[j] == pytest.approx(ref.statistic, abs=1e-12)
        assert p[j] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    assert rho[5] == pytest.approx(1) and p[5] == 0
    assert rho[6] == pytest.approx(-1)


def test_grid_and_decoding_follow_the_prior():
    model = trained_model()
    trav = traverse(model)
    D = model.latent_dim
    assert len(trav.steps) == 21 and trav.steps[0] == -5 and trav.steps[-1] == 5
    np.testing.assert_allclose(trav.sigma, np.sqrt(2) * model.prior_scale(), rtol=1e-6)
    assert trav.means["rna"].shape == (D, 21, len(model.feature_names["rna"]))
    # a grid point is exactly the decode of z = (0, ..., z_d, ..., 0) at the median library
    d, i = 3, 17
    z = np.zeros((1, D), np.float32)
    z[0, d] = trav.steps[i] * trav.sigma[d]
    np.testing.assert_allclose(trav.means["prot"][d, i], model.decode(z, "prot")[0], rtol=1e-4)
    # occupied range: 1st-99th percentile of the joint latent
    lat = model.mdata.obsm["X_scmm"]
    np.testing.assert_allclose(trav.occupied[:, 0], np.percentile(lat, 1, axis=0), rtol=1e-5)
    np.testing.assert_allclose(trav.occupied[:, 1], np.percentile(lat, 99, axis=0), rtol=1e-5)


def test_associated_is_filtered_and_ranked_by_fold_change():
    trav = traverse(trained_model())
    assert trav.pvalues == {"rna": DEFAULT_PVALUES["rna"], "prot": DEFAULT_PVALUES["protein"]}
    seen = 0
    for d in range(trav.n_dims):
        table = trav.associated(d, "rna")
        assert list(table.columns[:5]) == ["feature", "rho", "pvalue", "log2_fc", "direction"]
        assert (table["pvalue"] < 1e-12).all()
        assert np.all(np.diff(table["log2_fc"].abs().to_numpy()) <= 1e-12)
        assert ((table["rho"] > 0) == (table["direction"] == "positive")).all()
        np.testing.assert_allclose(table["log2_fc"], np.log2(table["mean_high"] / table["mean_low"]),
                                   rtol=1e-4)
        seen += len(table)
    assert seen > 0
    loose = trav.associated(0, "prot", pvalue=0.5)
    strict = trav.associated(0, "prot", pvalue=1e-6)
    assert set(strict["feature"]) <= set(loose["feature"])
    assert len(trav.associated(0, "rna", n=3)) <= 3
    assert (trav.associated(0, "prot", pvalue=0.5, direction="negative")["rho"] < 0).all()
    with pytest.raises(KeyError):
        trav.associated(0, "atac")
    with pytest.raises(IndexError):
        trav.associated(trav.n_dims, "rna")


def test_profile_columns_and_grid():
    model = trained_model()
    trav = traverse(model)
    prof = trav.profile(2, "prot", ["CD3", "CD14"])
    assert prof.shape == (21, 3)
    np.testing.assert_allclose(prof.index.to_numpy(), trav.grid[2])
    with pytest.raises(KeyError):
        trav.profile(2, "prot", ["NOPE"])


def test_cache_serves_new_thresholds_without_decoding(monkeypatch):
    model = trained_model()
    run = workdir() / "trav-cache"
    first = traverse(model, run_dir=run)
    assert (run / "traversal.npz").exists() and (run / "traversal.json").exists()

    def boom(*a, **k):
        raise AssertionError("decoded although cached")
    monkeypatch.setattr(model, "decode", boom)
    again = traverse(model, run_dir=run)
    np.testing.assert_array_equal(again.rho["rna"], first.rho["rna"])
    pd_a = again.associated(1, "prot", pvalue=1e-2)
    pd_b = first.associated(1, "prot", pvalue=1e-2)
    assert pd_a.equals(pd_b)
    with pytest.raises(AssertionError):  # other settings invalidate the cache
        traverse(model, run_dir=run, library=5000.0)


def test_save_load_roundtrip(tmp_path):
    trav = traverse(trained_model())
    trav.pvalues["prot"] = 0.05
    path = trav.save(tmp_path / "t.npz")
    back = Traversal.load(path)
    assert back.pvalues["prot"] == 0.05 and back.features == trav.features
    for m in trav.modalities:
        np.testing.assert_array_equal(back.means[m], trav.means[m])
        np.testing.assert_array_equal(back.log2_fc[m], trav.log2_fc[m])
    assert back.associated(4, "prot").equals(trav.associated(4, "prot"))
    with pytest.raises(FileNotFoundError):
        Traversal.load(tmp_path / "missing.npz")


def test_rna_atac_model_uses_kind_thresholds(tmp_path):
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp
    import torch
    import scmm
    from scmm.tl import cluster
    rng = np.random.default_rng(0)
    n = 300
    group = rng.integers(0, 2, n)
    rna = rng.poisson(np.where(group[:, None] == 0, 2.0, 0.5) * rng.uniform(0.5, 2, 60)).astype(np.float32)
    atac = rng.binomial(1, np.where(group[:, None] == 0, 0.3, 0.05) * rng.uniform(0.5, 2, 80)
                        .clip(0, 3)).astype(np.float32)
    peaks = [f"chr1_{1000 * i}_{1000 * i + 500}" for i in range(80)]
    mdata = md.MuData({"rna": ad.AnnData(sp.csr_matrix(rna), var=pd_index([f"g{i}" for i in range(60)])),
                       "atac": ad.AnnData(sp.csr_matrix(atac), var=pd_index(peaks))})
    scmm.preprocess(mdata, peak_fraction=None)
    model = scmm.SCMM(mdata, device="cpu", hidden={"rna": [32], "atac": [32]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train(epochs=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    model.get_latent()
    trav = traverse(model, run_dir=tmp_path)
    assert trav.kinds == {"rna": "rna", "atac": "atac"}
    assert trav.pvalues == {"rna": 1e-12, "atac": 1e-21}
    assert trav.means["atac"].shape == (model.latent_dim, 21, 80)
    assert (trav.means["atac"] >= 0).all()
    for d in range(trav.n_dims):
        assert (trav.associated(d, "atac")["pvalue"] < 1e-21).all()
    labels = cluster(mdata)          # k defaults to 15 with ATAC
    assert labels.notna().all()


def pd_index(names):
    import pandas as pd
    return pd.DataFrame(index=names)


def test_dimension_overview_ranks_by_how_much_of_the_prior_the_cells_use():
    from scmm.tl.traversal import Traversal, dimension_overview
    rng = np.random.default_rng(0)
    D, P, F = 3, 5, 4
    steps = np.linspace(-2, 2, P)
    sigma = np.array([1.0, 2.0, 1.0])
    means = {"rna": rng.uniform(1, 2, (D, P, F))}
    rho = {"rna": np.array([[0.9, -0.9, 0.1, 0.0]] * D)}
    pval = {"rna": np.array([[1e-20, 1e-20, 0.5, 0.5], [1e-20, 0.5, 0.5, 0.5], [0.5] * 4])}
    occupied = np.array([[-1.0, 1.0], [-0.5, 0.5], [-0.01, 0.01]])
    edges = {"rna": rng.uniform(1, 2, (D, 2, F))}
    trav = Traversal(steps, sigma, means, rho, pval, occupied, edges, {"rna": list("abcd")}, {"rna": "rna"},
                     {"rna": 1e4})
    latent = np.column_stack([rng.normal(0, 0.9, 500), rng.normal(0, 0.6, 500), rng.normal(0, 0.05, 500)])
    table = dimension_overview(trav, latent)
    assert list(table["dim"]) == [0, 1, 2]                        # strength 0.9, 0.3, 0.05
    assert list(table["status"]) == ["active", "weak", "inactive"]
    assert list(table["n_rna"]) == [2, 1, 0]
    np.testing.assert_allclose(table["strength"], latent.std(axis=0) / sigma, rtol=1e-12)
    with pytest.raises(ValueError, match="cells x 3"):
        dimension_overview(trav, latent[:, :2])
