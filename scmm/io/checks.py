"""Count checks, cleaning, barcode pairing and MuData building shared by the readers."""

from __future__ import annotations

import warnings

import anndata
import mudata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import ReadError

_INT_TOL = 1e-4
_DENSE_BLOCK_BYTES = 256 << 20  # dense -> CSR conversion works in row blocks of about this size


def _available_memory() -> int:
    """Bytes of memory available now (psutil); tests monkeypatch this."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - without psutil, do not refuse anything
        return 1 << 62


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _check_memory(source, what: str, nbytes: float) -> None:
    """Raise ReadError before allocating ``nbytes`` when the machine has less available."""
    avail = _available_memory()
    if nbytes > avail:
        raise ReadError(
            f"{source}: {what} would need about {_fmt_bytes(nbytes)} of memory but only "
            f"{_fmt_bytes(avail)} is available; use a machine with more memory or a subset of the data"
        )


def _check_values_dtype(dtype, source, name, where) -> None:
    """Refuse value types that are not counts: complex, boolean, non-numeric."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise ReadError(
            f"{source}: modality '{name}' {where} holds complex values (dtype {dtype}); "
            "scMM needs real raw counts"
        )
    if dtype.kind == "b":
        raise ReadError(
            f"{source}: modality '{name}' {where} holds boolean values (dtype bool), not counts; "
            "if they are meant as 0/1 counts convert them to integers first (X.astype(int))"
        )
    if dtype.kind not in "iuf":
        raise ReadError(f"{source}: modality '{name}' {where} is not numeric (dtype {dtype})")


def _structure_problem(fmt: str, shape, indptr, indices, n_data) -> str | None:
    """What is wrong with CSR/CSC arrays (``fmt`` 'csr' or 'csc'), or None."""
    n_rows, n_cols = (int(x) for x in shape)
    major, minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
    major_name, minor_name = ("rows", "columns") if fmt == "csr" else ("columns", "rows")
    index_name = "column" if fmt == "csr" else "row"
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    if min(n_rows, n_cols) < 0:
        return f"negative shape {n_rows} x {n_cols}"
    if indptr.ndim != 1 or indices.ndim != 1:
        return "indptr and indices must be one-dimensional"
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        return f"indptr/indices are not integers (dtypes {indptr.dtype}, {indices.dtype})"
    if len(indptr) != major + 1:
        return f"indptr has {len(indptr)} entries, expected {major + 1} ({major} {major_name} + 1)"
    if indptr[0] != 0:
        return f"indptr starts at {int(indptr[0])}, not 0"
    if (np.diff(indptr) < 0).any():
        return "indptr decreases"
    if int(indptr[-1]) != len(indices) or len(indices) != n_data:
        return (
            f"indptr ends at {int(indptr[-1])} but there are {len(indices)} indices and "
            f"{n_data} values"
        )
    if len(indices):
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= minor:
            bad = lo if lo < 0 else hi
            return f"{index_name} index {bad} out of range for {minor} {minor_name}"
    return None


def _check_sparse_structure(X, source, name, where) -> None:
    fmt = getattr(X, "format", None)
    if fmt in ("csr", "csc"):
        problem = _structure_problem(fmt, X.shape, X.indptr, X.indices, len(X.data))
    elif fmt == "coo":
        r, c = np.asarray(X.row), np.asarray(X.col)
        problem = None
        if len(r) != len(c) or len(r) != len(X.data):
            problem = f"{len(r)} row and {len(c)} column indices for {len(X.data)} values"
        elif len(r) and (r.min() < 0 or r.max() >= X.shape[0] or c.min() < 0 or c.max() >= X.shape[1]):
            problem = f"an index is out of range for shape {X.shape[0]} x {X.shape[1]}"
    else:
        return
    if problem:
        raise ReadError(
            f"{source}: modality '{name}' {where}: bad {fmt.upper()} sparse structure: {problem}"
        )


def _dense_to_csr(arr: np.ndarray) -> sp.csr_matrix:
    """A float32 CSR of a dense 2-D array, converted in row blocks (no full dense copy)."""
    n, m = arr.shape
    if n == 0 or m == 0:
        return sp.csr_matrix((n, m), dtype=np.float32)
    step = max(1, _DENSE_BLOCK_BYTES // max(1, m * 8))
    if step >= n:
        return sp.csr_matrix(np.asarray(arr, dtype=np.float32))
    blocks = [sp.csr_matrix(np.asarray(arr[i : i + step], dtype=np.float32)) for i in range(0, n, step)]
    return sp.vstack(blocks, format="csr")


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
        _check_values_dtype(X.dtype, source, name, where)
        _check_sparse_structure(X, source, name, where)
        _check_memory(source, f"modality '{name}' {where} ({X.shape[0]} x {X.shape[1]}, {X.nnz} non-zeros)",
                      X.nnz * 12 + (X.shape[0] + 1) * 8)
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # noqa: BLE001
            raise ReadError(f"{source}: modality '{name}' {where} is not a matrix ({exc})") from exc
        if arr.ndim != 2:
            raise ReadError(f"{source}: modality '{name}' {where} has {arr.ndim} dimensions, not 2")
        _check_values_dtype(arr.dtype, source, name, where)
        nnz = int(np.count_nonzero(arr))
        _check_memory(source, f"modality '{name}' {where} ({arr.shape[0]} x {arr.shape[1]} dense, {nnz} non-zeros)",
                      nnz * 12 + (arr.shape[0] + 1) * 8)
        X = _dense_to_csr(arr)
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


def _values_dtype(ad, counts_layer):
    X = ad.layers[counts_layer] if counts_layer is not None and counts_layer in ad.layers else ad.X
    if X is None:
        return None, "X"
    where = f"layers['{counts_layer}']" if X is not ad.X else "X"
    try:
        return np.dtype(X.dtype), where
    except Exception:  # noqa: BLE001 - not an array; _counts_matrix reports it
        return None, where


def _check_mixed_dtypes(entries, source, counts_layer) -> None:
    """Refuse modalities whose values are not real numbers, naming every modality's dtype."""
    found = [(e, *_values_dtype(e.adata, counts_layer)) for e in entries]
    bad = [(e, d, w) for e, d, w in found if d is not None and d.kind not in "iuf"]
    if not bad:
        return
    listing = ", ".join(f"{e.name}: {d}" for e, d, _ in found if d is not None)
    e, d, w = bad[0]
    where = e.where or w
    try:
        _check_values_dtype(d, str(e.path) if e.path is not None else source, e.name, where)
    except ReadError as err:
        if len(found) > 1:
            raise ReadError(f"{err} (modality dtypes: {listing})") from None
        raise


def _subset_rows(v, idx):
    if isinstance(v, pd.DataFrame):
        return v.iloc[idx]
    return v[idx]


def _build(entries, *, source, counts_layer, labels, shared_label, global_obs, global_obsm, uns, pull_obs):
    """Shared core of read() and validate(): check, pair, clean, assemble."""
    _check_mixed_dtypes(entries, source, counts_layer)
    mods: dict[str, anndata.AnnData] = {}
    for e in entries:
        src = str(e.path) if e.path is not None else source  # the file this modality came from
        _check_barcodes(e.adata.obs_names, src, e.name)
        X, _ = _counts_matrix(e.adata, counts_layer, e.where, src, e.name)
        a = _new_anndata(e.adata, X)
        _unique_var(a, src, e.name)
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
