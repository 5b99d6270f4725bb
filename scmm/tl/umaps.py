"""UMAP of the joint latent and of each modality's latent, cached in the run folder.

Atlas scale: above ``FIT_CELLS_ABOVE`` cells, UMAP is fitted on a seeded random
subsample of ``FIT_CELLS`` cells and every other cell is placed by the fitted
reducer's ``transform`` (switch: ``fit_cells`` of :func:`run_umap` and :func:`umap`).
"""
from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..runfolder import LATENT_KEY, replace_atomic, umap_key

CACHE_NAME = "umap.npz"
#: uns key: how the UMAPs were fitted ({"n_cells": N, "fit_cells": M}; M < N: a subsample fit)
PARAMS_KEY = "scmm_umap_params"
#: with ``fit_cells="auto"``, UMAP is fitted on all cells up to this many cells ...
FIT_CELLS_ABOVE = 100_000
#: ... and above, on a random subsample of this many cells
FIT_CELLS = 50_000
#: cells placed per ``transform`` call (bounds its memory)
TRANSFORM_CHUNK = 100_000


def latent_keys(mdata) -> list[str]:
    """The scMM latents in ``obsm``: ``X_scmm`` first, then ``X_scmm_<modality>``."""
    keys = [k for k in mdata.obsm if k == LATENT_KEY or k.startswith(LATENT_KEY + "_")]
    return sorted(keys, key=lambda k: (k != LATENT_KEY, k))


def _digest(latent: np.ndarray, params: dict) -> str:
    h = hashlib.sha1(np.ascontiguousarray(latent, dtype=np.float32).tobytes())
    h.update(repr(sorted(params.items())).encode())
    h.update(repr(latent.shape).encode())
    return h.hexdigest()[:20]


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, entries: dict) -> None:
    replace_atomic(lambda tmp: np.savez(tmp, **entries), path)


def fit_count(n: int, fit_cells="auto") -> int | None:
    """Number of the ``n`` cells UMAP is fitted on for the switch ``fit_cells``; ``None``: all."""
    if isinstance(fit_cells, str) and fit_cells == "auto":
        fit_cells = FIT_CELLS if n > FIT_CELLS_ABOVE else None
    elif fit_cells is not None and (isinstance(fit_cells, (bool, np.bool_))
                                    or not isinstance(fit_cells, (int, np.integer)) or fit_cells < 4):
        raise ValueError(f"fit_cells must be None, 'auto' or an integer >= 4, got {fit_cells!r}")
    return int(fit_cells) if fit_cells is not None and fit_cells < n else None


def _strategy(n: int, fit_cells) -> dict:
    """The settings of the fit strategy that change the result (empty for a fit on all cells)."""
    fit = fit_count(n, fit_cells)
    if fit is None:
        return {}
    return {"fit_cells": fit, "placement": "transform graph, weighted mean", "chunk": _chunk(fit)}


