"""Issue 16: GEO-style Matrix Market files and CSV/TSV count tables, modality names and kinds."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata
import mudata
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scmm.io import MODALITY_NAME, ReadError, ReadNote, read, read_modalities, read_mtx, read_query, read_table

from test_io import assert_clean, counts, listing

RNG = np.random.default_rng(0)
BASES = np.array(list("ACGT"))


def barcodes(n, seed=1):
    rng = np.random.default_rng(seed)
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(BASES, 16)) + "-1")
    return sorted(out)


GENES = [f"GENE{i}" for i in range(30)]  # not barcode-like
ADTS = ["CD3", "CD4", "CD8a", "CD14", "CD19", "CD56", "HLA-DR", "CD45RA"]


def write_mtx_file(path: Path, M_rows_by_cols, gz=None):
    gz = path.name.endswith(".gz") if gz is None else gz
    op = gzip.open if gz else open
    with op(path, "wb") as fh:
        scipy.io.mmwrite(fh, sp.coo_matrix(np.asarray(M_rows_by_cols).astype(np.int64)))


def write_lines(path: Path, lines):
    op = gzip.open if path.name.endswith(".gz") else open
    with op(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.fixture
def geo_folder(tmp_path):
    """The issue's layout: two features x cells matrices sharing one barcode file."""
    cells = barcodes(25)
    rna = counts(25, 30, seed=1)
    adt = counts(25, 8, seed=2)
    d = tmp_path / "GSE000"
    d.mkdir()
    write_mtx_file(d / "rna_counts.features_x_cells.mtx.gz", rna.T)
    write_mtx_file(d / "adt_counts.features_x_cells.mtx.gz", adt.T)
    write_lines(d / "rna_features.tsv", [f"ENSG{i:05d}\t{g}" for i, g in enumerate(GENES)])
    write_lines(d / "adt_features.tsv", ADTS)
    write_lines(d / "barcodes.tsv", cells)
    return d, cells, rna, adt


def test_geo_folder_shared_barcodes(geo_folder):
    d, cells, rna, adt = geo_folder
    before = listing(d)
    with pytest.warns(ReadNote, match=r"rna_counts\.features_x_cells\.mtx\.gz: read as features x cells"):
        md = read(d)
    assert listing(d) == before  # nothing written
    assert list(md.mod) == ["adt", "rna"] or set(md.mod) == {"prot", "rna"}
    assert set(md.mod) == {"prot", "rna"}
    assert_clean(md)
    assert list(md.obs_names) == cells
    np.testing.assert_array_equal(md["rna"].X.toarray(), rna)
    np.testing.assert_array_equal(md["prot"].X.toarray(), adt)
    assert list(md["prot"].var_names) == ADTS
    assert md["prot"].uns["scmm_kind"] == "protein" and md["rna"].uns["scmm_kind"] == "rna"
    assert md["rna"].uns["scmm_original_name"] == "rna_counts.features_x_cells"
    assert "features x cells" in md["rna"].uns["scmm_source"]


def test_geo_single_mtx_files_and_explicit_names(geo_folder, tmp_path):
    d, cells, rna, adt = geo_folder
    md = read(d / "rna_counts.features_x_cells.mtx.gz", d / "adt_counts.features_x_cells.mtx.gz")
    assert list(md.mod) == ["rna", "prot"]
    # explicit name files, cells x features, uncompressed, with a header line in the names
    e = tmp_path / "other"
    e.mkdir()
    write_mtx_file(e / "a.mtx", adt)  # cells x features
    write_lines(e / "names.txt", ["protein"] + ADTS)
    write_lines(e / "cells.txt", cells)
    ad = read_mtx(e / "a.mtx", features=e / "names.txt", barcodes=e / "cells.txt")
    assert ad.shape == (25, 8) and list(ad.var_names) == ADTS
    assert "cells x features" in ad.uns["scmm_source"] and "header" in ad.uns["scmm_source"]
    md = read(d / "rna_counts.features_x_cells.mtx.gz", e / "a.mtx",
              features=[None, e / "names.txt"], barcodes=[None, e / "cells.txt"],
              modality_names=["rna", "adt"])
    assert list(md.mod) == ["rna", "adt"]
    np.testing.assert_array_equal(md["adt"].X.toarray(), adt)


