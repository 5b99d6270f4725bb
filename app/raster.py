"""Large embeddings drawn on the server: datashader images, and hit-testing of what the browser points at.

Above :data:`RASTER_ABOVE` cells the pages send a PNG of the visible range
(rendered here at about the screen's resolution) instead of one WebGL point
per cell: in headless Chromium with software WebGL (no GPU), a Scattergl colour change took
1.06 s and a lasso 5.4 s at 100,000 cells, the image 0.17 s and 0.27 s at 1,000,000
(bench/app_latency.py --interact).
Each pixel takes the colour of the group with the most cells in it
(categorical colours; a sort-based mode, so a thousand clusters cost no more
memory than ten) or of the mean of its cells' values (numbers, by datashader);
pixels whose cells have no value are grey.  Hovering names the nearest cell (a
``cKDTree``, built once per embedding) and a lasso is tested against every
cell (:meth:`app.data_access.RunView.cells_in_polygon`).  Everything the
browser sends (ranges, positions) is checked here before it is used.
"""
from __future__ import annotations

import base64
import colorsys
import functools
import io
import math
import re

import numpy as np
import pandas as pd

#: above this many cells the embeddings are rasterised: Scattergl colour changes cross 400 ms near
#: 35,000 cells in software WebGL, lassos much earlier (bench/app_latency.py --interact)
RASTER_ABOVE = 30_000
#: the image's size when the screen's is unknown, and its bounds (pixels)
DEFAULT_SIZE, MIN_SIDE, MAX_SIDE = (900, 470), 50, 2000
#: screen pixels per bin of the invisible hover / lasso layer
HIT_PX = 4
#: pixels x groups up to which a categorical image is tallied densely (else sorted: memory ~ cells)
DENSE_TALLY = 16_000_000
#: grey of pixels whose cells have no value
MISSING = (190, 190, 190)


def rasterised(n_cells: int) -> bool:
    """Whether an embedding of ``n_cells`` cells is drawn as an image."""
    return n_cells > RASTER_ABOVE


def pixel_size(width=None, height=None) -> tuple[int, int]:
    """The image's (width, height) in pixels: the plot area's when measured, bounded, else the default."""
    def side(value, default):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return int(min(max(value, MIN_SIDE), MAX_SIDE)) if ok else default
    return side(width, DEFAULT_SIZE[0]), side(height, DEFAULT_SIZE[1])


def _finite(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {str(value)[:40]!r}")
    return float(value)


def check_bounds(x0, x1, y0, y1, extent) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) as ordered floats inside a generous margin of ``extent``; ValueError otherwise."""
    x0, x1, y0, y1 = (_finite(v) for v in (x0, x1, y0, y1))
    (x0, x1), (y0, y1) = sorted((x0, x1)), sorted((y0, y1))
    ex0, ex1, ey0, ey1 = extent
    for lo, hi, elo, ehi in ((x0, x1, ex0, ex1), (y0, y1, ey0, ey1)):
        span = ehi - elo
        if hi - lo < span * 1e-7 or lo < elo - 100 * span or hi > ehi + 100 * span:
            raise ValueError("a range must lie near the cells and not be empty")
    return x0, x1, y0, y1


_RANGE = re.compile(r"^([xy])axis\.range\[([01])\]$")


def bounds_from_relayout(relayout, current, extent):
    """The visible range after a zoom or pan (``relayoutData``): ``(x0, x1, y0, y1)``, ``extent``
    after an autorange reset, None when the event changes no range; ValueError when malformed."""
    if not isinstance(relayout, dict) or len(relayout) > 50:
        raise ValueError("relayout data must be a small object")
    if relayout.get("xaxis.autorange") or relayout.get("yaxis.autorange"):
        return tuple(extent)
    x0, x1, y0, y1 = current
    found = {}
    for key, value in relayout.items():
        match = _RANGE.match(str(key))
        if match:
            found[match.group(1) + match.group(2)] = value
        elif key in ("xaxis.range", "yaxis.range"):
            if not isinstance(value, list) or len(value) != 2:
                raise ValueError(f"{key} must be two numbers")
            found[key[0] + "0"], found[key[0] + "1"] = value
    if not found:
        return None
    return check_bounds(found.get("x0", x0), found.get("x1", x1), found.get("y0", y0), found.get("y1", y1), extent)


def parse_bounds(stored, extent) -> tuple[float, float, float, float]:
    """The range kept in the page's store (checked again: it comes from the browser), else ``extent``."""
    if isinstance(stored, list) and len(stored) == 4:
        try:
            return check_bounds(*stored, extent)
        except ValueError:
            pass
    return tuple(extent)


