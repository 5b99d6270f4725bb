"""scMM: mixture-of-experts multimodal VAE for single-cell multiomics.

    import scmm
    mdata = scmm.read("pbmc10k_cite.h5mu")
    scmm.preprocess(mdata)
    model = scmm.SCMM(mdata, modalities={"rna": "nb", "prot": "nb"})
    model.train()
    model.get_latent()
"""
__version__ = "0.1.0"

import mudata as _mudata

# adopt mudata 0.4 behaviour now: update() does not pull modality obs columns
_mudata.set_options(pull_on_update=False)

from . import demo
from .api import SCMM
from .io import ReadError, read, read_query
from .preprocess import preprocess

__all__ = ["SCMM", "ReadError", "demo", "preprocess", "read", "read_query", "__version__"]
