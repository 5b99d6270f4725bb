"""A simulated RNA + ATAC experiment on a synthetic genome with a motif planted in one program's peaks.

What is simulated (all seeded):

- a genome of ``n_chroms`` random chromosomes (GC 42 %) with peaks every
  ~2 kb, written as FASTA, and a GTF of genes placed near the peaks;
- ``n_programs`` accessibility/expression programs; every cell belongs to one
  cell type whose program is active (activity 0.5–1, others 0–0.2).  Each
  program opens its own set of peaks and raises its own genes;
- a motif (by default a random 12-bp motif, ``planted_id`` "SIM0001") sampled
  from its frequency matrix and inserted twice into every peak of program 0
  (``planted="program"``), or into the same number of peaks chosen at random
  (``planted="random"``: the control, where the motif is unrelated to any program).

The truth is kept in ``mdata.uns['planted_motif']`` (motif id, counts, the
planted peaks) and ``mod['atac'].var['program']`` (-1: no program).
"""
from __future__ import annotations

from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

BASES = np.array(list("ACGT"))
PLANTED_ID = "SIM0001"


def random_motif(rng, length: int = 12, sites: int = 40) -> np.ndarray:
    """An informative count matrix (length x 4, ACGT): one dominant base per position."""
    counts = np.full((length, 4), 1.0)
    dominant = rng.integers(0, 4, length)
    counts[np.arange(length), dominant] = sites - 3
    return counts


def _sample_site(rng, counts: np.ndarray) -> str:
    probs = counts / counts.sum(axis=1, keepdims=True)
    site = "".join(BASES[rng.choice(4, p=p)] for p in probs)
    if rng.random() < 0.5:                                   # either strand
        site = site[::-1].translate(str.maketrans("ACGT", "TGCA"))
    return site


def _genome(rng, n_chroms: int, n_peaks: int, spacing: int = 2000):
    per_chrom = int(np.ceil(n_peaks / n_chroms))
    length = per_chrom * spacing + spacing
    chroms = {f"chr{c + 1}": rng.choice(BASES, size=length, p=[0.29, 0.21, 0.21, 0.29])
              for c in range(n_chroms)}
    peaks = []
    for i in range(n_peaks):
        chrom = f"chr{i // per_chrom + 1}"
        start = (i % per_chrom) * spacing + int(rng.integers(200, 800))
        peaks.append((chrom, start, start + int(rng.integers(300, 700))))
    return chroms, peaks


def _plant(rng, chroms, peaks, chosen, counts, per_peak=2):
    for i in chosen:
        chrom, start, end = peaks[i]
        for _ in range(per_peak):
            site = _sample_site(rng, counts)
            at = int(rng.integers(start, end - len(site)))
            chroms[chrom][at:at + len(site)] = list(site)


def _write_fasta(chroms: dict, path: Path) -> None:
    with open(path, "w") as fh:
        for name, seq in chroms.items():
            fh.write(f">{name}\n")
            text = "".join(seq)
            fh.write("\n".join(text[i:i + 80] for i in range(0, len(text), 80)) + "\n")


def _write_gtf(rng, peaks, programs, n_genes, path: Path) -> list[str]:
    """Genes placed 0.2–1.5 kb from a peak; gene g belongs to the program of that peak."""
    names, lines, gene_program = [], [], []
    anchors = rng.choice(len(peaks), size=n_genes, replace=False)
    for g, p in enumerate(sorted(anchors)):
        chrom, start, _ = peaks[p]
        name = f"Gene{g:04d}"
        strand = "+" if rng.random() < 0.5 else "-"
        tss = max(1, start - int(rng.integers(200, 1500)))
        body = (tss, tss + 3000) if strand == "+" else (max(1, tss - 3000), tss)
        attrs = f'gene_id "SIMG{g:05d}"; gene_name "{name}";'
        lines.append(f"{chrom}\tsim\tgene\t{body[0]}\t{body[1]}\t.\t{strand}\t.\t{attrs}")
        lines.append(f"{chrom}\tsim\texon\t{body[0]}\t{body[0] + 400}\t.\t{strand}\t.\t{attrs}")
        lines.append(f"{chrom}\tsim\texon\t{body[1] - 600}\t{body[1]}\t.\t{strand}\t.\t{attrs}")
        names.append(name)
        gene_program.append(programs[p])
    path.write_text("\n".join(lines) + "\n")
    return names, np.array(gene_program)


