"""The raster path of large embeddings (app.raster, app.pages.raster_view): aggregation, colours,
zoom, lasso and hover hit-testing, and refusal of malformed browser input."""
from __future__ import annotations

import numpy as np
import pytest

from app import data_access, figures, raster
from app.pages import embeddings, raster_view
from tests import synthetic_run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:mudata")


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(-5, 1, (3000, 2)), rng.normal(5, 1, (2000, 2))]).astype(np.float32)
    return raster.Points(xy), np.repeat([0, 1], [3000, 2000])


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    run = synthetic_run.make_run(tmp_path_factory.mktemp("raster") / "runs" / "r", n_cells=3000)
    return data_access.get_run(run)


def inside(xy, bounds):
    x0, x1, y0, y1 = bounds
    return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)


def test_pixel_counts_sum_to_the_visible_cells(points):
    pts, codes = points
    counts, top = pts.group_mode(pts.extent, (200, 150), codes, 2)
    assert counts.shape == top.shape == (150, 200) and counts.sum() == len(codes)
    zoomed = (-7.0, -3.0, -7.0, -3.0)
    n, means = pts.mean_values(zoomed, (100, 80), np.ones(len(codes)))
    assert n.sum() == inside(pts.xy, zoomed).sum()  # only the visible range is drawn
    assert np.allclose(means[n > 0], 1) and np.isnan(means[n == 0]).all()
    counts, _ = pts.group_mode(zoomed, (100, 80), codes, 2)
    np.testing.assert_array_equal(counts, n)        # the same pixels as datashader's binning


def test_each_pixel_takes_its_most_frequent_group_at_any_number_of_groups(monkeypatch):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, (20000, 2)).astype(np.float32)
    codes = rng.integers(-1, 1500, len(xy))                # 1,500 groups, some cells without one
    pts, size = raster.Points(xy), (40, 30)
    counts, top = pts.group_mode((0, 1, 0, 1), size, codes, 1500)
    inside_, pixel = pts.pixels((0, 1, 0, 1), size)
    groups = np.where(codes < 0, 1500, codes)[inside_]
    for p in rng.choice(size[0] * size[1], 50, replace=False):
        tally = np.bincount(groups[pixel == p], minlength=1501)
        assert counts.flat[p] == tally.sum() and top.flat[p] == tally.argmax()   # argmax: lowest code on ties
    _, only = pts.group_mode((0, 1, 0, 1), size, codes, 1500, shown=[7])
    assert set(np.unique(only)) <= {-1, 7}
    sparse = pts.group_mode((0, 1, 0, 1), size, codes % 30, 30)
    monkeypatch.setattr(raster, "DENSE_TALLY", 0)          # the sorted path gives the dense path's answer
    for mine, dense in zip(pts.group_mode((0, 1, 0, 1), size, codes % 30, 30), sparse):
        np.testing.assert_array_equal(mine, dense)


def test_a_groups_colour_appears_where_its_cells_are(points):
    pts, codes = points
    counts, top = pts.group_mode(pts.extent, (100, 100), codes, 2)
    rgba = raster.categorical_image(counts, top, ["#ff0000", "#0000ff"])
    x0, x1, y0, y1 = pts.extent
    col = lambda x: int((x - x0) / (x1 - x0) * 100)  # noqa: E731
    row = lambda y: 99 - int((y - y0) / (y1 - y0) * 100)  # noqa: E731  (image rows run top to bottom)
    assert tuple(rgba[row(-5), col(-5)]) == (255, 0, 0, 255)
    assert tuple(rgba[row(5), col(5)]) == (0, 0, 255, 255)
    assert rgba[row(5), col(-5), 3] == 0  # no cells there: transparent
    hidden = raster.categorical_image(*pts.group_mode(pts.extent, (100, 100), codes, 2, shown=[1]),
                                      ["#ff0000", "#0000ff"])
    assert hidden[row(-5), col(-5), 3] == 0 and tuple(hidden[row(5), col(5)]) == (0, 0, 255, 255)


def test_continuous_pixels_take_the_mean_on_the_scatters_scale():
    pts = raster.Points(np.array([[0, 0], [0, 0], [1, 1], [2, 2]], dtype=np.float32))
    counts, means = pts.mean_values((-0.5, 2.5, -0.5, 2.5), (3, 3), [1.0, 3.0, np.nan, 4.0])
    assert means[0, 0] == 2.0 and counts[1, 1] == 1 and np.isnan(means[1, 1])
    rgba = raster.continuous_image(counts, means, "Viridis", 0.0, 4.0)[::-1]
    lut = raster._lut("Viridis")
    assert tuple(rgba[0, 0, :3]) == tuple(lut[127]) and tuple(rgba[2, 2, :3]) == tuple(lut[255])
    assert tuple(rgba[1, 1, :3]) == raster.MISSING and rgba[0, 2, 3] == 0


def test_zoom_ranges_are_checked(points):
    pts, _ = points
    ext = pts.extent
    new = raster.bounds_from_relayout({"xaxis.range[0]": 1, "xaxis.range[1]": -2}, ext, ext)
    assert new[:2] == (-2.0, 1.0) and new[2:] == ext[2:]
    assert raster.bounds_from_relayout({"yaxis.range": [0, 3]}, ext, ext)[2:] == (0.0, 3.0)
    assert raster.bounds_from_relayout({"xaxis.autorange": True}, (0, 1, 0, 1), ext) == ext
    assert raster.bounds_from_relayout({"dragmode": "pan"}, ext, ext) is None
    for bad in ({"xaxis.range[0]": "1e400"}, {"xaxis.range[0]": float("nan")}, {"xaxis.range[0]": 1e12},
                {"xaxis.range[0]": 3, "xaxis.range[1]": 3}, {"xaxis.range": [1]}, {"xaxis.range[0]": True}, [1, 2]):
        with pytest.raises(ValueError):
            raster.bounds_from_relayout(bad, ext, ext)
    assert raster.parse_bounds(["a", 1, 2, 3], ext) == ext  # a tampered store falls back to every cell
    assert raster.pixel_size(10**9, None) == (raster.MAX_SIDE, raster.DEFAULT_SIZE[1])


