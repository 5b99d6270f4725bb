"""Format detection and the readers for .h5mu, .h5ad and Cell Ranger .h5 / mtx input."""

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

from .errors import ReadError

#: Cell Ranger feature types and the modality names they map to.
FEATURE_TYPE_MODALITY = {
    "Gene Expression": "rna",
    "Antibody Capture": "prot",
    "Peaks": "atac",
}

#: ``obsm`` keys searched for proteins in a single ``.h5ad`` (older CITE-seq layout).
PROTEIN_OBSM_KEYS = ("protein_expression", "protein_counts", "protein", "prot", "adt")

_KNOWN_EXTENSIONS = (".h5mu", ".h5ad", ".h5", ".hdf5")
_PEAK_RE = re.compile(r"^(chr)?[0-9A-Za-z_.]+[:_-]\d+[-_]\d+$")


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