def simulate_planted_motif(out_dir, n_cells: int = 800, n_peaks: int = 2000, n_genes: int = 300,
                           n_programs: int = 4, n_chroms: int = 2, planted: str = "program",
                           motif_counts: np.ndarray | None = None, seed: int = 0):
    """Simulate the experiment; write ``genome.fa`` and ``genes.gtf`` into ``out_dir``.

    Returns ``(mdata, fasta_path, gtf_path)``; ``mdata`` has mods ``rna`` and
    ``atac`` (binary peak counts named ``chr_start_end``) and ``obs['cell_type']``.
    """
    if planted not in ("program", "random"):
        raise ValueError("planted must be 'program' or 'random'")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = random_motif(rng) if motif_counts is None else np.asarray(motif_counts, float)

    chroms, peaks = _genome(rng, n_chroms, n_peaks)
    per_program = n_peaks // (2 * n_programs)              # half of the peaks follow a program
    programs = np.full(n_peaks, -1)
    order = rng.permutation(n_peaks)
    for k in range(n_programs):
        programs[order[k * per_program:(k + 1) * per_program]] = k
    target = np.flatnonzero(programs == 0)
    chosen = target if planted == "program" else rng.choice(n_peaks, len(target), replace=False)
    _plant(rng, chroms, peaks, chosen, counts)
    fasta, gtf = out_dir / "genome.fa", out_dir / "genes.gtf"
    _write_fasta(chroms, fasta)
    genes, gene_program = _write_gtf(rng, peaks, programs, n_genes, gtf)

    cell_type = rng.integers(0, n_programs, n_cells)
    activity = rng.uniform(0.0, 0.2, (n_cells, n_programs))
    activity[np.arange(n_cells), cell_type] = rng.uniform(0.5, 1.0, n_cells)

    peak_rate = rng.uniform(0.03, 0.12, n_peaks)
    linked = programs >= 0
    p_open = np.tile(peak_rate, (n_cells, 1))
    p_open[:, linked] *= 1 + 8 * activity[:, programs[linked]]
    atac = (rng.random((n_cells, n_peaks)) < np.clip(p_open, 0, 0.95)).astype(np.float32)

    gene_mean = rng.lognormal(0.0, 0.8, len(genes))
    rna_mean = np.tile(gene_mean, (n_cells, 1))
    with_program = gene_program >= 0
    rna_mean[:, with_program] *= 1 + 6 * activity[:, gene_program[with_program]]
    rna = rng.poisson(rng.gamma(4.0, rna_mean / 4.0)).astype(np.float32)

    barcodes = [f"SIMC{i:05d}" for i in range(n_cells)]
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{k}" for k in cell_type])}, index=barcodes)
    peak_names = [f"{c}_{s}_{e}" for c, s, e in peaks]
    mods = {
        "rna": ad.AnnData(sp.csr_matrix(rna), obs=obs.copy(), var=pd.DataFrame(index=genes)),
        "atac": ad.AnnData(sp.csr_matrix(atac), obs=obs.copy(),
                           var=pd.DataFrame({"program": programs}, index=peak_names)),
    }
    mdata = md.MuData(mods)
    mdata.obs["cell_type"] = obs["cell_type"]
    mdata.uns["planted_motif"] = {"id": PLANTED_ID, "counts": counts.tolist(), "mode": planted,
                                  "peaks": [peak_names[i] for i in chosen], "seed": seed}
    return mdata, fasta, gtf