def test_lasso_selects_exactly_the_cells_inside(view):
    key = view.embeddings()["joint"][0]
    xy = view.coords(key).astype(np.float64)
    xs, ys = [-3.0, 4.0, 4.0, -1.0], [-4.0, -4.0, 5.0, 2.0]
    from matplotlib.path import Path
    expected = np.flatnonzero(Path(np.column_stack([xs, ys])).contains_points(xy))
    assert 0 < len(expected) < view.n_cells
    assert np.array_equal(view.cells_in_polygon(key, xs, ys), expected)
    box = view.cells_in_box(key, [4.0, -3.0], [-4.0, 5.0])
    assert np.array_equal(box, np.flatnonzero(inside(xy, (-3, 4, -4, 5))))


@pytest.mark.parametrize("event", [
    {"lassoPoints": {"x": [0, 1, 2] * 2000, "y": [0, 1, 0] * 2000}},  # too many vertices
    {"lassoPoints": {"x": [0, 1, "2"], "y": [0, 1, 0]}},
    {"lassoPoints": {"x": [0, 1, float("inf")], "y": [0, 1, 0]}},
    {"lassoPoints": {"x": [0, 1], "y": [0, 1]}},
    {"lassoPoints": [1, 2, 3]},
    {"range": {"x": [0, 1, 2], "y": [0, 1, 2]}},
    {"range": {"x": [0, None], "y": [0, 1]}},
])
def test_malformed_selections_are_refused(view, event):
    with pytest.raises(ValueError):
        embeddings.selection_from_event(view, "joint", event)


def test_hover_names_the_nearest_cell(view):
    key = view.embeddings()["joint"][0]
    pts = view.points(key)
    xy = view.coords(key)
    target = int(np.argmin(np.abs(xy[:, 0] - np.median(xy[:, 0])) + np.abs(xy[:, 1] - np.median(xy[:, 1]))))
    x, y = float(xy[target, 0]) + 1e-4, float(xy[target, 1])
    assert pts.nearest(x, y, radius=1.0) == target
    assert pts.nearest(1e6, 1e6, radius=1.0) is None
    c = view.colour("obs:scmm_cluster")
    line = raster_view.hovered_cell(view, key, c, {"points": [{"x": x, "y": y}]}, pts.extent, (900, 470))
    text = str(line.to_plotly_json())
    assert view.cell_ids[target] in text and c["categories"][c["values"][target]] in text
    for bad in (None, {"points": []}, {"points": [{"x": "1", "y": 0}]}, {"points": [{"x": float("nan"), "y": 0}]}):
        assert raster_view.hovered_cell(view, key, c, bad, pts.extent, (900, 470)) is None


def test_the_raster_figure_and_colour_patch(view, monkeypatch):
    monkeypatch.setattr(raster, "RASTER_ABOVE", 1000)
    fig = embeddings.colour_figure(view, "joint", "obs:scmm_cluster")
    assert [t.type for t in fig.data] == ["heatmap"] and fig.data[0].opacity == 0
    assert fig.layout.images[0].source.startswith("data:image/png;base64,")
    assert list(fig.layout.xaxis.range) == list(view.points(view.embeddings()["joint"][0]).extent[:2])
    assert len(fig.data[0].colorbar.ticktext) == len(view.colour("obs:scmm_cluster")["categories"])
    patch, c, scale = embeddings.raster_colour_patch(view, "joint", "feat:rna:G0001", [-1, 1, -1, 1], (300, 200))
    ops = {tuple(op["location"]): op["params"].get("value") for op in patch.to_plotly_json()["operations"]}
    assert ops[("layout", "images")][0]["x"] == -1 and ops[("layout", "images")][0]["sizex"] == 2
    assert ops[("data", 0, "colorscale")] == figures.CONTINUOUS and ops[("layout", "annotations")] == []
    assert ops[("data", 0, "z")]["shape"] == f"{200 // raster.HIT_PX},{300 // raster.HIT_PX}"


def test_traversal_umap_uses_the_raster_path_above_the_threshold(view, monkeypatch):
    from app.pages import traversal
    monkeypatch.setattr(raster, "RASTER_ABOVE", 1000)
    fig = traversal.traversal_umap(view, view.traversal(), 0, 3)
    assert [t.type for t in fig.data] == ["heatmap", "scatter"]  # the star stays trace 1 (move_star's Patch)
    assert "rasterised image of 3,000 cells" in fig.layout.title.text and fig.layout.images[0].source


def test_the_raster_figure_exports_its_image_without_the_hit_layer(view, monkeypatch):
    from app import export
    monkeypatch.setattr(raster, "RASTER_ABOVE", 1000)
    fig = export.publication(embeddings.colour_figure(view, "joint", "feat:rna:G0001"), 800, 600)
    assert [t["type"] for t in fig["data"]] == ["scatter"]                  # the colour bar only
    assert fig["data"][0]["marker"]["showscale"] and fig["layout"]["images"][0]["source"].startswith("data:image/png")
    assert fig["layout"]["xaxis"].get("tickmode") != "array"                # data axes kept, not bin indices
    svg = export.render(embeddings.colour_figure(view, "joint", "feat:rna:G0001"), "svg", 800, 600).decode()
    assert "<image" in svg and svg.count("<path") < 200
