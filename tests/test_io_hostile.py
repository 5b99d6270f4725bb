"""Issue 16 point 3: corrupt or hostile input ends in a ReadError naming the file and the problem."""

from __future__ import annotations

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scmm.io.checks as checks
from scmm.io import ReadError, read, read_query, validate

from test_io import bcs, counts, genes, make_ad, prots


def _pair(tmp_path, a=None, b=None):
    a = a if a is not None else make_ad(bcs(20), genes(15), seed=1)
    b = b if b is not None else make_ad(bcs(20), prots(5), seed=2)
    pa, pb = tmp_path / "rna.h5ad", tmp_path / "adt.h5ad"
    a.write_h5ad(pa)
    b.write_h5ad(pb)
    return pa, pb


def test_csr_column_index_out_of_range(tmp_path):
    pa, pb = _pair(tmp_path)
    with h5py.File(pa, "r+") as f:
        idx = f["X/indices"][()]
        idx[3] = 999
        f["X/indices"][...] = idx
    with pytest.raises(ReadError, match=r"rna\.h5ad.*bad CSR sparse structure: column index 999 out of range for 15 columns"):
        read(pa, pb)
    with pytest.raises(ReadError, match=r"rna\.h5ad.*column index 999 out of range"):
        read_query(pa)


def test_csr_indptr_wrong_length_checked_before_loading(tmp_path):
    pa, pb = _pair(tmp_path)
    with h5py.File(pa, "r+") as f:
        f["X"].attrs["shape"] = np.array([10**9, 15])
    with pytest.raises(ReadError, match=r"rna\.h5ad: 'X': bad CSR sparse structure: indptr has 21 entries, expected 1000000001"):
        read(pa, pb)


def test_csr_indptr_decreasing(tmp_path):
    pa, pb = _pair(tmp_path)
    with h5py.File(pa, "r+") as f:
        ip = f["X/indptr"][()]
        ip[5], ip[6] = ip[6], ip[5] - 1
        f["X/indptr"][...] = ip
    with pytest.raises(ReadError, match=r"rna\.h5ad.*(indptr decreases|could not read)"):
        read(pa, pb)


def test_10x_h5_bad_structure(tmp_path):
    p = tmp_path / "filtered_feature_bc_matrix.h5"
    M = sp.csc_matrix(counts(6, 4).T)  # features x cells
    with h5py.File(p, "w") as f:
        g = f.create_group("matrix")
        g["barcodes"] = np.array([b"AAAACCCCGGGG-1" + bytes([65 + i]) for i in range(6)])
        g["data"] = M.data.astype(np.int32)
        idx = M.indices.copy()
        idx[0] = 50
        g["indices"] = idx
        g["indptr"] = M.indptr
        g["shape"] = np.array([4, 6])
        fg = g.create_group("features")
        fg["id"] = np.array([b"g%d" % i for i in range(4)])
        fg["name"] = np.array([b"G%d" % i for i in range(4)])
        fg["feature_type"] = np.array([b"Gene Expression"] * 2 + [b"Antibody Capture"] * 2)
    with pytest.raises(ReadError, match=r"filtered_feature_bc_matrix\.h5: bad CSC sparse structure.*row index 50 out of range for 4 rows"):
        read(p)


def test_complex_values(tmp_path):
    a = make_ad(bcs(20), genes(15), seed=1)
    a.X = a.X.astype(np.complex64)
    pa, pb = _pair(tmp_path, a)
    with pytest.raises(ReadError, match=r"modality 'rna' X holds complex values \(dtype complex64\).*modality dtypes: rna: complex64, prot: float32"):
        read(pa, pb)


def test_boolean_values(tmp_path):
    b = make_ad(bcs(20), prots(5), seed=2, sparse=False)
    b.X = b.X > 1
    pa, pb = _pair(tmp_path, None, b)
    with pytest.raises(ReadError, match=r"modality 'prot' X holds boolean values \(dtype bool\), not counts.*modality dtypes: rna: float32, prot: bool"):
        read(pa, pb)


def test_mixed_dtypes_in_memory():
    import mudata

    a = make_ad(bcs(10), genes(6), seed=1)
    b = make_ad(bcs(10), prots(4), seed=2, sparse=False)
    b.X = b.X.astype(int).astype(str).astype(object)
    with pytest.raises(ReadError, match=r"<in memory>: modality 'prot' X is not numeric \(dtype object\) \(modality dtypes: rna: float32, prot: object\)"):
        validate(mudata.MuData({"rna": a, "prot": b}))


def test_dense_too_large_for_memory(tmp_path, monkeypatch):
    """The 300 x 3,000,000 dense case, scaled down: the check runs before loading, with the figure."""
    pa, pb = _pair(tmp_path, make_ad(bcs(20), genes(15), seed=1, sparse=False))
    monkeypatch.setattr(checks, "_available_memory", lambda: 1000)
    with pytest.raises(ReadError, match=r"rna\.h5ad: loading its arrays would need about .* of memory but only 1000 bytes is available"):
        read(pa, pb)


def test_dense_figure_for_300_by_3_million(monkeypatch):
    monkeypatch.setattr(checks, "_available_memory", lambda: 2 << 30)
    with pytest.raises(ReadError, match=r"big\.h5ad: X \(300 x 3000000 float32\) would need about 3\.4 GiB of memory but only 2\.0 GiB"):
        checks._check_memory("big.h5ad", "X (300 x 3000000 float32)", 300 * 3_000_000 * 4)


def test_memory_error_becomes_read_error(tmp_path, monkeypatch):
    pa, pb = _pair(tmp_path)

    def boom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(anndata, "read_h5ad", boom)
    with pytest.raises(ReadError, match=r"rna\.h5ad: ran out of memory reading it as h5ad"):
        read(pa, pb)


def test_obsm_mixed_dtype_dataframe(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    a.obsm["protein_expression"] = pd.DataFrame({"CD3": np.arange(10), "CD4": ["x"] * 10}, index=a.obs_names)
    p = tmp_path / "one.h5ad"
    a.write_h5ad(p)
    with pytest.raises(ReadError, match=r"one\.h5ad: obsm\['protein_expression'\] is not numeric"):
        read(p)
