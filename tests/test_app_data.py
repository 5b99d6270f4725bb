"""Tests of the server-side data layer and the page helpers on a synthetic run (no torch, no browser)."""
from __future__ import annotations

import base64

import numpy as np
import pytest

import synthetic_run as synthetic
from app import data_access
from app.pages import embeddings, generation, traversal


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return synthetic.make_run(tmp_path_factory.mktemp("runs") / "syn", n_cells=500, n_genes=60)


@pytest.fixture(scope="module")
def view(run_dir):
    return data_access.get_run(run_dir)


def test_list_datasets_puts_demo_first(tmp_path):
    for name in ("b.h5ad", "demo.h5mu", "notes.txt", "a.h5"):
        (tmp_path / name).write_text("x")
    (tmp_path / "mtx").mkdir()
    (tmp_path / "mtx" / "matrix.mtx.gz").write_text("x")
    labels = [d["label"] for d in data_access.list_datasets(tmp_path)]
    assert labels[0] == "demo.h5mu (built-in demo)"
    assert set(labels[1:]) == {"a.h5", "b.h5ad", "mtx"}


def test_resolve_run_stays_inside_runs_dir(run_dir):
    root = run_dir.parent
    assert data_access.resolve_run(root, "syn") == run_dir.resolve()
    assert data_access.resolve_run(root, "../syn") is None
    assert data_access.resolve_run(root, "missing") is None


def test_run_view_is_cached_by_mtime(run_dir, view):
    assert data_access.get_run(run_dir) is view
    assert view.analysed and view.latent_dim == 10
    assert list(view.embeddings()) == ["joint", "rna", "prot"]


def test_colour_by_every_kind(view):
    cluster = view.colour("obs:scmm_cluster")
    assert cluster["kind"] == "categorical" and cluster["categories"][:3] == ["0", "1", "2"]
    assert cluster["values"].max() == len(cluster["categories"]) - 1
    z = view.colour("z:2")
    assert z["label"] == "z3" and np.allclose(z["values"], view.mdata.obsm["X_scmm"][:, 2])
    gene = view.colour("feat:rna:G0003")
    assert gene["kind"] == "continuous" and gene["values"].shape == (view.n_cells,)
    assert (gene["values"] >= 0).all()
    assert view.colour("feat:rna:NOPE")["label"] == "cluster"  # unknown -> the cluster, and the page says so:
    assert "'NOPE' is not among the 60 rna features" in view.colour_problem("feat:rna:NOPE")
    assert "close matches: rna:G0003" in view.colour_problem("feat:rna:g0003")
    assert "z1 to z10" in view.colour_problem("z:99") and view.colour_problem("z:2") is None


def test_colour_options_search(view):
    opts = view.colour_options("p0")
    assert opts and all("p0" in o["label"].lower() or o["label"].endswith("(close match)") for o in opts)
    assert opts[0]["value"].startswith("feat:prot:P0")
    typo = view.colour_options("G00o1")  # no feature contains it: said so, close matches offered
    assert typo[0]["disabled"] and "not a feature of this run" in typo[0]["label"]
    assert any(o["label"].endswith("(close match)") and o["value"].startswith("feat:rna:G00") for o in typo)
    exact = view.colour_options("g0003")  # any case, the exact name first
    assert exact[0]["value"] == "feat:rna:G0003"
    assert {"label": "cluster", "value": "obs:scmm_cluster"} in view.colour_options()


def test_lasso_polygon_and_box(view):
    xy = view.coords("X_umap_scmm")
    x0, x1 = float(xy[:, 0].min()) - 1, float(np.median(xy[:, 0]))
    y0, y1 = float(xy[:, 1].min()) - 1, float(xy[:, 1].max()) + 1
    event = {"lassoPoints": {"x": [x0, x1, x1, x0], "y": [y0, y0, y1, y1]}}
    idx = embeddings.selection_from_event(view, "joint", event)
    assert set(idx) == set(np.flatnonzero(xy[:, 0] <= x1))
    box = embeddings.selection_from_event(view, "joint", {"range": {"x": [x1, x0], "y": [y0, y1]}})
    assert set(box) == set(idx)
    assert embeddings.selection_from_event(view, "joint", None) == []


def test_embedding_figure_and_patch(view):
    fig = embeddings.colour_figure(view, "rna", "feat:prot:P01")
    assert fig.data[0].type == "scattergl" and "prot:P01" in fig.layout.title.text
    patch = embeddings.colour_patch(view, "rna", *embeddings.coloured(view, "obs:cell_type"), False).to_plotly_json()
    touched = [op["location"] for op in patch["operations"]]
    assert ["data", 0, "marker"] in touched and ["data", 0, "x"] not in touched  # categorical: colours only


