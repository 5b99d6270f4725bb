"""analyze(), exports, figures and the analysis subcommands (run in-process)."""
import json

import mudata as md
import pandas as pd
import pytest

import scmm.cli
from scmm import pl
from scmm.tl import export_all, load_heatmap_tables, traverse, Traversal
from _tl_data import analysed_run, trained_model, workdir

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF", ".svg": b"<?xml"}


def test_analyze_saves_everything_in_the_run():
    run = analysed_run()
    mdata = md.read_h5mu(run / "results.h5mu")
    assert "scmm_cluster" in mdata.obs and mdata.obs["scmm_cluster"].nunique() >= 2
    for key in ("X_umap_scmm", "X_umap_scmm_rna", "X_umap_scmm_prot"):
        assert mdata.obsm[key].shape == (mdata.n_obs, 2)
    assert (run / "umap.npz").exists()
    assert Traversal.load(run / "traversal.npz").n_dims == 10
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert sum(summary["cluster_sizes"].values()) == mdata.n_obs
    tables = load_heatmap_tables(run)
    assert {"rna|original", "rna|from_prot", "prot|from_rna", "similarity"} <= set(tables)
    assert tables["prot|original"].shape[0] == summary["n_clusters"]
    markers = pd.read_csv(run / "analysis" / "markers.csv")
    assert set(markers["modality"]) == {"rna", "prot"}


def test_export_all_writes_tables_and_figures(tmp_path):
    written = export_all(analysed_run(), tmp_path / "out", format="png")
    names = {p.name for p in written["tables"]}
    assert {"latents.csv", "markers.csv", "associated_all.csv", "associated_dim0_rna.csv",
            "associated_dim9_prot.csv", "heatmap_rna_original.csv", "heatmap_similarity.csv",
            "metrics.csv"} <= names
    for path in written["tables"] + written["figures"]:
        assert path.exists() and path.stat().st_size > 0, path
    latents = pd.read_csv(tmp_path / "out" / "latents.csv", index_col=0)
    assert {"scmm_cluster", "scmm_1", "scmm_10", "scmm_rna_1", "umap_scmm_1", "umap_scmm_prot_2"} \
        <= set(latents.columns)
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert set(zip(metrics["source"], metrics["target"])) == {("rna", "prot"), ("prot", "rna")}
    figs = written["figures"]
    assert len(figs) == 3 + 2 * 10 + 6
    assert all(p.read_bytes().startswith(MAGIC[".png"]) for p in figs)


@pytest.mark.parametrize("ext", [".png", ".svg", ".pdf"])
def test_figures_in_each_format(tmp_path, ext):
    model = trained_model()
    trav = traverse(model)
    mdata = md.read_h5mu(analysed_run() / "results.h5mu")
    tables = load_heatmap_tables(analysed_run())
    pl.umap(mdata, color="cell_type", save=tmp_path / f"u{ext}")
    pl.traversal(trav, 0, "prot", save=tmp_path / f"t{ext}")
    pl.heatmap(tables["prot|original"], save=tmp_path / f"h{ext}")
    for stem in "uth":
        data = (tmp_path / f"{stem}{ext}").read_bytes()
        assert len(data) > 1000 and data.startswith(MAGIC[ext])
    with pytest.raises(ValueError, match="format"):
        pl.save_figure(pl.heatmap(tables["prot|original"]), tmp_path / "x.jpg")