def test_geo_mtx_missing_and_mismatched_name_files(geo_folder):
    d, *_ = geo_folder
    (d / "barcodes.tsv").unlink()
    with pytest.raises(ReadError, match=r"counts\.features_x_cells\.mtx\.gz: found no barcode file"):
        read(d)
    write_lines(d / "barcodes.tsv", barcodes(7))
    with pytest.raises(ReadError, match=r"adt_counts.*: matrix is 8 x 25 but adt_features\.tsv has 8 names and barcodes\.tsv has 7"):
        read(d)


def test_mtx_complex_and_pattern_refused(tmp_path):
    p = tmp_path / "c_matrix.mtx"
    scipy.io.mmwrite(p, sp.coo_matrix(np.array([[1 + 2j, 0], [0, 1]])))
    write_lines(tmp_path / "c_features.tsv", ["a", "b"])
    write_lines(tmp_path / "barcodes.tsv", barcodes(2))
    with pytest.raises(ReadError, match=r"c_matrix\.mtx: the Matrix Market values are complex"):
        read_mtx(p)
    q = tmp_path / "p_matrix.mtx"
    q.write_text("%%MatrixMarket matrix coordinate pattern general\n2 2 2\n1 1\n2 2\n")
    write_lines(tmp_path / "p_features.tsv", ["a", "b"])
    with pytest.raises(ReadError, match=r"p_matrix\.mtx: a Matrix Market 'pattern' matrix.*boolean"):
        read_mtx(q)


def test_mtx_memory_checked_before_reading(geo_folder, monkeypatch):
    d, *_ = geo_folder
    import scmm.io.checks as checks

    monkeypatch.setattr(checks, "_available_memory", lambda: 1000)
    with pytest.raises(ReadError, match=r"counts\.features_x_cells\.mtx\.gz: the .* matrix .* would need about .* of memory but only 1000 bytes is available"):
        read(d)


# --------------------------------------------------------------------------
# count tables
# --------------------------------------------------------------------------


def write_table(path: Path, M, rows, cols, sep=",", corner=True):
    df = pd.DataFrame(np.asarray(M).astype(np.int64), index=rows, columns=cols)
    op = gzip.open if path.name.endswith(".gz") else open
    with op(path, "wt") as fh:
        if corner:
            df.to_csv(fh, sep=sep)
        else:  # R's write.table: no corner cell
            fh.write(sep.join(cols) + "\n")
            df.to_csv(fh, sep=sep, header=False)


def test_tables_genes_x_cells_and_cells_x_genes(tmp_path):
    cells = barcodes(20)
    rna, adt = counts(20, 30, 3), counts(20, 8, 4)
    write_table(tmp_path / "GSM1_RNA_umi.csv.gz", rna.T, GENES, cells)  # genes x cells, gzipped
    write_table(tmp_path / "GSM1_ADT_umi.tsv", adt, cells, ADTS, sep="\t", corner=False)  # cells x features
    with pytest.warns(ReadNote) as notes:
        md = read(tmp_path / "GSM1_RNA_umi.csv.gz", tmp_path / "GSM1_ADT_umi.tsv")
    text = " ".join(str(n.message) for n in notes)
    assert "GSM1_RNA_umi.csv.gz: read as features x cells" in text
    assert "GSM1_ADT_umi.tsv: read as cells x features" in text
    assert list(md.mod) == ["rna", "prot"]
    assert_clean(md)
    np.testing.assert_array_equal(md["rna"].X.toarray(), rna)
    np.testing.assert_array_equal(md["prot"].X.toarray(), adt)


