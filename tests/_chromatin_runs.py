"""Trained, analysed RNA + ATAC runs of the planted-motif simulation, with their chromatin analyses."""
from __future__ import annotations

from pathlib import Path

import numpy as np

N_JASPAR = 60
_JASPAR = {}


def test_motifs():
    """The first ``N_JASPAR`` JASPAR CORE vertebrate motifs (loaded once per session)."""
    if "set" not in _JASPAR:
        from scmm.tl.motifs import jaspar_motifs
        jaspar = jaspar_motifs()
        _JASPAR["set"] = jaspar.subset(jaspar.ids[:N_JASPAR])
    return _JASPAR["set"]


def planted_run(folder: Path, planted: str = "program") -> dict:
    """Simulate (motif in program 0's peaks, or in random peaks), train 60 epochs, analyse, and run the
    chromatin analyses with :func:`test_motifs` plus the planted motif; the run folder is ``folder/run``."""
    import scmm
    from scmm.demo_chromatin import PLANTED_ID, simulate_planted_motif
    from scmm.tl.analysis import analyze
    from scmm.tl.chromatin import chromatin_analysis
    from scmm.tl.motifs import MotifSet

    mdata, fasta, gtf = simulate_planted_motif(folder, planted=planted, seed=0)
    planted_counts = np.array(mdata.uns["planted_motif"]["counts"])
    scmm.preprocess(mdata, n_top_genes=None, peak_fraction=None)
    model = scmm.SCMM(mdata, device="cpu")
    model.train(epochs=60, warmup=20, progress=False)
    model.get_latent()
    run = Path(folder) / "run"
    model.save(run)
    analyze(run, umap=True)
    base = test_motifs()
    motifs = MotifSet(base.ids + [PLANTED_ID], base.names + ["planted"], base.counts + [planted_counts], "test")
    summary = chromatin_analysis(run, fasta, genes=gtf, motifs=motifs)
    return {"run": run, "fasta": fasta, "gtf": gtf, "mdata": mdata, "summary": summary, "motifs": motifs}
