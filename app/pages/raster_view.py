"""The raster path of the embedding figures (Embeddings and Traversal pages), above
:data:`app.raster.RASTER_ABOVE` cells: the image of the visible range, re-rendered on zoom, pan,
colour and group changes, and the cell under the pointer, found on the server."""
from __future__ import annotations

from dash import Patch, html

from app import components, figures, raster


def note(n_cells: int) -> str:
    """What the page says it shows instead of one point per cell."""
    return (f"Showing a rasterised image of the {n_cells:,} cells (drawn on the server above "
            f"{raster.RASTER_ABOVE:,} cells; zooming re-draws the visible range). Each pixel has the colour "
            "of the group with the most cells in it, or of the mean value of its cells (grey: no value). "
            "Hovering names the nearest cell; a lasso or box selects every cell inside it.")


def scale(c: dict) -> dict:
    """:func:`app.figures.colour_scale` of a colouring ``c`` (:meth:`app.data_access.RunView.colour`)."""
    return figures.colour_scale(c["values"], c["kind"], c["label"], c.get("categories"))


def pixels(screen) -> tuple[int, int]:
    """The image's size in pixels: the plot area of the graph as measured in the browser (its
    card's ``export-screen`` store, untrusted) less margins and colour bar, bounded; else the default."""
    width, height = components.screen_size(screen)
    return raster.pixel_size(width - 170 if width else None, height - 90 if height else None)


def figure(view, key: str, c: dict, scale: dict, size, title: str, axes, uirevision: str,
           labels=None, shown=None):
    """The whole raster figure of embedding ``key`` at its full extent."""
    points = view.points(key)
    uri = raster.render(points, c, scale, points.extent, size, shown)
    image, hit = figures.raster_layers(uri, points.extent, size, raster.HIT_PX)
    return figures.raster_embedding(image, hit, scale, points.extent, title=title, axis_names=axes,
                                    uirevision=uirevision, labels=labels)


def image_patch(patch: Patch, view, key: str, c: dict, scale: dict, bounds, size, shown=None) -> Patch:
    """Re-draw the image and the hit layer over ``bounds`` (a zoom, pan or group change)."""
    uri = raster.render(view.points(key), c, scale, bounds, size, shown)
    image, hit = figures.raster_layers(uri, bounds, size, raster.HIT_PX)
    patch["layout"]["images"] = [image]
    for name, value in hit.items():
        patch["data"][0][name] = value
    return patch


def colour_patch(patch: Patch, view, key: str, c: dict, scale: dict, bounds, size) -> Patch:
    """A colour change: the image and the colour bar."""
    image_patch(patch, view, key, c, scale, bounds, size)
    patch["data"][0]["colorscale"] = scale["colorscale"]
    patch["data"][0]["zmin"], patch["data"][0]["zmax"] = scale["cmin"], scale["cmax"]
    patch["data"][0]["colorbar"] = scale["colorbar"]
    return patch


def hovered_cell(view, key: str, c: dict, hover, bounds, size):
    """The line naming the cell nearest to the hovered position (``hoverData``, untrusted), with
    the colour's value, as the scatter's hover shows it; None when the event is not a position."""
    try:
        point = hover["points"][0]
        x, y = point["x"], point["y"]
        x0, x1, y0, y1 = bounds
        radius = 2 * raster.HIT_PX * max((x1 - x0) / size[0], (y1 - y0) / size[1])
        i = view.points(key).nearest(x, y, radius)
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    if i is None:
        return html.Span("no cell under the pointer", className="text-muted")
    value = c["values"][i]
    if c["kind"] == "categorical":
        shown = c["categories"][value] if 0 <= value < len(c["categories"]) else "NA"
    else:
        shown = f"{value:.3g}"
    return html.Span([html.Strong(str(view.cell_ids[i])), f" · {c['label']}: {shown}"], id="emb-hover-cell")
