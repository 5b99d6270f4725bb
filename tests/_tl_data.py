"""Shared, cached data for the scmm.tl tests: one demo model trained once per test process."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import scmm
import torch

N_CELLS = 1500
EPOCHS = 3


@functools.lru_cache(maxsize=None)
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="scmm-tl-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def trained_model():
    """Demo CITE-seq (1,500 cells), preprocessed, trained 3 epochs, latents computed."""
    mdata = scmm.demo.simulate(n_cells=N_CELLS, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, device="cpu")
    # one thread: on a shared 2-core machine two torch threads can be 30x slower (spin-waiting)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train(epochs=EPOCHS, progress=False, seed=0)
    finally:
        torch.set_num_threads(threads)
    model.get_latent()
    return model


@functools.lru_cache(maxsize=None)
def saved_run() -> Path:
    """The trained model saved as a run folder (not analysed)."""
    return trained_model().save(workdir() / "run")


@functools.lru_cache(maxsize=None)
def analysed_run() -> Path:
    """A copy of the saved run after ``scmm.tl.analyze`` (clusters, UMAPs, traversal, tables)."""
    from scmm.tl import analyze
    target = workdir() / "analysed"
    shutil.copytree(saved_run(), target)
    analyze(target)
    return target
