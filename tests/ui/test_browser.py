"""End-to-end test of scMM Explorer in headless Chromium (dash[testing] ``dash_duo``).

One flow, in the order a biologist meets it: the demo's summary and a bad
file's error (Data) -> train a few epochs with live progress (Train) -> start
another job and cancel it -> colour-by, lasso, top features and a CSV
(Embeddings) -> traversal with a CSV and a PNG download (Traversal) ->
heatmaps and a prediction for an uploaded query (Generation).  Screenshots of
every page go to the test's temporary folder; ``SCMM_UPDATE_SCREENSHOTS=1``
writes them to docs/screenshots/ instead (the README's pictures):

    pytest -m ui tests/ui                                   # about 3-4 minutes on 2 cores
    SCMM_UPDATE_SCREENSHOTS=1 pytest -m ui tests/ui         # refresh the README screenshots
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from app import jobs
from app.main import create_app

pytestmark = [pytest.mark.ui, pytest.mark.filterwarnings("ignore::UserWarning:mudata")]
TRAIN_EPOCHS = 2


def shot(dash_duo, folder: Path, name: str) -> None:
    """Save a screenshot of the current page as <folder>/<name>.png."""
    time.sleep(0.8)  # let plotly finish drawing
    dash_duo.driver.save_screenshot(str(folder / f"{name}.png"))


def wait_for_download(folder: str, suffix: str, timeout: float = 60) -> Path:
    """The first complete file ending in ``suffix`` that appears in ``folder``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [p for p in Path(folder).glob(f"*{suffix}") if p.stat().st_size > 0]
        if done:
            return done[0]
        time.sleep(0.3)
    raise AssertionError(f"no {suffix} download in {folder}: {list(Path(folder).iterdir())}")


def visit(dash_duo, path: str, **query) -> None:
    """Open ``path`` with ``query`` on the test server."""
    url = dash_duo.server_url + path + ("?" + urlencode(query) if query else "")
    dash_duo.driver.get(url)


def click(dash_duo, element) -> None:
    """Click ``element`` (a CSS selector or a WebElement) through JavaScript (no overlap checks)."""
    if isinstance(element, str):
        element = dash_duo.wait_for_element(element)
    dash_duo.driver.execute_script("arguments[0].click();", element)


def wait_enabled(dash_duo, css: str, timeout: float = 60) -> None:
    """Wait until the element ``css`` is enabled (a background job's ``running`` released it)."""
    deadline = time.time() + timeout
    while not dash_duo.wait_for_element(css).is_enabled():
        assert time.time() < deadline, f"{css} stayed disabled"
        time.sleep(0.3)


def click_id(dash_duo, component_id: dict) -> None:
    """Click the element of a pattern-matching (dict) id."""
    dom_id = json.dumps(component_id, sort_keys=True, separators=(",", ":"))
    found = dash_duo.driver.execute_script(
        "const el = document.getElementById(arguments[0]); if (el) { el.click(); } return !!el;", dom_id)
    assert found, f"no element {dom_id}"


def pick_option(dash_duo, css: str, text: str) -> None:
    """Choose the option labelled ``text`` in the dcc.Dropdown ``css``."""
    click(dash_duo, css)
    deadline = time.time() + 10
    while time.time() < deadline:
        found = [e for e in dash_duo.driver.find_elements("css selector", "[role=option]") if e.text.strip() == text]
        if found:
            click(dash_duo, found[0])
            return
        time.sleep(0.2)
    raise AssertionError(f"no option {text!r} in {css}")


def write_query(demo: Path, out: Path, n_cells: int, n_genes: int) -> None:
    """A one-modality query: the first ``n_cells`` cells and ``n_genes`` genes of the demo's RNA, as .h5ad."""
    import mudata as md
    md.read_h5mu(demo).mod["rna"][:n_cells, :n_genes].copy().write_h5ad(out)


def write_renamed(demo: Path, out: Path) -> None:
    """The demo with its protein modality named as some public files do: "prot.v2"."""
    import mudata as md
    mdata = md.read_h5mu(demo)
    md.MuData({"rna": mdata.mod["rna"][:300].copy(), "prot.v2": mdata.mod["prot"][:300].copy()}).write(out)


