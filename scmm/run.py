"""Saving and loading a model's run folder: ``config.json``, ``model.pt`` (weights only), ``results.h5mu``.

File names and the validated config reader live in :mod:`scmm.runfolder`;
:meth:`scmm.SCMM.load` builds the model from that config and calls
:func:`load_weights`.  This module never imports :mod:`scmm.model` (no cycle).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import mudata as md
import numpy as np
import scipy.sparse as sp
import torch

from . import runfolder
from ._version import __version__
from .runfolder import CONFIG_FILE, RESULTS_FILE, WEIGHTS_FILE, RunFileError

#: slack added to the estimated size of a save (config, HDF5 overhead, metadata)
SAVE_MARGIN_BYTES = 16 * 2 ** 20


def _array_bytes(x) -> int:
    if x is None:
        return 0
    if sp.issparse(x):
        return int(x.nnz) * 12 + (x.shape[0] + 1) * 8
    return int(getattr(x, "nbytes", 0) or np.asarray(x).nbytes)


def estimate_save_bytes(model) -> int:
    """Rough size of what :func:`save_run` writes: float32 weights plus the attached data
    (sparse matrices at 12 bytes a non-zero, dense arrays at their size, obs/var tables)."""
    total = 4 * sum(p.numel() for p in model.module.state_dict().values()) + SAVE_MARGIN_BYTES
    mdata = model.mdata
    if mdata is not None:
        parts = [mdata, *mdata.mod.values()]
        for part in parts:
            total += _array_bytes(getattr(part, "X", None)) if part is not mdata else 0
            for store in ("obsm", "varm", "layers", "obsp"):
                for value in (getattr(part, store, None) or {}).values():
                    total += _array_bytes(value)
            for table in (part.obs, part.var):
                total += int(table.memory_usage(index=True, deep=True).sum())
    return total


def save_run(model, path: str | Path, overwrite: bool = True) -> Path:
    """Write ``model`` (and its attached data with latents) to the run folder ``path``.

    Files are written into a temporary folder beside ``path`` and moved into
    place only when all of them are complete, so a failure leaves nothing
    half-written.  Other files already in ``path`` (exported tables, caches
    of an earlier save) are kept unless they are replaced.  The folder is
    checked for write access and free space first; an ``OSError`` of the save
    (full or read-only disk) is raised with a message naming the folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if path.exists() and (path / CONFIG_FILE).exists() and not overwrite:
        raise FileExistsError(f"{path} already holds a run (pass overwrite=True to replace it)")
    runfolder.check_writable(path.parent, need_bytes=estimate_save_bytes(model))
    if path.exists():
        runfolder.check_writable(path)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        config = {"scmm_version": __version__, **model.config()}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        torch.save(model.module.state_dict(), staging / WEIGHTS_FILE)
        if model.mdata is not None:
            model.mdata.write(staging / RESULTS_FILE)
        path.mkdir(exist_ok=True)
        for item in staging.iterdir():
            item.replace(path / item.name)
    except OSError as err:
        error = OSError(f"could not save the run to {path}: {err.strerror or err}")
        error.errno = err.errno
        raise error from err
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return path


def load_weights(path: str | Path, module) -> None:
    """Load the run's ``model.pt`` into ``module`` (built from the validated config) and set eval mode.

    Weights that do not load as plain tensors (``weights_only=True``), or do
    not fit the config, raise :class:`~scmm.runfolder.RunFileError`.
    """
    weights = Path(path) / WEIGHTS_FILE
    device = next(module.parameters()).device
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} has no {WEIGHTS_FILE}") from None
    except Exception as err:
        raise RunFileError(weights, f"refused: does not load as plain tensors ({str(err)[:200]})") from None
    if not isinstance(state, dict):
        raise RunFileError(weights, "not a state dict of weights")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise RunFileError(weights, f"does not fit {CONFIG_FILE}: {str(err)[:300]}") from None
    module.eval()


def read_results(path: str | Path):
    """The run's ``results.h5mu`` (None when it has none)."""
    file = Path(path) / RESULTS_FILE
    return md.read_h5mu(file) if file.exists() else None
