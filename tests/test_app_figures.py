"""Fast tests of the app's pure parts: figure builders, colour specs, tables (no browser, no torch)."""
from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app import figures


def decode(spec: dict) -> np.ndarray:
    dtype = {"f4": np.float32, "i4": np.int32}[spec["dtype"]]
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=dtype)


def test_typed_round_trips_numbers():
    values = np.array([0.5, -1.25, 3.0])
    assert np.array_equal(decode(figures.typed(values)), values.astype(np.float32))
    assert decode(figures.typed(np.array([1, 2, 3])))[2] == 3
    with pytest.raises(TypeError):
        figures.typed(np.array(["a"]))


def test_loss_curve_has_train_and_test():
    history = [{"epoch": e, "train_loss": 10.0 - e, "test_loss": 11.0 - e} for e in range(1, 4)]
    fig = figures.loss_curve(history)
    assert [t.name for t in fig.data] == ["train", "test"]
    assert list(fig.data[1].y) == [10.0, 9.0, 8.0]
    assert figures.loss_curve([]).layout.annotations[0].text == "no epochs yet"


def test_categorical_colour_spec_maps_codes_to_names():
    spec = figures.colour_spec(np.array([0, 1, 1, 2]), "categorical", "cluster", ["a", "b", "c"])
    marker = spec["marker"]
    assert marker["colorbar"]["ticktext"] == ["a", "b", "c"]
    assert marker["cmin"] == -0.5 and marker["cmax"] == 2.5
    assert list(spec["customdata"]) == ["a", "b", "b", "c"]
    # each category owns one flat band of the stepped scale
    assert len(marker["colorscale"]) == 6 and marker["colorscale"][0][1] == marker["colorscale"][1][1]


def test_continuous_colour_spec_centres_signed_values():
    spec = figures.colour_spec(np.array([-2.0, 1.0, 0.5]), "continuous", "z1")
    assert spec["marker"]["colorscale"] == figures.DIVERGING
    assert spec["marker"]["cmin"] == -2.0 and spec["marker"]["cmax"] == 2.0
    spec = figures.colour_spec(np.array([0.0, 3.0]), "continuous", "CD3E")
    assert spec["marker"]["colorscale"] == figures.CONTINUOUS and spec["marker"]["cmax"] == 3.0


def test_embedding_is_webgl_with_hover_ids_and_selection():
    xy = np.random.default_rng(0).normal(size=(50, 2))
    spec = figures.colour_spec(np.arange(50) % 3, "categorical", "cluster", ["0", "1", "2"])
    fig = figures.embedding(xy, spec, [f"cell{i}" for i in range(50)], "joint", selected=[1, 2])
    assert fig.data[0].type == "scattergl" and fig.data[0].text[3] == "cell3"
    assert "%{text}" in fig.data[0].hovertemplate and "cluster" in fig.data[0].hovertemplate
    assert len(fig.data) == 2  # the selection overlay
    assert fig.layout.dragmode == "lasso"


def test_draw_order_puts_high_values_last_and_missing_first():
    assert list(figures.draw_order(np.array([3.0, np.nan, 1.0, 2.0]))) == [1, 2, 3, 0]
    # a diverging scale puts the largest magnitudes of either sign on top
    assert list(figures.draw_order(np.array([-5.0, 0.1, 2.0]), diverging=True)) == [1, 2, 0]
    spec = figures.colour_spec(np.array([2.0, 0.0, 1.0]), "continuous", "CD4")
    colours = np.frombuffer(base64.b64decode(spec["marker"]["color"]["bdata"]), np.float32)
    assert list(colours) == [0.0, 1.0, 2.0] and list(spec["order"]) == [1, 2, 0]
    fig = figures.embedding(np.array([[0, 0], [1, 1], [2, 2]]), spec, ["a", "b", "c"])
    assert list(fig.data[0].text) == ["b", "c", "a"]
    assert figures.colour_spec(np.array([0, 1]), "categorical", "g", ["x", "y"])["order"] is None