def test_continuous_colour_draws_high_values_on_top(view):
    values = view.feature_values("prot", "P01")
    fig = embeddings.colour_figure(view, "rna", "feat:prot:P01")
    key, _ = view.embeddings()["rna"]
    drawn_ids = np.asarray(fig.data[0].text)
    order = np.argsort(values, kind="stable")
    assert list(drawn_ids) == list(view.cell_ids[order])          # hover ids follow the points
    assert drawn_ids[-1] == view.cell_ids[np.argmax(values)]      # the highest cell is drawn last (on top)
    x = np.frombuffer(base64.b64decode(fig.data[0].x["bdata"]), np.float32)
    assert np.allclose(x, view.coords(key)[order, 0])
    # the switch to a continuous colour re-sends the points in that order; back to groups resets it
    to_feature = embeddings.colour_patch(view, "rna", *embeddings.coloured(view, "feat:prot:P01"), False)
    back = embeddings.colour_patch(view, "rna", *embeddings.coloured(view, "obs:cell_type"), True)
    for patch in (to_feature, back):
        assert ["data", 0, "x"] in [op["location"] for op in patch.to_plotly_json()["operations"]]
    # a clicked point is mapped back to its cell through the drawing order
    last = view.n_cells - 1
    picked = embeddings.selection_from_event(view, "rna", {"points": [{"curveNumber": 0, "pointIndex": last}]},
                                             order)
    assert picked == [int(order[-1])] and values[picked[0]] == values.max()


def test_traversal_page_slices_the_cache(view):
    trav = view.traversal()
    assert trav.n_dims == 10 and trav.modalities == ["rna", "prot"]
    bars, profile, table, shown = traversal.traversal_figures(trav, dim=1, step=15, mod="rna", logp=2, n=5,
                                                              extra=["G0007", "../x", 3])
    assert shown[-1] == "G0007" and "../x" not in shown and len(shown) <= 7  # the user's feature, checked
    assert [t.name for t in profile.data] == shown
    at = str(traversal.decoded_at(trav, 1, 15, "rna", shown))
    assert f"At z2 = {trav.steps[15]:g} σ the decoder gives" in at and "G0007" in at
    assert set(table.direction) <= {"positive", "negative"} and len(table) > 0
    assert (table.pvalue < 1e-2).all()
    assert sum(len(t.y) for t in bars.data) <= 10
    band, marker = profile.layout.shapes  # where the cells lie (in sigma units), then the marker
    assert (band.x0, band.x1) == tuple(trav.occupied[1] / trav.sigma[1]) and marker.x0 == trav.steps[15]
    ops = traversal.marker_patch(trav, 1, 3).to_plotly_json()["operations"]
    assert ops[0]["params"]["value"][-1]["x0"] == trav.steps[3]
    assert ops[0]["params"]["value"][0]["x0"] == band.x0


def test_generation_panels(view):
    tables = view.heatmap_tables()
    chosen, titles = generation.panels(tables, "prot", view.modalities)
    assert list(titles.values()) == ["prot: original", "prot: reconstruction", "prot generated from rna"]
    fig = generation.cluster_scatter(tables, "prot", view.modalities)
    assert "Pearson r" in fig.layout.title.text


def test_data_page_summary_and_error_views(tmp_path):
    from app.pages import data as data_page
    result = {"ok": True, "summary": {"n_cells": 10, "modalities": {
        "rna": {"n_features": 5, "median_counts_per_cell": 100.0, "mean_counts_per_cell": 110.0,
                "sparsity": 0.5}}}, "kinds": {"rna": "rna"}, "likelihoods": {"rna": "nb"}}
    frame = data_page.summary_frame(result)
    assert frame.loc[0, "likelihood"] == "nb" and frame.loc[0, "n_cells"] == 10
    assert "10 cells" in str(data_page.summary_view(result, "/x/d.h5mu"))
    error = data_page.summary_view({"ok": False, "error": "not a valid HDF5 file"}, "/x/bad.h5ad")
    assert error.id == "data-error" and "not a valid HDF5 file" in str(error)


