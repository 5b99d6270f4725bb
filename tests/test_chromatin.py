"""The chromatin analyses end to end on the planted-motif simulation: train -> analyze -> traversal ->
motif enrichment ranks the planted motif first; a control with the motif in random peaks does not."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import scmm
import scmm.cli
from scmm.demo_chromatin import PLANTED_ID
from scmm.runfolder import CLUSTER_KEY, RunFileError
from scmm.tl.chromatin_io import chromatin_folder, read_chromatin
from scmm.tl.regions import nearest_genes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def planted_run(planted_chromatin_run):
    return planted_chromatin_run


@pytest.fixture(scope="module")
def control_run(tmp_path_factory):
    from _chromatin_runs import planted_run as make
    return make(tmp_path_factory.mktemp("control"), planted="random")


def _planted_ranks(run):
    table = read_chromatin(run).enrichment
    out = []
    for (dim, direction), group in table.groupby(["dim", "direction"]):
        group = group.sort_values(["pvalue", "fold_enrichment"], ascending=[True, False])
        rank = int(np.flatnonzero(group["motif"].to_numpy() == PLANTED_ID)[0]) + 1
        out.append((rank, float(group.loc[group["motif"] == PLANTED_ID, "p_adjust"].iloc[0]), int(dim), direction))
    return sorted(out)


def test_planted_motif_ranks_first_in_the_dimension_of_its_program(planted_run):
    rank, p_adjust, dim, direction = _planted_ranks(planted_run["run"])[0]
    assert rank == 1 and p_adjust < 1e-6, (rank, p_adjust)
    # that dimension's peaks are program 0's, where the motif was planted
    trav = scmm.tl.Traversal.load(planted_run["run"] / "traversal.npz")
    peaks = trav.associated(dim, "atac", direction=direction)["feature"]
    programs = planted_run["mdata"]["atac"].var["program"]
    assert (programs.loc[peaks] == 0).mean() > 0.5


def test_motif_in_random_peaks_is_not_enriched(control_run):
    best = _planted_ranks(control_run["run"])
    assert all(p_adjust > 0.05 for _, p_adjust, _, _ in best), best[:3]
    assert best[0][0] > 1 or best[0][1] > 0.05


def test_saved_outputs_are_complete_and_consistent(planted_run):
    run, mdata = planted_run["run"], scmm.read(planted_run["run"] / "results.h5mu")
    res = read_chromatin(run, labels=mdata.obs[CLUSTER_KEY].astype(str))
    assert not res.stale
    clusters = sorted(mdata.obs[CLUSTER_KEY].astype(str).unique(), key=int)
    assert res.groups == clusters
    assert set(res.activity) == {"original", "from_rna", "from_atac"} and res.sources == ["from_rna", "from_atac"]
    for table in res.activity.values():
        assert list(table.index) == clusters and table.shape[1] == 40
    assert set(res.similarity["source"]) == {"from_rna", "from_atac"}
    assert (res.similarity["pearson_r"] > 0.5).all()       # generated motif activity follows the original
    # the tracks hold every peak per cluster; the original equals total counts / depth x 1e4
    atac = mdata["atac"]
    assert res.accessibility["original"].shape == (len(clusters), atac.n_vars)
    in_first = (mdata.obs[CLUSTER_KEY].astype(str) == clusters[0]).to_numpy()
    counts = np.asarray(atac.X[in_first].sum(axis=0)).ravel()
    depth = atac.obs["scmm_library"].to_numpy()[in_first].sum()
    np.testing.assert_allclose(res.accessibility["original"][0], counts / depth * 1e4, rtol=1e-4)
    expected = nearest_genes(list(atac.var_names), planted_run["gtf"])
    pd.testing.assert_series_equal(res.peak_genes["gene"], expected["gene"], check_names=False,
                                   check_index=False)
    assert res.gene_models["exons"].map(len).min() >= 1
    assert read_chromatin(run, labels=pd.Series(["0"] * mdata.n_obs)).stale


def test_a_malformed_file_is_named(planted_run, tmp_path):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(planted_run["run"], copy)
    folder = chromatin_folder(copy)
    (folder / "motif_activity_original.csv").write_text("cluster,m1\n0,not-a-number\n")
    with pytest.raises(RunFileError, match="motif_activity_original.csv"):
        read_chromatin(copy)
    (folder / "cluster_accessibility.npz").write_bytes(b"garbage")
    (folder / "motif_activity_original.csv").unlink()
    with pytest.raises(RunFileError):
        read_chromatin(copy)


def _jaspar_file(motifs, path):
    lines = []
    for motif_id, name, counts in zip(motifs.ids, motifs.names, motifs.counts):
        lines.append(f">{motif_id}\t{name}")
        for base, column in zip("ACGT", np.asarray(counts).T):
            lines.append(f"{base} [ " + " ".join(str(int(round(v))) for v in column) + " ]")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_with_a_motif_file_and_clear_errors(planted_run, tmp_path, capsys):
    import shutil
    motif_file = _jaspar_file(planted_run["motifs"].subset(planted_run["motifs"].ids[-5:]), tmp_path / "m.jaspar")
    run = str(shutil.copytree(planted_run["run"], tmp_path / "run"))
    assert scmm.cli.main(["chromatin", run, "--fasta", str(planted_run["fasta"]), "--motifs", str(motif_file),
                          "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "5 motifs" in out and "saved in" in out
    assert read_chromatin(run).summary["n_motifs"] == 5
    assert scmm.cli.main(["chromatin", run, "--fasta", str(tmp_path / "missing.fa"), "--motifs", str(motif_file)]) == 2
    assert "missing.fa" in capsys.readouterr().err
    other = tmp_path / "other.fa"
    other.write_text(">chrX\n" + "ACGT" * 100 + "\n")
    assert scmm.cli.main(["chromatin", run, "--fasta", str(other), "--motifs", str(motif_file)]) == 2
    assert "chr1" in capsys.readouterr().err
    # the failed runs stopped before writing anything: the last analysis is intact
    assert read_chromatin(run).summary["n_motifs"] == 5


# ---------------------------------------------------------------- the app's Chromatin page (live server)
@pytest.fixture(scope="module")
def server(planted_run, tmp_path_factory):
    from live_server import DashClient, free_port, start_server, stop_server
    folder = tmp_path_factory.mktemp("chromatin-app")
    (folder / "data").mkdir()
    port = free_port()
    proc = start_server(folder / "data", planted_run["run"].parent, folder / "cache", port, folder / "server.log")
    yield DashClient(f"http://127.0.0.1:{port}")
    stop_server(proc)


def _page(client, search):
    import json
    return json.dumps(client.call("page.children", {"url.pathname": "/chromatin"}, {"url.search": search}))


def _cells(component) -> list[str]:
    """The texts of a rendered table's body cells, in order."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Td":
                found.append(str(node["props"].get("children")))
                return
            walk(node.get("props", {}).get("children"))
        elif isinstance(node, list):
            for child in node:
                walk(child)
    walk(component)
    return found


