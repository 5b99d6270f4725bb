"""The engine end to end on real data, a few epochs each.

Every test runs on the small subsets in tests/fixtures (always, so a fresh clone
tests real data) and on subsets of the full datasets when they are present
(``../shared/data`` or ``$SCMM_SHARED_DATA``; otherwise a plain skip that says
how to fetch them with ``scmm.datasets``).  See tests/_real_data.py.
"""
import json

import numpy as np
import pytest
import scipy.sparse as sp
from _real_data import fixture, real_data

import scmm
from scmm.cli import main as cli

pytestmark = pytest.mark.integration

SOURCES = ["fixture", "full"]


def subset(mdata, n, seed=0):
    if n is None or n >= mdata.n_obs:
        return mdata
    keep = np.sort(np.random.default_rng(seed).choice(mdata.n_obs, n, replace=False))
    return mdata[keep].copy()


def load(source, fixture_name, full_rel, n_full):
    """The in-repo fixture whole, or ``n_full`` cells of the full dataset (skipped if absent)."""
    if source == "fixture":
        return scmm.read(fixture(fixture_name))
    return subset(scmm.read(real_data(full_rel)), n_full)


@pytest.mark.parametrize("source", SOURCES)
def test_cite_seq_rna_to_protein(source):
    mdata = load(source, "pbmc10k_cite_500.h5mu", "pbmc10k_cite/pbmc10k_cite.h5mu", 1200)
    scmm.preprocess(mdata, n_top_genes=1000 if source == "full" else 500)
    model = scmm.SCMM(mdata, modalities={"rna": "nb", "prot": "nb"}, device="cpu")
    assert model.preset == "cite" and model.specs[0].hidden == (200, 200, 200)
    # the same number of optimiser steps on either source (~7 a epoch on 960 training cells)
    result = model.train(epochs=3 if source == "full" else 6, progress=False)
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]
    pred = model.predict("prot", from_modality="rna")
    observed = mdata["prot"].X.toarray()
    r = [np.corrcoef(np.log1p(pred.X[:, j]), np.log1p(observed[:, j]))[0, 1] for j in range(14)]
    assert np.nanmedian(r) > 0.2      # a few epochs already carry signal; the benchmark measures quality


@pytest.mark.parametrize("source", SOURCES)
def test_rna_atac_zinb(source):
    mdata = load(source, "snare_cortex_400.h5mu", "snare_cortex/snare_cortex.h5mu", 800)
    assert mdata.obs["cell_type"].nunique() > 10
    if source == "full":
        scmm.preprocess(mdata, n_top_genes=800, peak_fraction=0.1)
    else:
        scmm.preprocess(mdata, n_top_genes=500, peak_fraction=0.5)
    model = scmm.SCMM(mdata, device="cpu")
    assert model.likelihoods == {"rna": "nb", "atac": "zinb"} and model.preset == "atac"
    model.train(epochs=2, progress=False)
    latents = model.get_latent()
    assert np.isfinite(latents["X_scmm"]).all()
    peaks = model.predict("atac", from_modality="rna", kind="sample")
    assert sp.issparse(peaks.X) and peaks.shape == mdata["atac"].shape
    assert peaks.X.nnz < 0.5 * np.prod(peaks.shape)


@pytest.mark.parametrize("source", SOURCES)
def test_tenx_h5_trains_with_same_name_gene_and_protein(source):
    mdata = load(source, "pbmc10k_cite_500_filtered_feature_bc_matrix.h5",
                 "pbmc10k_cite/filtered_feature_bc_matrix.h5", 500)
    assert "CD4" in mdata["rna"].var_names and "CD4" in mdata["prot"].var_names
    scmm.preprocess(mdata, n_top_genes=500)
    model = scmm.SCMM(mdata, hidden={"rna": [64], "prot": [32]}, device="cpu")
    model.train(epochs=1, progress=False)
    assert model.get_latent()["X_scmm"].shape == (mdata.n_obs, 10)


def test_cli_train_embed_predict(tmp_path, capsys):
    data = tmp_path / "demo.h5mu"
    assert cli(["demo", "--out", str(data), "--n-cells", "500"]) == 0
    run = tmp_path / "run"
    progress = tmp_path / "progress.json"
    assert cli(["train", str(data), "--out", str(run), "--epochs", "2", "--n-top-genes", "300",
                "--progress-file", str(progress), "--quiet"]) == 0
    state = json.loads(progress.read_text())
    assert state["status"] == "done" and len(state["history"]) == 2
    assert cli(["embed", str(run), "--csv", str(tmp_path / "latent.csv")]) == 0
    assert (tmp_path / "latent.csv").read_text().count("\n") == 501
    assert cli(["predict", str(run), "--target", "prot", "--from", "rna",
                "--out", str(tmp_path / "prot.csv")]) == 0
    header = (tmp_path / "prot.csv").read_text().splitlines()[0]
    assert "CD3" in header and "CD19" in header


def test_cli_cancel_file_stops_training(tmp_path):
    data = scmm.demo.write_demo(tmp_path / "demo.h5mu", n_cells=400)
    cancel = tmp_path / "CANCEL"
    cancel.write_text("")
    code = cli(["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "5", "--quiet",
                "--cancel-file", str(cancel), "--progress-file", str(tmp_path / "p.json")])
    assert code == 130
    assert json.loads((tmp_path / "p.json").read_text())["status"] == "cancelled"
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "broken.h5mu"
    bad.write_text("not hdf5")
    assert cli(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "broken.h5mu" in err and not (tmp_path / "run").exists()