def test_upload_is_stored_under_a_server_name_with_its_original_name_kept(tmp_path):
    import io

    from app import uploads
    name, size = uploads.save_stream(io.BytesIO(b"abc"), tmp_path / "uploads", "../../my file.h5ad", 100)
    assert size == 3 and name.endswith(".h5ad") and "my" not in name
    assert (tmp_path / "uploads" / name).read_bytes() == b"abc"
    listed = {d["value"]: d["label"] for d in data_access.list_datasets(tmp_path)}
    assert listed == {f"uploads/{name}": "my file.h5ad (uploaded)"}
    assert data_access.resolve_dataset(tmp_path, f"uploads/{name}") == (tmp_path / "uploads" / name).resolve()
    for hostile in ("../etc/passwd", "/etc/passwd", "uploads/../../x.h5ad", None, 3, "a\x00b"):
        assert data_access.resolve_dataset(tmp_path, hostile) is None
    import pytest as _pytest
    with _pytest.raises(OverflowError):
        uploads.save_stream(io.BytesIO(b"x" * 101), tmp_path / "uploads", "big.h5mu", 100)
    with _pytest.raises(ValueError):
        uploads.save_stream(io.BytesIO(b"x"), tmp_path / "uploads", "progress.json", 100)
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == sorted([name, name.split(".")[0] + ".json"])


def test_every_page_lays_out_for_a_run_and_without_one(run_dir, tmp_path):
    from app.main import PAGES, create_app
    app = create_app(tmp_path / "data", run_dir.parent, tmp_path / "cache", write_demo=False, schedule=False)
    assert app.scmm_config.runs_dir == run_dir.parent.resolve()
    cfg = app.scmm_config
    empty = create_app(tmp_path / "data", tmp_path / "no-runs", tmp_path / "cache", write_demo=False,
                       schedule=False).scmm_config
    for path, _, module in PAGES:
        assert module.layout(cfg, "syn", {"color": "feat:rna:G0001", "dim": "3"}) is not None
        if path not in ("/data", "/train"):
            assert "no-run" in str(module.layout(empty, None, {}))


def test_modality_names_and_kinds_are_checked_and_kept_per_dataset(tmp_path):
    data_access.save_dataset_naming(tmp_path, "x.h5mu", {"prot.v2": "adt", "rna": "rna"},
                                    {"adt": "protein", "rna": "rna"})
    assert data_access.dataset_naming(tmp_path, "x.h5mu") == {"names": {"prot.v2": "adt", "rna": "rna"},
                                                              "kinds": {"adt": "protein", "rna": "rna"}}
    assert data_access.dataset_naming(tmp_path, "other.h5mu") == {}
    for names, kinds, message in (({"a": "bad name"}, {}, "modality names must be"),
                                  ({"a": "x", "b": "x"}, {}, "must differ"),
                                  ({"a": "x"}, {"x": "dna"}, "kinds must be among")):
        with pytest.raises(ValueError, match=message):
            data_access.save_dataset_naming(tmp_path, "y.h5mu", names, kinds)
    assert data_access.dataset_naming(tmp_path, "y.h5mu") == {}
    data_access._naming_file(tmp_path, "x.h5mu").write_text("[1, 2]")  # a malformed file: no naming
    assert data_access.dataset_naming(tmp_path, "x.h5mu") == {}


def test_named_clusters_become_an_annotation_and_name_heatmap_rows(tmp_path):
    import shutil

    from scmm import runfolder
    run = tmp_path / "named"
    shutil.copytree(synthetic.make_run(tmp_path / "src", n_cells=200, n_genes=30), run)
    runfolder.write_annotation(run, {"0": "T cells", "1": "T cells", "2": " ", "3": "B cells"})
    assert runfolder.read_annotation(run) == {"0": "T cells", "1": "T cells", "3": "B cells"}
    view = data_access.get_run(run)
    assert view.obs_columns()[0] == "annotation"
    ann = view.mdata.obs["annotation"].astype(str)
    clusters = view.mdata.obs["scmm_cluster"].astype(str)
    assert set(ann[clusters.isin(["0", "1"])]) == {"T cells"} and set(ann[clusters == "2"]) == {"cluster 2"}
    tables = generation.named(view.heatmap_tables(), view)
    rows = list(tables["rna|original"].index)
    assert "T cells (0)" in rows and "B cells (3)" in rows and rows == sorted(rows, key=str.lower)
    with pytest.raises(ValueError):
        runfolder.write_annotation(run, {"0": "x" * 101})
    (run / "annotation.json").write_text('{"names": [1]}')  # malformed: the run is unreadable, says why
    assert data_access.get_run(run) is None and "annotation.json" in data_access.run_problem(run)


