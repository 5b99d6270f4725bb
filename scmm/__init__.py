"""scMM: mixture-of-experts multimodal VAE for single-cell multiomics.

    import scmm
    mdata = scmm.read("pbmc10k_cite.h5mu")
    scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, modalities={"rna": "nb", "prot": "nb"})
    model.train()
    model.get_latent()

``scmm.SCMM`` (and with it torch) is imported on first use, so that readers,
preprocessing and the analyses of cached results can be used by a process
that must not import torch (the app's server).
"""
from ._version import __version__  # noqa: E402,F401

import mudata as _mudata

# adopt mudata 0.4 behaviour now: update() does not pull modality obs columns
_mudata.set_options(pull_on_update=False)

from . import demo  # noqa: E402
from .io import ReadError, read, read_mtx, read_query, read_table  # noqa: E402
from .preprocess import preprocess  # noqa: E402

__all__ = ["SCMM", "ReadError", "datasets", "demo", "pl", "preprocess", "read", "read_mtx", "read_query",
           "read_table", "tl", "__version__"]


def __getattr__(name: str):
    if name == "SCMM":
        from .model import SCMM
        return SCMM
    if name in ("tl", "pl", "datasets"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'scmm' has no attribute {name!r}")