def severe_logs(dash_duo) -> list:
    """Browser console errors, except GPU noise of software WebGL."""
    return [e for e in dash_duo.get_logs() if "WebGL" not in e["message"] and "GL Driver" not in e["message"]]


def plot_of(graph: str) -> str:
    """A JS expression for the plotly element of figure card ``graph``."""
    gid = json.dumps({"g": graph, "role": "graph"}, separators=(",", ":"))
    return f"document.getElementById({json.dumps(gid)}).querySelector('.js-plotly-plot')"


def wait_js(dash_duo, script: str, timeout: float = 30):
    """Poll ``script`` (returning a value) until it is truthy; return that value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = dash_duo.driver.execute_script(script)
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for: {script}")


def retype(dash_duo, element_id: str, text: str, timeout: float = 30) -> None:
    """Replace the text of input ``element_id`` once the page lets it be typed into (it may re-render)."""
    from selenium.common.exceptions import (ElementNotInteractableException, InvalidElementStateException,
                                            StaleElementReferenceException)
    deadline = time.time() + timeout
    while True:
        box = dash_duo.driver.execute_script("return document.getElementById(arguments[0]);", element_id)
        try:
            if box is None:
                raise ElementNotInteractableException(f"no element {element_id}")
            box.clear()
            box.send_keys(text)
            return
        except (ElementNotInteractableException, InvalidElementStateException, StaleElementReferenceException):
            # the input is re-rendered or briefly disabled (read-only) while its callback runs
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def lasso_left_half(dash_duo) -> None:
    """Emit a lasso selection over the left half of the (only) plot, as a user's drag does."""
    dash_duo.driver.execute_script("""
        const gd = document.querySelector('.js-plotly-plot');
        const [x0, x1] = gd._fullLayout.xaxis.range, [y0, y1] = gd._fullLayout.yaxis.range;
        const xm = (x0 + x1) / 2;
        gd.emit('plotly_selected', {points: [], lassoPoints: {x: [x0, xm, xm, x0], y: [y0, y0, y1, y1]}});
    """)