def test_the_traversal_point_is_placed_among_its_nearest_cells(view):
    trav = view.traversal()
    x, y = traversal.traversal_point(view, trav, dim=2, step=15)
    latent = np.asarray(view.mdata.obsm["X_scmm"], dtype=np.float64)
    point = np.zeros(latent.shape[1])
    point[2] = trav.grid[2, 15]
    nearest = np.argsort(((latent - point) ** 2).sum(axis=1))[:traversal.NEIGHBOURS]
    xy = view.coords("X_umap_scmm")[nearest]
    assert np.allclose((x, y), xy.mean(axis=0), atol=1e-5)
    fig = traversal.traversal_umap(view, trav, 2, 15)
    assert len(fig.data) == 2 and fig.data[1].marker.symbol == "star" and "z3" in fig.layout.title.text


def test_a_subsampled_selection_ranking_says_so():
    import pandas as pd
    from app.pages.embeddings import sampled_note
    table = pd.DataFrame({"feature": ["a"]})
    table.attrs.update(cells_tested={"selection": 20000, "rest": 20000}, subsampled=True)
    text = str(sampled_note(table, 50000, 1000000).children)
    assert "20,000 of the 50,000 selected" in text and "20,000 of the other 950,000" in text
    table.attrs["subsampled"] = False
    assert sampled_note(table, 50, 1000) is None


def test_the_embeddings_page_names_the_atlas_scale_approximations(tmp_path):
    import mudata as md
    from app.main import create_app
    run_dir = synthetic.make_run(tmp_path / "runs" / "big", n_cells=300, n_genes=40)
    app = create_app(tmp_path / "data", run_dir.parent, tmp_path / "cache", write_demo=False, schedule=False)
    assert "fitted on a random" not in str(embeddings.layout(app.scmm_config, "big", {}))
    mdata = md.read_h5mu(run_dir / "results.h5mu")
    mdata.uns["scmm_umap_params"] = {"n_cells": 300, "fit_cells": 120, "seed": 0}
    mdata.uns["scmm_cluster_params"] = {"neighbors": "approximate", "k": 20}
    mdata.write(run_dir / "results.h5mu")
    page = str(embeddings.layout(app.scmm_config, "big", {}))
    assert "fitted on a random 120 of the 300 cells" in page
    assert "approximate nearest neighbours" in page
    mdata.uns["scmm_umap_params"] = {"n_cells": 999, "fit_cells": "all"}  # stale or malformed: no claim
    mdata.uns["scmm_cluster_params"] = {"neighbors": "exact"}
    mdata.write(run_dir / "results.h5mu")
    assert data_access.get_run(run_dir).approximation_notes() == []


def test_the_group_list_keeps_every_group_shown_when_too_long_to_list():
    codes = np.arange(300)
    c = {"kind": "categorical", "values": codes, "categories": [str(i) for i in codes]}
    spec = {"groups": [(str(i), "#000000") for i in codes]}
    options, value, _ = embeddings.group_legend(c, spec)
    assert len(options) == 1 and options[0]["disabled"] and "300 groups" in options[0]["label"]
    assert value == list(range(300))
    options, value, _ = embeddings.group_legend(c | {"values": codes[:5], "categories": c["categories"][:5]},
                                                {"groups": spec["groups"][:5]})
    assert len(options) == 5 and value == [0, 1, 2, 3, 4]


def test_a_run_with_many_clusters_lists_the_largest_for_naming_and_keeps_the_others_names(tmp_path, monkeypatch):
    from scmm import runfolder
    from app.main import create_app
    monkeypatch.setattr(embeddings, "LISTED_GROUPS", 3)
    run = synthetic.make_run(tmp_path / "runs" / "many", n_cells=300, n_genes=30)
    view = data_access.get_run(run)
    clusters = view.mdata.obs["scmm_cluster"].astype(str)
    sizes = clusters.value_counts()
    assert len(sizes) > 3
    unlisted = sizes.index[-1]
    runfolder.write_annotation(run, {unlisted: "rare type"})
    card = str(embeddings.naming_card(data_access.get_run(run)))
    assert f"the 3 largest of {len(sizes)} clusters" in card and card.count("'cl-name'") == 3
    app = create_app(tmp_path / "data", run.parent, tmp_path / "cache", write_demo=False, schedule=False)
    save = next(v["callback"] for k, v in app.callback_map.items() if k.startswith("..cl-msg.children"))
    listed = list(sizes.index[:3])
    save.__wrapped__(1, ["big one", "", ""], [{"role": "cl-name", "c": c} for c in listed], "many")
    assert runfolder.read_annotation(run) == {listed[0]: "big one", unlisted: "rare type"}
