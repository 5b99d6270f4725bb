"""The app's doorway into ``scmm`` from the server process.

``import scmm`` does not import torch (``scmm.SCMM`` loads it on first use),
and the pieces the server needs — reading cached traversals and heatmap
tables, ranking a selection's features — are torch-free.  The Dash server must
never import torch (a forked background job could not use CUDA afterwards):
training, analysis and prediction run in child processes (:mod:`app.worker`,
:mod:`app.jobs`).
"""
from __future__ import annotations

from pathlib import Path

from scmm.tl.analyze import load_heatmap_tables as _load_tables
from scmm.tl.heatmap import rank_features as _rank_features
from scmm.tl.traversal import CACHE_NAME, Traversal


def load_traversal(run_dir: str | Path):
    """The run's cached traversal (``traversal.npz``), or None when it has none."""
    path = Path(run_dir) / CACHE_NAME
    if not path.exists():
        return None
    try:
        return Traversal.load(path)
    except (OSError, ValueError, KeyError):
        return None


def load_heatmap_tables(run_dir: str | Path) -> dict:
    """The cluster x feature tables written by ``scmm analyze`` (``{}`` when absent).

    Keys ``"<target>|original"``, ``"<target>|from_<source>"`` and ``"similarity"``.
    """
    return _load_tables(run_dir) or {}


def rank_features(mdata, modality: str, cells_mask, n: int | None = None):
    """``scmm.tl.rank_features``: top features of the selected cells against the rest."""
    return _rank_features(mdata, modality, cells_mask, n=n)
