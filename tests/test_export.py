"""Publication-ready export (app/export.py): vector heatmaps, every tick label, sizes, bundles.

Renders with the warm kaleido (one Chromium for the module); no browser
page is driven.  Timing is not asserted here: see bench/export_speed.py.
"""
from __future__ import annotations

import io
import json
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synthetic_run as synthetic
from app import export, figures

ROOT = Path(__file__).resolve().parent.parent
PROTEINS = [f"CD{i}-TotalSeqB" for i in range(14)]
CLUSTERS = [str(c) for c in range(23)]


def heatmap_figure():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(23, 14)), index=pd.Index(CLUSTERS, name="cluster"), columns=PROTEINS)
    tables = {"prot|original": table, "prot|from_prot": table + 0.1, "prot|from_rna": table - 0.1}
    titles = {"prot|original": "prot: original", "prot|from_prot": "prot: reconstruction",
              "prot|from_rna": "prot generated from rna"}
    return figures.heatmaps(tables, titles, title="prot: marker features per cluster")


def tick_labels(svg: str, letter: str) -> dict[str, list[str]]:
    """``{axis class: [label, ...]}`` of the x or y tick labels in a plotly SVG (x, x2, x3...)."""
    out = {}
    for cls, text in re.findall(rf'<g class="({letter}\d*tick)"><text[^>]*>(.*?)</text>', svg):
        out.setdefault(cls, []).append(re.sub(r"<[^>]+>", "", text))
    return out


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def heat_svg():
    return export.render(heatmap_figure(), "svg", 1000, 500, 1, run_id="run7").decode()


def test_heatmaps_are_vector_cells_in_svg_and_pdf(heat_svg):
    fig = heatmap_figure()
    # plotly's own rendering embeds one raster image per heatmap panel
    plain = export.renderer().render(fig.to_dict(), "svg", 1000, 500).decode()
    assert plain.count("<image") == 3
    # the export draws every cell as a vector path instead
    assert heat_svg.count("<image") == 0
    cells = len(re.findall(r'<g class="point"><path', heat_svg))
    assert cells == 3 * 23 * 14
    pdf = export.render(fig, "pdf", 1000, 500, run_id="run7")
    assert pdf[:5] == b"%PDF-" and b"/Subtype /Image" not in pdf


def test_every_protein_and_cluster_is_labelled(heat_svg):
    xs, ys = tick_labels(heat_svg, "x"), tick_labels(heat_svg, "y")
    assert len(xs) == 3 and all(labels == PROTEINS for labels in xs.values())
    assert ys["ytick"] == CLUSTERS  # the shared y axis of the three panels
    assert "run7" in heat_svg and "marker features per cluster" in heat_svg


def test_labels_stay_when_the_export_is_small():
    svg = export.render(heatmap_figure(), "svg", 400, 300, run_id="r").decode()
    assert tick_labels(svg, "y")["ytick"] == CLUSTERS
    assert all(labels == PROTEINS for labels in tick_labels(svg, "x").values())


def test_every_bar_is_labelled():
    names = [f"chr1:{1000 * i}-{1000 * i + 500}" for i in range(60)]
    table = pd.DataFrame({"feature": names, "rho": np.linspace(1, -1, 60), "log2_fc": np.linspace(3, -3, 60),
                          "direction": ["positive"] * 30 + ["negative"] * 30})
    fig = figures.traversal_bars(table, title="z1 · atac", n=30)
    svg = export.render(fig, "svg", 700, 450, run_id="r").decode()
    assert sorted(tick_labels(svg, "y")["ytick"]) == sorted(names)


def test_size_and_scale_are_honoured():
    fig = figures.loss_curve([{"epoch": e, "train_loss": 1 / e, "test_loss": 1.1 / e} for e in range(1, 6)])
    assert png_size(export.render(fig, "png", 640, 300, 2)) == (1280, 600)
    assert png_size(export.render(fig, "png", 800, 400, 1)) == (800, 400)
    svg = export.render(fig, "svg", 640, 300, 3).decode()  # vector: scale does not apply
    assert 'width="640"' in svg and 'height="300"' in svg
    # no size given: the on-screen size (browser width, figure height), scale 2
    assert png_size(export.render(fig, "png", default_width=900)) == (1800, 640)


@pytest.mark.parametrize("width,height,scale,words", [
    (100, None, None, "width must be between 200 and 6000"),
    (None, 7000, None, "height must be between 200 and 6000"),
    (800, 600, 5, "scale must be between 1 and 4"),
    (800, 600, 0.5, "scale must be between 1 and 4"),
    ("wide", None, None, "width must be a number"),
    (float("nan"), None, None, "finite"),
    (True, None, None, "width must be a number"),
])
def test_bad_sizes_are_refused(width, height, scale, words):
    with pytest.raises(export.ExportError, match=words):
        export.check_size(width, height, scale)


