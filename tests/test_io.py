"""Tests for scmm.io: every reader path on real and synthetic data, and every error path."""

from __future__ import annotations

import gzip
import re
import warnings
from pathlib import Path

import anndata
import h5py
import mudata
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from _real_data import fixture, real_data

from scmm.io import ReadError, read, read_query, summarize, validate



def _data(rel: str) -> Path:
    """A full dataset (../shared/data or $SCMM_SHARED_DATA), or a skip saying how to fetch it."""
    return real_data(rel)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def counts(n_cells, n_feat, seed=0, density=0.4):
    """Integer count matrix with no empty rows or columns."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n_cells, n_feat)) * (rng.random((n_cells, n_feat)) < density)
    X[np.arange(n_cells), np.arange(n_cells) % n_feat] += 1  # every cell has counts
    X[np.arange(n_feat) % n_cells, np.arange(n_feat)] += 1  # every feature has counts
    return X.astype(np.float32)


def make_ad(barcodes, features, seed=0, sparse=True):
    X = counts(len(barcodes), len(features), seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="(Observation|Variable) names are not unique")
        return anndata.AnnData(
            X=sp.csr_matrix(X) if sparse else X,
            obs=pd.DataFrame(index=pd.Index(list(barcodes), dtype=object)),
            var=pd.DataFrame(index=pd.Index(list(features), dtype=object)),
        )


def bcs(n, start=0):
    return [f"CELL{i:04d}-1" for i in range(start, start + n)]


def genes(n):
    return [f"Gene{i}" for i in range(n)]


def prots(n):
    return [f"Prot{i}" for i in range(n)]


def write_pair(tmp_path, a, b, names=("rna.h5ad", "adt.h5ad")):
    pa, pb = tmp_path / names[0], tmp_path / names[1]
    a.write_h5ad(pa)
    b.write_h5ad(pb)
    return pa, pb


def listing(folder: Path):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def assert_clean(md: mudata.MuData):
    """The invariants every reader promises."""
    names = list(md.mod)
    assert len(names) >= 2
    first = md.mod[names[0]].obs_names
    for a in md.mod.values():
        assert isinstance(a.X, sp.csr_matrix)
        assert a.X.dtype == np.float32
        assert a.obs_names.equals(first)
        assert a.var_names.is_unique
        d = a.X.data
        assert np.all(d > 0) and np.all(d == np.rint(d))
        assert np.all(np.diff(a.X.indptr) > 0)  # no empty cells
        assert np.all(np.bincount(a.X.indices, minlength=a.n_vars) > 0)  # no empty features
    assert md.obs_names.equals(first)


def write_mtx(folder: Path, X_cells_by_feat, ids, names, ftypes, barcodes, gz=True, v2=False):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    op = gzip.open if gz else open
    with op(folder / f"matrix.mtx{suffix}", "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(np.asarray(X_cells_by_feat).T.astype(np.int64)))
    rows = (
        [f"{i}\t{n}" for i, n in zip(ids, names)]
        if v2
        else [f"{i}\t{n}\t{t}" for i, n, t in zip(ids, names, ftypes)]
    )
    fname = "genes.tsv" if v2 else "features.tsv"
    with op(folder / f"{fname}{suffix}", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    with op(folder / f"barcodes.tsv{suffix}", "wt") as fh:
        fh.write("\n".join(barcodes) + "\n")
    return folder


# --------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pbmc_h5mu():
    return read(_data("pbmc10k_cite/pbmc10k_cite.h5mu"))


@pytest.fixture(scope="module")
def pbmc_10x():
    return read(_data("pbmc10k_cite/filtered_feature_bc_matrix.h5"))


def test_pbmc_h5mu(pbmc_h5mu):
    md = pbmc_h5mu
    assert list(md.mod) == ["rna", "prot"]
    assert md.n_obs == 6855
    assert md["rna"].n_vars == 4000 and md["prot"].n_vars == 14
    assert_clean(md)


def test_pbmc_10x_h5_same_counts_as_h5mu(pbmc_h5mu, pbmc_10x):
    assert list(pbmc_10x.mod) == ["rna", "prot"]
    assert_clean(pbmc_10x)
    assert pbmc_10x.obs_names.equals(pbmc_h5mu.obs_names)
    for m in ("rna", "prot"):
        a, b = pbmc_10x[m], pbmc_h5mu[m]
        assert a.var_names.equals(b.var_names)
        assert (a.X != b.X).nnz == 0
    # the gene CD4 and the protein CD4 stay apart, one in each modality
    assert "CD4" in pbmc_10x["rna"].var_names and "CD4" in pbmc_10x["prot"].var_names
    assert set(pbmc_10x["prot"].var["feature_types"]) == {"Antibody Capture"}
    assert set(pbmc_10x["rna"].var["feature_types"]) == {"Gene Expression"}


def test_snare_keeps_labels_and_drops_empty_peaks():
    with pytest.warns(UserWarning, match=r"dropped features with zero counts.*atac: 990 of 25734"):
        md = read(_data("snare_cortex/snare_cortex.h5mu"))
    assert list(md.mod) == ["rna", "atac"]
    assert md.n_obs == 10309 and md["atac"].n_vars == 25734 - 990
    assert md.obs["cell_type"].nunique() == 23
    assert_clean(md)


def test_multiome_tiny_drops_empty_cells():
    with (
        pytest.warns(UserWarning, match=r"dropped 19 of 1000 cells with zero counts.*atac: 19"),
        pytest.warns(UserWarning, match=r"dropped features with zero counts in all cells \(atac: 2 of 174\)"),
    ):
        md = read(fixture("multiome_tiny.h5mu"))    # a copy of multiome_tiny/test_rna_atac.h5mu
    assert md.n_obs == 981
    assert set(md.mod) == {"rna", "atac"}
    assert_clean(md)


def test_h5ad_with_proteins_in_obsm():
    with pytest.warns(UserWarning, match=r"rna: 3357 of 16727"):
        md = read(fixture("pbmc_10k_protein_v3.h5ad"))    # pbmc10k_fixture/, same HDF5 layout, gzip
    assert list(md.mod) == ["rna", "prot"]
    assert md.n_obs == 200
    assert md["prot"].n_vars == 14
    assert md["prot"].var_names[0] == "CD3_TotalSeqB"
    assert "protein_expression" not in md["rna"].obsm
    assert {"n_genes", "percent_mito", "n_counts"} <= set(md.obs.columns)
    assert_clean(md)


def test_read_query_from_real_h5mu():
    q = read_query(_data("pbmc10k_cite/pbmc10k_cite.h5mu"), modality="prot")
    assert q.shape == (6855, 14)
    assert isinstance(q.X, sp.csr_matrix) and q.X.dtype == np.float32
    with pytest.raises(ReadError, match=r"pbmc10k_cite\.h5mu.*several modalities"):
        read_query(_data("pbmc10k_cite/pbmc10k_cite.h5mu"))
    with pytest.raises(ReadError, match=r"pbmc10k_cite\.h5mu.*modality 'atac' not found"):
        read_query(_data("pbmc10k_cite/pbmc10k_cite.h5mu"), modality="atac")


# the in-repo subsets (tests/fixtures): real data on a fresh clone
@pytest.fixture(scope="module")
def pbmc_500():
    return read(fixture("pbmc10k_cite_500.h5mu"))


def test_fixture_pbmc_h5mu(pbmc_500):
    assert list(pbmc_500.mod) == ["rna", "prot"]
    assert pbmc_500.n_obs == 500
    assert pbmc_500["rna"].n_vars == 1000 and pbmc_500["prot"].n_vars == 14
    assert_clean(pbmc_500)


def test_fixture_pbmc_10x_h5_same_counts_as_h5mu(pbmc_500):
    tenx = read(fixture("pbmc10k_cite_500_filtered_feature_bc_matrix.h5"))
    assert list(tenx.mod) == ["rna", "prot"]
    assert_clean(tenx)
    assert tenx.obs_names.equals(pbmc_500.obs_names)
    for m in ("rna", "prot"):
        assert tenx[m].var_names.equals(pbmc_500[m].var_names)
        assert (tenx[m].X != pbmc_500[m].X).nnz == 0
    assert "CD4" in tenx["rna"].var_names and "CD4" in tenx["prot"].var_names
    assert set(tenx["prot"].var["feature_types"]) == {"Antibody Capture"}
    assert set(tenx["rna"].var["feature_types"]) == {"Gene Expression"}


def test_fixture_snare_keeps_labels():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)    # the subset has no empty cells or features
        md = read(fixture("snare_cortex_400.h5mu"))
    assert list(md.mod) == ["rna", "atac"]
    assert md.n_obs == 400 and md["rna"].n_vars == 800 and 2900 <= md["atac"].n_vars <= 3000
    assert md["atac"].var_names[0].startswith("chr") and md["atac"].var_names[0].count("_") == 2
    assert md.obs["cell_type"].nunique() > 15
    assert_clean(md)


def test_fixture_read_query():
    path = fixture("pbmc10k_cite_500.h5mu")
    q = read_query(path, modality="prot")
    assert q.shape == (500, 14)
    assert isinstance(q.X, sp.csr_matrix) and q.X.dtype == np.float32
    with pytest.raises(ReadError, match=r"pbmc10k_cite_500\.h5mu.*several modalities"):
        read_query(path)


# --------------------------------------------------------------------------
# 10x mtx folder
# --------------------------------------------------------------------------


def test_mtx_folder_split_by_feature_type(tmp_path):
    n = 12
    feats = [
        ("ENSG1", "CD4", "Gene Expression"),
        ("ENSG2", "MS4A1", "Gene Expression"),
        ("ENSG3", "LYZ", "Gene Expression"),
        ("CD4", "CD4", "Antibody Capture"),
        ("CD19", "CD19", "Antibody Capture"),
        ("chr1:100-200", "chr1:100-200", "Peaks"),
        ("chr1:300-400", "chr1:300-400", "Peaks"),
        ("g1", "guide1", "CRISPR Guide Capture"),
    ]
    X = np.hstack([counts(n, k, seed=s) for s, k in enumerate((3, 2, 2, 1))])
    folder = write_mtx(tmp_path / "filtered_feature_bc_matrix", X, *zip(*feats), barcodes=bcs(n))
    before = listing(tmp_path)
    md = read(folder)
    assert listing(tmp_path) == before  # read never writes
    assert list(md.mod) == ["rna", "prot", "atac", "crispr_guide_capture"]
    assert_clean(md)
    assert list(md["rna"].var_names) == ["CD4", "MS4A1", "LYZ"]
    assert list(md["prot"].var_names) == ["CD4", "CD19"]
    assert list(md["rna"].var["gene_ids"]) == ["ENSG1", "ENSG2", "ENSG3"]
    np.testing.assert_array_equal(md["rna"].X.toarray(), X[:, :3])
    np.testing.assert_array_equal(md["prot"].X.toarray(), X[:, 3:5])
    assert list(md.obs_names) == bcs(n)
    # the matrix file itself stands for its folder
    assert list(read(folder / "matrix.mtx.gz").mod) == list(md.mod)


def test_mtx_folder_uncompressed_v2_single_modality(tmp_path):
    X = counts(6, 4, seed=1)
    folder = write_mtx(tmp_path / "v2", X, genes(4), genes(4), None, bcs(6), gz=False, v2=True)
    with pytest.raises(ReadError, match=r"v2.*only one modality \('rna'\).*at least 2"):
        read(folder)
    q = read_query(folder)
    assert q.uns["modality"] == "rna"
    np.testing.assert_array_equal(q.X.toarray(), X)


def test_mtx_folder_incomplete_and_not_mtx(tmp_path):
    X = counts(5, 3)
    folder = write_mtx(tmp_path / "mtx", X, genes(3), genes(3), ["Gene Expression"] * 3, bcs(5))
    (folder / "barcodes.tsv.gz").unlink()
    with pytest.raises(ReadError, match=r"mtx.*incomplete 10x mtx folder; missing barcodes"):
        read(folder)
    empty = tmp_path / "somefolder"
    empty.mkdir()
    with pytest.raises(ReadError, match=r"somefolder.*unknown format"):
        read(empty)


def test_mtx_shape_mismatch_is_read_error(tmp_path):
    X = counts(5, 3)
    folder = write_mtx(tmp_path / "bad", X, genes(3), genes(3), ["Gene Expression"] * 3, bcs(4))
    with pytest.raises(ReadError, match=r"bad.*could not read"):
        read(folder)


# --------------------------------------------------------------------------
# pairs of .h5ad files
# --------------------------------------------------------------------------


def test_h5ad_pair_names_guessed_from_stem(tmp_path):
    rna = make_ad(bcs(20), genes(15), seed=1)
    rna.obs["batch"] = "b1"
    adt = make_ad(bcs(20), prots(5), seed=2)
    pa, pb = write_pair(tmp_path, rna, adt, ("pbmc_rna.h5ad", "pbmc_adt.h5ad"))
    before = listing(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # fully shared: no warning
        md = read(pa, pb)
    assert listing(tmp_path) == before
    assert list(md.mod) == ["rna", "prot"]
    assert_clean(md)
    np.testing.assert_array_equal(md["rna"].X.toarray(), rna.X.toarray())
    assert (md["rna"].obs["batch"] == "b1").all()
    assert "batch" in md.obs.columns


def test_h5ad_pair_modality_names_and_stem_fallback(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    b = make_ad(bcs(10), prots(4), seed=2)
    pa, pb = write_pair(tmp_path, a, b, ("first.h5ad", "second.h5ad"))
    assert list(read(pa, pb).mod) == ["first", "second"]
    assert list(read(pa, pb, modality_names=["rna", "adt"]).mod) == ["rna", "adt"]
    assert list(read(pa, pb, modality_names={"second": "prot"}).mod) == ["first", "prot"]
    with pytest.raises(ReadError, match=r"first\.h5ad.*modality_names has 3 names.*2 modalities"):
        read(pa, pb, modality_names=["a", "b", "c"])


def test_h5ad_peaks_guessed_from_var_content(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    b = make_ad(bcs(10), [f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(8)], seed=2)
    pa, pb = write_pair(tmp_path, a, b, ("expr.h5ad", "x.h5ad"))
    assert list(read(pa, pb).mod) == ["expr", "atac"]


def test_h5ad_pair_duplicate_guessed_names(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    b = make_ad(bcs(10), genes(6), seed=2)
    pa, pb = write_pair(tmp_path, a, b, ("rna_1.h5ad", "rna_2.h5ad"))
    with pytest.raises(ReadError, match=r"rna_1\.h5ad.*\['rna'\] occur more than once.*modality_names"):
        read(pa, pb)


def test_partial_barcodes_warns_with_counts(tmp_path):
    a = make_ad(bcs(100), genes(10), seed=1)  # CELL0000..0099
    b = make_ad(bcs(95, start=10)[::-1], prots(4), seed=2)  # CELL0010..0104, reversed
    pa, pb = write_pair(tmp_path, a, b, ("a.h5ad", "b.h5ad"))
    msg = r"kept 90 barcodes shared by all files; dropped 10 of a\.h5ad, 5 of b\.h5ad"
    with pytest.warns(UserWarning, match=msg):
        md = read(pa, pb)
    assert list(md.obs_names) == bcs(90, start=10)  # order of the first file
    assert_clean(md)
    # counts follow their barcodes through the reordering
    np.testing.assert_array_equal(md["b"].X.toarray(), b[bcs(90, start=10)].X.toarray())
    np.testing.assert_array_equal(md["a"].X.toarray(), a[10:].X.toarray())


def test_no_shared_barcodes(tmp_path):
    a = make_ad(bcs(10), genes(5), seed=1)
    b = make_ad(bcs(10, start=50), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.raises(ReadError, match=r"rna\.h5ad.*no shared barcodes"):
        read(pa, pb)


def test_three_files(tmp_path):
    a = make_ad(bcs(10), genes(5), seed=1)
    b = make_ad(bcs(10), prots(3), seed=2)
    c = make_ad(bcs(10), [f"chr2_{i}_{i + 50}" for i in range(0, 700, 100)], seed=3)
    pa, pb = write_pair(tmp_path, a, b)
    pc = tmp_path / "atac.h5ad"
    c.write_h5ad(pc)
    md = read(pa, pb, pc)
    assert list(md.mod) == ["rna", "prot", "atac"]
    assert_clean(md)


# --------------------------------------------------------------------------
# counts layer and value checks
# --------------------------------------------------------------------------


def test_counts_layer_preferred(tmp_path):
    a = make_ad(bcs(12), genes(8), seed=1)
    raw = a.X.copy()
    a.layers["counts"] = raw
    a.X = sp.csr_matrix(np.log1p(raw.toarray()))  # normalised X
    b = make_ad(bcs(12), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    md = read(pa, pb)
    np.testing.assert_array_equal(md["rna"].X.toarray(), raw.toarray())
    assert len(md["rna"].layers) == 0


def test_custom_counts_layer(tmp_path):
    a = make_ad(bcs(12), genes(8), seed=1)
    raw = a.X.copy()
    a.layers["raw"] = raw
    a.X = sp.csr_matrix(raw.toarray() / 3.0)
    b = make_ad(bcs(12), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.raises(ReadError, match=r"rna\.h5ad.*X looks normalised.*layers\['counts'\]"):
        read(pa, pb)
    md = read(pa, pb, counts_layer="raw")
    np.testing.assert_array_equal(md["rna"].X.toarray(), raw.toarray())


def test_normalised_x_without_layer(tmp_path):
    a = make_ad(bcs(12), genes(8), seed=1)
    a.X = a.X * 0.37
    b = make_ad(bcs(12), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    n = a.X.nnz
    with pytest.raises(
        ReadError, match=rf"rna\.h5ad.*modality 'rna': X looks normalised \({n} non-integer values\).*layers\['counts'\]"
    ):
        read(pa, pb)


def test_non_integer_counts_layer(tmp_path):
    a = make_ad(bcs(12), genes(8), seed=1)
    a.layers["counts"] = a.X * 0.5
    b = make_ad(bcs(12), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.raises(ReadError, match=r"rna\.h5ad.*modality 'rna' layers\['counts'\] has \d+ non-integer"):
        read(pa, pb)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (-1.0, r"modality 'prot' X has 2 negative values"),
        (np.nan, r"modality 'prot' X has 2 NaN/inf values \(2 NaN, 0 inf\)"),
        (np.inf, r"modality 'prot' X has 2 NaN/inf values \(0 NaN, 2 inf\)"),
    ],
)
def test_bad_values(tmp_path, bad, pattern):
    a = make_ad(bcs(12), genes(8), seed=1)
    b = make_ad(bcs(12), prots(3), seed=2, sparse=False)
    b.X[0, 0] = bad
    b.X[3, 1] = bad
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.raises(ReadError, match=r"adt\.h5ad.*" + pattern):
        read(pa, pb)


def test_duplicate_barcodes(tmp_path):
    names = bcs(10)
    names[5] = names[2]
    a = make_ad(names, genes(5), seed=1)
    b = make_ad(bcs(10), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.raises(ReadError, match=r"rna\.h5ad.*modality 'rna' has 1 duplicate barcodes.*CELL0002-1"):
        read(pa, pb)


def test_duplicate_feature_names_made_unique(tmp_path):
    a = make_ad(bcs(10), ["A", "B", "A", "C"], seed=1)
    b = make_ad(bcs(10), prots(3), seed=2)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.warns(UserWarning, match=r"modality 'rna' has 1 duplicate feature names"):
        md = read(pa, pb)
    assert md["rna"].var_names.is_unique


def test_empty_cells_and_features_dropped(tmp_path):
    a = make_ad(bcs(20), genes(10), seed=1)
    b = make_ad(bcs(20), prots(4), seed=2)
    A = a.X.toarray()
    A[3] = 0  # cell 3 empty in rna
    A[:, 7] = 0  # gene 7 empty
    a.X = sp.csr_matrix(A)
    B = b.X.toarray()
    B[[5, 6]] = 0  # cells 5, 6 empty in prot
    b.X = sp.csr_matrix(B)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.warns(UserWarning) as rec:
        md = read(pa, pb)
    msgs = [str(w.message) for w in rec]
    assert any(re.search(r"dropped 3 of 20 cells with zero counts.*rna: 1, prot: 2", m) for m in msgs), msgs
    assert any(re.search(r"dropped features with zero counts in all cells \(rna: 1 of 10\)", m) for m in msgs), msgs
    assert md.n_obs == 17 and md["rna"].n_vars == 9
    assert "Gene7" not in md["rna"].var_names
    assert not {"CELL0003-1", "CELL0005-1", "CELL0006-1"} & set(md.obs_names)
    assert_clean(md)


def test_modality_with_no_counts(tmp_path):
    a = make_ad(bcs(10), genes(5), seed=1)
    b = make_ad(bcs(10), prots(3), seed=2)
    b.X = sp.csr_matrix((10, 3), dtype=np.float32)
    pa, pb = write_pair(tmp_path, a, b)
    with pytest.raises(ReadError, match=r"rna\.h5ad.*no cells left.*prot: 10"):
        read(pa, pb)


# --------------------------------------------------------------------------
# file-level errors
# --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ReadError, match=r"nope\.h5mu: file not found"):
        read(tmp_path / "nope.h5mu")
    a = make_ad(bcs(5), genes(3))
    pa = tmp_path / "rna.h5ad"
    a.write_h5ad(pa)
    with pytest.raises(ReadError, match=r"missing\.h5ad: file not found"):
        read(pa, tmp_path / "missing.h5ad")


def test_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.h5ad"
    garbage.write_bytes(b"this is not an hdf5 file\n" * 10)
    with pytest.raises(ReadError, match=r"garbage\.h5ad: not a valid HDF5 file.*corrupt"):
        read(garbage)
    # a real file cut short
    a = make_ad(bcs(200), genes(300), seed=1)
    full = tmp_path / "full.h5ad"
    a.write_h5ad(full)
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(full.read_bytes()[:4096])
    with pytest.raises(ReadError, match=r"cut\.h5ad.*(corrupt|truncated)"):
        read(cut, full)


def test_unknown_format(tmp_path):
    xlsx = tmp_path / "counts.xlsx"  # .csv is a count table since issue 16 (tests/test_io_geo.py)
    xlsx.write_text("a,b\n1,2\n")
    with pytest.raises(ReadError, match=r"counts\.xlsx: unknown format '\.xlsx'"):
        read(xlsx)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["foo"] = np.arange(3)
    with pytest.raises(ReadError, match=r"other\.h5: unknown format: an HDF5 file with top-level keys \['foo'\]"):
        read(other)


def test_format_detected_by_content(tmp_path):
    """An .h5mu saved under another extension is still read as .h5mu."""
    md = mudata.MuData({"rna": make_ad(bcs(8), genes(4), 1), "prot": make_ad(bcs(8), prots(3), 2)})
    p = tmp_path / "data.h5ad"
    md.write_h5mu(p)
    out = read(p)
    assert list(out.mod) == ["rna", "prot"]


def test_single_modality_h5ad_and_h5mu(tmp_path):
    a = make_ad(bcs(8), genes(4))
    p = tmp_path / "only.h5ad"
    a.write_h5ad(p)
    with pytest.raises(ReadError, match=r"only\.h5ad: found only one modality.*at least 2"):
        read(p)
    m = tmp_path / "one.h5mu"
    mudata.MuData({"rna": a}).write_h5mu(m)
    with pytest.raises(ReadError, match=r"one\.h5mu: found only one modality \('rna'\)"):
        read(m)


def test_h5mu_with_partly_different_cells(tmp_path):
    md = mudata.MuData({"rna": make_ad(bcs(10), genes(4), 1), "prot": make_ad(bcs(8, start=2), prots(3), 2)})
    p = tmp_path / "partial.h5mu"
    md.write_h5mu(p)
    with pytest.warns(UserWarning, match=r"partial\.h5mu: kept 8 barcodes shared by all modalities; dropped 2 of modality 'rna'"):
        out = read(p)
    assert list(out.obs_names) == bcs(8, start=2)


# --------------------------------------------------------------------------
# single .h5ad with proteins in obsm
# --------------------------------------------------------------------------


def test_obsm_proteins_as_dataframe(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    a.obsm["protein_expression"] = pd.DataFrame(counts(10, 3, seed=5), index=a.obs_names, columns=["CD3", "CD4", "CD8"])
    p = tmp_path / "cite.h5ad"
    a.write_h5ad(p)
    md = read(p)
    assert list(md["prot"].var_names) == ["CD3", "CD4", "CD8"]
    assert_clean(md)


def test_obsm_proteins_unnamed_and_custom_key(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    a.obsm["my_adt"] = counts(10, 3, seed=5).astype(np.int64)
    p = tmp_path / "cite.h5ad"
    a.write_h5ad(p)
    with pytest.raises(ReadError, match=r"cite\.h5ad: found only one modality.*my_adt"):
        read(p)
    md = read(p, protein_obsm_key="my_adt")
    assert list(md["prot"].var_names) == ["prot_0", "prot_1", "prot_2"]
    with pytest.raises(ReadError, match=r"cite\.h5ad: protein_obsm_key 'nope' not found in obsm"):
        read(p, protein_obsm_key="nope")


def test_obsm_proteins_negative(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    P = counts(10, 3, seed=5)
    P[2, 2] = -4
    a.obsm["protein_expression"] = P
    p = tmp_path / "cite.h5ad"
    a.write_h5ad(p)
    with pytest.raises(ReadError, match=r"cite\.h5ad.*modality 'prot' obsm\['protein_expression'\] has 1 negative"):
        read(p)


# --------------------------------------------------------------------------
# validate, summarize, read_query
# --------------------------------------------------------------------------


def test_validate_in_memory_does_not_modify_input():
    a = make_ad(bcs(10), genes(5), seed=1, sparse=False)  # dense X
    a.X[0] = 0
    b = make_ad(bcs(10), prots(3), seed=2)
    md = mudata.MuData({"rna": a, "prot": b})
    md.obs["label"] = list("abcdefghij")
    with pytest.warns(UserWarning, match=r"<in memory>: dropped 1 of 10 cells"):
        out = validate(md)
    assert isinstance(md["rna"].X, np.ndarray) and md.n_obs == 10  # input untouched
    assert out.n_obs == 9
    assert list(out.obs["label"]) == list("bcdefghij")
    assert_clean(out)
    bad = mudata.MuData({"rna": make_ad(bcs(4), genes(3)), "prot": make_ad(bcs(4), prots(2))})
    bad["prot"].X = bad["prot"].X * -1
    with pytest.raises(ReadError, match=r"my data: modality 'prot' X has \d+ negative values"):
        validate(bad, source="my data")
    with pytest.raises(ReadError, match=r"solo: found 1 modality"):
        validate(mudata.MuData({"rna": make_ad(bcs(4), genes(3))}), source="solo")


def test_summarize():
    X1 = np.array([[1, 0, 2], [0, 3, 0], [4, 0, 0], [1, 1, 1]], dtype=np.float32)
    X2 = np.array([[5, 1], [2, 0], [1, 1], [3, 3]], dtype=np.float32)
    obs = pd.DataFrame(index=bcs(4))
    md = mudata.MuData(
        {
            "rna": anndata.AnnData(sp.csr_matrix(X1), obs=obs, var=pd.DataFrame(index=genes(3))),
            "prot": anndata.AnnData(X2, obs=obs.copy(), var=pd.DataFrame(index=prots(2))),
        }
    )
    s = summarize(md)
    assert s["n_cells"] == 4
    r = s["modalities"]["rna"]
    assert r == pytest.approx({"n_features": 3, "median_counts_per_cell": 3.0, "mean_counts_per_cell": 3.25, "sparsity": 5 / 12})
    assert s["modalities"]["prot"]["sparsity"] == pytest.approx(1 / 8)
    assert s["modalities"]["prot"]["mean_counts_per_cell"] == pytest.approx(4.0)
    assert isinstance(s["n_cells"], int) and isinstance(r["sparsity"], float)


def test_read_query_h5ad_and_10x(tmp_path):
    a = make_ad(bcs(10), genes(6), seed=1)
    A = a.X.toarray()
    A[4] = 0
    a.X = sp.csr_matrix(A)
    p = tmp_path / "query_rna.h5ad"
    a.write_h5ad(p)
    with pytest.warns(UserWarning, match=r"query_rna\.h5ad: dropped 1 of 10 cells with zero counts"):
        q = read_query(p)
    assert q.shape == (9, 6) and q.uns["modality"] == "rna"
    assert isinstance(q.X, sp.csr_matrix) and q.X.dtype == np.float32

    X = np.hstack([counts(6, 3, seed=2), counts(6, 2, seed=3)])
    feats = ["Gene Expression"] * 3 + ["Antibody Capture"] * 2
    folder = write_mtx(tmp_path / "q10x", X, genes(5), genes(5), feats, bcs(6))
    with pytest.raises(ReadError, match=r"q10x.*several modalities \['rna', 'prot'\]"):
        read_query(folder)
    q = read_query(folder, modality="prot")
    np.testing.assert_array_equal(q.X.toarray(), X[:, 3:])

    a.X = a.X * 0.5
    a.write_h5ad(p)
    with pytest.raises(ReadError, match=r"query_rna\.h5ad.*X looks normalised"):
        read_query(p)
    with pytest.raises(ReadError, match=r"gone\.h5ad: file not found"):
        read_query(tmp_path / "gone.h5ad")