def test_recolour_patch_touches_only_marker_and_hover():
    from dash import Patch
    spec = figures.colour_spec(np.array([1.0, 2.0]), "continuous", "CD4")
    ops = figures.recolour(Patch(), spec).to_plotly_json()["operations"]
    touched = {tuple(op["location"]) for op in ops}
    assert touched == {("data", 0, "marker"), ("data", 0, "customdata"), ("data", 0, "hovertemplate")}


def associated_table() -> pd.DataFrame:
    return pd.DataFrame({"feature": ["A", "B", "C", "D"], "rho": [0.9, 0.8, -0.7, -0.95],
                         "pvalue": [1e-20, 1e-15, 1e-14, 1e-30], "log2_fc": [2.0, 1.0, -0.5, -3.0],
                         "direction": ["positive", "positive", "negative", "negative"]})


def test_traversal_bars_split_by_direction_and_limit():
    fig = figures.traversal_bars(associated_table(), "z1", n=1)
    by_name = {t.name: list(t.y) for t in fig.data}
    assert by_name == {"negative": ["C"], "positive": ["A"]}
    assert figures.traversal_bars(associated_table().iloc[:0]).layout.annotations


def test_traversal_profile_marks_the_traversal_value():
    profile = pd.DataFrame({"z_sigma": [-1.0, 0.0, 1.0], "A": [1.0, 2.0, 4.0], "B": [3.0, 2.0, 1.0]})
    fig = figures.traversal_profile(profile, z_sigma=0.5)
    assert [t.name for t in fig.data] == ["A", "B"]
    assert fig.layout.shapes[0].x0 == 0.5
    shaded = figures.traversal_profile(profile, z_sigma=0.5, occupied=(-0.4, 0.7))
    assert [(s.x0, s.x1) for s in shaded.layout.shapes] == [(-0.4, 0.7), (0.5, 0.5)]


def test_heatmaps_share_scale_and_row_order():
    a = pd.DataFrame([[1.0, -1.0], [0.0, 2.0]], index=["0", "1"], columns=["f1", "f2"])
    b = a.iloc[::-1] * 0.5
    fig = figures.heatmaps({"x|original": a, "x|from_y": b}, {"x|original": "original"})
    assert len(fig.data) == 2
    assert list(fig.data[1].y) == ["0", "1"]  # reindexed to the first table's rows
    assert fig.data[1].z[0][0] == 0.5
    assert {t.zmin for t in fig.data} == {-2.5}
    assert figures.heatmaps({}).layout.annotations


def test_predicted_vs_observed_reports_pearson():
    x = np.arange(10.0)
    fig = figures.predicted_vs_observed(x, 2 * x + 1, label="prot")
    assert "r = 1.000" in fig.layout.title.text
    assert np.isnan(figures.pearson([1, 1, 1], [1, 2, 3]))


def test_for_export_turns_webgl_into_svg_traces():
    xy = np.zeros((3, 2))
    fig = figures.embedding(xy, figures.colour_spec(np.zeros(3), "continuous", "v"), ["a", "b", "c"])
    out = figures.for_export(fig)
    assert out.data[0].type == "scatter"
    assert isinstance(out, go.Figure)
    with pytest.raises(ValueError):
        figures.to_image(fig, "gif")


def test_a_colour_bar_names_groups_only_while_they_are_readable():
    few = figures.colour_scale(np.arange(5), "categorical", "cluster", [str(i) for i in range(5)])
    assert few["colorbar"]["ticktext"] == ["0", "1", "2", "3", "4"]
    many = figures.colour_scale(np.arange(1000), "categorical", "cluster", [str(i) for i in range(1000)])
    assert "ticktext" not in many["colorbar"] and many["colorbar"]["showticklabels"] is False
    assert "1,000 groups" in many["colorbar"]["title"]["text"] and len(many["colours"]) == 1000