def test_tables_orientation_from_the_other_input(tmp_path):
    """Cell names that are not barcodes: the side shared with the other table is the cells."""
    cells = [f"cell_{i}" for i in range(15)]
    rna, adt = counts(15, 30, 5), counts(15, 8, 6)
    write_table(tmp_path / "rna.csv", rna.T, GENES, cells)
    write_table(tmp_path / "adt.csv", adt, cells, ADTS)
    md = read(tmp_path / "rna.csv", tmp_path / "adt.csv")
    np.testing.assert_array_equal(md["rna"].X.toarray(), rna)
    np.testing.assert_array_equal(md["prot"].X.toarray(), adt)
    assert "cell names shared" in md["rna"].uns["scmm_source"]
    with pytest.raises(ReadError, match=r"rna\.csv: could not tell whether the rows .* orientation="):
        read_table(tmp_path / "rna.csv")
    ad = read_table(tmp_path / "rna.csv", orientation="genes_x_cells")
    assert ad.shape == (15, 30)


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("x,CELLAAAAAAAA,CELLCCCCCCCC\nG1,1,abc\n", r"column 'CELLCCCCCCCC' is not numeric .*'abc'"),
        ("x,CELLAAAAAAAA,CELLCCCCCCCC\nG1,True,False\n", r"boolean values"),
        ("x,CELLAAAAAAAA,CELLCCCCCCCC\nG1,1+2j,3\n", r"is not numeric"),
        ("x,CELLAAAAAAAA,CELLCCCCCCCC\nG1,1,2,3,4\n", r"header has 3 fields but the first data row has 5"),
        ("", r"could not read it as a CSV/TSV count table.*empty"),
    ],
)
def test_bad_tables(tmp_path, body, pattern):
    p = tmp_path / "bad.csv"
    p.write_text(body)
    with pytest.raises(ReadError, match=r"bad\.csv.*" + pattern):
        read_table(p)


def test_table_memory_checked(tmp_path, monkeypatch):
    import scmm.io.checks as checks

    p = tmp_path / "wide.csv"
    write_table(p, counts(3, 30, 1), ["AAAACCCCGGGGTTTT-1", "AAAACCCCGGGGTTTA-1", "AAAACCCCGGGGTTAT-1"], GENES)
    monkeypatch.setattr(checks, "_available_memory", lambda: 500)
    with pytest.raises(ReadError, match=r"wide\.csv: one row of 30 columns would need about .* but only 500 bytes"):
        read_table(p)


def test_gz_that_is_not_gzip_and_unknown(tmp_path):
    p = tmp_path / "x.mtx.gz"
    p.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(ReadError, match=r"x\.mtx\.gz: could not read it as a Matrix Market file"):
        read_mtx(p, features=p, barcodes=p)
    q = tmp_path / "y.foo.gz"
    q.write_bytes(b"abc")
    with pytest.raises(ReadError, match=r"y\.foo\.gz: unknown format '\.foo\.gz'"):
        read(q)


# --------------------------------------------------------------------------
# modality names and kinds
# --------------------------------------------------------------------------


def _ad(cells, feats, seed, ftype=None):
    a = anndata.AnnData(sp.csr_matrix(counts(len(cells), len(feats), seed)),
                        obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=feats))
    if ftype:
        a.var["feature_types"] = ftype
    return a


def test_openproblems_pair_names(tmp_path):
    cells = barcodes(20)
    rna = _ad(cells, GENES, 1, "GEX")
    adt = _ad(cells, ADTS, 2, "ADT")
    pa = tmp_path / "openproblems_bmmc_cite_starter.output_rna.h5ad"
    pb = tmp_path / "openproblems_bmmc_cite_starter.output_mod2.h5ad"
    rna.write_h5ad(pa)
    adt.write_h5ad(pb)
    md = read(pa, pb)
    assert list(md.mod) == ["rna", "prot"]
    assert md["prot"].uns["scmm_original_name"] == "openproblems_bmmc_cite_starter.output_mod2"
    assert md["prot"].uns["scmm_kind"] == "protein" and md["prot"].uns["scmm_kind_from"] == "features"
    # without feature types: still a protein panel by the antibody-like names
    del adt.var["feature_types"]
    adt.write_h5ad(pb)
    assert list(read(pa, pb).mod) == ["rna", "prot"]


