"""Reading and validating multimodal single-cell count data for scMM.

Every reader returns raw counts: each modality's ``X`` is a
:class:`scipy.sparse.csr_matrix` of ``float32`` holding non-negative integers,
the cells (``obs_names``) are identical and in the same order in every
modality, and feature names are unique within a modality.

Supported inputs
----------------
* ``.h5mu`` (MuData);
* a Cell Ranger ``filtered_feature_bc_matrix.h5`` or the matching ``.mtx``
  folder (``matrix.mtx[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]``,
  ``barcodes.tsv[.gz]``), split by feature type into ``rna`` (Gene
  Expression), ``prot`` (Antibody Capture), ``atac`` (Peaks) and other types
  under their lowercase name;
* two or more ``.h5ad`` files (one modality each), paired by barcode;
* a single ``.h5ad`` with the proteins in ``obsm`` (older CITE-seq layout).

Nothing here ever writes a file.  Every problem with the input is reported as
a :class:`ReadError` whose message names the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata
import h5py
import mudata
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

__all__ = ["ReadError", "read", "read_query", "validate", "summarize"]

#: Cell Ranger feature types and the modality names they map to.
FEATURE_TYPE_MODALITY = {
    "Gene Expression": "rna",
    "Antibody Capture": "prot",
    "Peaks": "atac",
}

#: ``obsm`` keys searched for proteins in a single ``.h5ad`` (older CITE-seq layout).
PROTEIN_OBSM_KEYS = ("protein_expression", "protein_counts", "protein", "prot", "adt")

_KNOWN_EXTENSIONS = (".h5mu", ".h5ad", ".h5", ".hdf5")
_INT_TOL = 1e-4
_PEAK_RE = re.compile(r"^(chr)?[0-9A-Za-z_.]+[:_-]\d+[-_]\d+$")


class ReadError(ValueError):
    """The input could not be read as raw multimodal counts.

    The message always names the file (or ``source``) and the problem.
    """


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def read(
    path,
    *more_paths,
    modality_names=None,
    counts_layer: str = "counts",
    protein_obsm_key: str | None = None,
) -> mudata.MuData:
    """Read raw multimodal counts into one validated :class:`mudata.MuData`.

    Parameters
    ----------
    path, *more_paths
        One ``.h5mu`` file, one Cell Ranger ``.h5`` file or ``.mtx`` folder,
        one ``.h5ad`` with proteins in ``obsm``, or two or more files (usually
        ``.h5ad``, one modality each) that are paired by barcode.  The format
        is recognised from the content, not only from the extension.
    modality_names
        Names for the modalities, either a sequence with one name per
        modality (in file order; for several ``.h5ad`` files one per file) or
        a mapping ``{guessed_name: new_name}``.  By default names are taken
        from the file (``.h5mu``), from the feature types (10x) or guessed from
        the file stem / feature names (``rna``, ``prot``, ``atac``; else the
        stem).
    counts_layer
        Layer holding raw counts; used in preference to ``X`` when present.
    protein_obsm_key
        ``obsm`` key with the protein counts of a single ``.h5ad`` (default:
        the first of :data:`PROTEIN_OBSM_KEYS` that exists).

    Returns
    -------
    MuData
        Every modality's ``X`` is a ``csr_matrix`` of float32 raw counts; the
        cells are the barcodes shared by all modalities (order of the first),
        without cells that have zero counts in any modality; features with zero
        counts in all cells are dropped.

    Raises
    ------
    ReadError
        Missing, unreadable or unknown file, fewer than two modalities, no
        shared barcodes, duplicate barcodes, or values that are not raw counts.
    """
    paths = [_as_path(p) for p in (path, *more_paths)]
    source = ", ".join(str(p) for p in paths)
    kinds = [_detect_format(p) for p in paths]

    entries: list[_Entry] = []
    global_obs = None
    global_obsm = None
    uns: dict = {}
    single = len(paths) == 1
    for p, kind in zip(paths, kinds):
        if kind == "h5mu":
            md = _guarded(p, "h5mu", lambda p=p: mudata.read_h5mu(p))
            if not md.mod:
                raise ReadError(f"{p}: the .h5mu file holds no modalities")
            for name, ad in md.mod.items():
                entries.append(_Entry(name, ad, p, where=None))
            if single:
                global_obs, global_obsm, uns = _global_parts(md)
        elif kind in ("10x_h5", "10x_mtx"):
            for name, ad in _read_10x(p, kind).items():
                entries.append(_Entry(name, ad, p, where=None))
        else:  # h5ad
            ad = _guarded(p, "h5ad", lambda p=p: anndata.read_h5ad(p))
            if single:
                key = _protein_key(ad, protein_obsm_key, p)
            else:  # with several files, split only a file that has the named key
                key = protein_obsm_key if protein_obsm_key and protein_obsm_key in ad.obsm else None
            if key is not None:
                rna, prot = _split_obsm_proteins(ad, key, p)
                entries.append(_Entry("rna", rna, p, where=None))
                entries.append(_Entry("prot", prot, p, where=f"obsm['{key}']"))
                if single:
                    global_obs = ad.obs.copy()
                    uns = dict(ad.uns)
                    uns.pop("protein_names", None)
            else:
                entries.append(_Entry(_guess_name(p, ad), ad, p, where=None, guessed=True))

    _apply_names(entries, modality_names, source)

    if len(entries) < 2:
        e = entries[0]
        hint = ""
        if kinds[0] == "h5ad":
            keys = list(e.adata.obsm.keys())
            hint = (
                f"; no proteins found in obsm (looked for {list(PROTEIN_OBSM_KEYS)}, "
                f"obsm has {keys}); pass a second file or protein_obsm_key="
            )
        raise ReadError(
            f"{source}: found only one modality ('{e.name}'); scMM needs at least 2 "
            f"modalities measured in the same cells{hint}"
        )

    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ReadError(
            f"{source}: modality name(s) {dup} occur more than once "
            f"(modalities {names}); pass modality_names= to name them"
        )

    if len(paths) > 1:
        labels = {
            e.name: (e.path.name if sum(x.path == e.path for x in entries) == 1 else f"{e.path.name}:{e.name}")
            for e in entries
        }
        what = "all files"
    else:
        labels = {e.name: f"modality '{e.name}'" for e in entries}
        what = "all modalities"

    return _build(
        entries,
        source=source,
        counts_layer=counts_layer,
        labels=labels,
        shared_label=what,
        global_obs=global_obs,
        global_obsm=global_obsm,
        uns=uns,
        pull_obs=len(paths) > 1 or global_obs is None,
    )


def validate(mdata: mudata.MuData, source: str = "<in memory>", counts_layer: str = "counts") -> mudata.MuData:
    """Check and clean an in-memory MuData exactly as :func:`read` does.

    Returns a new MuData (the input is not modified) whose modalities hold
    ``csr_matrix`` float32 raw counts (from ``layers[counts_layer]`` when
    present, else ``X``) on the barcodes shared by all modalities, without
    empty cells and empty features.  ``source`` names the data in messages.

    Raises
    ------
    ReadError
        Fewer than two modalities, duplicate or no shared barcodes, values that
        are not raw counts, or nothing left after dropping empty cells/features.
    """
    if not isinstance(mdata, mudata.MuData):
        raise ReadError(f"{source}: expected a MuData object, got {type(mdata).__name__}")
    entries = [_Entry(name, ad, None, where=None) for name, ad in mdata.mod.items()]
    if len(entries) < 2:
        raise ReadError(
            f"{source}: found {len(entries)} modality(ies) {[e.name for e in entries]}; "
            "scMM needs at least 2 modalities measured in the same cells"
        )
    obs, obsm, uns = _global_parts(mdata)
    return _build(
        entries,
        source=source,
        counts_layer=counts_layer,
        labels={e.name: f"modality '{e.name}'" for e in entries},
        shared_label="all modalities",
        global_obs=obs,
        global_obsm=obsm,
        uns=uns,
        pull_obs=False,
    )


def read_query(path, modality: str | None = None, counts_layer: str = "counts") -> anndata.AnnData:
    """Read a one-modality query dataset as raw counts.

    Parameters
    ----------
    path
        An ``.h5ad``; a Cell Ranger ``.h5`` or ``.mtx`` folder (with one
        feature type, or pick one with ``modality``: ``rna``, ``prot``,
        ``atac``...); or an ``.h5mu`` from which ``modality`` is taken (may be
        omitted when it holds only one).
    modality
        Modality to take from a multimodal file.
    counts_layer
        Layer holding raw counts; used in preference to ``X`` when present.

    Returns
    -------
    AnnData
        ``X`` is a ``csr_matrix`` of float32 raw counts; cells with zero counts
        are dropped with a warning (features are kept so that they still line
        up with a reference).  ``uns["modality"]`` holds the modality name.

    Raises
    ------
    ReadError
        Missing/unreadable/unknown file, ambiguous or absent modality,
        duplicate barcodes, or values that are not raw counts.
    """
    p = _as_path(path)
    kind = _detect_format(p)
    if kind == "h5ad":
        ad = _guarded(p, "h5ad", lambda: anndata.read_h5ad(p))
        name = modality or _guess_name(p, ad)
        mods = {name: ad}
        take = name
    else:
        if kind == "h5mu":
            md = _guarded(p, "h5mu", lambda: mudata.read_h5mu(p))
            mods = dict(md.mod)
        else:
            mods = _read_10x(p, kind)
        if not mods:
            raise ReadError(f"{p}: the file holds no modalities")
        if modality is None:
            if len(mods) > 1:
                raise ReadError(
                    f"{p}: the file holds several modalities {list(mods)}; "
                    "pass modality= to choose the query modality"
                )
            take = next(iter(mods))
        else:
            if modality not in mods:
                raise ReadError(
                    f"{p}: modality '{modality}' not found; the file holds {list(mods)}"
                )
            take = modality
    ad = mods[take]
    X, where = _counts_matrix(ad, counts_layer, None, str(p), take)
    _check_barcodes(ad.obs_names, str(p), take)
    out = _new_anndata(ad, X)
    _unique_var(out, str(p), take)
    out.uns["modality"] = take
    empty = np.diff(out.X.indptr) == 0
    if empty.all():
        raise ReadError(f"{p}: all {out.n_obs} cells of modality '{take}' have zero counts")
    if empty.any():
        warnings.warn(
            f"{p}: dropped {int(empty.sum())} of {out.n_obs} cells with zero counts in '{take}'",
            UserWarning,
            stacklevel=2,
        )
        out = out[~empty].copy()
    return out


def summarize(mdata: mudata.MuData) -> dict:
    """Summarise a MuData for display.

    Returns ``{"n_cells": int, "modalities": {name: {"n_features": int,
    "median_counts_per_cell": float, "mean_counts_per_cell": float,
    "sparsity": float}}}`` where sparsity is the fraction of zero entries.
    """
    out = {"n_cells": int(mdata.n_obs), "modalities": {}}
    for name, ad in mdata.mod.items():
        X = ad.X
        n, m = ad.shape
        if X is None or n == 0:
            totals = np.zeros(n)
            nnz = 0
        elif sp.issparse(X):
            totals = np.asarray(X.sum(axis=1)).ravel()
            nnz = X.count_nonzero()
        else:
            arr = np.asarray(X)
            totals = arr.sum(axis=1)
            nnz = int(np.count_nonzero(arr))
        size = n * m
        out["modalities"][name] = {
            "n_features": int(m),
            "median_counts_per_cell": float(np.median(totals)) if n else 0.0,
            "mean_counts_per_cell": float(np.mean(totals)) if n else 0.0,
            "sparsity": float(1.0 - nnz / size) if size else 1.0,
        }
    return out


# --------------------------------------------------------------------------
# format detection and readers
# --------------------------------------------------------------------------


class _Entry:
    """One modality on its way into the MuData."""

    def __init__(self, name, adata, path, where=None, guessed=False):
        self.name = str(name)
        self.adata = adata
        self.path = path
        self.where = where  # overrides the "X"/"layers[...]" label (obsm proteins)
        self.guessed = guessed


def _as_path(p) -> Path:
    """A Path; a matrix.mtx(.gz) file stands for the 10x folder that holds it."""
    p = Path(os.fspath(p)).expanduser()
    if p.name in ("matrix.mtx", "matrix.mtx.gz") and p.is_file():
        return p.parent
    return p


def _guarded(path, fmt, fn):
    """Run a reader; turn any failure into a ReadError naming the file."""
    try:
        with warnings.catch_warnings():
            # Noise from old-but-valid files, not problems with the data.
            warnings.filterwarnings("ignore", message="var_names are not unique")
            warnings.filterwarnings("ignore", message=".*was written without encoding metadata")
            warnings.filterwarnings("ignore", message="The HDF5 file was not created by muon")
            # duplicate names are reported (barcodes) or fixed (features) by the checks below
            warnings.filterwarnings("ignore", message="(Observation|Variable) names are not unique")
            return fn()
    except ReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        raise ReadError(
            f"{path}: could not read it as {fmt} ({type(exc).__name__}: {exc}); "
            "the file may be corrupt, truncated or in another format"
        ) from exc


def _mtx_folder_files(folder: Path):
    """Return (matrix, features, barcodes, is_v2) paths of an mtx folder, or None."""

    def first(*names):
        for n in names:
            q = folder / n
            if q.is_file():
                return q
        return None

    mtx = first("matrix.mtx.gz", "matrix.mtx")
    feats = first("features.tsv.gz", "features.tsv")
    v2 = False
    if feats is None:
        feats = first("genes.tsv.gz", "genes.tsv")
        v2 = feats is not None
    bcs = first("barcodes.tsv.gz", "barcodes.tsv")
    return mtx, feats, bcs, v2


def _detect_format(p: Path) -> str:
    """Return 'h5mu', 'h5ad', '10x_h5' or '10x_mtx', or raise ReadError."""
    if not p.exists():
        raise ReadError(f"{p}: file not found")
    if p.is_dir():
        mtx, feats, bcs, _ = _mtx_folder_files(p)
        if mtx is None and (p / "filtered_feature_bc_matrix").is_dir():
            raise ReadError(
                f"{p}: folder has no matrix.mtx(.gz); did you mean {p / 'filtered_feature_bc_matrix'}?"
            )
        missing = [
            n
            for n, f in (("matrix.mtx(.gz)", mtx), ("features.tsv(.gz)/genes.tsv(.gz)", feats), ("barcodes.tsv(.gz)", bcs))
            if f is None
        ]
        if missing:
            if mtx is None and feats is None and bcs is None:
                raise ReadError(
                    f"{p}: unknown format: a folder that is not a 10x mtx folder "
                    "(expected matrix.mtx(.gz), features.tsv(.gz), barcodes.tsv(.gz))"
                )
            raise ReadError(f"{p}: incomplete 10x mtx folder; missing {', '.join(missing)}")
        return "10x_mtx"
    if not p.is_file():
        raise ReadError(f"{p}: not a regular file")
    try:
        is_h5 = h5py.is_hdf5(p)
    except Exception as exc:  # noqa: BLE001
        raise ReadError(f"{p}: could not read the file ({type(exc).__name__}: {exc})") from exc
    suffix = "".join(p.suffixes[-1:]).lower()
    if not is_h5:
        if suffix in _KNOWN_EXTENSIONS:
            raise ReadError(
                f"{p}: not a valid HDF5 file; the {suffix} file is corrupt, truncated or in another format"
            )
        raise ReadError(
            f"{p}: unknown format '{suffix or p.name}'; expected an .h5mu, .h5ad, "
            "Cell Ranger .h5 file or a 10x mtx folder"
        )
    try:
        with h5py.File(p, "r") as f:
            keys = set(f.keys())
            if "mod" in keys:
                return "h5mu"
            if "matrix" in keys and isinstance(f["matrix"], h5py.Group) and "barcodes" in f["matrix"]:
                return "10x_h5"
            for k in keys:  # Cell Ranger v2: one group per genome
                g = f[k]
                if isinstance(g, h5py.Group) and {"barcodes", "indptr", "data"} <= set(g.keys()):
                    return "10x_h5"
            if "X" in keys or {"obs", "var"} <= keys:
                return "h5ad"
    except Exception as exc:  # noqa: BLE001
        raise ReadError(
            f"{p}: could not open the HDF5 file ({type(exc).__name__}: {exc}); it may be corrupt or truncated"
        ) from exc
    raise ReadError(
        f"{p}: unknown format: an HDF5 file with top-level keys {sorted(keys)} that is neither "
        ".h5mu, .h5ad nor a Cell Ranger .h5"
    )


def _decode(arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind in ("S", "O"):
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in arr], dtype=object)
    return arr.astype(str).astype(object)


def _read_10x(p: Path, kind: str) -> dict[str, anndata.AnnData]:
    """Read a Cell Ranger .h5 or mtx folder, split by feature type."""
    if kind == "10x_h5":
        X, barcodes, var = _guarded(p, "a Cell Ranger .h5", lambda: _read_10x_h5(p))
    else:
        X, barcodes, var = _guarded(p, "a 10x mtx folder", lambda: _read_10x_mtx(p))
    obs = pd.DataFrame(index=pd.Index(barcodes, dtype=object))
    ft = var["feature_types"].astype(str).to_numpy()
    order = list(dict.fromkeys(ft))
    mods: dict[str, anndata.AnnData] = {}
    for t in order:
        name = FEATURE_TYPE_MODALITY.get(t, re.sub(r"\s+", "_", t.strip().lower()) or "unknown")
        cols = np.flatnonzero(ft == t)
        v = var.iloc[cols].copy()
        mods[name] = anndata.AnnData(X=X[:, cols], obs=obs.copy(), var=v)
    return mods


def _read_10x_h5(p: Path):
    with h5py.File(p, "r") as f:
        if "matrix" in f:
            g = f["matrix"]
            fg = g["features"]
            ids = _decode(fg["id"][()])
            names = _decode(fg["name"][()]) if "name" in fg else ids
            ftype = _decode(fg["feature_type"][()]) if "feature_type" in fg else np.full(len(ids), "Gene Expression", object)
            extra = {}
            for k in fg.keys():
                if k in ("id", "name", "feature_type", "_all_tag_keys"):
                    continue
                d = fg[k]
                if isinstance(d, h5py.Dataset) and d.shape == (len(ids),):
                    extra[k] = _decode(d[()])
        else:
            g = next(f[k] for k in f.keys() if isinstance(f[k], h5py.Group) and "barcodes" in f[k])
            ids = _decode(g["genes"][()])
            names = _decode(g["gene_names"][()]) if "gene_names" in g else ids
            ftype = np.full(len(ids), "Gene Expression", object)
            extra = {}
        barcodes = _decode(g["barcodes"][()])
        n_feat, n_cells = (int(x) for x in g["shape"][()])
        data = g["data"][()]
        indices = g["indices"][()]
        indptr = g["indptr"][()]
    if len(ids) != n_feat or len(barcodes) != n_cells:
        raise ValueError(
            f"shape {n_feat}x{n_cells} does not match {len(ids)} features / {len(barcodes)} barcodes"
        )
    # CSC (features x cells) is CSR (cells x features) transposed.
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_feat))
    var = pd.DataFrame({"gene_ids": ids, "feature_types": ftype, **extra}, index=pd.Index(names, dtype=object))
    return X, barcodes, var


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt")
    return open(path)


def _read_10x_mtx(folder: Path):
    mtx, feats, bcs, v2 = _mtx_folder_files(folder)
    opener = gzip.open if mtx.name.endswith(".gz") else open
    with opener(mtx, "rb") as fh:
        M = scipy.io.mmread(fh)
    M = sp.csr_matrix(M.T)  # mtx is features x cells
    with _open_text(feats) as fh:
        fdf = pd.read_csv(fh, sep="\t", header=None, dtype=str)
    with _open_text(bcs) as fh:
        barcodes = pd.read_csv(fh, sep="\t", header=None, dtype=str).iloc[:, 0].to_numpy(dtype=object)
    ids = fdf.iloc[:, 0].to_numpy(dtype=object)
    names = fdf.iloc[:, 1].to_numpy(dtype=object) if fdf.shape[1] > 1 else ids
    if fdf.shape[1] > 2 and not v2:
        ftype = fdf.iloc[:, 2].to_numpy(dtype=object)
    else:
        ftype = np.full(len(ids), "Gene Expression", object)
    if M.shape != (len(barcodes), len(ids)):
        raise ValueError(
            f"matrix is {M.shape[1]} features x {M.shape[0]} cells but {feats.name} has {len(ids)} "
            f"rows and {bcs.name} has {len(barcodes)}"
        )
    var = pd.DataFrame({"gene_ids": ids, "feature_types": ftype}, index=pd.Index(names, dtype=object))
    return M, barcodes, var


def _protein_key(ad: anndata.AnnData, key: str | None, p: Path) -> str | None:
    if key is not None:
        if key not in ad.obsm:
            raise ReadError(
                f"{p}: protein_obsm_key '{key}' not found in obsm (obsm has {list(ad.obsm.keys())})"
            )
        return key
    for k in PROTEIN_OBSM_KEYS:
        if k in ad.obsm:
            return k
    return None


def _split_obsm_proteins(ad: anndata.AnnData, key: str, p: Path):
    """Split an AnnData with proteins in obsm into (rna, prot) AnnData objects."""
    val = ad.obsm[key]
    if isinstance(val, pd.DataFrame):
        names = [str(c) for c in val.columns]
        M = val.to_numpy()
    else:
        M = val
        n = M.shape[1]
        pn = ad.uns.get("protein_names")
        if pn is not None and len(np.asarray(pn).ravel()) == n:
            names = [str(x) for x in np.asarray(pn).ravel()]
        else:
            if pn is not None:
                warnings.warn(
                    f"{p}: uns['protein_names'] has {len(np.asarray(pn).ravel())} names but "
                    f"obsm['{key}'] has {n} columns; naming proteins prot_0..",
                    UserWarning,
                    stacklevel=3,
                )
            names = [f"prot_{i}" for i in range(n)]
    if not sp.issparse(M):
        M = np.asarray(M)
        if M.dtype.kind not in "biuf":
            try:
                M = M.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ReadError(f"{p}: obsm['{key}'] is not numeric ({exc})") from exc
    if M.ndim != 2 or M.shape[0] != ad.n_obs:
        raise ReadError(f"{p}: obsm['{key}'] has shape {M.shape}, expected ({ad.n_obs}, n_proteins)")
    prot = anndata.AnnData(
        X=M if sp.issparse(M) else sp.csr_matrix(M),
        obs=pd.DataFrame(index=ad.obs_names.copy()),
        var=pd.DataFrame(index=pd.Index(names, dtype=object)),
    )
    rna = anndata.AnnData(X=ad.X, obs=ad.obs.copy(), var=ad.var.copy(), layers=dict(ad.layers))
    return rna, prot


def _guess_name(p: Path, ad: anndata.AnnData) -> str:
    """Guess a modality name from the file stem, then the features, else the stem."""
    stem = p.name
    for ext in (".h5ad", ".h5mu", ".h5", ".hdf5"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    tokens = [t for t in re.split(r"[^a-z0-9]+", stem.lower()) if t]
    found = set()
    for t in tokens:
        if t in ("atac", "peaks", "peak", "chromatin"):
            found.add("atac")
        elif t in ("prot", "protein", "proteins", "adt", "adts", "antibody"):
            found.add("prot")
        elif t in ("rna", "gex", "gene", "genes", "expression", "mrna", "scrna"):
            found.add("rna")
    if len(found) == 1:
        return found.pop()
    if "feature_types" in ad.var.columns and ad.n_vars:
        top = ad.var["feature_types"].astype(str).value_counts().index[0]
        if top in FEATURE_TYPE_MODALITY:
            return FEATURE_TYPE_MODALITY[top]
    if ad.n_vars:
        sample = ad.var_names[: min(200, ad.n_vars)]
        if np.mean([bool(_PEAK_RE.match(str(v))) for v in sample]) > 0.5:
            return "atac"
    return stem


def _apply_names(entries: list[_Entry], names, source: str) -> None:
    if names is None:
        return
    if isinstance(names, str):
        names = [names]
    if isinstance(names, Mapping):
        unknown = [k for k in names if k not in {e.name for e in entries}]
        if unknown:
            raise ReadError(
                f"{source}: modality_names has keys {unknown} that match no modality "
                f"(found {[e.name for e in entries]})"
            )
        for e in entries:
            e.name = str(names.get(e.name, e.name))
        return
    if not isinstance(names, Sequence):
        raise ReadError(f"{source}: modality_names must be a list of names or a mapping")
    if len(names) != len(entries):
        raise ReadError(
            f"{source}: modality_names has {len(names)} names but the input holds "
            f"{len(entries)} modalities {[e.name for e in entries]}"
        )
    for e, n in zip(entries, names):
        e.name = str(n)


def _global_parts(md: mudata.MuData):
    obs = md.obs.copy()
    obsm = {k: v for k, v in md.obsm.items() if k not in md.mod}
    return obs, obsm, dict(md.uns)


# --------------------------------------------------------------------------
# checks and cleaning
# --------------------------------------------------------------------------


def _counts_matrix(ad: anndata.AnnData, counts_layer, where, source, name):
    """Pick the raw counts of one modality, check them and return a csr float32 copy."""
    from_layer = counts_layer is not None and counts_layer in ad.layers
    if from_layer:
        X = ad.layers[counts_layer]
        where = f"layers['{counts_layer}']"
    else:
        X = ad.X
        where = where or "X"
    if X is None:
        raise ReadError(
            f"{source}: modality '{name}' has no X and no layers['{counts_layer}'] with counts"
        )
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # noqa: BLE001
            raise ReadError(f"{source}: modality '{name}' {where} is not a matrix ({exc})") from exc
        if arr.dtype.kind not in "biuf":
            raise ReadError(f"{source}: modality '{name}' {where} is not numeric (dtype {arr.dtype})")
        X = sp.csr_matrix(arr.astype(np.float32, copy=False))
    X.sum_duplicates()
    looks_norm = where == "X" and not from_layer
    hint = (
        f" X looks normalised and no layers['{counts_layer}'] with raw counts was found"
        if looks_norm
        else ""
    )
    d = X.data
    finite = np.isfinite(d)
    if not finite.all():
        n_nan = int(np.isnan(d).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ReadError(
            f"{source}: modality '{name}' {where} has {n_nan + n_inf} NaN/inf values "
            f"({n_nan} NaN, {n_inf} inf); scMM needs raw counts"
        )
    n_neg = int((d < 0).sum())
    if n_neg:
        raise ReadError(
            f"{source}: modality '{name}' {where} has {n_neg} negative values; scMM needs raw "
            f"(non-negative integer) counts.{hint}"
        )
    r = np.rint(d)
    n_frac = int((np.abs(d - r) > _INT_TOL).sum())
    if n_frac:
        if looks_norm:
            raise ReadError(
                f"{source}: modality '{name}': X looks normalised ({n_frac} non-integer values) "
                f"and no layers['{counts_layer}'] with raw counts was found; pass raw counts "
                "or name the layer that holds them with counts_layer="
            )
        raise ReadError(
            f"{source}: modality '{name}' {where} has {n_frac} non-integer values; scMM needs raw counts"
        )
    X.data = r.astype(np.float32, copy=False)
    X.eliminate_zeros()
    return X, where


def _check_barcodes(obs_names, source, name):
    dup = obs_names[obs_names.duplicated()]
    if len(dup):
        ex = ", ".join(repr(str(x)) for x in pd.unique(dup)[:3])
        raise ReadError(
            f"{source}: modality '{name}' has {len(dup)} duplicate barcodes (e.g. {ex}); "
            "barcodes must be unique within a modality"
        )


def _unique_var(ad: anndata.AnnData, source, name):
    if not ad.var_names.is_unique:
        dup = ad.var_names[ad.var_names.duplicated()]
        ex = ", ".join(repr(str(x)) for x in pd.unique(dup)[:3])
        warnings.warn(
            f"{source}: modality '{name}' has {len(dup)} duplicate feature names (e.g. {ex}); "
            "made unique by appending -1, -2, ...",
            UserWarning,
            stacklevel=4,
        )
        ad.var_names_make_unique()


def _new_anndata(ad: anndata.AnnData, X) -> anndata.AnnData:
    """A fresh AnnData with X and the annotations of ``ad`` (no layers/raw)."""
    obs = ad.obs.copy()
    obs.index = pd.Index([str(x) for x in ad.obs_names], dtype=object, name=ad.obs_names.name)
    var = ad.var.copy()
    var.index = pd.Index([str(x) for x in ad.var_names], dtype=object, name=ad.var_names.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="(Observation|Variable) names are not unique")
        out = anndata.AnnData(X=X, obs=obs, var=var, uns=dict(ad.uns))
    for store, src in ((out.obsm, ad.obsm), (out.varm, ad.varm)):
        for k, v in src.items():
            try:
                store[k] = v
            except Exception:  # noqa: BLE001 - optional annotation that no longer fits
                pass
    return out


def _subset_rows(v, idx):
    if isinstance(v, pd.DataFrame):
        return v.iloc[idx]
    return v[idx]


def _build(entries, *, source, counts_layer, labels, shared_label, global_obs, global_obsm, uns, pull_obs):
    """Shared core of read() and validate(): check, pair, clean, assemble."""
    mods: dict[str, anndata.AnnData] = {}
    for e in entries:
        _check_barcodes(e.adata.obs_names, source, e.name)
        X, _ = _counts_matrix(e.adata, counts_layer, e.where, source, e.name)
        a = _new_anndata(e.adata, X)
        _unique_var(a, source, e.name)
        if a.n_obs == 0:
            raise ReadError(f"{source}: modality '{e.name}' has no cells")
        if a.n_vars == 0:
            raise ReadError(f"{source}: modality '{e.name}' has no features")
        mods[e.name] = a

    # pair barcodes: keep those shared by all, in the order of the first modality
    names = list(mods)
    first = mods[names[0]].obs_names
    shared = first
    for n in names[1:]:
        shared = shared[shared.isin(mods[n].obs_names)]
    if len(shared) == 0:
        ex = "; ".join(f"{labels[n]}: {', '.join(map(str, mods[n].obs_names[:2]))}" for n in names)
        raise ReadError(
            f"{source}: no shared barcodes between {', '.join(labels[n] for n in names)} "
            f"(e.g. {ex}); the modalities must be measured in the same cells"
        )
    dropped = {n: mods[n].n_obs - len(shared) for n in names}
    if any(dropped.values()):
        detail = ", ".join(f"{d} of {labels[n]}" for n, d in dropped.items() if d)
        warnings.warn(
            f"{source}: kept {len(shared)} barcodes shared by {shared_label}; dropped {detail}",
            UserWarning,
            stacklevel=3,
        )
    for n in names:
        a = mods[n]
        if not a.obs_names.equals(shared):
            idx = a.obs_names.get_indexer(shared)
            mods[n] = a[idx].copy()

    # empty cells (zero counts in any modality)
    empty_by = {n: np.diff(mods[n].X.indptr) == 0 for n in names}
    empty = np.zeros(len(shared), dtype=bool)
    for m in empty_by.values():
        empty |= m
    if empty.all():
        detail = ", ".join(f"{n}: {int(m.sum())}" for n, m in empty_by.items())
        raise ReadError(
            f"{source}: no cells left: all {len(shared)} cells have zero counts in at least one "
            f"modality ({detail})"
        )
    if empty.any():
        detail = ", ".join(f"{n}: {int(m.sum())}" for n, m in empty_by.items() if m.any())
        warnings.warn(
            f"{source}: dropped {int(empty.sum())} of {len(shared)} cells with zero counts in at "
            f"least one modality ({detail})",
            UserWarning,
            stacklevel=3,
        )
        keep = ~empty
        for n in names:
            mods[n] = mods[n][keep].copy()
        shared = shared[keep]

    # empty features (zero counts in all cells)
    dropped_f = {}
    for n in names:
        a = mods[n]
        present = np.bincount(a.X.indices, minlength=a.n_vars) > 0
        if not present.any():
            raise ReadError(f"{source}: modality '{n}' has no features with counts left")
        if not present.all():
            dropped_f[n] = (int((~present).sum()), a.n_vars)
            mods[n] = a[:, present].copy()
    if dropped_f:
        detail = ", ".join(f"{n}: {d} of {t}" for n, (d, t) in dropped_f.items())
        warnings.warn(
            f"{source}: dropped features with zero counts in all cells ({detail})",
            UserWarning,
            stacklevel=3,
        )

    for a in mods.values():
        if not isinstance(a.X, sp.csr_matrix) or a.X.dtype != np.float32:
            a.X = sp.csr_matrix(a.X, dtype=np.float32)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        warnings.filterwarnings("ignore", category=FutureWarning, module="mudata")
        with mudata.set_options(pull_on_update=False):
            md = mudata.MuData(mods)

    # global annotations
    if global_obs is not None:
        obs = global_obs.copy()
        obs.index = pd.Index([str(x) for x in obs.index], dtype=object)
        pos = obs.index.get_indexer(md.obs_names)
        if (pos >= 0).all():
            for c in obs.columns:
                md.obs[c] = obs[c].iloc[pos].to_numpy()
            for k, v in (global_obsm or {}).items():
                try:
                    md.obsm[k] = _subset_rows(v, pos)
                except Exception:  # noqa: BLE001 - optional annotation; skip if it does not fit
                    pass
    elif pull_obs:
        _pull_obs(md)
    for k, v in (uns or {}).items():
        md.uns[k] = v
    return md


def _pull_obs(md: mudata.MuData) -> None:
    """Copy modality obs columns to the global obs (prefixed 'mod:col' on clashes)."""
    counts: dict[str, int] = {}
    for a in md.mod.values():
        for c in a.obs.columns:
            counts[c] = counts.get(c, 0) + 1
    for n, a in md.mod.items():
        for c in a.obs.columns:
            key = c if counts[c] == 1 else f"{n}:{c}"
            md.obs[key] = a.obs[c].to_numpy()
