"""Log-normalisation, the one definition: log1p(counts / library x 1e4), for numpy and scipy inputs.

The encoders' torch version (:func:`scmm.module.objective.normalise`) uses the
same :data:`TARGET_SUM`.  Torch-free.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def library_scale(library, target_sum: float = TARGET_SUM) -> np.ndarray:
    """``target_sum / library`` per cell (0 for cells without counts), float32."""
    library = np.asarray(library, dtype=np.float32).ravel()
    return np.divide(np.float32(target_sum), library, out=np.zeros_like(library), where=library > 0)


def lognorm(X, library=None, target_sum: float = TARGET_SUM):
    """log1p(X / library x ``target_sum``) per cell (rows).

    ``library`` defaults to the row sums.  A sparse ``X`` gives a CSR float32
    matrix (zeros stay zeros), a dense one a float32 array.
    """
    if library is None:
        library = np.asarray(X.sum(axis=1)).ravel()
    scale = library_scale(library, target_sum)
    if sp.issparse(X):
        out = sp.csr_matrix(sp.diags(scale) @ sp.csr_matrix(X, dtype=np.float32))
        out.data = np.log1p(out.data)
        return out
    return np.log1p(np.asarray(X, dtype=np.float32) * scale[:, None])
