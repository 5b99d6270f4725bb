"""Mini-batches cut from sparse count matrices.

Each modality's counts stay a CSR matrix held as three torch tensors
(``indptr``, ``indices``, ``data``) on the training device.  A batch of rows is
cut with one gather and densified as a batch; the whole dataset is never
dense.  Library sizes are computed once, when the batcher is built.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class CSRRows:
    """A CSR count matrix resident on ``device``, from which dense row batches are cut."""

    def __init__(self, matrix, device: torch.device | str = "cpu"):
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.sort_indices()
        self.shape = csr.shape
        self.device = torch.device(device)
        self.indptr = torch.as_tensor(csr.indptr.astype(np.int64), device=self.device)
        self.indices = torch.as_tensor(csr.indices.astype(np.int64), device=self.device)
        self.data = torch.as_tensor(csr.data, device=self.device)
        self.library = torch.as_tensor(np.asarray(csr.sum(axis=1)).ravel(), device=self.device)

    def cut(self, rows: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Dense float32 block of ``rows`` (a 1-D long tensor on the device) and its
        non-zero entries as ``(row in batch, column, value)`` tensors."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        n_rows = rows.shape[0]
        out = torch.zeros(n_rows, self.shape[1], device=self.device)
        nnz = int(lengths.sum())
        row_of = torch.repeat_interleave(torch.arange(n_rows, device=self.device), lengths,
                                         output_size=nnz)
        first = torch.cumsum(lengths, 0) - lengths
        offset = torch.arange(nnz, device=self.device) - first[row_of] + starts[row_of]
        cols, vals = self.indices[offset], self.data[offset]
        out[row_of, cols] = vals
        return out, (row_of, cols, vals)


class MultiModalBatches:
    """Row batches of several modalities of the same cells, with their library sizes."""

    def __init__(self, matrices: dict, device: torch.device | str = "cpu", libraries: dict | None = None):
        self.mods = {name: CSRRows(m, device) for name, m in matrices.items()}
        if libraries is not None:
            for name, lib in libraries.items():
                self.mods[name].library = torch.as_tensor(np.asarray(lib, dtype=np.float32),
                                                          device=self.mods[name].device)
        sizes = {m.shape[0] for m in self.mods.values()}
        if len(sizes) != 1:
            raise ValueError(f"modalities have different cell counts: {sizes}")
        self.n_cells = sizes.pop()
        self.device = torch.device(device)

    def batch(self, rows: torch.Tensor) -> tuple[dict, dict, dict]:
        """Dense counts, library sizes and non-zero entries of ``rows`` for every modality."""
        cuts = {n: m.cut(rows) for n, m in self.mods.items()}
        xs = {n: c[0] for n, c in cuts.items()}
        nonzeros = {n: c[1] for n, c in cuts.items()}
        libs = {n: m.library[rows] for n, m in self.mods.items()}
        return xs, libs, nonzeros

    def epoch(self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True,
              drop_last: bool = True):
        """Yield row-index tensors covering one epoch.

        With ``drop_last`` every batch has exactly ``batch_size`` rows (static
        shapes); the few rows left over are skipped this epoch only, since
        every epoch is shuffled anew.
        """
        if shuffle:
            order = torch.randperm(self.n_cells, generator=generator).to(self.device)
        else:
            order = torch.arange(self.n_cells, device=self.device)
        size = min(batch_size, self.n_cells)
        stop = self.n_cells - self.n_cells % size if drop_last else self.n_cells
        for start in range(0, stop, size):
            yield order[start:start + size]
