"""Motifs: JASPAR offline, motif files, peak sequences from a FASTA, and vectorised scanning vs a brute force."""
import warnings

import numpy as np
import pytest

from scmm.tl import motifs as motif_module
from scmm.tl.motifs import MotifSet, jaspar_motifs, match_motifs, read_motifs, score_threshold
from scmm.tl.sequences import GenomeError, gc_content, peak_sequences

with warnings.catch_warnings():
    # dash-bootstrap-components drops a pyproject.toml into site-packages: Bio then warns spuriously
    warnings.filterwarnings("ignore", message="You may be importing Biopython from inside the source tree")
    from Bio.motifs.matrix import FrequencyPositionMatrix

PSEUDOCOUNT = 0.8


def _random_motifs(rng, lengths=(4, 6, 8, 11, 14)) -> MotifSet:
    counts = [rng.dirichlet(np.full(4, 0.4), size=n) * 30 for n in lengths]
    return MotifSet([f"M{i}" for i in range(len(lengths))], [f"motif{i}" for i in range(len(lengths))], counts)


def _random_sequences(rng, n=20) -> list[str]:
    seqs = []
    for i in range(n):
        length = [0, 3, 7, 10][i] if i < 4 else int(rng.integers(15, 300))
        seq = "".join(rng.choice(list("ACGT"), length, p=[0.3, 0.2, 0.2, 0.3]))
        if i % 5 == 0 and length > 20:  # a run of N and a lone N
            seq = seq[:5] + "NNNN" + seq[9:14] + "N" + seq[15:]
        seqs.append(seq)
    return seqs


def _consensus(counts) -> str:
    return "".join("ACGT"[k] for k in counts.argmax(axis=1))


def _revcomp(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


def _symmetric_background(seqs) -> dict:
    n = {b: sum(s.count(b) for s in seqs) for b in "ACGT"}
    total = sum(n.values())
    at, cg = (n["A"] + n["T"]) / 2 / total, (n["C"] + n["G"]) / 2 / total
    return {"A": at, "C": cg, "G": cg, "T": at}


def _window_scores(pssm, seq: str) -> np.ndarray:
    """Every window of one strand, in float64; N adds 0.  Checked against Biopython's calculate."""
    scores = np.array([sum(pssm[b][k] for k, b in enumerate(seq[s:s + pssm.length]) if b in "ACGT")
                       for s in range(len(seq) - pssm.length + 1)])
    bio = np.atleast_1d(pssm.calculate(seq)).astype(float)
    assert np.allclose(scores[~np.isnan(bio)], bio[~np.isnan(bio)], atol=1e-4)
    return scores


def _brute_force(seqs, motifs: MotifSet, p_value: float) -> np.ndarray:
    bg = _symmetric_background(seqs)
    out = np.zeros((len(seqs), len(motifs)), dtype=bool)
    for j, counts in enumerate(motifs.counts):
        fpm = FrequencyPositionMatrix("ACGT", {b: list(counts[:, k]) for k, b in enumerate("ACGT")})
        pssm = fpm.normalize(pseudocounts={b: PSEUDOCOUNT * v for b, v in bg.items()}).log_odds(bg)
        threshold = pssm.distribution(background=bg, precision=10**3).threshold_fpr(p_value)
        mine = np.array([[pssm[b][k] for b in "ACGT"] for k in range(pssm.length)])
        assert score_threshold(mine, np.array([bg[b] for b in "ACGT"]), p_value) == pytest.approx(threshold)
        for i, seq in enumerate(seqs):
            if len(seq) >= pssm.length:
                both = np.concatenate([_window_scores(pssm, seq), _window_scores(pssm.reverse_complement(), seq)])
                out[i, j] = both.max() >= threshold
    return out


@pytest.fixture(scope="module")
def jaspar():
    return jaspar_motifs()


def test_scan_equals_biopython_brute_force_and_finds_planted_sites():
    rng = np.random.default_rng(7)
    motifs = _random_motifs(rng)
    seqs = _random_sequences(rng)
    fwd, rev = _consensus(motifs.counts[3]), _revcomp(_consensus(motifs.counts[4]))
    seqs[5] = seqs[5][:40] + fwd + seqs[5][40 + len(fwd):]       # forward strand
    seqs[6] = seqs[6][:len(seqs[6]) - len(rev)] + rev            # reverse strand, at the very end
    result = match_motifs(seqs, motifs, p_value=1e-3)
    expected = _brute_force(seqs, motifs, 1e-3)
    got = result.matrix.toarray()
    assert result.matrix.dtype == bool and result.matrix.shape == (20, 5)
    assert 5 < expected.sum() < expected.size - 5             # a test with matches and non-matches
    np.testing.assert_array_equal(got, expected)
    assert got[5, 3] and got[6, 4]
    assert not got[:3].any()                                  # empty / 3 / 7 bases: shorter than most motifs
    assert result.peaks == [str(i) for i in range(20)] and result.motif_ids == motifs.ids


def test_windows_past_the_end_do_not_count():
    motifs = _random_motifs(np.random.default_rng(7)).subset(["M4"])
    site = _consensus(motifs.counts[0])
    background = {"A": 0.3, "C": 0.2, "G": 0.2, "T": 0.3}
    for seqs in (["ACG" + site[:-1]], ["ACG" + site[:-1], "ACGT" * 20], ["AC" + site, "ACG" + site[:-1]]):
        got = match_motifs(seqs, motifs, p_value=1e-3, background=background).matrix.toarray()[:, 0]
        assert list(got) == [s.endswith(site) for s in seqs]
    assert match_motifs([site[1:]], motifs, background=background).matrix.nnz == 0


def test_real_jaspar_motifs_load_and_scan(jaspar):
    assert len(jaspar) > 500 and "JASPAR2026" in jaspar.source
    assert any(i.startswith("MA0004") for i in jaspar.ids)
    assert all(c.ndim == 2 and c.shape[1] == 4 for c in jaspar.counts)
    arnt = jaspar.subset([i for i in jaspar.ids if i.startswith("MA0004")])
    assert arnt.names == ["Arnt"] and arnt.fingerprint() != jaspar.fingerprint()
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(4)]
    seqs[2] = seqs[2][:100] + "CCACGTGG" + seqs[2][108:]
    pick = arnt.subset(arnt.ids)
    hits = match_motifs(seqs, pick, p_value=1e-3, peak_names=["a", "b", "c", "d"])
    assert hits.to_dataframe().loc["c", arnt.ids[0]]


