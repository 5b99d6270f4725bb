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
