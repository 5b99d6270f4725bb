"""UMAP of the latents, with the run-folder cache."""
import anndata as ad
import numpy as np
import pytest

import scmm.tl.umaps as umaps
from scmm import runfolder
from scmm.tl import umap


def _adata(seed=0, n=120):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(np.zeros((n, 1), np.float32))
    a.obsm["X_scmm"] = rng.normal(size=(n, 4)).astype(np.float32)
    a.obsm["X_scmm_rna"] = rng.normal(size=(n, 4)).astype(np.float32)
    a.obsm["X_pca"] = rng.normal(size=(n, 4)).astype(np.float32)
    return a


def test_key_rule():
    assert runfolder.umap_key("X_scmm") == "X_umap_scmm"
    assert runfolder.umap_key("X_scmm_prot") == "X_umap_scmm_prot"


def test_umap_of_every_latent_and_cache_hit(tmp_path, monkeypatch):
    a = _adata()
    calls = []
    real = umaps.run_umap

    def counting(latent, **kw):
        calls.append(len(latent))
        return real(latent, **kw)
    monkeypatch.setattr(umaps, "run_umap", counting)
    out = umap(a, run_dir=tmp_path)
    assert set(out) == {"X_umap_scmm", "X_umap_scmm_rna"} and len(calls) == 2
    assert a.obsm["X_umap_scmm"].shape == (120, 2) and np.isfinite(a.obsm["X_umap_scmm"]).all()
    assert (tmp_path / "umap.npz").exists()

    b = _adata()                      # same latents, fresh object: served from the cache
    out2 = umap(b, run_dir=tmp_path)
    assert len(calls) == 2
    for key in out:
        np.testing.assert_array_equal(out2[key], out[key])
        np.testing.assert_array_equal(b.obsm[key], out[key])

    c = _adata()
    c.obsm["X_scmm"] = c.obsm["X_scmm"] + 1.0   # a changed latent is recomputed, the other is not
    umap(c, run_dir=tmp_path)
    assert len(calls) == 3
    umap(c, run_dir=tmp_path, min_dist=0.1, keys=["X_scmm_rna"])  # new settings: recomputed
    assert len(calls) == 4


def test_umap_is_seeded_and_errors():
    a, b = _adata(), _adata()
    np.testing.assert_allclose(umap(a, keys=["X_scmm"])["X_umap_scmm"],
                               umap(b, keys=["X_scmm"])["X_umap_scmm"])
    empty = ad.AnnData(np.zeros((5, 1), np.float32))
    with pytest.raises(KeyError, match="get_latent"):
        umap(empty)
    with pytest.raises(KeyError):
        umap(a, keys=["X_scmm_atac"])


def _blobs(n_per=300, seed=0):
    """Three well-separated blobs in 5 dims, and each cell's blob."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n_per)
    centres = np.array([[0.0] * 5, [30.0] + [0.0] * 4, [0.0, 30.0, 0.0, 0.0, 0.0]])
    return (centres[labels] + rng.normal(size=(len(labels), 5))).astype(np.float32), labels


def test_full_fit_is_plain_umap_learn():
    import umap as umap_learn
    x = _adata().obsm["X_scmm"]
    with umaps._umap_warnings():
        plain = umap_learn.UMAP(n_neighbors=15, min_dist=0.3, random_state=0, n_components=2).fit_transform(x)
    np.testing.assert_array_equal(umaps.run_umap(x, fit_cells=None), plain)
    np.testing.assert_array_equal(umaps.run_umap(x), plain)            # "auto": all cells below the cut-off
    np.testing.assert_array_equal(umaps.run_umap(x, fit_cells=len(x)), plain)


def test_subsample_fit_places_every_cell():
    import umap as umap_learn
    x, labels = _blobs()
    coords = umaps.run_umap(x, fit_cells=300)
    assert coords.shape == (900, 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    np.testing.assert_array_equal(coords, umaps.run_umap(x, fit_cells=300))   # seeded
    assert not np.array_equal(coords, umaps.run_umap(x, fit_cells=300, seed=1))
    fitted = np.sort(np.random.default_rng(0).choice(900, 300, replace=False))
    with umaps._umap_warnings():
        alone = umap_learn.UMAP(n_neighbors=15, min_dist=0.3, random_state=0).fit_transform(x[fitted])
    np.testing.assert_array_equal(coords[fitted], alone)          # fitted cells keep their coordinates
    centres = np.stack([coords[fitted][labels[fitted] == b].mean(axis=0) for b in range(3)])
    nearest = np.linalg.norm(coords[:, None] - centres[None], axis=2).argmin(axis=1)
    np.testing.assert_array_equal(nearest, labels)                # placed cells land in their own blob


def test_auto_switches_above_the_cut_off(monkeypatch):
    x, _ = _blobs(n_per=100)
    assert umaps.fit_count(300) is None and umaps.fit_count(300, 100) == 100
    assert umaps.fit_count(300, None) is None and umaps.fit_count(300, 300) is None
    monkeypatch.setattr(umaps, "FIT_CELLS_ABOVE", 200)
    monkeypatch.setattr(umaps, "FIT_CELLS", 120)
    assert umaps.fit_count(300) == 120 and umaps.fit_count(200) is None
    np.testing.assert_array_equal(umaps.run_umap(x), umaps.run_umap(x, fit_cells=120))


def test_cache_key_holds_the_strategy(tmp_path, monkeypatch):
    a = _adata(n=300)
    calls = []
    real = umaps.run_umap

    def counting(latent, **kw):
        calls.append(kw["fit_cells"])
        return real(latent, **kw)
    monkeypatch.setattr(umaps, "run_umap", counting)
    full = umap(a, keys=["X_scmm"], run_dir=tmp_path, fit_cells=None)["X_umap_scmm"]
    umap(a, keys=["X_scmm"], run_dir=tmp_path)                      # auto below the cut-off: same fit, cached
    assert calls == [None]
    sub = umap(a, keys=["X_scmm"], run_dir=tmp_path, fit_cells=100)["X_umap_scmm"]
    assert calls == [None, 100] and not np.array_equal(sub, full)
    assert a.uns["scmm_umap_params"]["fit_cells"] == 100 and a.uns["scmm_umap_params"]["n_cells"] == 300
    monkeypatch.setattr(umaps, "FIT_CELLS_ABOVE", 200)
    monkeypatch.setattr(umaps, "FIT_CELLS", 100)
    np.testing.assert_array_equal(umap(a, keys=["X_scmm"], run_dir=tmp_path)["X_umap_scmm"], sub)
    assert len(calls) == 2                                          # auto above: the same subsample fit
    umap(a, keys=["X_scmm"], run_dir=tmp_path, fit_cells=None)
    assert calls == [None, 100, None]                               # the full fit is not served a subsample
    assert a.uns["scmm_umap_params"]["fit_cells"] == 300


@pytest.mark.parametrize("bad", [0, 3, -5, 2.5, "all", True])
def test_bad_fit_cells(bad):
    with pytest.raises(ValueError, match="fit_cells"):
        umaps.run_umap(_blobs(n_per=10)[0], fit_cells=bad)
    with pytest.raises(ValueError, match="fit_cells"):
        umap(_adata(), fit_cells=bad)


def test_only_the_n_jobs_warning_is_hidden():
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with umaps._umap_warnings():
            warnings.warn("n_jobs value 1 overridden to 1 by setting random_state. Use no seed for parallelism.")
            warnings.warn("A few of your vertices were disconnected from the manifold.")
    assert [str(w.message) for w in seen] == ["A few of your vertices were disconnected from the manifold."]
