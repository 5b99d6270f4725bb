"""The run folder: ``config.json``, ``model.pt`` (weights only) and ``results.h5mu``."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import mudata as md
import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
RESULTS_FILE = "results.h5mu"


def library_version() -> str:
    from . import __version__
    return __version__


def save_run(model, path: str | Path, overwrite: bool = True) -> Path:
    """Write ``model`` (and its attached data with latents) to the run folder ``path``.

    Files are written into a temporary folder beside ``path`` and moved into
    place only when all of them are complete, so a failure leaves nothing
    half-written.  Other files already in ``path`` (exported tables, caches
    of an earlier save) are kept unless they are replaced.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if path.exists() and (path / CONFIG_FILE).exists() and not overwrite:
        raise FileExistsError(f"{path} already holds a run (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        config = {"scmm_version": library_version(), **model.config()}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        torch.save(model.module.state_dict(), staging / WEIGHTS_FILE)
        if model.mdata is not None:
            model.mdata.write(staging / RESULTS_FILE)
        path.mkdir(exist_ok=True)
        for item in staging.iterdir():
            item.replace(path / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def read_config(path: str | Path) -> dict:
    """The parsed ``config.json`` of a run folder (clear error when absent)."""
    file = Path(path) / CONFIG_FILE
    if not file.exists():
        raise FileNotFoundError(f"{path} is not a scMM run folder (no {CONFIG_FILE})")
    return json.loads(file.read_text())


def load_run(path: str | Path, device: str | None = None, load_data: bool = True):
    """Rebuild the model saved in ``path``; attach ``results.h5mu`` when present and asked."""
    from .api import SCMM
    path = Path(path)
    model = SCMM.from_config(read_config(path), device=device)
    state = torch.load(path / WEIGHTS_FILE, map_location=model.device, weights_only=True)
    model.module.load_state_dict(state)
    model.module.eval()
    if load_data and (path / RESULTS_FILE).exists():
        model.mdata = md.read_h5mu(path / RESULTS_FILE)
    return model
