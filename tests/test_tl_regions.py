"""Nearest genes, peak labels, gene models and region tracks on a hand-made genome."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scmm.tl.regions import (locate, nearest_genes, peak_labels, peaks_in_region, read_gene_models,
                             region_track)

GENES = pd.DataFrame({
    "gene": ["PLUS", "MINUS", "OTHER"],
    "chrom": ["chr1", "chr1", "chr2"],
    "start": [10_000, 20_000, 1_000],
    "end": [15_000, 25_000, 3_000],
    "strand": ["+", "-", "-"],
})
# TSS: PLUS chr1:10000 (+), MINUS chr1:25000 (-), OTHER chr2:3000 (-)


def test_nearest_gene_and_signed_distance_by_hand():
    peaks = ["chr1_8000_9000",     # 1000 bp upstream of PLUS
             "chr1:9900-10100",    # contains PLUS TSS
             "chr1_11000_11500",   # 1000 bp downstream of PLUS (gene body)
             "chr1_26000_26500",   # 1000 bp upstream of MINUS (- strand: higher coordinate)
             "chr1_24000_24100",   # 900 bp downstream of MINUS
             "chr1_17400_17600",   # 7400 after PLUS TSS vs 7400 before MINUS TSS: tie -> after
             "chr2_100_200",       # OTHER TSS at 3000: peak is downstream on the - strand
             "chr3_1_50"]          # no genes on chr3
    out = nearest_genes(peaks, GENES)
    assert out["gene"].tolist() == ["PLUS", "PLUS", "PLUS", "MINUS", "MINUS", "MINUS", "OTHER", ""]
    np.testing.assert_array_equal(out["tss_distance"].to_numpy()[:7],
                                  [-1000, 0, 1000, -1000, 900, 7400, 2800])
    assert np.isnan(out["tss_distance"].iloc[7])


def test_chromosome_prefix_and_labels():
    out = nearest_genes(["1_9000_9500"], GENES)            # peaks without the chr prefix
    assert out["gene"].tolist() == ["PLUS"] and out["tss_distance"].tolist() == [-500]
    labels = peak_labels(["chr1_8000_9000", "chr1:9900-10100", "chr3_1_50"],
                         nearest_genes(["chr1_8000_9000", "chr1:9900-10100", "chr3_1_50"], GENES))
    assert labels == ["chr1:8,000-9,000 · PLUS (−1.0 kb)", "chr1:9,900-10,100 · PLUS (at TSS)",
                      "chr3:1-50"]


def test_gene_models_merge_exons(tmp_path):
    gtf = tmp_path / "g.gtf"
    rows = [("chr1", "gene", 10_000, 15_000, "+", "PLUS"),
            ("chr1", "exon", 10_000, 10_500, "+", "PLUS"),
            ("chr1", "exon", 10_400, 11_000, "+", "PLUS"),   # overlaps the first (other transcript)
            ("chr1", "exon", 14_000, 15_000, "+", "PLUS"),
            ("chr1", "gene", 20_000, 25_000, "-", "MINUS")]
    gtf.write_text("".join(f'{c}\tt\t{f}\t{s}\t{e}\t.\t{st}\t.\tgene_id "{g}"; gene_name "{g}";\n'
                           for c, f, s, e, st, g in rows))
    models = read_gene_models(gtf).set_index("gene")
    assert models.loc["PLUS", "exons"] == [(10_000, 11_000), (14_000, 15_000)]
    assert models.loc["MINUS", "exons"] == [(20_000, 25_000)]          # no exon records: the body
    assert locate("minus", models.reset_index(), flank=1000) == ("chr1", 19_000, 26_000)
    assert locate("chr2:1,000-2,000") == ("chr2", 1000, 2000)
    with pytest.raises(ValueError, match="neither a region"):
        locate("NOSUCHGENE", models.reset_index())


def test_region_track_means_per_group():
    peaks = ["chr1_100_200", "chr1_300_400", "chr1_5000_5100", "chr2_100_200"]
    X = np.array([[1, 0, 5, 1],
                  [3, 2, 5, 1],
                  [0, 4, 5, 1]], float)
    labels = ["a", "a", "b"]
    for values in (X, sp.csr_matrix(X)):
        track = region_track(values, peaks, labels, "chr1", 0, 1000)
        assert track["peak"].unique().tolist() == ["chr1_100_200", "chr1_300_400"]
        table = track.pivot(index="group", columns="peak", values="value")
        np.testing.assert_allclose(table.loc["a"].to_numpy(), [2, 1])
        np.testing.assert_allclose(table.loc["b"].to_numpy(), [0, 4])
    assert peaks_in_region(peaks, "2", 150, 160).tolist() == [3]
    with pytest.raises(ValueError, match="no peak"):
        region_track(X, peaks, labels, "chr1", 2000, 3000)