def test_jaspar_rejects_unknown_choices():
    with pytest.raises(ValueError, match="tax group 'vertebrate'.*vertebrates"):
        jaspar_motifs(tax_group="vertebrate")
    with pytest.raises(ValueError, match="collection 'COREX'.*CORE"):
        jaspar_motifs(collection="COREX")
    with pytest.raises(ValueError, match="release 'JASPAR1999'.*JASPAR2024"):
        jaspar_motifs(release="JASPAR1999")


def test_invalid_scan_inputs():
    motifs = _random_motifs(np.random.default_rng(0))
    with pytest.raises(ValueError, match="no sequences"):
        match_motifs([], motifs)
    for bad in (0, 0.5, -1e-5):
        with pytest.raises(ValueError, match="p_value"):
            match_motifs(["ACGT"], motifs, p_value=bad)
    with pytest.raises(ValueError, match="empty"):
        match_motifs(["ACGT"], motifs.subset([]))
    with pytest.raises(ValueError, match="peak names"):
        match_motifs(["ACGT"], motifs, peak_names=["a", "b"])


# -- FASTA --------------------------------------------------------------------------------

CHR1 = "ACGTTGCA" * 25 + "GGGGCCCCAT" * 10    # 300 bp
CHR2 = "TTTTAAAACG" * 20                       # 200 bp


def _write_fasta(path, records: dict, width=60):
    with open(path, "w") as out:
        for name, seq in records.items():
            out.write(f">{name} some description\n")
            out.writelines(seq[i:i + width] + "\n" for i in range(0, len(seq), width))
    return path


PEAKS = ["chr1_10_30", "chr1:250-300", "chr2_0_15", "chr2:190-200"]
EXPECTED = [CHR1[10:30], CHR1[250:300], CHR2[0:15], CHR2[190:200]]


def test_whole_genome_and_per_peak_fasta_agree(tmp_path):
    genome = _write_fasta(tmp_path / "genome.fa", {"chr1": CHR1.lower(), "chr2": CHR2})
    assert peak_sequences(PEAKS, genome) == EXPECTED
    assert (tmp_path / "genome.fa.fai").is_file()
    per_peak = _write_fasta(tmp_path / "peaks.fa", {"chr2:190-200": CHR2[190:200], "chr1_10_30": CHR1[10:30],
                                                    "chr1:250-300": CHR1[250:300], "chr2_0_15": CHR2[0:15]})
    assert peak_sequences(PEAKS, per_peak) == EXPECTED
    no_prefix = _write_fasta(tmp_path / "ensembl.fa", {"1": CHR1, "2": CHR2})
    assert peak_sequences(PEAKS, no_prefix) == EXPECTED
    assert peak_sequences(["1_10_30", "2:0-15"], genome) == [EXPECTED[0], EXPECTED[2]]


def test_index_falls_back_when_it_cannot_be_written_beside(tmp_path):
    genome = _write_fasta(tmp_path / "genome.fa", {"chr1": CHR1, "chr2": CHR2})
    (tmp_path / "genome.fa.fai").mkdir()  # unusable: neither readable nor writable as a file
    assert peak_sequences(PEAKS[:1], genome) == EXPECTED[:1]