class Points:
    """One embedding's cells, ready to be rasterised and hit-tested (built once per embedding)."""

    def __init__(self, xy):
        xy = np.asarray(xy, dtype=np.float32)
        self.xy = xy
        self.frame = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1]})
        finite = xy[np.isfinite(xy).all(axis=1)]
        lo, hi = (finite.min(axis=0), finite.max(axis=0)) if len(finite) else (np.zeros(2), np.ones(2))
        pad = np.maximum((hi - lo) * 0.03, 1e-3)
        self.extent = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))

    @functools.cached_property
    def tree(self):
        from scipy.spatial import cKDTree
        return cKDTree(np.where(np.isfinite(self.xy), self.xy, 1e30))

    def nearest(self, x, y, radius: float) -> int | None:
        """The index of the cell nearest to (x, y) within ``radius`` (None when there is none)."""
        dist, i = self.tree.query([_finite(x), _finite(y)], distance_upper_bound=radius)
        return int(i) if np.isfinite(dist) else None

    def pixels(self, bounds, size) -> tuple[np.ndarray, np.ndarray]:
        """(indices of the cells inside ``bounds``, their flat pixel index, rows bottom to top), with
        datashader's binning (a cell on the upper edge goes into the last pixel)."""
        x0, x1, y0, y1 = bounds
        w, h = size
        x, y = self.xy[:, 0].astype(np.float64), self.xy[:, 1].astype(np.float64)
        inside = np.flatnonzero((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
        x, y = x[inside], y[inside]
        col = np.where(x == x1, w - 1, ((x - x0) * (w / (x1 - x0))).astype(np.int64))
        row = np.where(y == y1, h - 1, ((y - y0) * (h / (y1 - y0))).astype(np.int64))
        return inside, np.clip(row, 0, h - 1) * w + np.clip(col, 0, w - 1)

    def group_mode(self, bounds, size, codes, n_groups: int, shown=None):
        """Per pixel (rows bottom to top): the number of cells ``(h, w)`` and the group with the most
        of them ``(h, w)`` (ties: the lower code; codes outside ``0..n_groups-1`` count as group
        ``n_groups``, "no group"; -1 where the pixel is empty), of the ``shown`` groups only (all
        when None).  Sort-based, so memory grows with the cells, not cells x groups."""
        inside, pixel = self.pixels(bounds, size)
        codes = np.asarray(codes, dtype=np.int64)[inside]
        codes = np.where((codes < 0) | (codes >= n_groups), n_groups, codes)
        if shown is not None:
            keep = np.isin(codes, list(shown))
            codes, pixel = codes[keep], pixel[keep]
        w, h = size
        if w * h * (n_groups + 1) <= DENSE_TALLY:                # few groups: one dense tally
            tally = np.bincount(pixel * (n_groups + 1) + codes, minlength=w * h * (n_groups + 1))
            tally = tally.reshape(w * h, n_groups + 1)
            counts = tally.sum(axis=1)
            top = np.where(counts > 0, tally.argmax(axis=1), -1)
            return counts.reshape(h, w), top.reshape(h, w)
        counts = np.bincount(pixel, minlength=w * h).reshape(h, w)
        pairs, n = np.unique(pixel * (n_groups + 1) + codes, return_counts=True)
        pair_pixel, pair_group = pairs // (n_groups + 1), pairs % (n_groups + 1)
        best = np.lexsort((pair_group, -n, pair_pixel))          # per pixel: most cells, then lowest code
        first = best[np.r_[True, pair_pixel[best][1:] != pair_pixel[best][:-1]]] if len(best) else best
        top = np.full(w * h, -1, dtype=np.int64)
        top[pair_pixel[first]] = pair_group[first]
        return counts, top.reshape(h, w)

    def mean_values(self, bounds, size, values):
        """Per pixel (rows bottom to top), by datashader: the number of cells ``(h, w)`` and the mean of
        their finite ``values`` ``(h, w)`` (NaN where none)."""
        import datashader as ds
        x0, x1, y0, y1 = bounds
        canvas = ds.Canvas(plot_width=size[0], plot_height=size[1], x_range=(x0, x1), y_range=(y0, y1))
        frame = self.frame.assign(v=np.asarray(values, dtype=np.float32))
        agg = canvas.points(frame, "x", "y", ds.summary(n=ds.count(), mean=ds.mean("v")))
        return np.asarray(agg["n"].data), np.asarray(agg["mean"].data)


def _rgb(colour: str) -> tuple[int, int, int]:
    """A plotly colour string ('#rrggbb', 'rgb(...)', 'hsl(h,s%,l%)') as 0-255 integers."""
    colour = colour.strip()
    if colour.startswith("#"):
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    nums = [float(v) for v in re.findall(r"[\d.]+", colour)[:3]]
    if colour.startswith("hsl"):
        r, g, b = colorsys.hls_to_rgb(nums[0] / 360, nums[2] / 100, nums[1] / 100)
        return round(r * 255), round(g * 255), round(b * 255)
    return tuple(round(v) for v in nums)


@functools.lru_cache(maxsize=8)
def _lut(colorscale: str) -> np.ndarray:
    """256 RGB colours sampled along a named plotly colour scale."""
    from plotly.colors import get_colorscale, sample_colorscale
    return np.array([_rgb(c) for c in sample_colorscale(get_colorscale(colorscale), np.linspace(0, 1, 256))],
                    dtype=np.uint8)


def categorical_image(counts, top, colours) -> np.ndarray:
    """RGBA image (top row first) of :meth:`Points.group_mode`: each pixel the colour of its most
    frequent group (cells without a group: grey); empty pixels transparent."""
    lut = np.array([_rgb(c) for c in colours] + [MISSING], dtype=np.uint8)
    rgba = np.zeros(counts.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = lut[np.maximum(top, 0)]
    rgba[..., 3] = np.where(counts > 0, 255, 0)
    return rgba[::-1]


def continuous_image(counts, means, colorscale: str, cmin: float, cmax: float) -> np.ndarray:
    """RGBA image (top row first): each pixel the colour of its cells' mean value on ``colorscale``
    between ``cmin`` and ``cmax``; grey where its cells have no value, transparent where it has none."""
    lut = _lut(colorscale)
    valued = np.isfinite(means)
    t = np.clip((np.where(valued, means, cmin) - cmin) / (cmax - cmin), 0, 1)
    rgba = np.zeros(means.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = np.where(valued[..., None], lut[(t * 255).astype(np.int64)], np.array(MISSING, np.uint8))
    rgba[..., 3] = np.where(counts > 0, 255, 0)
    return rgba[::-1]


def png_uri(rgba: np.ndarray) -> str:
    """An RGBA array as a PNG data URI (fast compression: the image is re-made on every change)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render(points: Points, colouring: dict, scale: dict, bounds, size, shown=None) -> str:
    """The PNG data URI of ``points`` inside ``bounds`` at ``size`` pixels, coloured as
    ``colouring`` (:meth:`app.data_access.RunView.colour`) on ``scale`` (:func:`app.figures.colour_scale`)."""
    if colouring["kind"] == "categorical":
        counts, top = points.group_mode(bounds, size, colouring["values"], len(scale["colours"]), shown)
        return png_uri(categorical_image(counts, top, scale["colours"]))
    counts, means = points.mean_values(bounds, size, colouring["values"])
    return png_uri(continuous_image(counts, means, scale["colorscale"], scale["cmin"], scale["cmax"]))
