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

import warnings

import anndata
import mudata
import numpy as np
import scipy.sparse as sp

from .checks import _build, _check_barcodes, _counts_matrix, _new_anndata, _unique_var
from .errors import ReadError
from .formats import (
    FEATURE_TYPE_MODALITY,  # noqa: F401 - re-exported for callers of scmm.io
    PROTEIN_OBSM_KEYS,
    _Entry,
    _apply_names,
    _as_path,
    _detect_format,
    _global_parts,
    _guarded,
    _guess_name,
    _protein_key,
    _read_10x,
    _split_obsm_proteins,
)

__all__ = ["ReadError", "read", "read_query", "validate", "summarize"]


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
