"""Cluster x feature tables, markers and selection ranking."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scmm.tl import heatmap_tables, markers, rank_features
from scmm.tl.heatmap import (MARKER_CELLS_PER_GROUP, PROFILE_CELLS_PER_GROUP, cluster_profile,
                             subsample, zscore)
from _tl_data import trained_model

B_GENES = {"MS4A1", "CD19", "CD79A", "CD79B", "PAX5"}
FEATURES = {"rna": ["CD3E", "MS4A1", "CD14", "NKG7", "GENE0100"], "prot": ["CD3", "CD19", "CD14", "CD56"]}


def test_cluster_profile_and_zscore_by_hand():
    counts = sp.csr_matrix(np.array([[1, 0], [3, 2], [0, 5]], np.float32))
    library = np.array([10.0, 10.0, 20.0])
    table = cluster_profile(counts, library, np.array(["a", "a", "b"]), ["a", "b"], ["f", "g"])
    np.testing.assert_allclose(table.loc["a"], [4 / 20, 2 / 20])
    np.testing.assert_allclose(table.loc["b"], [0, 5 / 20])
    z = zscore(pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": [4.0, 4.0, 4.0]}))
    np.testing.assert_allclose(z["x"], [-1.224744871, 0, 1.224744871])
    assert (z["c"] == 0).all()


def test_heatmap_tables_on_cell_types():
    model = trained_model()
    mdata = model.mdata
    tables = heatmap_tables(model, groupby="cell_type", features=FEATURES)
    assert set(tables) == {"rna|original", "rna|from_rna", "rna|from_prot", "prot|original",
                           "prot|from_prot", "prot|from_rna", "similarity"}
    groups = sorted(mdata.obs["cell_type"].astype(str).unique())
    for key in ("rna|original", "prot|from_rna"):
        assert list(tables[key].index) == groups
        np.testing.assert_allclose(tables[key].mean(axis=0), 0, atol=1e-9)
    # raw ratio of one feature by hand: B cells' MS4A1 total / B cells' RNA depth
    raw = heatmap_tables(model, groupby="cell_type", features=FEATURES, zscored=False)
    b = (mdata.obs["cell_type"] == "B").to_numpy()
    rna = mdata.mod["rna"]
    col = list(rna.var_names).index("MS4A1")
    expected = rna.X[b][:, col].sum() / rna.obs["scmm_library"].to_numpy()[b].sum()
    assert raw["rna|original"].loc["B", "MS4A1"] == pytest.approx(expected, rel=1e-5)
    sim = tables["similarity"].set_index(["target", "source"])
    assert sim.loc[("prot", "prot"), "kind"] == "reconstruction"
    assert sim.loc[("prot", "rna"), "kind"] == "cross-modal"
    assert (sim["pearson_r"] > 0.5).all(), sim


def test_default_features_are_markers():
    model = trained_model()
    tables = heatmap_tables(model, groupby="cell_type", n_markers=3, modalities=["prot"])
    assert set(tables) == {"prot|original", "prot|from_prot", "prot|from_rna", "similarity"}
    assert 3 <= tables["prot|original"].shape[1] <= 3 * 7
    with pytest.raises(KeyError, match="cluster first"):
        heatmap_tables(model, groupby="nope")


def test_markers_and_selection_ranking_find_b_cells():
    mdata = trained_model().mdata
    table = markers(mdata, "rna", groupby="cell_type", n=5)
    assert list(table.columns[:3]) == ["group", "feature", "score"]
    assert len(set(table.loc[table["group"] == "B", "feature"]) & B_GENES) >= 3
    selection = (mdata.obs["cell_type"] == "B").to_numpy()
    ranked = rank_features(mdata, "rna", selection)
    assert len(set(ranked["feature"].head(5)) & B_GENES) >= 3
    assert ranked["score"].is_monotonic_decreasing
    by_name = rank_features(mdata, "prot", list(mdata.obs_names[selection]), n=3)
    assert len(by_name) == 3 and set(by_name["feature"]) & {"CD19", "CD20"}
    with pytest.raises(ValueError):
        rank_features(mdata, "prot", np.zeros(mdata.n_obs, bool))


def test_subsample_caps_each_group_seeded():
    labels = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 6)
    idx = subsample(labels, 4, seed=1)
    assert (np.diff(idx) > 0).all()
    assert dict(zip(*np.unique(labels[idx], return_counts=True))) == {"a": 4, "b": 3, "c": 4}
    np.testing.assert_array_equal(idx, subsample(labels, 4, seed=1))
    assert not np.array_equal(idx, subsample(labels, 4, seed=2))
    assert subsample(labels, 10) is None and subsample(labels, None) is None
    with pytest.raises(ValueError):
        subsample(labels, 0)


def test_markers_cell_cap():
    mdata = trained_model().mdata
    sizes = mdata.obs["cell_type"].astype(str).value_counts()
    assert sizes.max() < MARKER_CELLS_PER_GROUP
    full = markers(mdata, "rna", groupby="cell_type", n=None, max_cells_per_group=None)
    capped = markers(mdata, "rna", groupby="cell_type", n=None)     # every group under the cap
    pd.testing.assert_frame_equal(full, capped)
    assert capped.attrs == {"cells_tested": sizes.to_dict(), "subsampled": False}
    small = markers(mdata, "rna", groupby="cell_type", n=5, max_cells_per_group=60, seed=3)
    assert small.attrs["subsampled"]
    assert small.attrs["cells_tested"] == {g: min(60, n) for g, n in sizes.items()}
    assert len(set(small.loc[small["group"] == "B", "feature"]) & B_GENES) >= 3


def test_rank_features_cell_cap():
    mdata = trained_model().mdata
    selection = (mdata.obs["cell_type"] == "B").to_numpy()
    full = rank_features(mdata, "rna", selection, max_cells=None)
    pd.testing.assert_frame_equal(full, rank_features(mdata, "rna", selection))
    assert full.attrs == {"cells_tested": {"rest": int((~selection).sum()),
                                           "selection": int(selection.sum())}, "subsampled": False}
    capped = rank_features(mdata, "rna", selection, max_cells=100)
    assert capped.attrs == {"cells_tested": {"rest": 100, "selection": 100}, "subsampled": True}
    assert len(set(capped["feature"].head(5)) & B_GENES) >= 3


def test_heatmap_tables_cell_cap():
    model = trained_model()
    sizes = model.mdata.obs["cell_type"].astype(str).value_counts()
    assert sizes.max() < PROFILE_CELLS_PER_GROUP
    full = heatmap_tables(model, groupby="cell_type", features=FEATURES, max_cells_per_group=None)
    default = heatmap_tables(model, groupby="cell_type", features=FEATURES)
    assert set(full) == set(default)
    for key in full:
        pd.testing.assert_frame_equal(full[key], default[key], check_exact=True)
    assert (full["similarity"]["cells_decoded"] == sizes.sum()).all()
    cap = 40
    small = heatmap_tables(model, groupby="cell_type", features=FEATURES, max_cells_per_group=cap)
    assert (small["similarity"]["cells_decoded"] == np.minimum(sizes, cap).sum()).all()
    for key in full:
        if key.endswith("|original"):
            pd.testing.assert_frame_equal(full[key], small[key])
        elif key != "similarity":
            r = np.corrcoef(full[key].to_numpy().ravel(), small[key].to_numpy().ravel())[0, 1]
            assert r > 0.98, (key, r)
