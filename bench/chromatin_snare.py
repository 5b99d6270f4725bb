"""The chromatin analyses on a trained snare_cortex run, with peak sequences generated here.

The real mm10 genome is not available offline, so this writes one FASTA record
per peak (named by the peak, the layout ``bedtools getfasta`` writes) with a
random sequence of the peak's length (GC 42 %, seeded), runs ``scmm
chromatin`` on the run with the default JASPAR motifs, and prints what each
analysis gives.  With random sequences the motif matches carry no biology:
the enrichment per dimension is a negative control on real accessibility
(adjusted p-values should stay above 0.05), and the motif activity tables show
that observed and generated accessibility give the same chromVAR structure
for the same (random) annotation.

    python bench/quality.py --dataset snare --sizes 2000 --seeds 0 --save-runs bench/out/runs
    scmm analyze bench/out/runs/snare-2000-seed0
    python bench/chromatin_snare.py bench/out/runs/snare-2000-seed0 [--out bench/out/snare-peaks.fa]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def write_peak_fasta(peaks: list[str], path: Path, seed: int = 0) -> Path:
    """One record per peak, a random sequence (A/T 0.29, C/G 0.21) of the peak's length."""
    from scmm.tl.activity import parse_peaks
    coords = parse_peaks(peaks)
    rng = np.random.default_rng(seed)
    bases = np.frombuffer(b"ACGT", np.uint8)
    with open(path, "w") as fh:
        for name, length in zip(coords.index, (coords["end"] - coords["start"]).to_numpy()):
            seq = rng.choice(bases, size=int(length), p=[0.29, 0.21, 0.21, 0.29]).tobytes().decode()
            fh.write(f">{name}\n{seq}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="an analysed snare_cortex run folder")
    parser.add_argument("--out", default="bench/out/snare-peaks.fa", help="the FASTA written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import scmm
    from scmm.tl.chromatin import atac_modality, chromatin_analysis
    from scmm.tl.chromatin_io import read_chromatin

    model = scmm.SCMM.load(args.run, load_data=False)
    peaks = list(model.feature_names[atac_modality(model)])
    fasta = write_peak_fasta(peaks, Path(args.out), seed=args.seed)
    tic = time.perf_counter()
    summary = chromatin_analysis(args.run, fasta, seed=args.seed,
                                 progress=lambda step, msg: print(f"[{step}] {msg}", flush=True))
    total = time.perf_counter() - tic
    res = read_chromatin(args.run)
    best = res.enrichment.sort_values("p_adjust").groupby(["dim", "direction"]).head(1)
    print(json.dumps({"n_peaks": summary["n_peaks"], "n_motifs": summary["n_motifs"],
                      "motif_source": summary["motif_source"],
                      "matches_per_peak": round(summary["matches_per_peak"], 2),
                      "seconds": summary["seconds"], "total_seconds": round(total, 1),
                      "activity_similarity": summary["similarity"],
                      "peak_sets_tested": int(len(best)),
                      "peak_sets_skipped": len(summary["skipped_peak_sets"]),
                      "min_p_adjust": float(best["p_adjust"].min()) if len(best) else None,
                      "peak_sets_with_p_adjust_below_0.05": int((best["p_adjust"] < 0.05).sum())}, indent=1))
    print(best[["dim", "direction", "n_query", "name", "motif", "fold_enrichment", "pvalue", "p_adjust"]]
          .to_string(index=False))


if __name__ == "__main__":
    main()