def test_cli_analysis_commands(tmp_path, capsys):
    run = str(analysed_run())
    assert scmm.cli.main(["traverse", run, "--dim", "0", "--modality", "prot", "--pvalue", "0.01",
                          "--csv", str(tmp_path / "t.csv")]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert (table["dim"] == 0).all() and (table["pvalue"] < 0.01).all()
    assert scmm.cli.main(["traverse", run, "--dim", "1", "--n", "3"]) == 0
    assert "log2_fc" in capsys.readouterr().out
    assert scmm.cli.main(["traverse", run, "--modality", "atac"]) == 2
    assert "unknown modality" in capsys.readouterr().err

    assert scmm.cli.main(["umap", run]) == 0          # served from the cache
    assert "X_umap_scmm" in capsys.readouterr().out
    assert scmm.cli.main(["heatmap", run, "--out", str(tmp_path / "hm")]) == 0
    assert (tmp_path / "hm" / "heatmap_prot_from_rna.csv").stat().st_size > 0
    assert scmm.cli.main(["export", run, "--out", str(tmp_path / "exp"), "--format", "svg",
                          "--no-figures"]) == 0
    assert (tmp_path / "exp" / "associated_all.csv").exists()
    assert scmm.cli.main(["analyze", str(workdir() / "no-such-run")]) == 2
    assert scmm.cli.main(["cluster", run, "--resolution", "0.3", "--csv", str(tmp_path / "c.csv")]) == 0
    labels = pd.read_csv(tmp_path / "c.csv", index_col=0)
    saved = md.read_h5mu(analysed_run() / "results.h5mu").obs["scmm_cluster"].astype(str)
    assert (labels["scmm_cluster"].astype(str).to_numpy() == saved.to_numpy()).all()
    summary = json.loads((analysed_run() / "analysis" / "summary.json").read_text())
    if saved.nunique() != summary["n_clusters"]:   # tables of the old clusters are not served
        assert load_heatmap_tables(analysed_run(), saved) is None
    assert load_heatmap_tables(analysed_run()) is not None



@pytest.mark.parametrize("command", ["analyze", "cluster", "umap", "traverse", "heatmap", "export",
                                     "gene-activity"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        scmm.cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: scmm " + command in capsys.readouterr().out


def test_analyze_clusters_the_chosen_representation_and_the_explorer_names_it(tmp_path):
    import shutil

    import numpy as np

    from scmm.tl import cluster
    from scmm.tl.analysis import cluster_representation
    from _tl_data import saved_run
    from app import data_access
    run = tmp_path / "run"
    shutil.copytree(saved_run(), run)
    assert scmm.cli.main(["analyze", str(run), "--no-umap", "--quiet"]) == 0   # the default: the joint latent
    mdata = md.read_h5mu(run / "results.h5mu")
    assert mdata.uns["scmm_cluster_params"]["cluster_on"] == "joint"
    joint = cluster(mdata, key_added="joint")
    assert (joint.to_numpy() == mdata.obs["scmm_cluster"].to_numpy()).all()
    assert data_access.get_run(run).cluster_column_label == "cluster"

    assert scmm.cli.main(["analyze", str(run), "--cluster-on", "concat", "--no-umap", "--quiet"]) == 0
    mdata = md.read_h5mu(run / "results.h5mu")
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["cluster_params"]["cluster_on"] == "concat"
    view = data_access.get_run(run)
    assert view.cluster_column_label == "cluster (concat latent)"
    assert {"label": "cluster (concat latent)", "value": "obs:scmm_cluster"} in view.colour_options()
    assert view.colour("obs:scmm_cluster")["label"] == "cluster (concat latent)"
    assert "X_cluster_input" not in mdata.obsm
    side_by_side = cluster_representation(mdata, ["rna", "prot"], "concat")
    assert side_by_side.shape == (mdata.n_obs, 20)
    np.testing.assert_array_equal(side_by_side[:, 10:], mdata.obsm["X_scmm_prot"])
    mdata.obsm["X_expected"] = side_by_side
    expected = cluster(mdata, use_rep="X_expected", key_added="expected")
    assert (expected.to_numpy() == mdata.obs["scmm_cluster"].to_numpy()).all()
    assert summary["n_clusters"] == expected.nunique() and not (joint.to_numpy() == expected.to_numpy()).all()

    assert scmm.cli.main(["cluster", str(run), "--cluster-on", "prot"]) == 0   # the lower-level command too
    mdata = md.read_h5mu(run / "results.h5mu")
    assert mdata.uns["scmm_cluster_params"]["cluster_on"] == "prot"
    mdata.obsm["X_expected"] = mdata.obsm["X_scmm_prot"]
    assert (cluster(mdata, use_rep="X_expected", key_added="expected").to_numpy()
            == mdata.obs["scmm_cluster"].to_numpy()).all()
    assert data_access.get_run(run).cluster_column_label == "cluster (prot latent)"
    with pytest.raises(ValueError, match="'joint', 'concat' or a modality"):
        cluster_representation(mdata, ["rna", "prot"], "atac")
    assert scmm.cli.main(["analyze", str(run), "--cluster-on", "atac", "--no-umap", "--quiet"]) == 2
    assert scmm.cli.main(["cluster", str(run), "--cluster-on", "atac"]) == 2


def test_analyze_switches_the_atlas_scale_approximations_and_the_explorer_says_so(tmp_path):
    import shutil

    from _tl_data import saved_run
    run = tmp_path / "run"
    shutil.copytree(saved_run(), run)
    with pytest.raises(SystemExit):
        scmm.cli.main(["analyze", str(run), "--umap-fit-cells", "3"])
    assert scmm.cli.main(["analyze", str(run), "--neighbors", "approximate", "--umap-fit-cells", "100",
                          "--quiet"]) == 0
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    n = summary["n_cells"]
    assert summary["cluster_params"]["neighbors"] == "approximate"
    assert summary["umap_params"]["fit_cells"] == 100 and summary["umap_params"]["n_cells"] == n
    from app import data_access
    notes = " ".join(data_access.get_run(run).approximation_notes())
    assert f"fitted on a random 100 of the {n:,} cells" in notes and "approximate nearest" in notes
