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