def _best_planted_dim(run):
    rank, _, dim, direction = _planted_ranks(run)[0]
    assert rank == 1
    return dim, direction


def test_page_shows_the_planted_motif_of_its_dimension(planted_run, server):
    dim, direction = _best_planted_dim(planted_run["run"])
    text = _page(server, f"?run=run&dim={dim}")
    assert "Motifs enriched in a dimension's peaks" in text and "Motif activity" in text
    out = server.call("chrom-enrich-table.children", {"chrom-dim.value": dim, "chrom-direction.value": direction},
                      {"chrom-run.data": "run"})
    cells = _cells(out["chrom-enrich-table.children"])
    assert cells[:2] == ["planted", PLANTED_ID]                       # first row: the planted motif
    assert "enriched at BH-adjusted p < 0.05" in out["chrom-enrich-msg.children"]
    bars = out['{"g":"motif-bars","role":"graph"}.figure']
    assert bars["data"][0]["y"][-1] == f"planted ({PLANTED_ID})"      # the top bar (drawn last)
    csv = server.call('{"role":"csv-download","t":"motif-enrichment"}.data',
                      {'{"role":"csv","t":"motif-enrichment"}.n_clicks': 1},
                      {"chrom-dim.value": dim, "chrom-direction.value": direction, "chrom-run.data": "run"})
    content = csv['{"role":"csv-download","t":"motif-enrichment"}.data']["content"]
    assert content.splitlines()[1].split(",")[4] == PLANTED_ID


def test_page_activity_and_region_tracks(planted_run, server):
    out = server.call('{"g":"motif-activity","role":"graph"}.figure', {"chrom-source.value": "from_rna"},
                      {"chrom-run.data": "run"})
    fig = out['{"g":"motif-activity","role":"graph"}.figure']
    assert len(fig["data"]) == 2 and "Pearson r with the original" in out["chrom-activity-r.children"]
    gene = read_chromatin(planted_run["run"]).peak_genes["gene"].iloc[0]
    out = server.call('{"g":"region-tracks","role":"graph"}.figure',
                      {"chrom-region.value": gene, "chrom-source.value": "from_rna"}, {"chrom-run.data": "run"})
    tracks = out['{"g":"region-tracks","role":"graph"}.figure']
    assert any(t.get("type") == "bar" for t in tracks["data"]) and "peaks in chr1:" in out["chrom-region-msg.children"]
    for bad, words in (("NOSUCHGENE", "neither a region"), ("chr1:1-5000000", "at most 2,000,000 bp"),
                       ("chr9:1-1000", "no peak of this run")):
        out = server.call("chrom-region-msg.children", {"chrom-region.value": bad, "chrom-source.value": "from_rna"},
                          {"chrom-run.data": "run"})
        assert words in str(out["chrom-region-msg.children"]), bad