def test_invalid_names_sanitised_unique_and_warned(tmp_path):
    cells = barcodes(12)
    md = mudata.MuData({"prot": _ad(cells, ADTS, 1), "prot.v2": _ad(cells, ADTS[:5], 2),
                        "9 weird name!": _ad(cells, GENES, 3)})
    p = tmp_path / "d.h5mu"
    md.write_h5mu(p)
    with pytest.warns(UserWarning, match=r"'prot\.v2' -> 'prot_2'.*'9 weird name!' -> 'm_9_weird_name'"):
        out = read(p)
    assert list(out.mod) == ["prot", "prot_2", "m_9_weird_name"]
    assert all(MODALITY_NAME.match(n) for n in out.mod)
    assert out["prot_2"].uns["scmm_original_name"] == "prot.v2"
    assert out.uns["scmm_modalities"]["prot_2"]["original_name"] == "prot.v2"
    # user names are sanitised too, and kinds can be set explicitly
    with pytest.warns(UserWarning, match=r"'my rna' -> 'rna'"):
        out = read(p, modality_names={"prot.v2": "adt2", "9 weird name!": "my rna"},
                   kinds={"adt2": "protein", "my rna": "rna", "prot": "prot"})
    assert list(out.mod) == ["prot", "adt2", "rna"]
    assert [out[m].uns["scmm_kind"] for m in out.mod] == ["protein", "protein", "rna"]
    with pytest.raises(ReadError, match=r"kind 'dna-ish' of modality 'prot' is not one of"):
        read(p, kinds={"prot": "dna-ish"})
    with pytest.raises(ReadError, match=r"kinds has key 'nope' that matches no modality"):
        read(p, kinds={"nope": "rna"})


def test_modality_kind_honours_stored_kind(tmp_path):
    from scmm.preprocess import modality_kind

    cells = barcodes(10)
    a, b = _ad(cells, GENES, 1), _ad(cells, GENES[:12], 2)
    pa, pb = tmp_path / "one.h5ad", tmp_path / "two.h5ad"
    a.write_h5ad(pa)
    b.write_h5ad(pb)
    md = read(pa, pb, kinds=["rna", "atac"])
    assert modality_kind("one") == "protein"  # name alone: as before
    assert modality_kind("one", md["one"]) == "rna"
    assert modality_kind(md["two"]) == "atac"
    assert modality_kind("rna_2") == "rna" and modality_kind("atac_3") == "atac"


def test_modality_name_rule_matches_runfolder():
    from scmm.runfolder import MODALITY_NAME as RF

    assert RF.pattern == MODALITY_NAME.pattern


def test_read_modalities_cli_specs(geo_folder, tmp_path):
    d, cells, rna, adt = geo_folder
    write_table(tmp_path / "adt.csv.gz", adt.T, ADTS, cells)
    md = read_modalities(None, [f"gex:rna={d / 'rna_counts.features_x_cells.mtx.gz'}",
                                f"surface:protein={tmp_path / 'adt.csv.gz'}"])
    assert list(md.mod) == ["gex", "surface"]
    assert md["surface"].uns["scmm_kind"] == "protein"
    explicit = f"a={d / 'adt_counts.features_x_cells.mtx.gz'},{d / 'adt_features.tsv'},{d / 'barcodes.tsv'}"
    md = read_modalities(None, [explicit, f"b={tmp_path / 'adt.csv.gz'}"])
    assert list(md.mod) == ["a", "b"]
    with pytest.raises(ReadError, match=r"either as DATA .* not both"):
        read_modalities("x.h5mu", ["a=b"])
    with pytest.raises(ReadError, match=r"--modality must be NAME=FILE"):
        read_modalities(None, ["justafile.h5ad", "b=c"])
    with pytest.raises(ReadError, match=r"may hold several modalities"):
        read_modalities(None, [f"x={d}", f"b={tmp_path / 'adt.csv.gz'}"])


def test_cli_train_modality_flag_reads(geo_folder, tmp_path, monkeypatch):
    """The CLI parses --modality and reaches the reader (stopped there to stay fast)."""
    import scmm.io
    from scmm import cli

    d, cells, rna, adt = geo_folder
    seen = {}

    def fake(data, modality, **kw):
        seen["md"] = read_modalities(data, modality, **kw)
        raise ReadError("stop here")

    monkeypatch.setattr(scmm.io, "read_modalities", fake)
    rc = cli.main(["train", "--out", str(tmp_path / "run"), "--modality",
                   f"rna={d / 'rna_counts.features_x_cells.mtx.gz'}", "--modality",
                   f"prot={d / 'adt_counts.features_x_cells.mtx.gz'}"])
    assert rc == 2 and list(seen["md"].mod) == ["rna", "prot"]
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == 2  # neither DATA nor --modality


def test_read_query_mtx_and_table(geo_folder):
    d, cells, rna, adt = geo_folder
    q = read_query(d / "adt_counts.features_x_cells.mtx.gz")
    assert q.uns["modality"] == "prot" and q.shape == (25, 8)
    q = read_query(d, modality="rna")
    assert q.shape == (25, 30)
