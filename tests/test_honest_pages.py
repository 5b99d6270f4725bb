"""The explorer says when it cannot show what was asked, and shows the library's warnings (live server)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import synthetic_run
from live_server import DashClient, free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("honest")
    synthetic_run.make_run(folder / "runs" / "syn", n_cells=300, n_genes=40)
    (folder / "data").mkdir()
    port = free_port()
    proc = start_server(folder / "data", folder / "runs", folder / "cache", port, folder / "server.log")
    yield {"folder": folder, "client": DashClient(f"http://127.0.0.1:{port}")}
    stop_server(proc)


def page(client, path, search):
    return json.dumps(client.call("page.children", {"url.pathname": path}, {"url.search": search}))


@pytest.mark.parametrize("path, search, words", [
    ("/embeddings", "?run=syn&color=feat:rna:NOPE", ["Cannot show colour feat:rna:NOPE", "is not among the 40 rna features",
                                                      "Showing coloured by cluster instead"]),
    ("/embeddings", "?run=syn&color=feat:rna:g0003", ["close matches: rna:G0003"]),
    ("/embeddings", "?run=syn&color=z:99", ["this run has z1 to z10"]),
    ("/embeddings", "?run=syn&emb=tsne", ["Cannot show embedding tsne"]),
    ("/embeddings", "?run=nope", ["Cannot show run 'nope'", "there is no such run on this server",
                                   "the newest run, syn"]),
    ("/traversal", "?run=syn&dim=99", ["Cannot show dimension '99'", "(z1 to z10)", "Showing z1 instead"]),
    ("/traversal", "?run=syn&mod=atac", ["Cannot show modality 'atac'", "this run has rna, prot"]),
    ("/generation", "?run=syn&target=atac", ["Cannot show modality 'atac'", "Showing prot instead"]),
    ("/nosuchpage", "", ["Cannot show page /nosuchpage", "there is no such page", "the Data page"]),
])
def test_what_cannot_be_shown_is_said(server, path, search, words):
    text = page(server["client"], path, search)
    for word in words:
        assert word in text, word


def test_the_traversal_page_ranks_dimensions_and_marks_weak_ones(server):
    text = page(server["client"], "/traversal", "?run=syn")
    assert "All dimensions, strongest first" in text and "trav-overview" in text
    assert "cells' s.d. / prior s.d." in text and "weak, \\u2205 inactive" in text


def test_a_valid_request_shows_no_note(server):
    text = page(server["client"], "/embeddings", "?run=syn&color=feat:rna:G0003")
    assert "Cannot show" not in text


@pytest.fixture(scope="module")
def tiny(server, tmp_path_factory):
    """A real (1-epoch) run of the demo in the server's runs folder; returns the demo file."""
    import scmm
    demo = tmp_path_factory.mktemp("tiny") / "demo.h5mu"
    scmm.demo.simulate(n_cells=300, seed=2).write(demo)
    out = subprocess.run([sys.executable, "-m", "scmm", "train", str(demo), "--out", str(server["folder"] / "runs" / "tiny"),
                          "--epochs", "1", "--n-top-genes", "300", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return demo


def test_prediction_warnings_reach_the_page(server, tiny):
    """A query missing most training genes: the library's zero-fill warning is shown beside the result."""
    import mudata as md
    data = server["folder"] / "data"
    query = md.read_h5mu(tiny).mod["rna"][:50, :40].copy()
    query.write_h5ad(data / "query.h5ad")
    result = server["client"].call("gen-query-status.children", {"gen-query-run.n_clicks": 1},
                                   {"gen-query.value": "query.h5ad", "gen-query-source.value": "rna",
                                    "gen-query-target.value": "prot", "gen-run.data": "tiny"})
    text = json.dumps(result)
    assert "gen-query-done" in text and "partly missing input" in text
    assert "The library warned" in text and "training features are missing" in text and "filled with zeros" in text


def test_a_query_that_measured_the_target_gets_its_quality(server, tiny):
    """A query .h5mu holding both modalities: the prediction is compared with what it measured."""
    import mudata as md
    import scmm
    data = server["folder"] / "data"
    query = scmm.demo.simulate(n_cells=120, seed=9)
    md.MuData({"rna": query.mod["rna"], "prot": query.mod["prot"]}).write(data / "both.h5mu")
    result = json.dumps(server["client"].call(
        "gen-query-status.children", {"gen-query-run.n_clicks": 1},
        {"gen-query.value": "both.h5mu", "gen-query-source.value": "rna", "gen-query-target.value": "prot",
         "gen-run.data": "tiny"}))
    assert "gen-query-quality" in result and "Against the prot the query measured: median per-feature" in result
    assert "120 cells" in result


def test_heatmap_rows_can_be_any_cell_annotation(server, tiny):
    """Group the heatmaps by the demo's cell types instead of clusters: computed once, then shown."""
    client = server["client"]
    out = client.call("gen-grouped.data", {"gen-groupby.value": "cell_type"},
                      {"gen-run.data": "tiny", "gen-grouped.data": 0})
    assert out["gen-grouped.data"] == 1 and "rows: the groups of cell_type" in json.dumps(out)
    shown = json.dumps(client.call('{"g":"heatmaps","role":"graph"}.figure',
                                   {"gen-target.value": "prot", "gen-groupby.value": "cell_type", "gen-grouped.data": 1},
                                   {"gen-run.data": "tiny"}, trigger="gen-groupby.value"))
    assert "marker features per cell_type" in shown and "CD4 T" in shown
    refused = json.dumps(client.call("gen-grouped.data", {"gen-groupby.value": "../x"},
                                     {"gen-run.data": "tiny", "gen-grouped.data": 0}))
    assert "is not a grouping of this run" in refused