def _chunk(fit: int) -> int:
    """Cells placed per ``transform`` call: below 4,096 fitted cells umap-learn computes dense
    distances to all of them, so fewer rows keep that matrix near 10 M entries."""
    return TRANSFORM_CHUNK if fit >= 4096 else max(1, min(TRANSFORM_CHUNK, 10_000_000 // fit))


@contextmanager
def _umap_warnings():
    """Hide umap-learn's "n_jobs value ... overridden to 1 by setting random_state" only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
        yield


def _place(reducer, latent: np.ndarray) -> np.ndarray:
    """2-D coordinates of new cells from a reducer fitted, then set to ``transform_mode="graph"``.

    Each cell goes to the membership-weighted mean of its fitted neighbours'
    coordinates (onto the fitted cell it duplicates, if any): the start of
    umap-learn's ``transform``, vectorised (umap-learn loops in Python), without
    its refinement epochs, which measured slower and less faithful.
    """
    graph = reducer.transform(latent).tocsr()
    graph.eliminate_zeros()
    fitted = reducer.embedding_.astype(np.float64)
    coords = (sp.diags(1.0 / np.asarray(graph.sum(axis=1)).ravel()) @ graph @ fitted).astype(np.float32)
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    same = graph.data == 1.0
    coords[rows[same]] = fitted[graph.indices[same]]
    return coords


def run_umap(latent: np.ndarray, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.3,
             fit_cells="auto") -> np.ndarray:
    """2-D UMAP (umap-learn, Euclidean) of ``latent``; deterministic for a given ``seed``.

    ``fit_cells`` switches the fit: ``None`` fits on all cells; an integer N
    (below the cell count) fits on a seeded random subsample of N cells, which
    keep their fitted coordinates, and places every other cell with the fitted
    reducer's ``transform`` graph at the weighted mean of its nearest fitted
    cells (see :func:`_place`) -- an approximation: placed cells are not
    optimised among themselves, so fine structure below the fitted cells'
    spacing is interpolated; ``"auto"`` (default) fits on all cells up to
    ``FIT_CELLS_ABOVE`` cells and on ``FIT_CELLS`` above, where a full fit
    takes many minutes (measured in ``bench/umap_scale.py``).
    """
    import umap as umap_learn
    latent = np.asarray(latent, dtype=np.float32)
    n = latent.shape[0]
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 cells, got {n}")
    fit = fit_count(n, fit_cells)
    sample = None if fit is None else np.sort(np.random.default_rng(seed).choice(n, fit, replace=False))
    reducer = umap_learn.UMAP(n_neighbors=min(n_neighbors, (fit or n) - 1), min_dist=min_dist,
                              random_state=seed, n_components=2)
    with _umap_warnings():
        coords = reducer.fit_transform(latent if fit is None else latent[sample]).astype(np.float32)
        if fit is None:
            return coords
        out = np.empty((n, 2), dtype=np.float32)
        out[sample] = coords
        reducer.transform_mode = "graph"  # transform returns the graph to the fitted cells
        rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
        step = _chunk(fit)
        for start in range(0, len(rest), step):
            cells = rest[start:start + step]
            out[cells] = _place(reducer, latent[cells])
    return out


def umap(mdata, keys: list[str] | None = None, seed: int = 0, n_neighbors: int = 15,
         min_dist: float = 0.3, run_dir: str | Path | None = None,
         fit_cells="auto") -> dict[str, np.ndarray]:
    """UMAP of each scMM latent in ``mdata.obsm`` (joint ``X_scmm`` and ``X_scmm_<mod>``).

    Writes ``obsm['X_umap_scmm']``, ``obsm['X_umap_scmm_<mod>']`` and
    ``uns['scmm_umap_params']`` (``n_cells`` and the ``fit_cells`` actually fitted) and returns
    ``{umap key: coordinates}``.  ``keys`` restricts the latents.  With
    ``run_dir``, results are cached in ``run_dir/umap.npz`` under a hash of the
    latent and the settings, so calling again with the same latent reads them
    back instead of recomputing.  ``fit_cells`` (see :func:`run_umap`): above
    ``FIT_CELLS_ABOVE`` cells, by default, UMAP is fitted on ``FIT_CELLS``
    random cells and the others are placed by the fitted reducer, an
    approximation; ``fit_cells=None`` fits on all cells.  The strategy is part
    of the cache key, so a full fit and an approximation are never mixed up.
    """
    keys = list(keys) if keys is not None else latent_keys(mdata)
    if not keys:
        raise KeyError("no scMM latent in obsm (expected 'X_scmm'); call model.get_latent() first")
    missing = [k for k in keys if k not in mdata.obsm]
    if missing:
        raise KeyError(f"latents {missing} not in obsm (have {list(mdata.obsm)})")
    params = {"seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist}
    cache_path = Path(run_dir) / CACHE_NAME if run_dir is not None else None
    cache = _read_cache(cache_path) if cache_path is not None else {}
    out, changed = {}, False
    for key in keys:
        latent = np.asarray(mdata.obsm[key])
        entry = f"{key}__{_digest(latent, {**params, **_strategy(len(latent), fit_cells)})}"
        if entry in cache:
            coords = cache[entry]
        else:
            coords = run_umap(latent, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist,
                              fit_cells=fit_cells)
            # keep one entry per latent key: drop stale ones
            cache = {k: v for k, v in cache.items() if not k.startswith(f"{key}__")}
            cache[entry] = coords
            changed = True
        mdata.obsm[umap_key(key)] = coords
        out[umap_key(key)] = coords
    if cache_path is not None and changed:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        _write_cache(cache_path, cache)
    n = int(mdata.n_obs)
    mdata.uns[PARAMS_KEY] = {"n_cells": n, "fit_cells": fit_count(n, fit_cells) or n, "seed": int(seed),
                             "n_neighbors": int(n_neighbors), "min_dist": float(min_dist)}
    return out