def test_traversal_table_names_the_nearest_gene(planted_run, server):
    out = server.call("trav-table.children", {"trav-dim.value": 0, "trav-mod.value": "atac", "trav-logp.value": 3,
                                              "trav-n.value": 15, "trav-extra.value": []},
                      {"trav-step.value": 10, "trav-run.data": "run"})
    assert "nearest gene" in str(out["trav-table.children"]) and "Gene0" in str(out["trav-table.children"])


def test_page_without_analyses_says_how_to_make_them(planted_run, server):
    import shutil
    folder = chromatin_folder(planted_run["run"])
    hidden = folder.with_name("chromatin-hidden")
    shutil.move(folder, hidden)
    try:
        text = _page(server, "?run=run")
        assert "No chromatin analyses for this run yet" in text and "scmm chromatin runs/run --fasta" in text
        hidden.mkdir(parents=True, exist_ok=True)
        shutil.copytree(hidden, folder)
        (folder / "gene_models.csv").write_text("gene,chrom\nx,chr1\n")        # hostile / truncated
        stamp = (folder / "chromatin.json").stat().st_mtime_ns + 10 ** 9        # "rewritten" since read
        os.utime(folder / "chromatin.json", ns=(stamp, stamp))
        text = _page(server, "?run=run")
        assert "The chromatin analyses are unreadable" in text and "gene_models.csv" in text
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.move(hidden, folder)


def test_server_computes_with_its_own_genome(planted_run, tmp_path):
    """``scmm-app --genome-fasta --genes``: the page offers Compute; the browser names no path; a second
    request while one runs is refused; a missing genome file stops the server at start-up."""
    import shutil
    import subprocess
    import sys
    from types import SimpleNamespace

    from live_server import DashClient, free_port, start_server, stop_server

    from app.pages.chromatin import compute, run_lock

    runs = tmp_path / "runs"
    run = shutil.copytree(planted_run["run"], runs / "copy")
    shutil.rmtree(chromatin_folder(run))
    (tmp_path / "data").mkdir()
    port = free_port()
    proc = start_server(tmp_path / "data", runs, tmp_path / "cache", port, tmp_path / "server.log",
                        "--genome-fasta", planted_run["fasta"], "--genes", planted_run["gtf"])
    try:
        client = DashClient(f"http://127.0.0.1:{port}", timeout=600)
        text = _page(client, "?run=copy")
        assert "Compute the chromatin analyses" in text and "genome.fa" in text
        out = client.call("chrom-compute-status.children", {"chrom-compute.n_clicks": 1}, {"chrom-run.data": "copy"})
        assert "Show them" in str(out["chrom-compute-status.children"]), out
        res = read_chromatin(run)
        assert res.summary["n_motifs"] > 500 and res.peak_genes is not None     # JASPAR, with the GTF's genes
        assert "Recompute the chromatin analyses" in _page(client, "?run=copy")
    finally:
        stop_server(proc)
    cfg = SimpleNamespace(genome_fasta=planted_run["fasta"], genes=None, slots_dir=tmp_path / "slots", work_slots=1)
    with run_lock(run):
        error, _ = compute(cfg, run)
    assert "being computed already" in error
    started = subprocess.run([sys.executable, "-m", "app.main", "--genome-fasta", str(tmp_path / "nope.fa"),
                              "--data-dir", str(tmp_path / "d2"), "--runs-dir", str(runs)],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2 and "nope.fa is not a file" in started.stderr


def test_peaks_are_found_by_gene_and_tables_join_the_bundle(planted_run):
    from app import data_access
    from app.export import chromatin_tables
    view = data_access.get_run(planted_run["run"])
    gene = read_chromatin(planted_run["run"]).peak_genes["gene"].iloc[5]
    options = [o for o in view.colour_options(gene.lower()) if o["value"].startswith("feat:atac:")]
    assert options and all(f"· {gene} (" in o["label"] for o in options)
    names = [name for name, _, _ in chromatin_tables(view)]
    assert names == ["run_motif_enrichment.csv", "run_motif_activity_original.csv", "run_motif_activity_from_rna.csv",
                     "run_motif_activity_from_atac.csv", "run_peak_genes.csv"]