def test_defaults_are_the_on_screen_size():
    assert export.check_size(None, None, None, default_width=731, default_height=666) == (731, 666, 2.0)
    assert export.check_size("", "", "", default_width=None, default_height=None) == \
        (export.DEFAULT_WIDTH, export.DEFAULT_HEIGHT, 2.0)
    assert export.check_size(None, None, 3, default_width=50, default_height=99999) == (200, 6000, 3.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return synthetic.make_run(tmp_path_factory.mktemp("runs") / "syn", n_cells=300, n_genes=40,
                              n_prots=14, latent_dim=2, n_clusters=5)


@pytest.fixture(scope="module")
def app(run_dir, tmp_path_factory):
    from app.main import create_app
    return create_app(tmp_path_factory.mktemp("data"), run_dir.parent, tmp_path_factory.mktemp("cache"),
                      write_demo=False, schedule=False)


def call_export(app, name, fmt, states: dict, size=(None, None, None), screen=None):
    """POST the export callback of card ``name`` as the browser would (``states``: ``{id: value}``; others None)."""
    key = lambda role: {"g": name, "role": role}
    output = next(k for k in app.callback_map if f'"g":"{name}","role":"download"' in k)
    given = {**states, **{json.dumps(key(f"export-{k}"), sort_keys=True, separators=(",", ":")): v
                          for k, v in zip(("width", "height", "scale"), size)},
             json.dumps(key("export-screen"), sort_keys=True, separators=(",", ":")): screen}

    def spec_id(spec):
        return json.loads(spec["id"]) if spec["id"].startswith("{") else spec["id"]

    state = [{"id": spec_id(spec), "property": spec["property"], "value": given.get(spec["id"])}
             for spec in app.callback_map[output]["state"]]
    body = {"output": output, "outputs": [{"id": key("download"), "property": "data"},
                                          {"id": key("export-msg"), "property": "children"}],
            "inputs": [{"id": key(f"export-{f}"), "property": "n_clicks", "value": 1 if f == fmt else None}
                       for f in ("png", "svg", "pdf")],
            "state": state,
            "changedPropIds": [json.dumps(key(f"export-{fmt}"), sort_keys=True, separators=(",", ":")) + ".n_clicks"]}
    resp = app.server.test_client().post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.data[:300]
    return resp.get_json()["response"]


def test_card_export_uses_the_users_size_and_refuses_bad_ones(app):
    states = {"emb-run": "syn", "emb-key": "joint", "emb-colour": "obs:scmm_cluster"}
    out = call_export(app, "embedding", "png", states, size=(500, 400, 2), screen={"width": 900, "height": 560})
    download = out['{"g":"embedding","role":"download"}']["data"]
    import base64
    assert png_size(base64.b64decode(download["content"])) == (1000, 800)
    assert download["filename"].startswith("syn_umap_joint") and download["filename"].endswith(".png")
    out = call_export(app, "embedding", "svg", states, screen={"width": 900, "height": 560})
    svg = base64.b64decode(out['{"g":"embedding","role":"download"}']["data"]["content"]).decode()
    assert 'width="900"' in svg and "syn" in svg  # on-screen width; the run is named in the title
    out = call_export(app, "embedding", "pdf", states, size=(50, None, None))
    assert '{"g":"embedding","role":"download"}' not in out
    assert "width must be between 200 and 6000" in json.dumps(out)


def test_a_renderer_failure_is_said_in_the_page(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Chrome not found")

    monkeypatch.setattr(export, "render", broken)
    states = {"emb-run": "syn", "emb-key": "joint", "emb-colour": "obs:scmm_cluster"}
    out = json.dumps(call_export(app, "embedding", "png", states))
    assert "Export failed: RuntimeError: Chrome not found" in out and '"data"' not in out


def test_bundle_holds_every_figure_and_table_with_a_manifest(app, run_dir):
    cfg = app.scmm_config
    data = export.bundle(cfg, "syn", formats=("svg",))
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = set(zf.namelist())
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["run"] == "syn"
    assert manifest["settings"] == json.loads((run_dir / "config.json").read_text())["settings"]
    import scmm
    assert manifest["versions"]["scmm"] == scmm.__version__
    assert {"plotly", "kaleido", "matplotlib"} <= set(manifest["versions"])
    assert manifest["exported_at"]
    listed = {f["file"] for f in manifest["files"]}
    assert listed | {"manifest.json"} == names
    assert all(f["shows"] for f in manifest["files"])
    for stem in ("syn_loss", "syn_umap_joint_cluster", "syn_z1_rna_bars", "syn_z2_prot_profile",
                 "syn_prot_heatmaps", "syn_rna_pred-obs"):
        assert f"figures/{stem}.svg" in names
    for table in ("syn_cells.csv", "syn_heatmap_prot_original.csv", "syn_heatmap_similarity.csv",
                  "syn_rna_associated.csv", "syn_loss.csv"):
        assert f"tables/{table}" in names
    heat = zf.read("figures/syn_prot_heatmaps.svg").decode()
    assert "<image" not in heat
    with pytest.raises(export.ExportError):
        export.bundle(cfg, "../syn")
    with pytest.raises(export.ExportError):
        export.bundle(cfg, "syn", formats=("gif",))


def test_bundle_route(app):
    client = app.server.test_client()
    resp = client.get("/export/bundle/syn.zip?formats=pdf")
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    assert 'filename="syn_figures.zip"' in resp.headers["Content-Disposition"]
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(resp.data)).namelist()
    assert client.get("/export/bundle/nothere.zip").status_code == 400
    assert client.get("/export/bundle/syn.zip?formats=exe").status_code == 400


def test_the_warm_renderer_lets_the_interpreter_exit():
    code = ("import app.main; from app import export, figures; "
            "export.render(figures.loss_curve([]), 'png'); print('rendered')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "rendered" in proc.stdout, proc.stderr[-2000:]