def test_fasta_errors_explain_the_mismatch(tmp_path):
    genome = _write_fasta(tmp_path / "genome.fa", {"chr1": CHR1, "chr2": CHR2})
    with pytest.raises(FileNotFoundError, match="nowhere.fa"):
        peak_sequences(PEAKS, tmp_path / "nowhere.fa")
    with pytest.raises(GenomeError, match=r"chrX \(2 peaks\).*chr1"):
        peak_sequences(["chrX_1_5", "chrX_8_20", "chr1_1_5"], genome)
    with pytest.raises(GenomeError, match=r"2 peaks extend past the end of chr2 \(length 200.*genome build"):
        peak_sequences(["chr2_150_250", "chr2_190_201", "chr1_0_10"], genome)
    masked = _write_fasta(tmp_path / "masked.fa", {"chr1": "N" * 300})
    with pytest.raises(GenomeError, match="all N.*genome build"):
        peak_sequences(["chr1_0_10", "chr1_50_60"], masked)
    per_peak = _write_fasta(tmp_path / "peaks.fa", {"chr1_10_30": CHR1[10:30]})
    with pytest.raises(GenomeError, match=r"lacks 2 of 3 peaks.*chr2_0_15"):
        peak_sequences(["chr1_10_30", "chr2_0_15", "chr2_1_15"], per_peak)


def test_gc_content():
    np.testing.assert_allclose(gc_content(["GGCC", "ATAT", "GCNNAT", "NNN", ""]), [1, 0, 0.5, 0.5, 0.5])


# -- cache and files ----------------------------------------------------------------------

def test_cache_is_read_back_and_a_corrupt_one_recomputed(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    motifs, seqs = _random_motifs(rng), _random_sequences(rng)
    first = match_motifs(seqs, motifs, p_value=1e-3, cache_dir=tmp_path)
    [cached] = tmp_path.glob("motif-matches-*.npz")
    assert not list(tmp_path.glob(".*"))                      # no temporary file left

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned again instead of reading the cache")
    real_scan, calls = motif_module.scan, []
    monkeypatch.setattr(motif_module, "scan", no_scan)
    again = match_motifs(seqs, motifs, p_value=1e-3, cache_dir=tmp_path, peak_names=[f"p{i}" for i in range(20)])
    assert (again.matrix != first.matrix).nnz == 0 and again.peaks[0] == "p0"

    monkeypatch.setattr(motif_module, "scan", lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    match_motifs(seqs, motifs, p_value=1e-4, cache_dir=tmp_path)  # another setting: another file
    assert len(calls) == 1 and len(list(tmp_path.glob("motif-matches-*.npz"))) == 2
    cached.write_bytes(b"not a zip file")
    redone = match_motifs(seqs, motifs, p_value=1e-3, cache_dir=tmp_path)
    assert len(calls) == 2 and (redone.matrix != first.matrix).nnz == 0
    assert np.load(cached)["indices"].size == first.matrix.nnz  # rewritten whole


def test_read_motifs_round_trip(tmp_path, jaspar):
    some = jaspar.subset(jaspar.ids[:3])
    with open(tmp_path / "three.jaspar", "w") as out:
        for motif, name, counts in zip(some.ids, some.names, some.counts):
            out.write(f">{motif} {name}\n")
            out.writelines(f"{b} [ {' '.join(f'{v:g}' for v in counts[:, k])} ]\n" for k, b in enumerate("ACGT"))
    back = read_motifs(tmp_path / "three.jaspar")
    assert back.ids == some.ids and back.names == some.names and back.fingerprint() == some.fingerprint()
    (tmp_path / "one.meme").write_text(
        "MEME version 4\n\nALPHABET= ACGT\n\nstrands: + -\n\n"
        "Background letter frequencies\nA 0.25 C 0.25 G 0.25 T 0.25\n\n"
        "MOTIF MA9999.1 Toy\nletter-probability matrix: alength= 4 w= 2 nsites= 10 E= 0\n"
        " 0.5 0.5 0 0\n 0 0 0.1 0.9\n")
    meme = read_motifs(tmp_path / "one.meme")
    assert meme.ids == ["MA9999.1"] and meme.names == ["Toy"]
    np.testing.assert_allclose(meme.counts[0], [[5, 5, 0, 0], [0, 0, 1, 9]])
    (tmp_path / "empty.jaspar").write_text("")
    with pytest.raises(ValueError, match="no motifs"):
        read_motifs(tmp_path / "empty.jaspar")
    (tmp_path / "bad.meme").write_text("MOTIF x\nnot a matrix\n")
    with pytest.raises(ValueError, match="bad.meme is not a valid meme motif file"):
        read_motifs(tmp_path / "bad.meme")
    with pytest.raises(ValueError, match="unknown motif format"):
        read_motifs(tmp_path / "bad.meme", format="homer")
