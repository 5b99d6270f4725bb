"""Gene activity (promoter accessibility) on a hand-made genome."""
import gzip

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scmm.cli
from scmm.tl import gene_activity
from scmm.tl.activity import parse_peaks, read_genes

GENES = pd.DataFrame({
    "gene": ["PLUS", "MINUS", "FAR", "OTHERCHR"],
    "chrom": ["chr1", "chr1", "chr1", "chr2"],
    "start": [10_000, 20_000, 50_000, 1_000],
    "end": [15_000, 25_000, 55_000, 3_000],
    "strand": ["+", "-", "+", "-"],
})
# windows: PLUS chr1:8000-10000, MINUS chr1:25000-27000, FAR chr1:48000-50000, OTHERCHR chr2:3000-5000
PEAKS = ["chr1_8500_9000",      # PLUS promoter
         "chr1:9900-10400",     # overlaps PLUS TSS (other name style)
         "chr1_11000_11500",    # PLUS gene body: not counted
         "chr1_26000_26500",    # MINUS promoter (downstream of its end coordinate = upstream on -)
         "chr1_19000_19500",    # before MINUS start: upstream only for +, not counted
         "chr2_4000_4200"]      # OTHERCHR promoter


def _atac():
    X = np.array([[1, 2, 4, 8, 16, 32],
                  [0, 1, 0, 3, 0, 5]], np.float32)
    return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=["c1", "c2"]),
                      var=pd.DataFrame(index=PEAKS))


def test_strand_aware_windows_by_hand():
    out = gene_activity(_atac(), GENES)
    assert list(out.var_names) == ["PLUS", "MINUS", "FAR", "OTHERCHR"]
    np.testing.assert_array_equal(out.X.toarray(), [[3, 8, 0, 32], [1, 3, 0, 5]])
    assert out.var["n_peaks"].tolist() == [2, 1, 0, 1]
    assert list(gene_activity(_atac(), GENES, drop_empty=True).var_names) == ["PLUS", "MINUS", "OTHERCHR"]
    wider = gene_activity(_atac(), GENES, upstream=6000)   # MINUS window reaches 31000; PLUS 4000
    assert wider.X.toarray()[0, 0] == 3


def test_gtf_tsv_and_chromosome_prefix(tmp_path):
    lines = ["#!genome-build test"]
    for g in GENES.itertuples():
        chrom = g.chrom.replace("chr", "")          # Ensembl style: "1", not "chr1"
        lines.append(f'{chrom}\ttest\tgene\t{g.start}\t{g.end}\t.\t{g.strand}\t.\t'
                     f'gene_id "ENSG{g.Index}"; gene_name "{g.gene}";')
        lines.append(f'{chrom}\ttest\texon\t{g.start}\t{g.start + 100}\t.\t{g.strand}\t.\t'
                     f'gene_id "ENSG{g.Index}"; gene_name "{g.gene}";')
    gtf = tmp_path / "genes.gtf.gz"
    with gzip.open(gtf, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    from_gtf = gene_activity(_atac(), gtf)
    np.testing.assert_array_equal(from_gtf.X.toarray(), [[3, 8, 0, 32], [1, 3, 0, 5]])
    tsv = tmp_path / "genes.tsv"
    GENES.to_csv(tsv, sep="\t", index=False)
    assert read_genes(tsv).equals(read_genes(GENES))


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="chr_start_end"):
        parse_peaks(["chr1_100_200", "peak7"])
    with pytest.raises(ValueError, match="lacks columns"):
        read_genes(GENES.drop(columns="strand"))
    with pytest.raises(ValueError, match="strand"):
        read_genes(GENES.assign(strand=["+", "-", ".", "+"]))
    with pytest.raises(ValueError, match="no chromosome in common"):
        gene_activity(_atac(), GENES.assign(chrom="scaffold9"))
    with pytest.raises(FileNotFoundError):
        gene_activity(_atac(), tmp_path / "missing.gtf")
    bad_gtf = tmp_path / "x.gtf"
    bad_gtf.write_text("1\tt\texon\t1\t5\t.\t+\t.\tgene_id \"a\";\n")
    with pytest.raises(ValueError, match="no records of feature type 'gene'"):
        read_genes(bad_gtf)


def test_cli_gene_activity(tmp_path, capsys):
    data = md.MuData({"rna": ad.AnnData(sp.csr_matrix(np.ones((2, 3), np.float32)),
                                        obs=pd.DataFrame(index=["c1", "c2"])),
                      "atac": _atac()})
    data.write(tmp_path / "d.h5mu")
    GENES.to_csv(tmp_path / "genes.tsv", sep="\t", index=False)
    rc = scmm.cli.main(["gene-activity", str(tmp_path / "d.h5mu"), "--genes",
                        str(tmp_path / "genes.tsv"), "--out", str(tmp_path / "ga.csv")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "ga.csv", index_col=0)
    assert table.loc["c1", "MINUS"] == 8
    rc = scmm.cli.main(["gene-activity", str(tmp_path / "d.h5mu"), "--genes",
                        str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "x.h5ad")])
    assert rc == 2 and "not found" in capsys.readouterr().err
