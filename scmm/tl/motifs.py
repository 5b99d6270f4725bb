"""Transcription-factor motifs: the JASPAR database (offline), motif files, and motif matches in sequences.

- :func:`jaspar_motifs`: JASPAR matrices from the SQLite copy shipped by
  pyjaspar (no network), the latest version of each;
- :func:`read_motifs`: a JASPAR, MEME (text), TRANSFAC or pfm file;
- :func:`match_motifs`: which sequences (peaks) hold a match to each motif,
  as motifmatchr does it (below).

Scoring follows motifmatchr / TFBSTools: the log-odds matrix of a motif is
``log2((count + pseudocount * bg) / (column total + pseudocount) / bg)``; the
background ``bg`` is the nucleotide frequency of all the sequences, made
strand-symmetric (A = T, C = G), unless given.  A window's score is the sum of
its positions' log-odds (an N, or any letter other than ACGT, adds 0); a
sequence matches a motif when its best window on either strand scores at
least the motif's threshold for ``p_value``: the score that a window of
background sequence reaches with probability ``p_value``, from the same
dynamic programme as Biopython's ``pssm.distribution(...).threshold_fpr``
(vectorised here; the tests check that they agree).  Windows that run past
the end of a sequence are not scored, so a sequence shorter than a motif does
not match it.

Scanning is ``torch.nn.functional.conv1d`` over chunks of one-hot sequences
with the motifs (both strands) as filters: on a CPU in groups of 256 filters
of similar length and score tiles of about 2 MB (they stay in cache), on a
GPU all filters at once in tiles of up to 512 MB (see ``TILES``).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

with warnings.catch_warnings():
    # dash-bootstrap-components drops a pyproject.toml into site-packages: Bio then warns spuriously
    warnings.filterwarnings("ignore", message="You may be importing Biopython from inside the source tree")
    from Bio import motifs as bio_motifs
    from pyjaspar import JASPAR_LATEST_RELEASE, jaspar_releases, jaspardb

ALPHABET = "ACGT"
FORMATS = {".jaspar": "jaspar", ".meme": "meme", ".txt": "meme", ".transfac": "transfac",
           ".dat": "transfac", ".pfm": "pfm"}
#: filters per convolution (None: all) and bytes of one score tile; on a CPU small tiles stay in cache
TILES = {"cpu": (256, 2**21), "cuda": (None, 512 * 2**20)}
PRECISION = 10**3
CACHE_VERSION = 1


@dataclass
class MotifSet:
    """Motifs as count matrices: ``counts[i]`` is (length, 4), columns A, C, G, T."""

    ids: list
    names: list
    counts: list
    source: str = ""

    def __post_init__(self):
        self.ids, self.names = [str(i) for i in self.ids], [str(n) for n in self.names]
        self.counts = [np.asarray(c, dtype=np.float64) for c in self.counts]
        if not len(self.ids) == len(self.names) == len(self.counts):
            raise ValueError("ids, names and counts must have the same length")
        if len(set(self.ids)) < len(self.ids):
            twice = sorted({m for m in self.ids if self.ids.count(m) > 1})
            raise ValueError(f"motif ids must be unique; repeated: {twice[:3]}")
        for motif, counts in zip(self.ids, self.counts):
            if counts.ndim != 2 or counts.shape[1] != 4 or len(counts) == 0:
                raise ValueError(f"motif {motif}: counts must be (length >= 1, 4), not {counts.shape}")
            if not np.isfinite(counts).all() or (counts < 0).any() or (counts.sum(axis=1) <= 0).any():
                raise ValueError(f"motif {motif}: counts must be finite, >= 0, and no column all 0")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids) -> "MotifSet":
        """The motifs ``ids`` (in that order)."""
        where = {m: i for i, m in enumerate(self.ids)}
        unknown = [m for m in ids if m not in where]
        if unknown:
            raise KeyError(f"{len(unknown)} motif ids are not in the set, e.g. {unknown[:3]}")
        pick = [where[m] for m in ids]
        return MotifSet([self.ids[i] for i in pick], [self.names[i] for i in pick],
                        [self.counts[i] for i in pick], self.source)

    def fingerprint(self) -> str:
        """sha256 of the ids and count matrices."""
        digest = hashlib.sha256()
        for motif, counts in zip(self.ids, self.counts):
            digest.update(motif.encode() + b"\0" + np.ascontiguousarray(counts).tobytes())
        return digest.hexdigest()


@dataclass
class MotifMatches:
    """Sequences x motifs: ``matrix[i, j]`` is True when sequence ``i`` holds a match to motif ``j``."""

    matrix: sp.csr_matrix
    peaks: list
    motif_ids: list
    motif_names: list
    p_value: float
    thresholds: np.ndarray
    background: np.ndarray

    def to_dataframe(self) -> pd.DataFrame:
        """The matches as a boolean DataFrame, peaks x motif ids (dense: one byte a cell)."""
        return pd.DataFrame(self.matrix.toarray(), index=self.peaks, columns=self.motif_ids)


def jaspar_motifs(collection: str = "CORE", tax_group="vertebrates", release: str | None = None) -> MotifSet:
    """JASPAR motifs of ``collection`` for ``tax_group`` (a name, a list, or None for all), latest versions.

    ``release`` None is pyjaspar's newest (``JASPAR2026`` for pyjaspar 4.0).
    """
    release = release or JASPAR_LATEST_RELEASE
    if release not in jaspar_releases:
        raise ValueError(f"unknown JASPAR release {release!r}; pyjaspar has {sorted(jaspar_releases)}")
    groups = None if tax_group is None else tuple([tax_group] if isinstance(tax_group, str) else tax_group)
    ids, names, counts = _fetch_jaspar(release, collection, groups)
    where = ", ".join(groups) if groups else "all taxonomic groups"
    return MotifSet(list(ids), list(names), list(counts), f"{release} {collection} {where}, latest versions")


@lru_cache(maxsize=8)
def _fetch_jaspar(release: str, collection: str, groups):
    db = jaspardb(release=release)
    try:
        _check_choice("collection", [collection], db.conn, "SELECT DISTINCT COLLECTION FROM MATRIX")
        if groups is not None:
            _check_choice("tax group", groups, db.conn,
                          "SELECT DISTINCT VAL FROM MATRIX_ANNOTATION WHERE TAG = 'tax_group'")
        found = db.fetch_motifs(collection=collection, tax_group=list(groups) if groups else None,
                                all_versions=False)
    finally:
        db.conn.close()
    counts = [_read_only(_counts(m)) for m in found]
    return tuple(m.matrix_id for m in found), tuple(m.name for m in found), tuple(counts)


def _check_choice(what: str, given, conn, query: str) -> None:
    valid = sorted(row[0] for row in conn.execute(query))
    bad = [g for g in given if g not in valid]
    if bad:
        raise ValueError(f"unknown JASPAR {what} {bad[0]!r}; this release has {valid}")


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _counts(motif) -> np.ndarray:
    if sorted(motif.alphabet) != list(ALPHABET):
        raise ValueError(f"motif {motif.name}: alphabet {motif.alphabet!r} is not DNA (ACGT)")
    return np.array([motif.counts[b] for b in ALPHABET], dtype=np.float64).T


def read_motifs(path, format: str | None = None) -> MotifSet:
    """Motifs of a file: ``jaspar``, ``meme`` (MEME text), ``transfac`` or ``pfm`` (from the extension if None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motif file {path} not found")
    fmt = (format or FORMATS.get(path.suffix.lower(), "")).lower()
    if fmt not in set(FORMATS.values()):
        raise ValueError(f"{path}: unknown motif format {format or path.suffix!r}; use one of "
                         f"{sorted(set(FORMATS.values()))} (format=...)")
    text = path.read_text(errors="replace")
    try:
        found = list(bio_motifs.parse(io.StringIO(text), "minimal" if fmt == "meme" else fmt))
    except Exception as err:  # the parsers raise ValueError, KeyError, IndexError, ...
        raise ValueError(f"{path} is not a valid {fmt} motif file: {err}") from None
    if not found:
        raise ValueError(f"{path}: no motifs found (is it a {fmt} file?)")
    ids, names = _identify(found, fmt, text, path.stem)
    counts = [_counts(m) for m in found]
    return MotifSet(ids, names, counts, f"{path.name} ({fmt})")


def _identify(found: list, fmt: str, text: str, stem: str):
    """Ids and names; an unnamed motif is called after the file (``stem``, ``stem_2``...)."""
    unnamed = [stem if len(found) == 1 else f"{stem}_{i + 1}" for i in range(len(found))]
    if fmt == "meme":  # Biopython keeps the first word of "MOTIF id name"
        alt = dict(re.findall(r"^MOTIF[ \t]+(\S+)[ \t]+(\S+)", text, flags=re.M))
        return [m.name for m in found], [alt.get(m.name, m.name) for m in found]
    if fmt == "transfac":
        ids = [m.get("AC") or m.get("ID") or u for m, u in zip(found, unnamed)]
        return ids, [m.get("ID") or m.get("NA") or i for i, m in zip(ids, found)]
    ids = [getattr(m, "matrix_id", None) or m.name or u for m, u in zip(found, unnamed)]
    return ids, [m.name or i for i, m in zip(ids, found)]


def log_odds(counts: np.ndarray, background: np.ndarray, pseudocount: float) -> np.ndarray:
    """(L, 4) log2-odds matrix of a count matrix (motifmatchr / TFBSTools ``toPWM``)."""
    total = counts.sum(axis=1, keepdims=True)
    return np.log2((counts + pseudocount * background) / (total + pseudocount) / background)


def score_threshold(scores: np.ndarray, background: np.ndarray, p_value: float) -> float:
    """Score reached by a background window with probability ``p_value`` (Biopython's ``threshold_fpr``)."""
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    return _threshold(scores.tobytes(), scores.shape[0], tuple(map(float, background)), float(p_value))


@lru_cache(maxsize=20000)
def _threshold(score_bytes: bytes, length: int, background: tuple, p_value: float) -> float:
    scores = np.frombuffer(score_bytes).reshape(length, 4)
    low = min(0.0, float(sum(min(row) for row in scores.tolist())))
    high = max(0.0, float(sum(max(row) for row in scores.tolist())))
    if high == low:  # an uninformative motif: every window scores 0
        return high
    n = PRECISION * length
    step = (high - low) / (n - 1)
    density = np.zeros(n)
    density[-int((low + 0.5 * step) // step)] = 1.0
    positions = np.arange(n)
    for row in scores.tolist():
        new = np.zeros(n)
        for score, bg in zip(row, background):
            shifted = np.clip(positions + int((score + 0.5 * step) // step), 0, n - 1)
            new += np.bincount(shifted, weights=density * bg, minlength=n)
        density = new
    tail = np.cumsum(density[::-1])
    index = n - 1 - int(np.argmax(tail >= p_value))
    return low + index * step


def match_motifs(sequences, motifs: MotifSet, p_value: float = 5e-5, pseudocount: float = 0.8,
                 background=None, peak_names=None, cache_dir=None, progress=None,
                 device: str | None = None) -> MotifMatches:
    """Which ``sequences`` hold a match to each of ``motifs`` (see the module docstring).

    ``background``: A, C, G, T frequencies (a dict or 4 numbers) instead of the
    sequences' own; ``peak_names``: names of the sequences (default "0".."n-1");
    ``cache_dir``: a folder where the result is kept under a key of the
    sequences, motifs and settings and read back on the next call;
    ``progress``: called as ``progress(done, total)`` after each chunk;
    ``device``: where to convolve (default the CPU; e.g. ``"cuda"``).
    """
    sequences = _check_inputs(sequences, motifs, p_value, pseudocount)
    peaks = [str(i) for i in range(len(sequences))] if peak_names is None else [str(p) for p in peak_names]
    if len(peaks) != len(sequences):
        raise ValueError(f"{len(peaks)} peak names for {len(sequences)} sequences")
    bg = _background(sequences) if background is None else _given_background(background)
    pssms = [log_odds(c, bg, pseudocount) for c in motifs.counts]
    thresholds = np.array([score_threshold(s, bg, p_value) for s in pssms])
    cache = _cache_path(cache_dir, sequences, motifs, p_value, pseudocount, bg)
    matrix = _read_cache(cache, (len(sequences), len(motifs)))
    if matrix is None:
        matrix = scan(sequences, pssms, thresholds, progress=progress, device=device)
        if cache is not None:
            _write_cache(cache, matrix)
    return MotifMatches(matrix, peaks, list(motifs.ids), list(motifs.names), float(p_value), thresholds, bg)


def _check_inputs(sequences, motifs, p_value, pseudocount) -> list:
    if isinstance(sequences, str):
        raise TypeError("sequences must be a list of strings, not one string")
    sequences = list(sequences)
    if not sequences:
        raise ValueError("no sequences to scan")
    if not all(isinstance(s, str) for s in sequences):
        raise TypeError("sequences must be strings")
    if not len(motifs):
        raise ValueError("the motif set is empty")
    if not 0 < p_value <= 0.1:
        raise ValueError(f"p_value must be in (0, 0.1], not {p_value}")
    if not pseudocount > 0:
        raise ValueError(f"pseudocount must be > 0, not {pseudocount}")
    return sequences


def _background(sequences) -> np.ndarray:
    """Strand-symmetric A, C, G, T frequencies of the sequences (uniform when A+T or C+G is absent)."""
    counts = np.array([sum(s.count(b) + s.count(b.lower()) for s in sequences) for b in ALPHABET], float)
    at, cg = (counts[0] + counts[3]) / 2, (counts[1] + counts[2]) / 2
    if not at or not cg:
        return np.full(4, 0.25)
    return np.array([at, cg, cg, at]) / counts.sum()


def _given_background(background) -> np.ndarray:
    values = [background.get(b, 0) for b in ALPHABET] if isinstance(background, dict) else list(background)
    bg = np.asarray(values, dtype=np.float64)
    if bg.shape != (4,) or not np.isfinite(bg).all() or (bg <= 0).any():
        raise ValueError(f"background must be 4 positive frequencies (A, C, G, T), not {background!r}")
    return bg / bg.sum()


def scan(sequences: list, pssms: list, thresholds: np.ndarray, progress=None,
         device: str | None = None) -> sp.csr_matrix:
    """Boolean sequences x motifs matrix: best window (both strands) >= threshold."""
    device = torch.device(device or "cpu")
    group_size, tile_bytes = TILES["cpu" if device.type == "cpu" else "cuda"]
    groups = _filter_groups(pssms, group_size or 2 * len(pssms), device)
    width = max(len(p) for p in pssms)
    per_base = 4 * max(len(g[2]) for g in groups)
    order = np.argsort([len(s) for s in sequences], kind="stable")
    hits = np.zeros((len(sequences), len(pssms)), dtype=bool)
    done = 0
    with torch.inference_mode(), _exact_fp32(device):
        for chunk in _chunks(order, sequences, per_base, tile_bytes):
            onehot, seq_len = _encode([sequences[i] for i in chunk], width, device)
            best = _best_scores(onehot, seq_len, groups, 2 * len(pssms)).cpu().numpy()
            strands = np.maximum(best[:, :len(pssms)], best[:, len(pssms):])
            hits[chunk] = strands.astype(np.float64) >= thresholds
            done += len(chunk)
            if progress is not None:
                progress(done, len(sequences))
    return sp.csr_matrix(hits)


def _filter_groups(pssms: list, size: int, device) -> list:
    """Forward then reverse-complement filters, by length, in groups of ``size``.

    Each group is (weights (G, 4, K) zero-padded on the right to its longest
    motif, lengths (G,), columns (G,) in the forward + reverse order).
    """
    matrices = list(pssms) + [p[::-1, ::-1] for p in pssms]  # reverse complement: A<->T, C<->G
    order = np.argsort([len(m) for m in matrices], kind="stable")
    groups = []
    for start in range(0, len(order), size):
        cols = order[start:start + size]
        weights = np.zeros((len(cols), 4, max(len(matrices[c]) for c in cols)), dtype=np.float32)
        for row, c in zip(weights, cols):
            row[:, :len(matrices[c])] = matrices[c].T
        groups.append((torch.as_tensor(weights, device=device),
                       torch.as_tensor([len(matrices[c]) for c in cols], device=device),
                       torch.as_tensor(cols, device=device)))
    return groups


def _chunks(order: np.ndarray, sequences: list, per_base: int, tile_bytes: int):
    """Runs of sequences (shortest first) whose score tile stays within ``tile_bytes``."""
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * max(len(sequences[order[stop]]), 1) \
                * per_base <= tile_bytes:
            stop += 1
        yield order[start:stop]
        start = stop


_CODES = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(ALPHABET):
    _CODES[ord(_b)] = _CODES[ord(_b.lower())] = _i


def _encode(sequences: list, width: int, device):
    """(B, 4, longest + width - 1) one-hot of ACGT (anything else, and the padding, all 0), lengths."""
    lengths = [len(s) for s in sequences]
    codes = np.full((len(sequences), max(max(lengths), 1) + width - 1), 4, dtype=np.uint8)
    for row, seq in zip(codes, sequences):
        raw = np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)
        row[:len(raw)] = _CODES[raw]
    codes = torch.from_numpy(codes).to(device=device, dtype=torch.long)
    onehot = torch.nn.functional.one_hot(codes, 5)[..., :4].transpose(1, 2).float()
    return onehot, torch.as_tensor(lengths, device=device)


def _best_scores(onehot, seq_len, groups, n_filters: int):
    """(B, 2M) best score of each filter over the windows that lie inside each sequence."""
    positions = onehot.shape[2] - max(w.shape[2] for w, _, _ in groups) + 1
    best = torch.empty(onehot.shape[0], n_filters, device=onehot.device)
    for weights, lengths, cols in groups:
        scores = torch.nn.functional.conv1d(onehot[:, :, :positions + weights.shape[2] - 1], weights)
        best[:, cols] = _masked_max(scores, seq_len, lengths, weights.shape[2])
    return best


def _masked_max(scores, seq_len, lengths, width: int):
    """Max over positions p with p + length <= seq_len (only windows near the ends need the mask)."""
    safe = max(int(seq_len.min()) - width + 1, 0)  # windows before this fit every sequence
    parts = [scores[:, :, :safe].amax(dim=2)] if safe else []
    if safe < scores.shape[2]:
        last_start = (seq_len[:, None] - lengths[None, :])[:, :, None]
        positions = torch.arange(safe, scores.shape[2], device=scores.device)
        parts.append(scores[:, :, safe:].masked_fill(positions > last_start, -torch.inf).amax(dim=2))
    return parts[0] if len(parts) == 1 else torch.maximum(*parts)


@contextmanager
def _exact_fp32(device: torch.device):
    """On CUDA, convolve in full float32 (no TF32), so that scores are as exact as on a CPU."""
    if device.type != "cuda":
        yield
        return
    conv = torch.backends.cudnn.conv
    before, conv.fp32_precision = conv.fp32_precision, "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


def _cache_path(cache_dir, sequences, motifs, p_value, pseudocount, bg) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(f"motif-matches v{CACHE_VERSION}\n".encode())
    for seq in sequences:
        digest.update(seq.encode("ascii", "replace") + b"\n")
    digest.update(f"|{motifs.fingerprint()}|{p_value!r}|{pseudocount!r}|{bg.tobytes().hex()}".encode())
    return Path(cache_dir) / f"motif-matches-{digest.hexdigest()[:32]}.npz"


def _read_cache(path: Path | None, shape: tuple) -> sp.csr_matrix | None:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            matrix = sp.csr_matrix((np.ones(len(data["indices"]), bool), data["indices"], data["indptr"]),
                                   shape=tuple(data["shape"]))
        matrix.check_format(full_check=True)
    except Exception:  # a damaged or foreign file: scan again and overwrite it
        return None
    return matrix if matrix.shape == shape else None


def _write_cache(path: Path, matrix: sp.csr_matrix) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, indices=matrix.indices, indptr=matrix.indptr, shape=np.array(matrix.shape))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
