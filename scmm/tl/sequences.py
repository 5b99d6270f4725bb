"""DNA sequences of ATAC peaks from a FASTA file, and their GC content.

Peaks are named ``chr_start_end`` or ``chr:start-end``; the coordinates are
read as in BED: ``start`` 0-based, ``end`` exclusive, so ``chr1_100_200`` is
the 100 bases ``chr1[100:200]``.  Two FASTA layouts are recognised from the
record names:

- a whole genome, one record per chromosome (plain or bgzip-compressed), read
  by random access through a ``.fai`` index (pyfaidx writes it beside the
  FASTA, or in a cache folder when that folder is not writable);
- one record per peak, named by the peak (either name style), as written by
  ``bedtools getfasta``.

Chromosome names ``chr1`` and ``1`` are matched to each other when the peaks
and the FASTA differ in the ``chr`` prefix.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyfaidx

from .activity import PEAK_PATTERN, parse_peaks

EXAMPLES = 3


class GenomeError(ValueError):
    """The FASTA does not fit the peaks (missing chromosomes or peaks, another genome build)."""


def peak_sequences(peaks, fasta) -> list[str]:
    """Uppercase sequences of ``peaks`` (names, see the module docstring) from ``fasta`` (a path)."""
    table = parse_peaks(peaks)
    with _open_fasta(fasta) as genome:
        names = list(genome.keys())
        if names and all(PEAK_PATTERN.match(n) for n in names):
            seqs = _per_peak(table, genome, names, fasta)
        else:
            seqs = _whole_genome(table, genome, names)
    _check_not_n(seqs, fasta)
    return seqs


def gc_content(sequences) -> np.ndarray:
    """Fraction of G + C among the A, C, G, T of each sequence (0.5 when it has none)."""
    out = np.full(len(sequences), 0.5)
    for i, seq in enumerate(sequences):
        seq = seq.upper()
        gc = seq.count("G") + seq.count("C")
        acgt = gc + seq.count("A") + seq.count("T")
        if acgt:
            out[i] = gc / acgt
    return out


def _open_fasta(fasta) -> pyfaidx.Fasta:
    path = Path(fasta)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file {path} not found")
    options = dict(as_raw=True, sequence_always_upper=True)
    try:
        try:
            return pyfaidx.Fasta(str(path), **options)
        except OSError:  # the folder is read-only (or its index unusable): index in a cache folder
            return _open_cached_index(path, options)
    except pyfaidx.UnsupportedCompressionFormat as err:
        raise GenomeError(f"{path}: {err}") from None
    except (pyfaidx.FastaIndexingError, ValueError) as err:
        raise GenomeError(f"{path} could not be read as a FASTA file: {err}") from None


def _open_cached_index(path: Path, options: dict) -> pyfaidx.Fasta:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    index = Path(tempfile.gettempdir()) / "scmm-fasta-index" / f"{path.name}-{key}"
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        return pyfaidx.Fasta(str(path), indexname=f"{index}.fai", gzi_indexname=f"{index}.gzi", **options)
    except pyfaidx.UnsupportedCompressionFormat:
        raise
    except OSError as err:
        raise GenomeError(f"could not index {path}, neither beside it nor in {index.parent}: {err}") from None


def _chrom_map(peak_chroms, fasta_chroms) -> dict:
    """Peak chromosome -> FASTA record: the same name, else with a ``chr`` prefix added or removed."""
    have = set(fasta_chroms)

    def record(chrom):
        for name in (chrom, "chr" + chrom, chrom.removeprefix("chr")):
            if name in have:
                return name
        return chrom
    return {c: record(c) for c in peak_chroms}


def _whole_genome(table: pd.DataFrame, genome, names: list) -> list[str]:
    mapping = _chrom_map(table["chrom"].unique(), names)
    chroms = table["chrom"].map(mapping)
    _check_chroms(table, chroms, names)
    lengths = {c: len(genome[c]) for c in chroms.unique()}
    _check_ends(table, chroms, lengths)
    return [genome[c][s:e] for c, s, e in zip(chroms, table["start"], table["end"])]


def _check_chroms(table, chroms, names) -> None:
    missing = ~chroms.isin(set(names))
    if not missing.any():
        return
    counts = table["chrom"][missing].value_counts()
    listed = ", ".join(f"{c} ({n} peaks)" for c, n in counts.head(5).items())
    raise GenomeError(f"{int(missing.sum())} peaks lie on chromosomes the FASTA lacks: {listed}; "
                      f"the FASTA has {len(names)} records, e.g. {names[:5]}")


def _check_ends(table, chroms, lengths) -> None:
    length = chroms.map(lengths).to_numpy()
    past = table["end"].to_numpy() > length
    if not past.any():
        return
    chrom = chroms[past].value_counts().index[0]
    n = int((past & (chroms == chrom).to_numpy()).sum())
    more = f" (and {int(past.sum()) - n} on other chromosomes)" if past.sum() > n else ""
    raise GenomeError(f"{n} peaks extend past the end of {chrom} (length {lengths[chrom]} in the FASTA)"
                      f"{more}: the peaks were probably called on another genome build than this FASTA")


def _per_peak(table: pd.DataFrame, genome, names: list, fasta) -> list[str]:
    by_coords = {}
    for name in names:
        match = PEAK_PATTERN.match(name)
        by_coords[(match["chrom"], int(match["start"]), int(match["end"]))] = name
    mapping = _chrom_map(table["chrom"].unique(), {k[0] for k in by_coords})
    keys = [(mapping[c], s, e) for c, s, e in zip(table["chrom"], table["start"], table["end"])]
    missing = [peak for peak, key in zip(table.index, keys) if key not in by_coords]
    if missing:
        raise GenomeError(f"the per-peak FASTA {fasta} lacks {len(missing)} of {len(table)} peaks, "
                          f"e.g. {missing[:EXAMPLES]} (it has {len(names)} records, e.g. {names[:EXAMPLES]})")
    return [genome[by_coords[key]][:] for key in keys]


def _check_not_n(seqs: list[str], fasta) -> None:
    all_n = sum(1 for s in seqs if s and not s.strip("N"))
    if all_n * 2 > len(seqs):
        raise GenomeError(f"{all_n} of {len(seqs)} peak sequences in {fasta} are all N: the peaks were "
                          f"probably called on another genome build than this FASTA (or it is hard-masked)")