def test_full_flow(dash_duo, tmp_path, shots):
    data_dir, runs_dir = tmp_path / "data", tmp_path / "runs"
    data_dir.mkdir()
    (data_dir / "broken.h5ad").write_bytes(b"this is not an HDF5 file")
    app = create_app(data_dir, runs_dir, tmp_path / "cache")
    dash_duo.start_server(app)
    dash_duo.driver.set_window_size(1366, 768)  # a laptop screen: the README screenshots' size

    # 1. Data: the demo is preloaded and summarised; a bad file shows the reader's error
    dash_duo.wait_for_contains_text("#data-ncells", "3,000 cells", timeout=90)
    dash_duo.wait_for_contains_text("#data-table", "prot", timeout=60)
    shot(dash_duo, shots, "data")
    visit(dash_duo, "/data", data="broken.h5ad")
    dash_duo.wait_for_element("#data-error", timeout=90)
    assert "broken.h5ad" in dash_duo.find_element("#data-error").text

    # 2. Train a few epochs: live progress, loss curve, then the analysis
    visit(dash_duo, "/train")
    dash_duo.wait_for_element("#train-epochs")
    # the plan is shown before starting: epochs, optimiser steps, and why there is no estimate yet
    dash_duo.wait_for_contains_text("#train-plan-text", "optimiser steps", timeout=90)
    assert "no training measured on this server yet" in dash_duo.find_element("#train-plan-text").text
    dash_duo.find_element("#train-epochs").send_keys(str(TRAIN_EPOCHS))
    wait_enabled(dash_duo, "#train-start")
    click(dash_duo, "#train-start")
    dash_duo.wait_for_contains_text("#train-stage", "training", timeout=60)
    dash_duo.wait_for_contains_text("#train-stage", "analysing", timeout=180)
    shot(dash_duo, shots, "train")
    dash_duo.wait_for_contains_text("#train-result", "finished", timeout=400)
    runs = jobs.list_runs(runs_dir)
    assert len(runs) == 1 and runs[0]["status"] == "done" and runs[0]["analysed"]
    run_id = runs[0]["run"]
    assert len(runs[0]["history"]) == TRAIN_EPOCHS

    # 3. Start another job and cancel it: it stops and the runs table says so
    epochs = dash_duo.find_element("#train-epochs")
    epochs.clear()
    epochs.send_keys("200")
    wait_enabled(dash_duo, "#train-start")
    click(dash_duo, "#train-start")
    dash_duo.wait_for_contains_text("#train-stage", "training", timeout=60)
    wait_enabled(dash_duo, "#train-cancel")
    # closing the browser does not stop the job, and the reopened page follows it again
    dash_duo.driver.get("about:blank")
    time.sleep(1)
    visit(dash_duo, "/train")
    dash_duo.wait_for_contains_text("#train-stage", "training", timeout=60)
    wait_enabled(dash_duo, "#train-cancel")
    click(dash_duo, "#train-cancel")
    dash_duo.wait_for_contains_text("#train-result", "cancelled", timeout=120)
    statuses = {r["run"]: r["status"] for r in jobs.list_runs(runs_dir)}
    assert sorted(statuses.values()) == ["cancelled", "done"]
    dash_duo.wait_for_contains_text("#runs-table", "cancelled", timeout=10)

    # 4. Embeddings: deep link with a colour, lasso, top features, cells CSV
    visit(dash_duo, "/embeddings", run=run_id, color="feat:rna:CD3E")
    dash_duo.wait_for_element(".js-plotly-plot .scatterlayer, .js-plotly-plot canvas", timeout=60)
    dash_duo.wait_for_contains_text(".gtitle", "rna:CD3E", timeout=30)
    # a continuous colour is drawn with its highest cells last, i.e. on top
    last, top = wait_js(dash_duo, f"""const c = {plot_of('embedding')}._fullData[0].marker.color;
        return c && c.length === 3000 ? [c[c.length - 1], Math.max(...c)] : null;""")
    assert last == top
    # typing a gene in another case offers it first
    click(dash_duo, "#emb-colour")
    dash_duo.wait_for_element(".dash-dropdown-search", timeout=10).send_keys("cd3e")
    offered = wait_js(dash_duo, """const o = Array.from(document.querySelectorAll('[role=option]'))
            .map(e => e.innerText.trim());
        return o.includes('rna: CD3E') ? o : null;""")
    assert offered[0] == "rna: CD3E", offered
    dash_duo.find_element(".dash-dropdown-search").send_keys("\ue00c")  # Escape
    lasso_left_half(dash_duo)
    dash_duo.wait_for_contains_text("#sel-info", "cells selected", timeout=30)
    n_selected = int(dash_duo.find_element("#sel-info").text.split(" of ")[0].replace(",", ""))
    assert 0 < n_selected < 3000
    click(dash_duo, "#sel-rank")
    dash_duo.wait_for_element("#sel-features", timeout=120)
    shot(dash_duo, shots, "embeddings")
    click_id(dash_duo, {"role": "csv", "t": "selection-cells"})
    cells_csv = wait_for_download(dash_duo.download_path, "_cells.csv")
    assert len(cells_csv.read_text().strip().splitlines()) == n_selected + 1
    # name two clusters alike (merged), save: the embedding is coloured by the annotation, labelled
    for cluster in ("0", "1"):
        box = dash_duo.driver.execute_script("return document.getElementById(arguments[0]);",
                                             json.dumps({"c": cluster, "role": "cl-name"}, separators=(",", ":")))
        box.send_keys("Merged T")
    click(dash_duo, "#cl-save")
    dash_duo.wait_for_element("#cl-saved", timeout=60)
    dash_duo.wait_for_contains_text(".gtitle", "annotation", timeout=60)
    dash_duo.wait_for_contains_text(".js-plotly-plot", "Merged T", timeout=30)
    # the group legend toggles a group: its cells become transparent, the points back in their own order
    click(dash_duo, "#emb-groups input[type=checkbox]")
    hidden = wait_js(dash_duo, f"""const o = {plot_of('embedding')}._fullData[0].marker.opacity;
        return o && o.length ? Array.from(o).filter(v => v === 0).length : 0;""")
    assert 0 < hidden < 3000

    # 5. Traversal: bars, profile and table; CSV and PNG downloads
    visit(dash_duo, "/traversal", run=run_id, dim="1")
    dash_duo.wait_for_element("#trav-features", timeout=60)
    dash_duo.wait_for_contains_text(".gtitle", "z2", timeout=30)
    dash_duo.wait_for_contains_text("#trav-overview", "z1", timeout=30)  # every dimension, by strength
    # the traversal-value slider moves the star on the UMAP and the decoded values
    star = f"const d = {plot_of('traversal-umap')}.data; return d.length > 1 ? d[1].x[0] : null;"
    before, text_before = wait_js(dash_duo, star), dash_duo.find_element("#trav-at-text").text
    handle = dash_duo.find_element("#trav-step [role=slider]")
    handle.send_keys("\ue014" * 3)  # right arrow
    wait_js(dash_duo, star.replace("return d.length > 1 ? d[1].x[0] : null;",
                                   f"return d.length > 1 && d[1].x[0] !== {before};"))
    dash_duo.wait_for_element("#trav-at-text", timeout=30)
    wait_js(dash_duo, f"return document.getElementById('trav-at-text').innerText !== {json.dumps(text_before)};")
    shot(dash_duo, shots, "traversal")
    click_id(dash_duo, {"role": "csv", "t": "associated"})
    trav_csv = wait_for_download(dash_duo.download_path, "_associated.csv")
    assert trav_csv.read_text().startswith("dim,feature")
    click_id(dash_duo, {"role": "export-png", "g": "traversal-bars"})
    png = wait_for_download(dash_duo.download_path, ".png", timeout=90)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # 5b. Name and type the modalities of a dataset whose protein modality is called "prot.v2"
    write_renamed(data_dir / "demo.h5mu", data_dir / "renamed.h5mu")
    visit(dash_duo, "/data", data="renamed.h5mu")
    dash_duo.wait_for_contains_text("#data-naming", "prot.v2", timeout=90)
    retype(dash_duo, json.dumps({"m": "prot.v2", "role": "mod-name"}, separators=(",", ":"), sort_keys=True), "adt")
    click(dash_duo, "#data-naming-save")
    dash_duo.wait_for_element("#naming-ok", timeout=90)
    dash_duo.wait_for_contains_text("#data-table", "adt", timeout=30)

    # 6. Upload a one-modality query (streamed to the server under a name it chooses)
    write_query(data_dir / "demo.h5mu", tmp_path / "query_rna.h5ad", n_cells=100, n_genes=1500)
    visit(dash_duo, "/data")
    dash_duo.wait_for_element("#data-upload-input", timeout=30).send_keys(str(tmp_path / "query_rna.h5ad"))
    dash_duo.wait_for_contains_text("#upload-ok", "query_rna.h5ad", timeout=60)
    # one modality is a query, not a training set: the reader says so, under the file's own name
    dash_duo.wait_for_contains_text("#data-error", "query_rna.h5ad", timeout=90)
    assert not (data_dir / "uploads" / "query_rna.h5ad").exists()

    # 7. Generation: heatmaps side by side; prediction for the uploaded query, as CSV
    visit(dash_duo, "/generation", run=run_id)
    dash_duo.wait_for_contains_text("#gen-similarity", "cross-modal", timeout=60)
    dash_duo.wait_for_contains_text(".js-plotly-plot", "generated from", timeout=30)
    shot(dash_duo, shots, "generation")
    pick_option(dash_duo, "#gen-query", "query_rna.h5ad (uploaded)")
    click(dash_duo, "#gen-query-run")
    predicted = wait_for_download(dash_duo.download_path, "_prot_from_rna.csv", timeout=120)
    assert len(predicted.read_text().strip().splitlines()) == 100 + 1
    # the query lacks 500 of the 2,000 training genes: the library's warning is on the page
    dash_duo.wait_for_contains_text("#gen-query-warnings", "500 of 2000 training features are missing", timeout=30)
    assert "partly missing input" in dash_duo.find_element("#gen-query-done").text

    # 8. What cannot be shown is said: an unknown gene in the URL, an unknown page
    visit(dash_duo, "/embeddings", run=run_id, color="feat:rna:NOTAGENE")
    dash_duo.wait_for_contains_text(".not-shown", "'NOTAGENE' is not among", timeout=30)
    visit(dash_duo, "/traversal", run=run_id, dim="99")
    dash_duo.wait_for_contains_text(".not-shown", "dimension", timeout=30)
    visit(dash_duo, "/generation", run=run_id, target="atac")
    dash_duo.wait_for_contains_text(".not-shown", "atac", timeout=30)
    visit(dash_duo, "/nosuchpage")
    dash_duo.wait_for_contains_text(".not-shown", "there is no such page", timeout=30)

    assert severe_logs(dash_duo) == []


