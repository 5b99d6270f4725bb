"""Motif scanning speed: random peaks (GC 0.42, seeded) x the JASPAR CORE vertebrate motifs.

Times loading the motifs, the score thresholds (first call; cached after),
and the scan itself (``scmm.tl.match_motifs``: one conv1d per chunk of peaks
and group of motifs), and reports peaks/s, matches per peak, peak memory and
the machine.

    python bench/motif_speed.py [--peaks 50000] [--length 500] [--p-value 5e-5] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def random_peaks(n: int, length: int, seed: int = 0) -> list[str]:
    """``n`` sequences of ``length`` bases, A/T 0.29 each, C/G 0.21 each."""
    codes = np.random.default_rng(seed).choice(np.frombuffer(b"ACGT", np.uint8), size=(n, length),
                                               p=[0.29, 0.21, 0.21, 0.29])
    text = codes.tobytes().decode("ascii")
    return [text[i * length:(i + 1) * length] for i in range(n)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peaks", type=int, default=50000)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--p-value", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from scmm.tl import motifs

    seqs, t_seqs = timed(lambda: random_peaks(args.peaks, args.length))
    motif_set, t_load = timed(motifs.jaspar_motifs)
    background = motifs._background(seqs)
    pssms = [motifs.log_odds(c, background, 0.8) for c in motif_set.counts]
    _, t_thresholds = timed(lambda: [motifs.score_threshold(p, background, args.p_value) for p in pssms])
    result, t_scan = timed(lambda: motifs.match_motifs(seqs, motif_set, p_value=args.p_value, device=args.device))
    row = {
        "peaks": args.peaks, "length": args.length, "motifs": len(motif_set), "p_value": args.p_value,
        "source": motif_set.source, "generate_s": round(t_seqs, 2), "load_motifs_s": round(t_load, 2),
        "thresholds_s": round(t_thresholds, 2), "scan_s": round(t_scan, 2),
        "peaks_per_s": round(args.peaks / t_scan, 1),
        "matches_per_peak": round(result.matrix.nnz / args.peaks, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": args.device, "torch": torch.__version__,
    }
    print(f"{args.peaks} peaks x {args.length} bp, {len(motif_set)} motifs ({motif_set.source}), "
          f"p < {args.p_value:g}")
    print(f"load motifs {t_load:.1f} s, thresholds {t_thresholds:.1f} s, scan {t_scan:.1f} s "
          f"({row['peaks_per_s']:.0f} peaks/s), {row['matches_per_peak']:.1f} matches per peak, "
          f"peak memory {row['peak_rss_mib']} MiB")
    print(f"machine: {row['cpu']}, {row['cores']} cores, torch {torch.__version__} with "
          f"{row['torch_threads']} threads, device {args.device}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
