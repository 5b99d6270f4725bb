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

    def __init__(self, name, adata, path, where=None, guessed=False, original=None):
        self.name = str(name)
        self.adata = adata
        self.path = path
        self.where = where  # overrides the "X"/"layers[...]" label (obsm proteins)
        self.guessed = guessed
        self.original = str(original) if original is not None else str(name)
        self.kind = None
        self.kind_from = None


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
    except MemoryError as exc:
        raise ReadError(
            f"{path}: ran out of memory reading it as {fmt}; the data is larger than the memory "
            "available on this machine"
        ) from exc
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
    """Return 'h5mu', 'h5ad', '10x_h5', '10x_mtx', 'geo_mtx', 'mtx' or 'table', or raise ReadError."""
    if not p.exists():
        raise ReadError(f"{p}: file not found")
    if p.is_dir():
        mtx, feats, bcs, _ = _mtx_folder_files(p)
        if mtx is None and _geo_matrices(p):
            return "geo_mtx"
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
                    "(expected matrix.mtx(.gz), features.tsv(.gz), barcodes.tsv(.gz)) and holds "
                    "no other Matrix Market (*.mtx[.gz]) file"
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
        if _is_mtx_name(p.name):
            return "mtx"
        if _is_table_name(p.name):
            return "table"
        if suffix == ".gz" and len(p.suffixes) > 1:
            suffix = "".join(p.suffixes[-2:]).lower()
        if suffix in _KNOWN_EXTENSIONS:
            raise ReadError(
                f"{p}: not a valid HDF5 file; the {suffix} file is corrupt, truncated or in another format"
            )
        raise ReadError(
            f"{p}: unknown format '{suffix or p.name}'; expected an .h5mu, .h5ad, "
            "Cell Ranger .h5 file, a 10x mtx folder, a Matrix Market .mtx[.gz] file or a "
            ".csv/.tsv[.gz] count table"
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


def _check_h5_input(p: Path) -> None:
    """Before loading an HDF5 input: the memory its arrays need, and the sparse structure
    of every matrix (X, layers, Cell Ranger matrix) from the dataset shapes alone."""
    from .checks import _check_memory, _structure_problem

    def scan():
        total = [0]
        problems = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biufc":
                total[0] += int(obj.size) * obj.dtype.itemsize
            if isinstance(obj, h5py.Group) and {"data", "indices", "indptr"} <= set(obj.keys()):
                enc = obj.attrs.get("encoding-type", b"")
                enc = enc.decode() if isinstance(enc, bytes) else str(enc)
                shape = obj.attrs.get("shape")
                fmt = "csr"
                if shape is None and "shape" in obj:  # Cell Ranger: features x cells CSC
                    shape = obj["shape"][()]
                    fmt = "csc"
                elif enc.startswith("csc"):
                    fmt = "csc"
                if shape is None or len(shape) != 2:
                    return
                indptr = obj["indptr"]
                n_major = int(shape[0] if fmt == "csr" else shape[1])
                if indptr.shape[0] != n_major + 1 or obj["indices"].shape != obj["data"].shape:
                    # read indptr only when its length is plausible (it is small)
                    problem = _structure_problem(
                        fmt, shape, np.zeros(indptr.shape[0], dtype=np.int64),
                        np.zeros(obj["indices"].shape[0], dtype=np.int64), obj["data"].shape[0]
                    ) if indptr.shape[0] != n_major + 1 else (
                        f"{obj['indices'].shape[0]} indices but {obj['data'].shape[0]} values"
                    )
                    problems.append((name, fmt, problem))

        with h5py.File(p, "r") as f:
            f.visititems(visit)
        return total[0], problems

    need, problems = _guarded(p, "HDF5", scan)
    if problems:
        name, fmt, problem = problems[0]
        raise ReadError(f"{p}: '{name}': bad {fmt.upper()} sparse structure: {problem}")
    _check_memory(p, "loading its arrays", need)


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
    from .checks import _structure_problem

    problem = _structure_problem("csc", (n_feat, n_cells), indptr, indices, len(data))
    if problem:
        raise ReadError(f"{p}: bad CSC sparse structure of the features x cells matrix: {problem}")
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


def _file_stem(p: Path) -> str:
    """The file name without its format extension(s) (.h5ad, .mtx.gz, .csv.gz...)."""
    stem = p.name
    if stem.lower().endswith(".gz"):
        stem = stem[:-3]
    for ext in (".h5ad", ".h5mu", ".h5", ".hdf5", ".mtx") + _TABLE_EXTS:
        if stem.lower().endswith(ext):
            return stem[: -len(ext)]
    return stem


def _guess_name(p: Path, ad: anndata.AnnData) -> str:
    """Guess a modality name from the file stem, then the features, else the stem."""
    stem = _file_stem(p)
    kind = _kind_from_name(stem) or _kind_from_features(ad)
    return KIND_SHORT_NAME[kind] if kind else stem


def _apply_names(entries: list[_Entry], names, source: str) -> None:
    if names is None:
        return
    if isinstance(names, str):
        names = [names]
    if isinstance(names, Mapping):
        known = {e.name for e in entries} | {e.original for e in entries}
        unknown = [k for k in names if str(k) not in known]
        if unknown:
            raise ReadError(
                f"{source}: modality_names has keys {unknown} that match no modality "
                f"(found {[e.name for e in entries]})"
            )
        for e in entries:
            e.name = str(names.get(e.name, names.get(e.original, e.name)))
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
# modality kinds and names
# --------------------------------------------------------------------------

#: the names a modality may have in a run (same rule as scmm.runfolder.MODALITY_NAME)
MODALITY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

#: modality kinds and the short name a modality of that kind gets when its own name is unusable
KIND_SHORT_NAME = {"rna": "rna", "protein": "prot", "atac": "atac"}

#: words (in a name, a file stem or a feature type) that say the kind
KIND_WORDS = {
    "rna": ("rna", "gex", "gene", "genes", "expression", "mrna", "scrna", "transcriptome",
            "gene expression"),
    "protein": ("prot", "protein", "proteins", "adt", "adts", "antibody", "antibodies",
                "antibody capture", "surface"),
    "atac": ("atac", "peaks", "peak", "chromatin", "accessibility"),
}
_WORD_KIND = {w: k for k, ws in KIND_WORDS.items() for w in ws}
_ANTIBODY_RE = re.compile(
    r"^(anti[-_ ]?)?(CD\d+[A-Za-z]*|HLA[-_]?|Ig[A-Z]|TCR|KLR|FCER|ITG|CCR\d|CXCR\d|IL\d|"
    r".*(TotalSeq|_ADT|ADT_|-ADT|_PROT|_TSA|_TSB|_TSC))",
    re.IGNORECASE,
)
_BARCODE_RE = re.compile(r"[ACGTN]{8,}")
# words that say a kind only when no other kind word is in the name
_WEAK_WORDS = {"surface", "expression"}


def _normalise_kind(kind, source, name) -> str:
    k = str(kind).strip().lower()
    k = {"prot": "protein", "proteins": "protein", "adt": "protein", "antibody capture": "protein",
         "gex": "rna", "gene expression": "rna", "peaks": "atac", "chromatin": "atac"}.get(k, k)
    if k not in KIND_SHORT_NAME:
        raise ReadError(
            f"{source}: kind {kind!r} of modality '{name}' is not one of 'rna', 'protein', 'atac'"
        )
    return k


def _kind_from_name(name: str) -> str | None:
    """'rna' / 'protein' / 'atac' when the words of ``name`` say exactly one kind, else None."""
    low = str(name).strip().lower()
    if low in _WORD_KIND:
        return _WORD_KIND[low]
    tokens = [t for t in re.split(r"[^a-z0-9]+", low) if t]
    strong = {_WORD_KIND[t] for t in tokens if t in _WORD_KIND and t not in _WEAK_WORDS}
    if len(strong) == 1:
        return strong.pop()
    if not strong:
        weak = {_WORD_KIND[t] for t in tokens if t in _WEAK_WORDS}
        if len(weak) == 1:
            return weak.pop()
    return None


def _kind_from_features(ad) -> str | None:
    """The kind the features say: feature types, peak coordinates, an antibody panel; else None."""
    if ad is None or not ad.n_vars:
        return None
    if "feature_types" in ad.var.columns:
        top = str(ad.var["feature_types"].astype(str).value_counts().index[0])
        k = _WORD_KIND.get(top.strip().lower())
        if k:
            return k
    sample = [str(v) for v in ad.var_names[: min(300, ad.n_vars)]]
    if np.mean([bool(_PEAK_RE.match(v)) for v in sample]) > 0.5:
        return "atac"
    if ad.n_vars <= 300 and np.mean([bool(_ANTIBODY_RE.match(v)) for v in sample]) >= 0.3:
        return "protein"
    return None


def _sanitise(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_")
    s = re.sub(r"_+", "_", s)
    if not s:
        s = "mod"
    if s[0].isdigit():
        s = "m_" + s
    return s[:60]


def _finalise_names(entries, kinds, source) -> None:
    """Give every entry a valid, unique modality name and a kind (see the module docstring).

    ``kinds``: None, a mapping {name: kind} (original, given or final name) or a
    sequence with one kind per modality.  Invalid names are renamed (the kind's
    short name when the kind is known, else the sanitised name; ``_2``, ``_3``...
    when taken) with a UserWarning; the original is kept on the entry.
    """
    explicit: dict[int, str] = {}
    if kinds is not None:
        if isinstance(kinds, str) or not isinstance(kinds, (Mapping, Sequence)):
            raise ReadError(f"{source}: kinds must be a mapping {{modality: kind}} or a list of kinds")
        if isinstance(kinds, Mapping):
            for key, k in kinds.items():
                hits = [i for i, e in enumerate(entries) if str(key) in (e.name, e.original)]
                if not hits:
                    hits = [i for i, e in enumerate(entries) if _sanitise(e.name) == str(key)]
                if not hits:
                    raise ReadError(
                        f"{source}: kinds has key {key!r} that matches no modality "
                        f"(found {[e.name for e in entries]})"
                    )
                for i in hits:
                    explicit[i] = _normalise_kind(k, source, key)
        else:
            if len(kinds) != len(entries):
                raise ReadError(
                    f"{source}: kinds has {len(kinds)} entries but the input holds "
                    f"{len(entries)} modalities {[e.name for e in entries]}"
                )
            for i, (e, k) in enumerate(zip(entries, kinds)):
                if k is not None:
                    explicit[i] = _normalise_kind(k, source, e.name)

    for i, e in enumerate(entries):
        by_name = _kind_from_name(e.name) if not (e.guessed and e.name != e.original) else None
        if i in explicit:
            e.kind, e.kind_from = explicit[i], "given"
        elif by_name:
            e.kind, e.kind_from = by_name, "name"
        elif _kind_from_name(e.original or ""):
            e.kind, e.kind_from = _kind_from_name(e.original), "name"
        elif _kind_from_features(e.adata):
            e.kind, e.kind_from = _kind_from_features(e.adata), "features"
        elif _kind_from_name(e.name):
            e.kind, e.kind_from = _kind_from_name(e.name), "name"
        else:
            e.kind, e.kind_from = "protein", "default"

    used = {e.name for e in entries if MODALITY_NAME.match(e.name)}
    renamed = []
    for e in entries:
        if MODALITY_NAME.match(e.name):
            continue
        base = KIND_SHORT_NAME[e.kind] if e.kind_from != "default" else _sanitise(e.name)
        new, n = base, 1
        while new in used:
            n += 1
            new = f"{base}_{n}"
        used.add(new)
        renamed.append((e.name, new))
        e.name = new
    if renamed:
        detail = ", ".join(f"'{a}' -> '{b}'" for a, b in renamed)
        warnings.warn(
            f"{source}: renamed modalities to valid names (letters, digits and _, at most 64, not "
            f"starting with a digit): {detail}; the original name is kept in "
            "mod[name].uns['scmm_original_name']",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------
# Matrix Market files (GEO style) and count tables
# --------------------------------------------------------------------------

_TABLE_EXTS = (".csv", ".tsv", ".txt", ".tab")
_SEPARATORS = "._-"


def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def _is_mtx_name(name: str) -> bool:
    return _strip_gz(name).lower().endswith(".mtx")


def _is_table_name(name: str) -> bool:
    return _strip_gz(name).lower().endswith(_TABLE_EXTS)


def _open_bytes(path: Path):
    """Open a file for binary reading, gunzipping it when its content is gzip (not by name)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _open_text_any(path: Path):
    import io

    return io.TextIOWrapper(_open_bytes(path), encoding="utf-8", errors="replace", newline="")


def _geo_matrices(folder: Path) -> list[Path]:
    """The Matrix Market files of a folder other than 10x's matrix.mtx, sorted by name."""
    try:
        return sorted(q for q in folder.iterdir() if q.is_file() and _is_mtx_name(q.name))
    except OSError:
        return []


def _name_prefixes(stem: str) -> list[str]:
    """'rna_counts.x' -> ['rna_counts.x', 'rna_counts', 'rna', '']: prefixes cut at . _ -."""
    cuts = [i for i, c in enumerate(stem) if c in _SEPARATORS]
    return [stem] + [stem[:i] for i in reversed(cuts)] + [""]


def _find_name_file(matrix: Path, words: tuple[str, ...]):
    """The file beside ``matrix`` named ``<prefix>[sep]<word>.tsv|.csv|.txt[.gz]`` with the
    longest ``<prefix>`` that starts the matrix name at a separator (an empty prefix is
    shared by every matrix of the folder); among equal prefixes the first word wins."""
    stem = _file_stem(matrix)
    prefixes = _name_prefixes(stem)
    best = None
    for q in matrix.parent.iterdir():
        if not q.is_file() or q == matrix:
            continue
        base = _file_stem(q)
        if not _is_table_name(q.name):
            continue
        for wi, w in enumerate(words):
            if not base.lower().endswith(w):
                continue
            pre = base[: -len(w)].rstrip(_SEPARATORS)
            if pre not in prefixes:
                continue
            rank = (len(pre), -wi, -len(q.name))
            if best is None or rank > best[0]:
                best = (rank, q)
    return best[1] if best else None


FEATURE_FILE_WORDS = ("features", "genes", "peaks", "proteins", "antibodies", "adts", "var")
BARCODE_FILE_WORDS = ("barcodes", "cells", "obs")


def _read_names(path: Path) -> pd.DataFrame:
    sep = "," if _strip_gz(path.name).lower().endswith(".csv") else "\t"
    with _open_text_any(path) as fh:
        return pd.read_csv(fh, sep=sep, header=None, dtype=str, keep_default_na=False)


def _mtx_orientation(shape, n_feat, n_bc, feat_name, bc_name, orientation):
    """('fxc' | 'cxf', drop_feature_header, drop_barcode_header, why)."""
    r, c = shape
    if orientation is not None:
        o = _parse_orientation(orientation)
        want = (n_feat, n_bc) if o == "fxc" else (n_bc, n_feat)
        for hf in (0, 1):
            for hb in (0, 1):
                if o == "fxc" and (r, c) == (n_feat - hf, n_bc - hb) or o == "cxf" and (r, c) == (n_bc - hb, n_feat - hf):
                    return o, hf, hb, "as given"
        raise ValueError(f"matrix is {r} x {c} but orientation={orientation!r} needs {want[0]} x {want[1]}")
    for hf in (0, 1):
        for hb in (0, 1):
            F, B = n_feat - hf, n_bc - hb
            fits = [o for o, dims in (("fxc", (F, B)), ("cxf", (B, F))) if (r, c) == dims]
            if fits:
                o = fits[0]
                why = (
                    f"rows match the {F} names of {feat_name} and columns the {B} of {bc_name}"
                    if o == "fxc"
                    else f"rows match the {B} names of {bc_name} and columns the {F} of {feat_name}"
                )
                if len(fits) == 2:
                    why = f"{F} features = {B} barcodes; assumed features x cells as 10x writes it"
                if hf:
                    why += f"; the first line of {feat_name} taken as a header"
                if hb:
                    why += f"; the first line of {bc_name} taken as a header"
                return o, hf, hb, why
    raise ValueError(
        f"matrix is {r} x {c} but {feat_name} has {n_feat} names and {bc_name} has {n_bc}: "
        "neither features x cells nor cells x features"
    )


def read_mtx_file(matrix, features=None, barcodes=None, orientation=None) -> anndata.AnnData:
    """Read one Matrix Market file with its feature and barcode name files as one AnnData.

    See :func:`scmm.io.read_mtx` (the public wrapper) for the rules.
    """
    from .checks import _check_memory, _check_values_dtype

    m = Path(os.fspath(matrix)).expanduser()
    if not m.is_file():
        raise ReadError(f"{m}: file not found")
    feats = Path(os.fspath(features)).expanduser() if features else _find_name_file(m, FEATURE_FILE_WORDS)
    bcs = Path(os.fspath(barcodes)).expanduser() if barcodes else _find_name_file(m, BARCODE_FILE_WORDS)
    missing = [
        f"feature file (<prefix>[_.-]{{{','.join(FEATURE_FILE_WORDS[:3])}}}.tsv[.gz])" if feats is None else None,
        "barcode file (<prefix>[_.-]barcodes.tsv[.gz])" if bcs is None else None,
    ]
    missing = [x for x in missing if x]
    if missing:
        raise ReadError(
            f"{m}: found no {' and no '.join(missing)} beside it whose <prefix> starts the matrix "
            "name (or is empty); pass features= / barcodes= (CLI: NAME=MATRIX,FEATURES,BARCODES)"
        )
    for q in (feats, bcs):
        if not q.is_file():
            raise ReadError(f"{q}: file not found (named for {m.name})")

    def info():
        # the header only (comments and the size line), parsed by scipy from memory: scipy's
        # fast_matrix_market can abort the process on some file handles
        import io

        head = []
        with _open_bytes(m) as fh:
            for line in fh:
                head.append(line)
                if not line.startswith(b"%") and line.strip():
                    break
                if len(head) > 100000:
                    raise ValueError("no size line after 100000 header lines")
        return scipy.io.mminfo(io.BytesIO(b"".join(head)))

    rows, cols, entries, fmt, field, _sym = _guarded(m, "a Matrix Market file", info)
    if field == "complex":
        raise ReadError(f"{m}: the Matrix Market values are complex; scMM needs real raw counts")
    if field == "pattern":
        raise ReadError(
            f"{m}: a Matrix Market 'pattern' matrix holds positions only (boolean), not counts"
        )
    need = rows * cols * 8 if fmt == "array" else entries * 24
    _check_memory(m, f"the {rows} x {cols} matrix ({entries} entries, {fmt})", need)

    def load():
        with open(m, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        if gz == m.name.lower().endswith(".gz"):  # scipy opens it (and gunzips by the name)
            return scipy.io.mmread(str(m))
        if gz:
            with gzip.open(m, "rb") as fh:
                return scipy.io.mmread(fh)
        raise ValueError("the name ends in .gz but the file is not gzip-compressed")

    M = _guarded(m, "a Matrix Market file", load)
    if not sp.issparse(M):
        M = np.asarray(M)
        _check_values_dtype(M.dtype, m, _file_stem(m), "matrix")
        M = sp.coo_matrix(M)
    _check_values_dtype(M.dtype, m, _file_stem(m), "matrix")
    fdf = _guarded(feats, "a feature name file", lambda: _read_names(feats))
    bdf = _guarded(bcs, "a barcode file", lambda: _read_names(bcs))
    try:
        o, hf, hb, why = _mtx_orientation(M.shape, len(fdf), len(bdf), feats.name, bcs.name, orientation)
    except ValueError as exc:
        raise ReadError(f"{m}: {exc}") from None
    fdf = fdf.iloc[hf:]
    barcodes_ = bdf.iloc[hb:, 0].to_numpy(dtype=object)
    X = sp.csr_matrix(M.T if o == "fxc" else M)
    ids = fdf.iloc[:, 0].to_numpy(dtype=object)
    names = fdf.iloc[:, 1].to_numpy(dtype=object) if fdf.shape[1] > 1 else ids
    var = pd.DataFrame({"gene_ids": ids}, index=pd.Index(names, dtype=object))
    if fdf.shape[1] > 2:
        var["feature_types"] = fdf.iloc[:, 2].to_numpy(dtype=object)
    note = (
        f"{m.name}: read as {'features x cells' if o == 'fxc' else 'cells x features'} "
        f"({X.shape[1]} features x {X.shape[0]} cells; {why})"
    )
    ad = anndata.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(barcodes_, dtype=object)), var=var)
    ad.uns["scmm_source"] = note
    return ad


def _parse_orientation(orientation) -> str:
    o = re.sub(r"[^a-z]+", "_", str(orientation).lower()).strip("_")
    if o in ("fxc", "features_x_cells", "genes_x_cells", "features_cells", "rows_are_features",
             "features_by_cells", "genes_by_cells", "feature_by_cell", "gene_by_cell"):
        return "fxc"
    if o in ("cxf", "cells_x_features", "cells_x_genes", "cells_features", "rows_are_cells",
             "cells_by_features", "cells_by_genes", "cell_by_feature", "cell_by_gene"):
        return "cxf"
    raise ReadError(
        f"orientation must be 'features_x_cells' or 'cells_x_features', got {orientation!r}"
    )


def _orientation_from_name(name: str) -> str | None:
    low = name.lower()
    if re.search(r"(features?|genes?|peaks?|proteins?|adts?|antibod\w*)[._-]?(x|by)[._-]?(cells?|barcodes?)", low):
        return "fxc"
    if re.search(r"(cells?|barcodes?)[._-]?(x|by)[._-]?(features?|genes?|peaks?|proteins?|adts?|antibod\w*)", low):
        return "cxf"
    return None


def _barcode_fraction(names) -> float:
    sample = [str(v) for v in names[:200]]
    return float(np.mean([bool(_BARCODE_RE.search(v)) for v in sample])) if sample else 0.0


def _sniff_table(path: Path):
    """(separator, column names, index name) from the first two lines of a table."""
    import csv

    with _open_text_any(path) as fh:
        head = fh.readline()
        first = fh.readline()
    if not head.strip():
        raise ValueError("the file is empty")
    sep = "\t" if "\t" in head else "," if "," in head else None
    if sep is None:
        raise ValueError("no tab or comma separator in the header line")
    header = next(csv.reader([head.rstrip("\r\n")], delimiter=sep))
    if not first.strip():
        raise ValueError("the table has a header but no data rows")
    row = next(csv.reader([first.rstrip("\r\n")], delimiter=sep))
    if len(row) == len(header) + 1:  # R's write.table: no corner cell
        cols = header
    elif len(row) == len(header):
        cols = header[1:]
    else:
        raise ValueError(
            f"the header has {len(header)} fields but the first data row has {len(row)}"
        )
    if len(cols) == 0:
        raise ValueError("the table has no value columns (only row names)")
    return sep, [str(c) for c in cols]


def _read_table_raw(path: Path):
    """A count table as (csr rows x cols of float64, row names, column names, separator)."""
    from .checks import _available_memory, _check_memory, _fmt_bytes

    sep, cols = _guarded(path, "a CSV/TSV count table", lambda: _sniff_table(path))
    n_cols = len(cols)
    avail = _available_memory()
    row_bytes = n_cols * 8
    _check_memory(path, f"one row of {n_cols} columns", row_bytes * 4)
    chunk_rows = int(max(1, min(20000, (min(avail // 8, 256 << 20)) // max(1, row_bytes))))
    blocks, index, nnz = [], [], 0

    def parse():
        nonlocal nnz
        with _open_text_any(path) as fh:
            reader = pd.read_csv(fh, sep=sep, header=None, skiprows=1, index_col=0,
                                 chunksize=chunk_rows, low_memory=False)
            start = 0
            for chunk in reader:
                if chunk.shape[1] != n_cols:
                    raise ReadError(
                        f"{path}: rows {start + 2}-{start + 1 + len(chunk)} have {chunk.shape[1] + 1} "
                        f"fields, the header says {n_cols + 1}"
                    )
                _check_table_chunk(chunk, cols, path, start)
                block = sp.csr_matrix(chunk.to_numpy(dtype=np.float64))
                nnz += block.nnz
                need = nnz * 12 * 2  # the kept blocks, then the stacked / transposed copy
                if need > avail:
                    raise ReadError(
                        f"{path}: the table's non-zero counts would need more than "
                        f"{_fmt_bytes(need)} of memory (after {start + len(chunk)} rows) but only "
                        f"{_fmt_bytes(avail)} is available"
                    )
                blocks.append(block)
                index.extend(str(x) for x in chunk.index)
                start += len(chunk)

    _guarded(path, "a CSV/TSV count table", parse)
    if not blocks:
        raise ReadError(f"{path}: the table has no data rows")
    M = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    return M, index, cols, sep


def _check_table_chunk(chunk: pd.DataFrame, cols, path, start) -> None:
    dts = chunk.dtypes
    bad = [i for i, d in enumerate(dts) if d.kind not in "iuf"]
    if not bad:
        return
    i = bad[0]
    d = dts.iloc[i]
    col = chunk.iloc[:, i]
    if d.kind == "b":
        raise ReadError(
            f"{path}: column '{cols[i]}' holds boolean values (True/False), not counts"
        )
    num = pd.to_numeric(col, errors="coerce")
    j = int(np.flatnonzero(num.isna().to_numpy() & col.notna().to_numpy())[0]) if (num.isna() & col.notna()).any() else 0
    kinds = sorted({str(x) for x in dts.iloc[bad]})
    raise ReadError(
        f"{path}: column '{cols[i]}' is not numeric (dtype {d}; e.g. {col.iloc[j]!r} in row "
        f"{start + j + 2}, '{chunk.index[j]}'); {len(bad)} of {len(cols)} value columns have "
        f"non-numeric dtypes ({', '.join(kinds)}); a count table needs numbers only after the "
        "row-name column"
    )


def _table_to_anndata(path: Path, M, rows, cols, o: str, why: str) -> anndata.AnnData:
    if o == "fxc":
        X, cells, feats = sp.csr_matrix(M.T), cols, rows
    else:
        X, cells, feats = M, rows, cols
    ad = anndata.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(cells, dtype=object)),
        var=pd.DataFrame(index=pd.Index(feats, dtype=object)),
    )
    ad.uns["scmm_source"] = (
        f"{path.name}: read as {'features x cells' if o == 'fxc' else 'cells x features'} "
        f"({len(feats)} features x {len(cells)} cells; {why})"
    )
    return ad


def _orient_tables(raw: list, known_cells: set, orientation) -> list[tuple[str, str]]:
    """Choose each table's orientation: (o, why) for every (path, M, rows, cols) in ``raw``.

    Rules, first that decides: ``orientation=`` given; one side looks like cell barcodes
    (runs of 8+ A/C/G/T/N) and the other does not; one side shares names with the cells
    of the other inputs (or another table's side); the file name says it
    (``genes_x_cells``, ``cells_x_features``...).  Otherwise ReadError.
    """
    out: list = [None] * len(raw)
    for i, (path, _M, rows, cols) in enumerate(raw):
        given = orientation.get(str(path), orientation.get(path.name)) if isinstance(orientation, Mapping) else orientation
        if given is not None:
            out[i] = (_parse_orientation(given), "as given")
            continue
        fr, fc = _barcode_fraction(rows), _barcode_fraction(cols)
        if fc >= 0.5 and fr < 0.1:
            out[i] = ("fxc", f"column names look like cell barcodes ({fc:.0%}), row names do not")
        elif fr >= 0.5 and fc < 0.1:
            out[i] = ("cxf", f"row names look like cell barcodes ({fr:.0%}), column names do not")
    def overlap_step() -> bool:
        changed = False
        for i, (path, _M, rows, cols) in enumerate(raw):
            if out[i] is not None:
                continue
            cells = set(known_cells)
            for j, (_p2, _M2, r2, c2) in enumerate(raw):
                if j != i and out[j] is not None:
                    cells |= set(c2 if out[j][0] == "fxc" else r2)
            nr, nc = len(cells.intersection(rows)), len(cells.intersection(cols))
            if nr != nc:
                o = "fxc" if nc > nr else "cxf"
                out[i] = (o, f"{max(nr, nc)} {'column' if o == 'fxc' else 'row'} names are cells of "
                             f"the other inputs, {min(nr, nc)} {'row' if o == 'fxc' else 'column'} names are")
                changed = True
        return changed

    while True:
        while overlap_step():
            pass
        undecided = [i for i, x in enumerate(out) if x is None]
        if len(undecided) < 2:
            break
        # two undecided tables: the sides that share most names are the cells
        a, b = undecided[0], undecided[1]
        ra, ca, rb, cb = (set(raw[a][2]), set(raw[a][3]), set(raw[b][2]), set(raw[b][3]))
        combos = {("cxf", "cxf"): len(ra & rb), ("cxf", "fxc"): len(ra & cb),
                  ("fxc", "cxf"): len(ca & rb), ("fxc", "fxc"): len(ca & cb)}
        ranked = sorted(combos.items(), key=lambda kv: -kv[1])
        if not (ranked[0][1] > 0 and ranked[0][1] > ranked[1][1]):
            break
        (oa, ob), n = ranked[0]
        out[a] = (oa, f"{n} cell names shared with {raw[b][0].name}")
        out[b] = (ob, f"{n} cell names shared with {raw[a][0].name}")
    for i, (path, _M, rows, cols) in enumerate(raw):
        if out[i] is None:
            o = _orientation_from_name(path.name)
            if o:
                out[i] = (o, "from the file name")
            else:
                raise ReadError(
                    f"{path}: could not tell whether the rows ({len(rows)}, e.g. {rows[:2]}) or the "
                    f"columns ({len(cols)}, e.g. {cols[:2]}) are the cells: neither looks like cell "
                    "barcodes nor matches the cells of another input; pass "
                    "orientation='features_x_cells' or 'cells_x_features'"
                )
    return out