def drag_lasso(dash_duo, graph: str) -> None:
    """Draw a lasso over the middle of figure card ``graph`` with real mouse events (no points needed)."""
    dash_duo.driver.execute_script(f"""
        const el = {plot_of(graph)}.querySelector('.nsewdrag'), b = el.getBoundingClientRect();
        const cx = b.left + b.width / 2, cy = b.top + b.height / 2;
        const ev = (type, x, y, target) => target.dispatchEvent(new MouseEvent(type,
            {{clientX: x, clientY: y, bubbles: true, buttons: 1, button: 0, view: window}}));
        ev('mousedown', cx - 150, cy - 120, el);
        for (const [x, y] of [[cx - 150, cy + 120], [cx + 150, cy + 120], [cx + 150, cy - 120], [cx - 150, cy - 120]])
            ev('mousemove', x, y, document);
        ev('mouseup', cx - 150, cy - 120, document);
    """)


def test_raster_embedding(dash_duo, tmp_path, monkeypatch):
    """Above the threshold (lowered here to 2,000 cells) the cells are an image drawn on the server:
    the page says so, a colour change re-draws it, a lasso selects cells, hovering names a cell."""
    from app import raster
    from tests import synthetic_run
    monkeypatch.setattr(raster, "RASTER_ABOVE", 2000)
    runs_dir = tmp_path / "runs"
    synthetic_run.make_run(runs_dir / "big", n_cells=3000)
    dash_duo.start_server(create_app(tmp_path / "data", runs_dir, tmp_path / "cache", write_demo=False))
    visit(dash_duo, "/embeddings", run="big", color="obs:scmm_cluster")
    dash_duo.wait_for_contains_text("#emb-raster-note", "rasterised image of the 3,000 cells", timeout=60)
    image = f"try {{ return {plot_of('embedding')}._fullLayout.images[0].source; }} catch (e) {{ return null; }}"
    first = wait_js(dash_duo, image, timeout=60)
    assert first.startswith("data:image/png;base64,")
    assert dash_duo.driver.execute_script(f"return {plot_of('embedding')}.querySelectorAll('image').length") >= 1
    dash_duo.driver.execute_script("window.dash_clientside.set_props('emb-colour', {value: 'feat:rna:G0001'});")
    dash_duo.wait_for_contains_text(".gtitle", "rna:G0001", timeout=30)
    wait_js(dash_duo, f"return {plot_of('embedding')}._fullLayout.images[0].source !== {json.dumps(first)};")
    drag_lasso(dash_duo, "embedding")
    dash_duo.wait_for_contains_text("#sel-info", "cells selected", timeout=30)
    n_selected = int(dash_duo.find_element("#sel-info").text.split(" of ")[0].replace(",", ""))
    assert 0 < n_selected < 3000
    # hovering over a cell names it (found on the server) with its value
    from app import data_access
    x, y = (float(v) for v in data_access.get_run(runs_dir / "big").coords("X_umap_scmm")[0])
    dash_duo.driver.execute_script(f"""
        const gd = {plot_of('embedding')}, el = gd.querySelector('.nsewdrag'), b = el.getBoundingClientRect();
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        el.dispatchEvent(new MouseEvent('mousemove', {{clientX: b.left + xa.d2p({x}), clientY: b.top + ya.d2p({y}),
                                                       bubbles: true, view: window}}));
    """)
    hovered = dash_duo.wait_for_element("#emb-hover-cell", timeout=30).text
    assert hovered.startswith("cell") and "rna:G0001:" in hovered, hovered
    # a zoom re-draws the image of the range in view
    dash_duo.driver.execute_script(f"Plotly.relayout({plot_of('embedding')}, {{'xaxis.range': [{x - 1}, {x + 1}]}});")
    wait_js(dash_duo, f"return Math.abs({plot_of('embedding')}._fullLayout.images[0].x - {x - 1}) < 1e-6;")
    assert severe_logs(dash_duo) == []
