"""The Chromatin page in headless Chromium, on the planted-motif simulation (tests/_chromatin_runs.py):
the planted motif heads its dimension's table, the activity heatmaps and the region tracks draw, a typed
gene moves the tracks, an unknown one is said, and the tracks export as SVG.  Screenshots go where
tests/ui/test_browser.py puts them (``SCMM_UPDATE_SCREENSHOTS=1``: docs/screenshots/)."""
from __future__ import annotations

import pytest
from test_browser import click_id, plot_of, retype, severe_logs, shot, visit, wait_for_download, wait_js

from app.main import create_app
from scmm.demo_chromatin import PLANTED_ID
from scmm.tl.chromatin_io import read_chromatin

pytestmark = [pytest.mark.ui, pytest.mark.filterwarnings("ignore::UserWarning:mudata")]


def best_dimension(run) -> tuple[int, str]:
    """The dimension and direction whose peaks hold the planted motif most significantly."""
    table = read_chromatin(run).enrichment
    row = table[table["motif"] == PLANTED_ID].sort_values("pvalue").iloc[0]
    return int(row["dim"]), str(row["direction"])


def scroll_to_plot(dash_duo, graph: str) -> None:
    dash_duo.driver.execute_script(f"{plot_of(graph)}.scrollIntoView();")


def test_chromatin_page(dash_duo, tmp_path, shots, planted_chromatin_run):
    run = planted_chromatin_run["run"]
    dim, direction = best_dimension(run)
    app = create_app(tmp_path / "data", run.parent, tmp_path / "cache", write_demo=False)
    dash_duo.start_server(app)
    dash_duo.driver.set_window_size(1366, 768)

    visit(dash_duo, "/chromatin", run=run.name, dim=dim)
    if direction == "negative":
        dash_duo.wait_for_element("#chrom-direction")
        dash_duo.driver.execute_script(
            "document.querySelector('#chrom-direction input[value=negative]').click();")
    dash_duo.wait_for_element("#chrom-enrich-rows td", timeout=60)
    first = dash_duo.find_element("#chrom-enrich-rows tbody tr td").text
    assert first == "planted"
    bars = wait_js(dash_duo, f"const g = {plot_of('motif-bars')}; return g && g.data && g.data[0].y;")
    assert bars[-1] == f"planted ({PLANTED_ID})"
    shot(dash_duo, shots, "chromatin-motifs")

    heat = wait_js(dash_duo, f"const g = {plot_of('motif-activity')}; return g && g.data && g.data.length;")
    assert heat == 2
    scroll_to_plot(dash_duo, "motif-activity")
    shot(dash_duo, shots, "chromatin-activity")

    # the tracks start at the gene of the most variable peak; a typed gene redraws them
    wait_js(dash_duo, f"const g = {plot_of('region-tracks')}; return g && g.data && g.data.length > 2;")
    gene = read_chromatin(run).peak_genes["gene"].iloc[-1]
    retype(dash_duo, "chrom-region", gene + "\n")
    dash_duo.wait_for_contains_text("#chrom-region-msg", "peaks in chr", timeout=30)
    title = wait_js(dash_duo, f"const g = {plot_of('region-tracks')}; return g && g.layout.title.text;")
    assert title.startswith("chr")
    scroll_to_plot(dash_duo, "region-tracks")
    shot(dash_duo, shots, "chromatin-region")
    click_id(dash_duo, {"role": "export-svg", "g": "region-tracks"})
    svg = wait_for_download(dash_duo.download_path, ".svg", timeout=90)
    assert b"<svg" in svg.read_bytes()[:2000]

    retype(dash_duo, "chrom-region", "NoSuchGene\n")
    dash_duo.wait_for_contains_text("#chrom-region-msg", "neither a region", timeout=30)
    assert not severe_logs(dash_duo)
